//! Personal data in text: e-mail addresses, phone numbers, card numbers with a valid check
//! digit, IBANs with a valid checksum, national ids. Pure detectors for `prompt.personal_data`;
//! each favours precision over recall, so an amount, a date or an order id is not personal data.
//!
//! | kind | found | not found |
//! |---|---|---|
//! | `email` | `jane.doe+shop@example.co.uk` | `user@localhost` (no top-level domain) |
//! | `phone` | `+44 20 7946 0958`, `+14155550123`, `0044 20 7946 0958`, `(415) 555-0123`, `1-800-555-0199`, `415-555-0123`, `415.555.0123`, `020 7946 0958`, `06 12 34 56 78`: 9 to 15 digits, international (`+`, or `00` with separators) or national (3-3-4 digits, or a leading `0` then groups) | `0612345678` (a national number needs a separator), `2024-01-15`, `01.02.2024 10:30`, `1 000 000 000`, `ORD-555-123-4567` (glued to other text) |
//! | `card` | `4111 1111 1111 1111`, `4111-1111-1111-1111`, `378282246310005`: 13 to 19 digits starting with 2 to 6, in groups of four (or 4-6-5 / 4-6-4) or unseparated, with a valid Luhn check digit | `4111 1111 1111 1112` (bad check digit), a 20-digit id, `2024-01-15 2024-01-16` |
//! | `iban` | `DE89 3704 0044 0532 0130 00`, `GB82WEST12345698765432`: country code, mod-97 checksum, and the country's length when known | a lowercase IBAN, a wrong checksum |
//! | `national_id` | US SSN `123-45-6789` (area not 000, 666 or 9xx; group not 00; serial not 0000), UK NINO `AB 12 34 56 C` | `000-12-3456`, `123456789` (unformatted), `ORD-123-45-6789` |
//!
//! Overlapping matches keep the more specific kind (e-mail, then IBAN, card, national id,
//! phone). Matches are returned in text order.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

/// One piece of personal data found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiiMatch {
    /// `email`, `phone`, `card`, `iban` or `national_id`.
    pub kind: &'static str,
    /// The matched text, as written.
    pub text: String,
    /// Byte offset of the match in the text.
    pub start: usize,
    /// Byte offset just past the match.
    pub end: usize,
}

impl PiiMatch {
    /// The match with most of it hidden, for evidence: an e-mail keeps the first character of
    /// its local part and its domain (`j***@example.com`); the others keep their separators and
    /// last four characters (an IBAN also its country code): `**** **** **** 1111`.
    pub fn masked(&self) -> String {
        if self.kind == "email"
            && let Some((local, domain)) = self.text.split_once('@')
        {
            let first: String = local.chars().take(1).collect();
            return format!("{first}***@{domain}");
        }
        let total = self
            .text
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .count();
        let keep_head = if self.kind == "iban" { 2 } else { 0 };
        let mut seen = 0;
        self.text
            .chars()
            .map(|c| {
                if !c.is_ascii_alphanumeric() {
                    return c;
                }
                seen += 1;
                if seen <= keep_head || seen + 4 > total {
                    c
                } else {
                    '*'
                }
            })
            .collect()
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)[a-z0-9][a-z0-9._%+-]*@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,24}\b",
    )
    .expect("static regex")
});

static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b").expect("static regex"));

static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("static regex"));

static SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d{3})-(\d{2})-(\d{4})\b").expect("static regex"));

static NINO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
        .expect("static regex")
});

/// International (`+` or `00` and a country code), North American (3-3-4, optionally after
/// `1-`) and trunk-prefixed national (`0` then groups, with at least one separator) numbers.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\+\(?[1-9][\d ().-]{6,22}\d",
        r"|\b00[1-9]\d{0,2}[ .-]\(?\d{1,4}\)?(?:[ .-]\d{2,8}){1,4}\b",
        r"|(?:\b1[ .-])?(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b",
        r"|(?:\(0[1-9]\d{0,3}\)[ .-]?|\b0[1-9]\d{0,3}[ .-])\d{2,8}(?:[ .-]\d{2,8}){0,4}\b",
    ))
    .expect("static regex")
});

