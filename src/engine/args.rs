//! Reading arguments: the string leaves of an arguments object (with the key each sits under),
//! the value at a dotted path, numbers written as numbers or as strings, and keys an object
//! holds twice.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The most leaves looked at in one arguments object; the rest is ignored (bodies are capped
/// at 1 MiB anyway, this bounds the work per rule).
pub const MAX_LEAVES: usize = 10_000;

/// A string somewhere in the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringLeaf<'a> {
    /// JSON Pointer to it (`/to/0`).
    pub path: String,
    /// The nearest object key above it, lowercased (`to` for `/to/0`; empty at the root).
    pub key: String,
    /// The string.
    pub value: &'a str,
}

/// Every string in `args`, depth first, at most [`MAX_LEAVES`].
pub fn string_leaves(args: &Value) -> Vec<StringLeaf<'_>> {
    let mut out = Vec::new();
    walk(args, String::new(), "", &mut out);
    out
}

fn walk<'a>(v: &'a Value, path: String, key: &str, out: &mut Vec<StringLeaf<'a>>) {
    if out.len() >= MAX_LEAVES {
        return;
    }
    match v {
        Value::String(s) => out.push(StringLeaf {
            path,
            key: key.to_ascii_lowercase(),
            value: s,
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{path}/{i}"), key, out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                walk(item, format!("{path}/{escaped}"), k, out);
            }
        }
        _ => {}
    }
}

/// The most repeated keys [`duplicate_keys`] reports for one text.
pub const MAX_DUPLICATES: usize = 20;

/// JSON Pointers to the keys that occur more than once in the same object of the JSON `text`
/// (once per extra occurrence, at most [`MAX_DUPLICATES`]). Parsers disagree on which of the
/// values counts (serde_json, and so every rule here, and JavaScript take the last; others take
/// the first or refuse), so `{"command": "rm -rf /", "command": "ls"}` can mean one thing to the
/// check and another to the tool that runs it. Empty when there are none or `text` is not JSON.
pub fn duplicate_keys(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let walked = Repeats {
        path: String::new(),
        out: &mut out,
    }
    .deserialize(&mut de);
    if walked.is_err() {
        return Vec::new();
    }
    out
}

/// Walks one JSON value for [`duplicate_keys`], without building it.
struct Repeats<'o> {
    /// JSON Pointer to the value.
    path: String,
    out: &'o mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Repeats<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Repeats<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Repeats { path, out } = self;
        let mut i = 0usize;
        while seq
            .next_element_seed(Repeats {
                path: format!("{path}/{i}"),
                out: &mut *out,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Repeats { path, out } = self;
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let here = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
            if !seen.insert(key) && out.len() < MAX_DUPLICATES {
                out.push(here.clone());
            }
            map.next_value_seed(Repeats {
                path: here,
                out: &mut *out,
            })?;
        }
        Ok(())
    }
}

/// The value at a dotted path (`payee.iban`; a segment that is a number indexes an array).
pub fn at_path<'a>(args: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(args, |v, seg| match v {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A number given as a JSON number or as a string such as `"750"`, `"$1,250.50"`, `"750 USD"`,
/// `"USD 750"`, `"750 €"`, `"1.250,50 EUR"` or `"1 250,50"`: the lowest reading of
/// [`number_range`].
pub fn as_number(v: &Value) -> Option<f64> {
    number_range(v).map(|(low, _)| low)
}

/// The readings of a number given as a JSON number or as a string (see [`as_number`]), lowest
/// and highest. They differ only for a string whose one separator is a dot before three digits
/// (`"1.000"`: one in English, a thousand in German): a maximum is checked against the highest,
/// a minimum against the lowest. Thousands separators are `,`, `.`, spaces and `'` between
/// groups of three digits; the decimal separator is the last `.` or `,` (a comma before three
/// digits and no decimals is a thousands separator: `"1,000"` is a thousand).
pub fn number_range(v: &Value) -> Option<(f64, f64)> {
    match v {
        Value::Number(n) => n.as_f64().map(|f| (f, f)),
        Value::String(s) => parse_number_text(s),
        _ => None,
    }
}

/// Currency codes written before or glued after an amount (`USD 750`, `US$750`, `750EUR`).
const CURRENCY_CODES: &[&str] = &[
    "usd", "eur", "gbp", "chf", "jpy", "cad", "aud", "nzd", "sek", "nok", "dkk", "inr", "cny", "us",
];

