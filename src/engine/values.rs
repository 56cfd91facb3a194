//! Consequential values in text: the things an action's important arguments are made of and
//! an attacker would want to choose. Used to follow where an action's arguments came from
//! (`context.*` rules): every event's text is indexed by the values it contains, and an
//! action's arguments are looked up in that index.
//!
//! Kinds, and how a value is normalised so that the same value matches however it is written:
//! - `email`: an e-mail address, lowercased;
//! - `domain`: the host of a URL, or the domain of an e-mail address, lowercased, without a
//!   leading `www.`;
//! - `url`: a URL, lowercased up to its path, without a trailing `/`; a host written without a
//!   scheme (`www.example.com`, `pay.example.net`) counts as a `domain`;
//! - `iban`: an IBAN (valid checksum, spaces allowed) or an IBAN-shaped token (two letters, two
//!   digits, 10 to 30 letters and digits, whatever its checksum), uppercase, no spaces;
//! - `phone`: a phone number, its digits only;
//! - `account`: a run of 8 to 30 digits (account and card numbers), digits only;
//! - `path`: an absolute file path.
//!
//! Amounts are not followed: the same numbers occur everywhere, so a match would mean nothing.

use std::sync::LazyLock;

use regex::Regex;

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
/// common top-level domain, so file names like `notes.txt` are not taken for hosts.
static BARE_HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:www\.[a-z0-9\-]+(?:\.[a-z0-9\-]+)+|(?:[a-z0-9\-]+\.)+(?:com|net|org|io|ai|dev|info|biz|co|app|xyz|online|site|uk|de|fr|eu|us|ru|cn)\b)",
    )
    .expect("static regex")
});

/// IBAN-shaped tokens whatever their checksum: an attacker's account need not be valid to be
/// the attacker's.
static IBAN_LIKE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b").expect("static regex"));
static PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:^|[\s"'=(])(/[A-Za-z0-9._\-]+(?:/[A-Za-z0-9._\-]+)+)"#).expect("static regex")
});

fn domain(host: &str) -> String {
    host.trim_start_matches("www.").to_ascii_lowercase()
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
        if let Some(host) = url_host(url) {
            out.push(Found {
                kind: "domain",
                value: domain(&host),
                start: m.start(),
                end: m.start() + url.len(),
            });
            let normalised = url
                .split(['?', '#'])
                .next()
                .unwrap_or(url)
                .trim_end_matches('/');
            out.push(Found {
                kind: "url",
                value: normalised.to_ascii_lowercase(),
                start: m.start(),
                end: m.start() + url.len(),
            });
        }
    }
    for m in BARE_HOST.find_iter(text) {
        if !out.iter().any(|f| f.start <= m.start() && m.end() <= f.end) {
            out.push(Found {
                kind: "domain",
                value: domain(m.as_str()),
                start: m.start(),
                end: m.end(),
            });
        }
    }
    for m in IBAN_LIKE.find_iter(text) {
        if !out.iter().any(|f| f.start <= m.start() && m.end() <= f.end) {
            out.push(Found {
                kind: "iban",
                value: m.as_str().to_string(),
                start: m.start(),
                end: m.end(),
            });
        }
    }
    for m in DIGITS.find_iter(text) {
        let digits: String = m.as_str().chars().filter(char::is_ascii_digit).collect();
        if out.iter().any(|f| f.start <= m.start() && m.end() <= f.end) {
            continue; // part of an IBAN, phone or URL already found
        }
        out.push(Found {
            kind: "account",
            value: digits,
            start: m.start(),
            end: m.end(),
        });
    }
    for c in PATH.captures_iter(text) {
        if let Some(p) = c.get(1)
            && !out
                .iter()
                .any(|f| f.kind == "url" && f.start <= p.start() && p.end() <= f.end)
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
            got.contains(&("url", "https://www.shop.example.org/pay".into())),
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
    fn short_numbers_and_plain_words_are_not_values() {
        assert!(kinds("order 1234 costs 49.90 on 2024-01-15").is_empty());
        assert!(kinds("please book a table for two").is_empty());
        assert!(kinds("see notes.txt and main.rs").is_empty());
    }
}