/// Every piece of personal data in `text`, in text order.
pub fn find(text: &str) -> Vec<PiiMatch> {
    // In priority order: an overlapping match of a later kind is dropped.
    let mut candidates: Vec<PiiMatch> = Vec::new();
    candidates.extend(
        EMAIL
            .find_iter(text)
            .map(|m| hit("email", text, m.start(), m.end())),
    );
    // An IBAN-shaped token with a bad checksum is reported as nothing, not as a phone number.
    candidates.extend(IBAN.find_iter(text).map(|m| {
        iban(text, m.start(), m.end()).unwrap_or_else(|| hit(RESERVED, text, m.start(), m.end()))
    }));
    candidates.extend(
        CARD.find_iter(text)
            .filter(|m| bounded(text, m.start(), m.end()) && is_card(m.as_str()))
            .map(|m| hit("card", text, m.start(), m.end())),
    );
    candidates.extend(
        SSN.captures_iter(text)
            .filter_map(|c| {
                c.get(0)
                    .filter(|m| is_ssn(&c) && bounded(text, m.start(), m.end()))
            })
            .map(|m| hit("national_id", text, m.start(), m.end())),
    );
    candidates.extend(
        NINO.captures_iter(text)
            .filter(|c| {
                let prefix = c.get(1).map_or("", |p| p.as_str());
                !matches!(prefix, "BG" | "GB" | "KN" | "NK" | "NT" | "TN" | "ZZ")
            })
            .filter_map(|c| c.get(0))
            .map(|m| hit("national_id", text, m.start(), m.end())),
    );
    candidates.extend(
        PHONE
            .find_iter(text)
            .filter(|m| bounded(text, m.start(), m.end()) && is_phone(m.as_str()))
            .map(|m| hit("phone", text, m.start(), m.end())),
    );
    // The kept matches are disjoint: the one that starts last before a candidate ends is the
    // only one that can overlap it (a map keeps this logarithmic, so many matches stay linear).
    let mut taken: BTreeMap<usize, usize> = BTreeMap::new();
    let mut kept: Vec<PiiMatch> = Vec::new();
    for c in candidates {
        let overlaps = taken
            .range(..c.end)
            .next_back()
            .is_some_and(|(_, &end)| end > c.start);
        if !overlaps {
            taken.insert(c.start, c.end);
            kept.push(c);
        }
    }
    kept.retain(|m| m.kind != RESERVED);
    kept.sort_by_key(|m| m.start);
    kept
}

/// The kind of a span that looked like personal data but failed its check.
const RESERVED: &str = "";

fn hit(kind: &'static str, text: &str, start: usize, end: usize) -> PiiMatch {
    PiiMatch {
        kind,
        text: text[start..end].to_string(),
        start,
        end,
    }
}

/// Whether a number at `start..end` stands alone: not glued to letters or digits before it
/// by `-`, `.`, `/` or `_` (`ORD-555-123-4567`), nor to digits after it by those or `:` and
/// `,` (dates, times, decimals).
fn bounded(text: &str, start: usize, end: usize) -> bool {
    let mut before = text[..start].chars().rev();
    match (before.next(), before.next()) {
        (Some(c), _) if c.is_alphanumeric() || c == '_' || c == '+' => return false,
        (Some('-' | '.' | '/'), Some(d)) if d.is_alphanumeric() => return false,
        _ => {}
    }
    let mut after = text[end..].chars();
    match (after.next(), after.next()) {
        (Some(c), _) if c.is_alphanumeric() || c == '_' => false,
        (Some('-' | '.' | '/' | ':' | ','), Some(d)) if d.is_ascii_digit() => false,
        _ => true,
    }
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// 13 to 19 digits starting with 2 to 6, grouped like a card, with a valid Luhn check digit.
fn is_card(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) || !matches!(d.first(), Some(2..=6)) {
        return false;
    }
    let groups: Vec<usize> = s.split([' ', '-']).map(str::len).collect();
    let grouped = match groups.as_slice() {
        [_] => true,
        [4, 6, 5] | [4, 6, 4] => true,
        [init @ .., last] => init.iter().all(|g| *g == 4) && (1..=4).contains(last),
        [] => false,
    };
    grouped && luhn(&d)
}

