//! The policy's constraints on arguments (`[[section.args]]`, block), for tools matching the
//! section's `tool` glob and the argument at its dotted `path`. An absent argument is left to
//! `schema.mismatch`; a value of the wrong kind for a constraint blocks (fail closed). Ids:
//! - `args.max`, `args.min`: numbers (also numbers written as strings, `"$750"`) above/below;
//! - `args.deny_pattern`: a string matching any `deny_patterns` regex;
//! - `args.allow_pattern`: a string matching none of the `allow_patterns` regexes;
//! - `args.one_of`: a value equal to none of `one_of`;
//! - `args.email_domain`: an e-mail address outside `email_domains` (and their subdomains):
//!   the domain after every `@` counts (`"a@example.com"@evil.example` is evil.example's), and
//!   a value with no `@` is not an address;
//! - `args.url_domain`: a URL whose host is outside `url_domains` (and their subdomains), or a
//!   value that is not a URL;
//! - `args.path_root`: a file path outside every `path_roots` entry, with a `..` component,
//!   starting with `~`, or a Windows drive or network path (`C:\…`, `\\server\…`). A relative
//!   path is taken relative to the first root.
//!
//! Strings inside arrays are checked one by one (a list of recipients, say).

use serde_json::{Value, json};

use crate::engine::args::{at_path, in_domain, number_range, url_host};
use crate::engine::{CheckContext, Finding, Rule, Severity};
use crate::policy::ArgRule;

/// See the module doc.
pub struct ArgConstraints;

impl Rule for ArgConstraints {
    fn id(&self) -> &'static str {
        "args"
    }

    fn checked(&self) -> &'static str {
        "argument constraints"
    }

    fn evaluate(&self, ctx: &CheckContext<'_>) -> Vec<Finding> {
        let tool = ctx.action.tool_name;
        let mut out = Vec::new();
        for rule in ctx.policy.args.iter().filter(|r| r.tool.matches(tool)) {
            if let Some(value) = at_path(ctx.action.arguments, &rule.path) {
                check(rule, value, &mut out);
            }
        }
        out
    }
}

fn finding(rule: &'static str, message: String, evidence: Value) -> Finding {
    Finding {
        rule,
        severity: Severity::Block,
        message,
        evidence,
    }
}

