//! Reading arguments: the string leaves of an arguments object (with the key each sits under),
//! the value at a dotted path, and numbers written as numbers or as strings.

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

/// The value at a dotted path (`payee.iban`; a segment that is a number indexes an array).
pub fn at_path<'a>(args: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(args, |v, seg| match v {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A number given as a JSON number or as a string such as `"750"`, `"$1,250.50"` or
/// `"750 USD"`.
pub fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let cleaned: String = s
                .trim()
                .trim_start_matches(['$', '€', '£'])
                .split_whitespace()
                .next()?
                .chars()
                .filter(|c| *c != ',')
                .collect();
            cleaned.parse().ok().filter(|f: &f64| f.is_finite())
        }
        _ => None,
    }
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
    let authority = rest.split(['/', '?', '#']).next()?;
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
}