fn parse_number_text(s: &str) -> Option<(f64, f64)> {
    // A sign and a currency sign or code, in either order, before the number.
    let mut t = s.trim();
    let mut negative = false;
    loop {
        let before = t.len();
        if let Some(rest) = t.strip_prefix(['-', '\u{2212}']) {
            negative = !negative;
            t = rest;
        } else if let Some(rest) = t.strip_prefix('+') {
            t = rest;
        }
        t = t.trim_start_matches(['$', '€', '£', '¥', '₹']);
        let letters = t.bytes().take_while(u8::is_ascii_alphabetic).count();
        if CURRENCY_CODES.contains(&t[..letters].to_ascii_lowercase().as_str()) {
            t = &t[letters..];
        }
        t = t.trim_start();
        if t.len() == before {
            break;
        }
    }
    let sign = if negative { -1.0 } else { 1.0 };
    let b = t.as_bytes();
    let digits_at = |i: usize| {
        b[i.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    // The leading digits, then groups of three after one kind of separator (not after a
    // leading zero: 0.125 is a fraction).
    let lead = digits_at(0);
    if lead == 0 {
        return None;
    }
    let mut int = String::from(&t[..lead]);
    let mut i = lead;
    let mut group_sep: Option<char> = None;
    let mut groups = 0;
    let may_group = lead <= 3 && b[0] != b'0';
    while let Some(c) = t[i..].chars().next().filter(|_| may_group) {
        let next = i + c.len_utf8();
        if !matches!(c, ',' | '.' | ' ' | '\'' | '\u{A0}' | '\u{202F}')
            || digits_at(next) != 3
            || group_sep.is_some_and(|g| g != c)
        {
            break;
        }
        group_sep = Some(c);
        groups += 1;
        int.push_str(&t[next..next + 3]);
        i = next + 3;
    }
    // A decimal part after `.` or `,` (not the thousands separator).
    let mut frac = "";
    if let Some(c @ ('.' | ',')) = t[i..].chars().next()
        && group_sep != Some(c)
        && digits_at(i + 1) > 0
    {
        frac = &t[i + 1..i + 1 + digits_at(i + 1)];
        i += 1 + frac.len();
    }
    // An exponent (`7.5e2`), only on a number without groups.
    let mut exponent = "";
    if groups == 0
        && let Some(rest) = t[i..].strip_prefix(['e', 'E'])
    {
        let signed = usize::from(rest.starts_with(['+', '-']));
        let n = digits_at(i + 1 + signed);
        if n > 0 {
            exponent = &t[i..i + 1 + signed + n];
            i += 1 + signed + n;
        }
    }
    // What is glued to the number: nothing, a currency, or a multiplier (`10k`, `1.5m`).
    let glued = t[i..]
        .split_whitespace()
        .next()
        .filter(|_| !t[i..].starts_with(char::is_whitespace));
    let scale = match glued.map(|g| g.trim_matches(['$', '€', '£', '¥', '₹', '.', ',', ';', ')']))
    {
        None => 1.0,
        Some(g) => match g.to_ascii_lowercase().as_str() {
            "" => 1.0,
            code if CURRENCY_CODES.contains(&code) => 1.0,
            "k" => 1e3,
            "m" | "mn" | "mio" => 1e6,
            "bn" => 1e9,
            _ => return None,
        },
    };
    let value = |int: &str, frac: &str| -> Option<f64> {
        format!(
            "{int}.{}{exponent}",
            if frac.is_empty() { "0" } else { frac }
        )
        .parse::<f64>()
        .ok()
        .map(|f| sign * f * scale)
        .filter(|f| f.is_finite())
    };
    let read = value(&int, frac)?;
    if groups == 1 && group_sep == Some('.') && frac.is_empty() {
        // "1.000": a decimal point in English, a thousands separator in German.
        let decimal = value(&t[..lead], &int[lead..])?;
        return Some((read.min(decimal), read.max(decimal)));
    }
    Some((read, read))
}

/// The host of a URL (`scheme://[user@]host[:port][/…]`), lowercased, without brackets for
/// IPv6; `None` if `s` is not such a URL.
pub fn url_host(s: &str) -> Option<String> {
    let (scheme, rest) = s.trim().split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    // A backslash ends the authority as `/` does (browsers read `https://a.example\@b.example`
    // as a.example).
    let authority = rest.split(['/', '?', '#', '\\']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        host_port.split(':').next()?
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Whether `host` is `domain` or one of its subdomains.
pub fn in_domain(host: &str, domain: &str) -> bool {
    host == domain || host.strip_suffix(domain).is_some_and(|h| h.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_an_object_holds_twice_are_found_at_any_depth() {
        let cases: [(&str, &[&str]); 7] = [
            (r#"{"command": "rm -rf /", "command": "ls"}"#, &["/command"]),
            (r#"{"a": 1, "b": 2}"#, &[]),
            (r#"{"a": {"x": 1}, "b": {"x": 2}}"#, &[]),
            (
                r#"{"p": [{"k": 1, "k": 2}], "q/r": {"~": 0, "~": 1}}"#,
                &["/p/0/k", "/q~1r/~0"],
            ),
            (r#"{"a": 1, "a": 2, "a": 3}"#, &["/a", "/a"]),
            (r#"[1, "x", null, true, 2.5, -3]"#, &[]),
            ("not json", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(duplicate_keys(text), want.to_vec(), "{text}");
        }
        // Keys are compared after unescaping: "\u0061" is "a".
        assert_eq!(duplicate_keys(r#"{"a": 1, "\u0061": 2}"#), vec!["/a"]);
        let many: Vec<String> = (0..50).map(|i| format!("\"k\": {i}")).collect();
        let text = format!("{{{}}}", many.join(", "));
        assert_eq!(duplicate_keys(&text).len(), MAX_DUPLICATES);
    }

    #[test]
    fn string_leaves_carry_their_path_and_nearest_key() {
        let args = json!({"To": ["a@b.c", "d@e.f"], "body": {"text": "hi"}, "n": 1});
        let leaves = string_leaves(&args);
        let got: Vec<_> = leaves
            .iter()
            .map(|l| (l.path.as_str(), l.key.as_str(), l.value))
            .collect();
        assert_eq!(
            got,
            [
                ("/To/0", "to", "a@b.c"),
                ("/To/1", "to", "d@e.f"),
                ("/body/text", "text", "hi")
            ]
        );
    }

    #[test]
    fn a_dotted_path_reaches_nested_values_and_array_items() {
        let args = json!({"payee": {"iban": "DE89"}, "items": [{"qty": 2}]});
        assert_eq!(at_path(&args, "payee.iban"), Some(&json!("DE89")));
        assert_eq!(at_path(&args, "items.0.qty"), Some(&json!(2)));
        assert_eq!(at_path(&args, "payee.bic"), None);
    }

    #[test]
    fn url_hosts_are_found_behind_userinfo_ports_and_brackets() {
        for (url, want) in [
            ("https://Api.Example.com/v1?q=1", Some("api.example.com")),
            ("http://user:pw@evil.net:8080/x", Some("evil.net")),
            ("http://[::1]:80/", Some("::1")),
            (
                "https://evil.example\\@docs.example.com/",
                Some("evil.example"),
            ),
            ("ftp://files.example.org", Some("files.example.org")),
            ("example.com/path", None),
            ("mailto:a@b.c", None),
            ("://nohost", None),
        ] {
            assert_eq!(url_host(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn a_domain_covers_itself_and_its_subdomains_only() {
        assert!(in_domain("example.com", "example.com"));
        assert!(in_domain("api.example.com", "example.com"));
        assert!(!in_domain("evilexample.com", "example.com"));
        assert!(!in_domain("example.com.evil.net", "example.com"));
    }

    #[test]
    fn numbers_may_be_written_as_strings() {
        for (v, want) in [
            (json!(750), Some(750.0)),
            (json!("750"), Some(750.0)),
            (json!("$1,250.50"), Some(1250.5)),
            (json!("750 USD"), Some(750.0)),
            (json!("lots"), None),
            (json!(null), None),
        ] {
            assert_eq!(as_number(&v), want, "{v}");
        }
    }

    #[test]
    fn numbers_are_read_in_the_formats_people_write_money_in() {
        let range = |s: &str| number_range(&json!(s));
        for (s, want) in [
            ("USD 750", 750.0),
            ("US$750", 750.0),
            ("750$", 750.0),
            ("750 €", 750.0),
            ("€750", 750.0),
            ("-$750", -750.0),
            ("$-750", -750.0),
            ("1,250.50", 1250.5),
            ("1.250,50 EUR", 1250.5),
            ("EUR 1.250,50", 1250.5),
            ("1 250,50", 1250.5),
            ("1\u{A0}250", 1250.0),
            ("1'250.50", 1250.5),
            ("12,50", 12.5),
            ("1,000", 1000.0),
            ("1,000,000", 1_000_000.0),
            ("1.000.000", 1_000_000.0),
            ("1.000.000,00 €", 1_000_000.0),
            ("7.5e2", 750.0),
            ("0.125", 0.125),
            ("1234.567", 1234.567),
            ("750 dollars", 750.0),
            ("750USD", 750.0),
            ("10k", 10_000.0),
            ("$1.5m", 1_500_000.0),
            ("-3", -3.0),
        ] {
            assert_eq!(range(s), Some((want, want)), "{s}");
        }
        // One dot before three digits: one in English, a thousand in German.
        assert_eq!(range("1.000"), Some((1.0, 1000.0)));
        assert_eq!(range("EUR 1.000"), Some((1.0, 1000.0)));
        assert_eq!(as_number(&json!("1.000")), Some(1.0));
        for s in [
            "",
            "USD",
            "lots of money",
            "--",
            ".",
            "1e400",
            "10x",
            "12abc",
            "e5",
            "no 7",
        ] {
            assert_eq!(range(s), None, "{s}");
        }
    }
}
