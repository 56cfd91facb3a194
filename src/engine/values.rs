//! Consequential values in text: the things an action's important arguments are made of and
//! an attacker would want to choose. Used to follow where an action's arguments came from
//! (`context.*` rules): every event's text is indexed by the values it contains, and an
//! action's arguments are looked up in that index.
//!
//! Kinds, and how a value is normalised so that the same value matches however it is written:
//! - `email`: an e-mail address, lowercased;
//! - `domain`: the host of a URL, or the domain of an e-mail address, lowercased, without a
//!   leading `www.`;
//! - `url`: a URL, lowercased, without user info, query, fragment or a trailing `/`, its host
//!   without a leading `www.`, `http` written as `https` (`HTTP://user@www.Pay.example.com/x/?a=1`
//!   is `https://pay.example.com/x`); a host written without a scheme (`www.example.com`,
//!   `pay.example.net/login`) counts as a `domain` and, with what follows it, as a `url`;
//! - `iban`: an IBAN (valid checksum, spaces allowed) or an IBAN-shaped token (two letters, two
//!   digits, 10 to 30 letters and digits of which at least four digits, whatever its checksum
//!   and its case, compact or in groups of four separated by spaces or dashes), uppercase, no
//!   separators;
//! - `phone`: a phone number, its digits only; looked up by its last nine digits ([`key`]), so
//!   that `+1 (415) 555-0123`, `415.555.0123` and `4155550123` are one number, and so is
//!   `+44 20 7946 0958` written `020 7946 0958`;
//! - `account`: a run of 8 to 30 digits (account and card numbers), digits only; one of 9 to 15
//!   digits is also looked up as a phone number;
//! - `path`: an absolute file path.
//!
//! Amounts are not followed: the same numbers occur everywhere, so a match would mean nothing.

use std::sync::LazyLock;

use regex::Regex;
use sha2::{Digest, Sha256};

use super::args::url_host;
use super::pii;

/// One value found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its kind (see the module doc).
    pub kind: &'static str,
    /// Its normalised form.
    pub value: String,
    /// Byte range in the text.
    pub start: usize,
    /// End of the byte range.
    pub end: usize,
}

static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b[a-z][a-z0-9+.\-]*://[^\s<>"'`)\]}]+"#).expect("static regex")
});
static DIGITS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?: ?\d){7,29}\b").expect("static regex"));
/// Host names written without a scheme (`www.example.com/page`, `pay.example.net`): `www.` or a
/// common top-level domain, so file names like `notes.txt` are not taken for hosts; and the path
/// that may follow (group `path`).
static BARE_HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b(?P<host>www\.[a-z0-9\-]+(?:\.[a-z0-9\-]+)+|(?:[a-z0-9\-]+\.)+(?:com|net|org|io|ai|dev|info|biz|co|app|xyz|online|site|uk|de|fr|eu|us|ru|cn|me|tv|es|it|nl|be|at|ch|pl|se|no|dk|fi|ie|pt|gr|cz|ro|jp|kr|in|br|au|ca|mx|ar|za|ws|su|ly|gg|to|cc|top|click|link|shop|store|live|pro|tech|cloud|website|space|fun|icu|win|bid|club|vip|tk|ml|ga|cf|gq|gov|edu|example)\b)(?::\d{1,5}\b)?(?P<path>/[^\s<>"'`)\]}]*)?"#,
    )
    .expect("static regex")
});

/// IBAN-shaped tokens whatever their checksum and case: an attacker's account need not be
/// valid, nor written in capitals, to be the attacker's. Compact, or in groups of four.
static IBAN_LIKE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b[a-z]{2}\d{2}(?:[a-z0-9]{10,30}|(?:[ \-][a-z0-9]{4}){2,7}(?:[ \-][a-z0-9]{1,4})?)\b",
    )
    .expect("static regex")
});
static PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:^|[\s"'=(])(/[A-Za-z0-9._\-]+(?:/[A-Za-z0-9._\-]+)+)"#).expect("static regex")
});

fn domain(host: &str) -> String {
    host.to_ascii_lowercase()
        .trim_start_matches("www.")
        .to_string()
}