/// The Luhn check: doubling every second digit from the right, the sum is a multiple of 10.
fn luhn(d: &[u32]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn is_ssn(c: &regex::Captures<'_>) -> bool {
    let part = |i: usize| c.get(i).map_or("", |m| m.as_str());
    let (area, group, serial) = (part(1), part(2), part(3));
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// 9 to 15 digits, at most one `+` (first), balanced parentheses, no doubled separators.
fn is_phone(s: &str) -> bool {
    let n = digits(s).len();
    if !(9..=15).contains(&n) {
        return false;
    }
    let opens = s.matches('(').count();
    if opens != s.matches(')').count() || opens > 1 {
        return false;
    }
    let seps = |c: char| matches!(c, ' ' | '.' | '-');
    !s.chars()
        .zip(s.chars().skip(1))
        .any(|(a, b)| seps(a) && seps(b))
}

/// Lengths of the IBANs of the countries that issue them.
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

/// An IBAN at the start of `text[start..end]`: cut to its country's length (the regex may
/// have run into the next word) and checked with mod 97.
fn iban(text: &str, start: usize, end: usize) -> Option<PiiMatch> {
    let candidate = &text[start..end];
    let country = candidate.get(..2)?;
    let len = IBAN_LENGTHS
        .iter()
        .find(|(c, _)| *c == country)
        .map(|(_, l)| *l);
    let compact: Vec<(usize, char)> = candidate
        .char_indices()
        .filter(|(_, c)| c.is_ascii_alphanumeric())
        .collect();
    let take = match len {
        Some(l) if compact.len() >= l => l,
        Some(_) => return None,
        None => compact.len(),
    };
    let (last_index, last_char) = *compact.get(take.checked_sub(1)?)?;
    let end = start + last_index + last_char.len_utf8();
    if !bounded_alnum(text, end) {
        return None;
    }
    let chars: String = compact[..take].iter().map(|(_, c)| *c).collect();
    mod97(&chars).then(|| hit("iban", text, start, end))
}

/// Whether `end` is not in the middle of a word.
fn bounded_alnum(text: &str, end: usize) -> bool {
    !text[end..]
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
}

/// The IBAN checksum: the first four characters moved to the end, letters as 10 to 35, the
/// number mod 97 is 1.
fn mod97(iban: &str) -> bool {
    let rearranged = iban.chars().skip(4).chain(iban.chars().take(4));
    let mut rem: u32 = 0;
    for c in rearranged {
        let Some(v) = c.to_digit(36) else {
            return false;
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(&'static str, String)> {
        find(text).into_iter().map(|m| (m.kind, m.text)).collect()
    }

    #[test]
    fn personal_data_that_is_found() {
        let cases = [
            (
                "write to jane.doe+shop@example.co.uk today",
                "email",
                "jane.doe+shop@example.co.uk",
            ),
            ("Email: JOHN@EXAMPLE.COM.", "email", "JOHN@EXAMPLE.COM"),
            ("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
            ("call +14155550123", "phone", "+14155550123"),
            ("call +1 (415) 555-0123", "phone", "+1 (415) 555-0123"),
            ("call (415) 555-0123", "phone", "(415) 555-0123"),
            ("call 415-555-0123.", "phone", "415-555-0123"),
            ("call 415.555.0123", "phone", "415.555.0123"),
            ("call 123-456-7890", "phone", "123-456-7890"),
            ("call 1-800-555-0199", "phone", "1-800-555-0199"),
            ("call 0044 20 7946 0958", "phone", "0044 20 7946 0958"),
            ("Tel: +33 (0)6 12 34 56 78", "phone", "+33 (0)6 12 34 56 78"),
            ("ring 020 7946 0958", "phone", "020 7946 0958"),
            ("portable 06 12 34 56 78", "phone", "06 12 34 56 78"),
            ("mobile 07700 900123", "phone", "07700 900123"),
            (
                "card 4111 1111 1111 1111 exp 12/29",
                "card",
                "4111 1111 1111 1111",
            ),
            ("card 4111-1111-1111-1111", "card", "4111-1111-1111-1111"),
            ("card:4242424242424242", "card", "4242424242424242"),
            ("amex 3782 822463 10005", "card", "3782 822463 10005"),
            ("amex 378282246310005", "card", "378282246310005"),
            (
                "iban DE89 3704 0044 0532 0130 00 please",
                "iban",
                "DE89 3704 0044 0532 0130 00",
            ),
            (
                "iban GB82WEST12345698765432",
                "iban",
                "GB82WEST12345698765432",
            ),
            (
                "IBAN: FR1420041010050500013M02606.",
                "iban",
                "FR1420041010050500013M02606",
            ),
            ("ssn 123-45-6789", "national_id", "123-45-6789"),
            ("NINO AB 12 34 56 C", "national_id", "AB 12 34 56 C"),
            ("NINO AB123456C", "national_id", "AB123456C"),
        ];
        for (text, kind, matched) in cases {
            assert_eq!(kinds(text), vec![(kind, matched.to_string())], "{text}");
        }
    }

    #[test]
    fn text_that_is_not_personal_data() {
        let cases = [
            "card 4111 1111 1111 1112",
            "card 4111111111111112",
            "order ORD-2024-000123",
            "order #100023456789",
            "order 12345678901234567890",
            "on 2024-01-15 at 10:30",
            "on 15/01/2024 and 01.02.2024 10:30",
            "2024-01-15 2024-01-16",
            "total $1,234,567.89",
            "population 1 000 000 000",
            "ref ORD-555-123-4567",
            "id 0612345678",
            "ssn 000-12-3456 or 666-12-3456 or 912-34-5678 or 123-00-4567",
            "plain 123456789",
            "host user@localhost",
            "iban DE89 3704 0044 0532 0130 01",
            "iban de89370400440532013000",
            "version 1.2.3 build 4567",
            "trace 3f2b8c1e-0d4a-4c6e-9b7a-2e5f1a8d9c04",
            "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "at 2024-01-15T14:30:45.123Z, unix 1705329046.2, ms 1700000000123",
            "ids 12345-67890-12345 and ORD-1-800-555-0199",
            "ip 192.168.100.200",
            "NINO GB 12 34 56 C",
            "",
        ];
        for text in cases {
            assert_eq!(kinds(text), vec![], "{text}");
        }
    }

    #[test]
    fn several_matches_come_in_text_order_and_overlaps_keep_the_specific_kind() {
        let got = kinds("a@b.io, 4111 1111 1111 1111 and +33 6 12 34 56 78");
        assert_eq!(
            got,
            vec![
                ("email", "a@b.io".to_string()),
                ("card", "4111 1111 1111 1111".to_string()),
                ("phone", "+33 6 12 34 56 78".to_string()),
            ]
        );
        // A phone number inside an e-mail address is part of the address.
        assert_eq!(
            kinds("4155550123@txt.example.com"),
            vec![("email", "4155550123@txt.example.com".to_string())]
        );
    }

    #[test]
    fn masking_keeps_little() {
        let masked = |text: &str| find(text).first().map(PiiMatch::masked).expect("one match");
        assert_eq!(masked("jane@example.com"), "j***@example.com");
        assert_eq!(masked("4111 1111 1111 1111"), "**** **** **** 1111");
        assert_eq!(masked("+44 20 7946 0958"), "+** ** **** 0958");
        assert_eq!(masked("DE89370400440532013000"), "DE****************3000");
        assert_eq!(masked("123-45-6789"), "***-**-6789");
    }

    #[test]
    fn luhn_and_mod97() {
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("79927398710")));
        assert!(mod97("GB82WEST12345698765432"));
        assert!(!mod97("GB82WEST12345698765433"));
    }
}