/// The strings of a value: itself, or the strings of an array.
fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn short(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

fn check(rule: &ArgRule, value: &Value, out: &mut Vec<Finding>) {
    let arg = rule.path.as_str();
    if rule.max.is_some() || rule.min.is_some() {
        // An ambiguous string ("1.000": one or a thousand) is held to a maximum by its highest
        // reading and to a minimum by its lowest.
        match number_range(value) {
            Some((low, high)) => {
                let n = high;
                if let Some(max) = rule.max.filter(|m| n > *m) {
                    out.push(finding(
                        "args.max",
                        format!("argument {arg} is {n}, above the policy's maximum of {max}"),
                        json!({"argument": arg, "value": n, "limit": max}),
                    ));
                }
                let n = low;
                if let Some(min) = rule.min.filter(|m| n < *m) {
                    out.push(finding(
                        "args.min",
                        format!("argument {arg} is {n}, below the policy's minimum of {min}"),
                        json!({"argument": arg, "value": n, "limit": min}),
                    ));
                }
            }
            None => out.push(finding(
                if rule.max.is_some() {
                    "args.max"
                } else {
                    "args.min"
                },
                format!("argument {arg} must be a number for the policy's limit"),
                json!({"argument": arg, "value": value}),
            )),
        }
    }
    let texts = strings(value);
    for s in &texts {
        if let Some(rx) = rule.deny_patterns.iter().find(|rx| rx.regex.is_match(s)) {
            out.push(finding(
                "args.deny_pattern",
                format!("argument {arg} matches the denied pattern {:?}", rx.text),
                json!({"argument": arg, "value": short(s), "pattern": rx.text}),
            ));
        }
        if !rule.allow_patterns.is_empty()
            && !rule.allow_patterns.iter().any(|rx| rx.regex.is_match(s))
        {
            let patterns: Vec<&str> = rule
                .allow_patterns
                .iter()
                .map(|rx| rx.text.as_str())
                .collect();
            out.push(finding(
                "args.allow_pattern",
                format!("argument {arg} matches none of the allowed patterns"),
                json!({"argument": arg, "value": short(s), "patterns": patterns}),
            ));
        }
    }
    if let Some(options) = &rule.one_of
        && !options.iter().any(|o| same(o, value))
    {
        out.push(finding(
            "args.one_of",
            format!("argument {arg} is not one of the values the policy allows"),
            json!({"argument": arg, "value": value, "allowed": options}),
        ));
    }
    if let Some(domains) = &rule.email_domains {
        for s in &texts {
            // Every `@` addresses the domain after it: `a@example.com@evil.example` and
            // `"a@example.com"@evil.example` go to evil.example, and a domain written with
            // look-alike letters is no allowed domain.
            let mut addressed = false;
            for (at, _) in s.match_indices('@') {
                addressed = true;
                let domain: String = s[at + 1..]
                    .chars()
                    .take_while(|c| {
                        !c.is_whitespace() && !matches!(c, ',' | ';' | '>' | ')' | '"' | '\'' | '@')
                    })
                    .collect::<String>()
                    .trim_end_matches('.')
                    .to_lowercase();
                let allowed = domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                    && domains.iter().any(|d| in_domain(&domain, d));
                if !allowed {
                    out.push(finding(
                        "args.email_domain",
                        format!("argument {arg} addresses {domain:?} outside the allowed domains"),
                        json!({"argument": arg, "value": short(s), "domain": domain, "allowed": domains}),
                    ));
                    break;
                }
            }
            if !addressed {
                out.push(finding(
                    "args.email_domain",
                    format!(
                        "argument {arg} must be an e-mail address for the policy's domain list"
                    ),
                    json!({"argument": arg, "value": short(s), "allowed": domains}),
                ));
            }
        }
    }
    if let Some(domains) = &rule.url_domains {
        for s in &texts {
            match url_host(s) {
                Some(host) if domains.iter().any(|d| in_domain(&host, d)) => {}
                Some(host) => out.push(finding(
                    "args.url_domain",
                    format!("argument {arg} points to {host}, outside the allowed domains"),
                    json!({"argument": arg, "value": short(s), "host": host, "allowed": domains}),
                )),
                None => out.push(finding(
                    "args.url_domain",
                    format!("argument {arg} must be a URL for the policy's domain list"),
                    json!({"argument": arg, "value": short(s), "allowed": domains}),
                )),
            }
        }
    }
    if let Some(roots) = &rule.path_roots {
        for s in &texts {
            if let Some(why) = outside_roots(s, roots) {
                out.push(finding(
                    "args.path_root",
                    format!("argument {arg} {why}"),
                    json!({"argument": arg, "value": short(s), "roots": roots}),
                ));
            }
        }
    }
}

/// Equality of JSON values, numbers compared by value (`5` equals `5.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Why `path` is outside every root, or `None` when it is inside one.
fn outside_roots(path: &str, roots: &[String]) -> Option<String> {
    let p = path.trim();
    if p.starts_with('~') {
        return Some("starts with ~, outside the allowed roots".into());
    }
    // A Windows drive or network path is absolute, never under a root written with `/`.
    let b = p.as_bytes();
    if p.starts_with("\\\\") || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':') {
        return Some("is a drive or network path, outside the allowed roots".into());
    }
    if p.split(['/', '\\']).any(|c| c == "..") {
        return Some("escapes with a .. component".into());
    }
    let absolute = if p.starts_with('/') {
        p.to_string()
    } else {
        let first = roots.first()?;
        format!("{first}/{}", p.trim_start_matches("./"))
    };
    let inside = roots
        .iter()
        .any(|r| absolute == *r || absolute.starts_with(&format!("{r}/")) || r.is_empty());
    (!inside).then(|| "is outside the allowed roots".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_support::Case;
    use crate::policy::Policy;

    fn ids(args_toml: &str, tool: &str, args: Value) -> Vec<&'static str> {
        let policy = format!("[[section]]\n[[section.args]]\n{args_toml}");
        let case = Case {
            policy: Policy::parse(&policy).expect("policy").for_agent("agent"),
            ..Case::default()
        };
        case.findings(&ArgConstraints, tool, args)
            .iter()
            .map(|f| f.rule)
            .collect()
    }

    #[test]
    fn each_constraint_fires_on_its_case_and_not_on_the_benign_one() {
        let table: &[(&str, &str, Value, &[&str])] = &[
            (
                "tool = \"pay\"\npath = \"amount\"\nmax = 500",
                "pay",
                json!({"amount": 750}),
                &["args.max"],
            ),
            (
                "tool = \"pay\"\npath = \"amount\"\nmax = 500",
                "pay",
                json!({"amount": "$750"}),
                &["args.max"],
            ),
            (
                "tool = \"pay\"\npath = \"amount\"\nmax = 500",
                "pay",
                json!({"amount": 500}),
                &[],
            ),
            (
                "tool = \"pay\"\npath = \"amount\"\nmax = 500",
                "pay",
                json!({"amount": "1.250,00 EUR"}),
                &["args.max"],
            ),
            (
                "tool = \"pay\"\npath = \"amount\"\nmax = 500",
                "pay",
                json!({"amount": "1.000"}),
                &["args.max"],
            ),
            (
                "tool = \"pay\"\npath = \"amount\"\nmin = 5",
                "pay",
                json!({"amount": "1,5"}),
                &["args.min"],
            ),
            (
                "tool = \"pay\"\npath = \"amount\"\nmax = 500",
                "pay",
                json!({"amount": "USD 499.99"}),
                &[],
            ),
            (
                "tool = \"pay\"\npath = \"amount\"\nmax = 500",
                "pay",
                json!({"amount": "lots"}),
                &["args.max"],
            ),
            (
                "tool = \"pay\"\npath = \"amount\"\nmax = 500",
                "refund",
                json!({"amount": 750}),
                &[],
            ),
            (
                "tool = \"pay\"\npath = \"amount\"\nmin = 1",
                "pay",
                json!({"amount": 0}),
                &["args.min"],
            ),
            (
                "tool = \"pay\"\npath = \"payee.iban\"\nmax = 5",
                "pay",
                json!({"payee": {}}),
                &[],
            ),
            (
                "tool = \"q\"\npath = \"sql\"\ndeny_patterns = [\"(?i)drop\"]",
                "q",
                json!({"sql": "drop table x"}),
                &["args.deny_pattern"],
            ),
            (
                "tool = \"q\"\npath = \"sql\"\nallow_patterns = [\"^SELECT \"]",
                "q",
                json!({"sql": "DELETE x"}),
                &["args.allow_pattern"],
            ),
            (
                "tool = \"q\"\npath = \"sql\"\nallow_patterns = [\"^SELECT \"]",
                "q",
                json!({"sql": "SELECT 1"}),
                &[],
            ),
            (
                "tool = \"fx\"\npath = \"cur\"\none_of = [\"EUR\", \"USD\"]",
                "fx",
                json!({"cur": "GBP"}),
                &["args.one_of"],
            ),
            (
                "tool = \"fx\"\npath = \"n\"\none_of = [1, 2]",
                "fx",
                json!({"n": 2.0}),
                &[],
            ),
            (
                "tool = \"send_*\"\npath = \"to\"\nemail_domains = [\"example.com\"]",
                "send_email",
                json!({"to": ["a@example.com", "b@evil.net"]}),
                &["args.email_domain"],
            ),
            (
                "tool = \"send_*\"\npath = \"to\"\nemail_domains = [\"example.com\"]",
                "send_email",
                json!({"to": "Ann <ann@mail.example.com>"}),
                &[],
            ),
            (
                "tool = \"fetch\"\npath = \"url\"\nurl_domains = [\"internal.example.com\"]",
                "fetch",
                json!({"url": "https://wiki.internal.example.com/x"}),
                &[],
            ),
            (
                "tool = \"fetch\"\npath = \"url\"\nurl_domains = [\"internal.example.com\"]",
                "fetch",
                json!({"url": "https://internal.example.com.evil.net/"}),
                &["args.url_domain"],
            ),
            (
                "tool = \"fetch\"\npath = \"url\"\nurl_domains = [\"internal.example.com\"]",
                "fetch",
                json!({"url": "not a url"}),
                &["args.url_domain"],
            ),
            (
                "tool = \"*_file\"\npath = \"path\"\npath_roots = [\"/workspace\"]",
                "write_file",
                json!({"path": "/workspace/src/main.rs"}),
                &[],
            ),
            (
                "tool = \"*_file\"\npath = \"path\"\npath_roots = [\"/workspace\"]",
                "write_file",
                json!({"path": "src/main.rs"}),
                &[],
            ),
            (
                "tool = \"*_file\"\npath = \"path\"\npath_roots = [\"/workspace\"]",
                "write_file",
                json!({"path": "/workspace/../etc/passwd"}),
                &["args.path_root"],
            ),
            (
                "tool = \"*_file\"\npath = \"path\"\npath_roots = [\"/workspace\"]",
                "write_file",
                json!({"path": "/workspacex/a"}),
                &["args.path_root"],
            ),
            (
                "tool = \"*_file\"\npath = \"path\"\npath_roots = [\"/workspace\"]",
                "write_file",
                json!({"path": "~/.bashrc"}),
                &["args.path_root"],
            ),
        ];
        for (rule, tool, args, want) in table {
            assert_eq!(
                ids(rule, tool, args.clone()),
                *want,
                "{rule:?} {tool} {args}"
            );
        }
    }

    #[test]
    fn an_address_or_url_that_only_looks_allowed_is_outside_the_domains() {
        let mail = "tool = \"send\"\npath = \"to\"\nemail_domains = [\"example.com\"]";
        for to in [
            "a@example.com@evil.example",
            "\"a@example.com\"@evil.example",
            "a@ex\u{430}mple.com",
            "Bob <a@evil.example>",
            "a@example.com, b@evil.example",
            "nobody",
        ] {
            assert_eq!(
                ids(mail, "send", json!({ "to": to })),
                ["args.email_domain"],
                "{to}"
            );
        }
        for to in [
            "a@example.com",
            "A@Sub.Example.COM",
            "Ann <ann@example.com>",
            "a@example.com, b@example.com",
            "a@example.com.",
        ] {
            assert!(ids(mail, "send", json!({ "to": to })).is_empty(), "{to}");
        }
        let url = "tool = \"fetch\"\npath = \"url\"\nurl_domains = [\"docs.example.com\"]";
        assert_eq!(
            ids(
                url,
                "fetch",
                json!({"url": "https://evil.example\\@docs.example.com/"})
            ),
            ["args.url_domain"]
        );
        let roots = "tool = \"write\"\npath = \"path\"\npath_roots = [\"/workspace\"]";
        for path in ["C:\\Windows\\system32", "c:/temp/x", "\\\\server\\share\\x"] {
            assert_eq!(
                ids(roots, "write", json!({ "path": path })),
                ["args.path_root"],
                "{path}"
            );
        }
        assert!(ids(roots, "write", json!({"path": "notes/c.txt"})).is_empty());
    }
}