/// The normalised form of a URL (see the module doc), or `None` if it has no host.
fn canonical_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let scheme = if scheme == "http" { "https" } else { &scheme };
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() {
        return None;
    }
    let canonical = format!("{scheme}://{}{path}", domain(host_port));
    Some(canonical.trim_end_matches('/').to_ascii_lowercase())
}

/// An IBAN-shaped token, uppercase without separators, if it has at least four digits after
/// its check digits once trailing groups of letters only (the next words) are dropped.
fn iban_like(token: &str) -> Option<(String, usize)> {
    let mut len = token.len();
    if token.contains([' ', '-']) {
        while let Some(i) = token[..len].rfind([' ', '-']) {
            if token[i + 1..len].bytes().any(|b| b.is_ascii_digit()) {
                break;
            }
            len = i;
        }
    }
    let compact: String = token[..len]
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let digits = compact[4.min(compact.len())..]
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    (compact.len() >= 14 && digits >= 4).then_some((compact, len))
}

/// Values longer than this many bytes (a URL or a path can be as long as the text) are keyed
/// by a digest, so that a run's index holds at most this much per value.
const MAX_KEY_VALUE_BYTES: usize = 256;

/// The key a value is looked up by: `kind:value`, except that a phone number is keyed by its
/// last nine digits, so that the same number written with or without its country code or
/// trunk prefix is one value, and a value over [`MAX_KEY_VALUE_BYTES`] by its SHA-256.
pub fn key(kind: &str, value: &str) -> String {
    if kind == "phone" {
        let at = value.len().saturating_sub(9);
        return format!("phone:{}", &value[at..]);
    }
    if value.len() > MAX_KEY_VALUE_BYTES {
        let digest = Sha256::digest(value.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        return format!("{kind}#{hex}");
    }
    format!("{kind}:{value}")
}

/// The other key an `account` value is also looked up by: a run of 9 to 15 digits may be a
/// phone number written without separators.
pub fn phone_key_of_account(kind: &str, value: &str) -> Option<String> {
    (kind == "account" && (9..=15).contains(&value.len())).then(|| key("phone", value))
}

/// The byte ranges of values already found, to ask in logarithmic time whether a later match
/// lies inside one of them (digits inside an IBAN, a host inside a URL): a text with many
/// values is read in linear time.
struct Covered {
    /// The ranges, by start.
    spans: Vec<(usize, usize)>,
    /// For each range, the largest end of it and the ranges before it.
    reach: Vec<usize>,
}

impl Covered {
    fn of<'a>(found: impl Iterator<Item = &'a Found>) -> Self {
        let mut spans: Vec<(usize, usize)> = found.map(|f| (f.start, f.end)).collect();
        spans.sort_unstable();
        let mut max = 0;
        let reach = spans
            .iter()
            .map(|&(_, end)| {
                max = max.max(end);
                max
            })
            .collect();
        Covered { spans, reach }
    }

    /// Whether `start..end` lies inside one of the ranges.
    fn contains(&self, start: usize, end: usize) -> bool {
        let i = self.spans.partition_point(|&(s, _)| s <= start);
        i > 0 && self.reach[i - 1] >= end
    }
}

/// Every consequential value in `text`.
pub fn extract(text: &str) -> Vec<Found> {
    let mut out = Vec::new();
    for m in pii::find(text) {
        let (kind, value) = match m.kind {
            "email" => ("email", m.text.to_ascii_lowercase()),
            "iban" => ("iban", m.text.replace(' ', "").to_ascii_uppercase()),
            "phone" => (
                "phone",
                m.text.chars().filter(char::is_ascii_digit).collect(),
            ),
            "card" => (
                "account",
                m.text.chars().filter(char::is_ascii_digit).collect(),
            ),
            _ => continue,
        };
        if kind == "email"
            && let Some((_, d)) = value.rsplit_once('@')
        {
            out.push(Found {
                kind: "domain",
                value: domain(d),
                start: m.start,
                end: m.end,
            });
        }
        out.push(Found {
            kind,
            value,
            start: m.start,
            end: m.end,
        });
    }
    for m in URL.find_iter(text) {
        let url = m.as_str().trim_end_matches(['.', ',', ';', ':', '!', '?']);
        if let (Some(host), Some(canonical)) = (url_host(url), canonical_url(url)) {
            out.push(Found {
                kind: "domain",
                value: domain(&host),
                start: m.start(),
                end: m.start() + url.len(),
            });
            out.push(Found {
                kind: "url",
                value: canonical,
                start: m.start(),
                end: m.start() + url.len(),
            });
        }
    }
    let covered = Covered::of(out.iter());
    for c in BARE_HOST.captures_iter(text) {
        let (Some(m), Some(host)) = (c.get(0), c.name("host")) else {
            continue;
        };
        if covered.contains(m.start(), m.end()) {
            continue;
        }
        let whole = m.as_str().trim_end_matches(['.', ',', ';', ':', '!', '?']);
        let end = m.start() + whole.len();
        // With a path, the domain spans the whole URL (the URL says the same, more precisely).
        let domain_end = if c.name("path").is_some() {
            end
        } else {
            host.end()
        };
        out.push(Found {
            kind: "domain",
            value: domain(host.as_str()),
            start: m.start(),
            end: domain_end,
        });
        if let Some(canonical) = canonical_url(&format!("https://{whole}")) {
            out.push(Found {
                kind: "url",
                value: canonical,
                start: m.start(),
                end,
            });
        }
    }
    let covered = Covered::of(out.iter());
    let mut ibans: Vec<Found> = Vec::new();
    for m in IBAN_LIKE.find_iter(text) {
        if !covered.contains(m.start(), m.end())
            && let Some((value, len)) = iban_like(m.as_str())
        {
            ibans.push(Found {
                kind: "iban",
                value,
                start: m.start(),
                end: m.start() + len,
            });
        }
    }
    if !ibans.is_empty() {
        // Digits of a lowercase IBAN may have been read as a phone number. The IBANs are
        // disjoint and in text order.
        out.retain(|f| {
            let i = ibans.partition_point(|b| b.end <= f.start);
            !(matches!(f.kind, "phone" | "account")
                && ibans.get(i).is_some_and(|b| b.start < f.end))
        });
        out.append(&mut ibans);
    }
    let covered = Covered::of(out.iter());
    for m in DIGITS.find_iter(text) {
        if covered.contains(m.start(), m.end()) {
            continue; // part of an IBAN, phone or URL already found
        }
        let digits: String = m.as_str().chars().filter(char::is_ascii_digit).collect();
        out.push(Found {
            kind: "account",
            value: digits,
            start: m.start(),
            end: m.end(),
        });
    }
    let urls = Covered::of(out.iter().filter(|f| f.kind == "url"));
    for c in PATH.captures_iter(text) {
        if let Some(p) = c.get(1)
            && !urls.contains(p.start(), p.end())
        {
            out.push(Found {
                kind: "path",
                value: p.as_str().to_string(),
                start: p.start(),
                end: p.end(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(&'static str, String)> {
        extract(text)
            .into_iter()
            .map(|f| (f.kind, f.value))
            .collect()
    }

    #[test]
    fn values_are_found_and_normalised() {
        let got = kinds("Mail Bob.Smith@Example.COM or see https://www.Shop.example.org/pay?x=1.");
        assert!(
            got.contains(&("email", "bob.smith@example.com".into())),
            "{got:?}"
        );
        assert!(got.contains(&("domain", "example.com".into())), "{got:?}");
        assert!(
            got.contains(&("domain", "shop.example.org".into())),
            "{got:?}"
        );
        assert!(
            got.contains(&("url", "https://shop.example.org/pay".into())),
            "{got:?}"
        );
        let got =
            kinds("IBAN DE89 3704 0044 0532 0130 00, account 12345678901, file /etc/app/conf.yml");
        assert!(
            got.contains(&("iban", "DE89370400440532013000".into())),
            "{got:?}"
        );
        assert!(got.contains(&("account", "12345678901".into())), "{got:?}");
        assert!(
            got.contains(&("path", "/etc/app/conf.yml".into())),
            "{got:?}"
        );
    }

    #[test]
    fn a_url_is_one_value_however_it_is_written() {
        for text in [
            "https://evil-corp.com/login",
            "http://evil-corp.com/login/",
            "HTTPS://user@www.Evil-Corp.COM/Login?next=1#top",
            "see evil-corp.com/login.",
            "see www.evil-corp.com/login",
        ] {
            let got = kinds(text);
            assert!(
                got.contains(&("url", "https://evil-corp.com/login".into())),
                "{text}: {got:?}"
            );
            assert!(
                got.contains(&("domain", "evil-corp.com".into())),
                "{text}: {got:?}"
            );
        }
        // A host alone is a domain and the URL of its root.
        let got = kinds("pay at evil-corp.shop today");
        assert!(
            got.contains(&("domain", "evil-corp.shop".into())),
            "{got:?}"
        );
        assert!(
            got.contains(&("url", "https://evil-corp.shop".into())),
            "{got:?}"
        );
    }

    #[test]
    fn an_iban_shaped_token_is_one_value_in_any_case_and_grouping() {
        for text in [
            "pay GB12ABCD12345612345678 now",
            "pay gb12abcd12345612345678 now",
            "pay GB12 ABCD 1234 5612 3456 78 by Friday",
            "pay gb12-abcd-1234-5612-3456-78.",
        ] {
            let got = kinds(text);
            assert_eq!(
                got,
                vec![("iban", "GB12ABCD12345612345678".to_string())],
                "{text}"
            );
        }
        // A valid IBAN in lowercase (no checksum is needed, but it is one).
        assert_eq!(
            kinds("fr76 3000 6000 0112 3456 7890 189"),
            vec![("iban", "FR7630006000011234567890189".to_string())]
        );
        // Words after the groups are not part of it; a token with too few digits is none.
        assert_eq!(
            kinds("to GB12 ABCD 1234 5612 3456 7812 DEAR SIR"),
            vec![("iban", "GB12ABCD123456123456781".to_string() + "2")]
        );
        assert!(kinds("code ab12cdefghijklmn").is_empty());
    }

    #[test]
    fn a_phone_number_has_one_key_however_it_is_written() {
        let phone_keys = |text: &str| -> Vec<String> {
            extract(text)
                .iter()
                .filter_map(|f| match f.kind {
                    "phone" => Some(key("phone", &f.value)),
                    _ => phone_key_of_account(f.kind, &f.value),
                })
                .collect()
        };
        for text in [
            "+1 (415) 555-0123",
            "(415) 555-0123",
            "415-555-0123",
            "415.555.0123",
            "4155550123",
            "+14155550123",
        ] {
            assert_eq!(phone_keys(text), vec!["phone:155550123"], "{text}");
        }
        for text in ["+44 20 7946 0958", "0044 20 7946 0958", "020 7946 0958"] {
            assert_eq!(phone_keys(text), vec!["phone:079460958"], "{text}");
        }
        assert_ne!(key("phone", "14155550123"), key("phone", "14155550124"));
    }

    #[test]
    fn a_text_full_of_values_is_read_in_linear_time() {
        // 1 MiB of values: a check of each against all the others found before would take
        // minutes (it took 39 s in a release build for the e-mails).
        const SIZE: usize = 1 << 20;
        for unit in [
            "a@b.io ",
            "x.com ",
            "/a/b ",
            "GB12ABCD12345612345678 ",
            "gb12 abcd 1234 5612 3456 78 ",
            "+1 415 555 0123, ",
            "12345678 x ",
        ] {
            let text = unit.repeat(SIZE / unit.len());
            let started = std::time::Instant::now();
            let found = extract(&text).len();
            let took = started.elapsed();
            assert!(found > 0, "{unit}");
            assert!(took.as_secs() < 20, "{took:?} for {unit:?}");
        }
    }

    #[test]
    fn short_numbers_and_plain_words_are_not_values() {
        assert!(kinds("order 1234 costs 49.90 on 2024-01-15").is_empty());
        assert!(kinds("please book a table for two").is_empty());
        assert!(kinds("see notes.txt and main.rs").is_empty());
    }
}
