//! Rules over the constraints read from the system prompt (`prompt.*`, grammar in
//! `engine/prompt.rs`); all three are switched off by `prompt_rules = false`.
//!
//! - `prompt.amount_limit` (block): a tool whose name contains the constraint's noun as a word
//!   (`process_refund`, `refundOrder`, `issue-refund`, `refunds.create` for *refund*; singular
//!   and plural alike, and *pay*/*payment* match each other) is called with an amount above the
//!   limit. The amount is every numeric argument (a JSON number or a string such as `"$750"`)
//!   under a key whose words include *amount*, *amt*, *total*, *sum*, *price*, *cost*, *value*,
//!   *subtotal* or the noun itself (`amount`, `refund_amount`, `total`, `refund`), at any depth,
//!   except keys that name a bound or a count (*min*, *max*, *limit*, *threshold*, *id*,
//!   *count*, *qty*, *number*, *rate*, *percent*, …); a key with *cents* is divided by 100.
//!   Without such a key, the only numeric argument is the amount (a JSON number, or a string
//!   with a currency sign or code; ids and counts excluded). The absolute value is compared, so
//!   a refund written as `-750` counts as 750; exactly the limit passes. When the sentence lets
//!   an approval lift the limit and an approval for the tool is pending, the call passes (the
//!   engine then marks the approval consumed). Amounts are not added up across calls or items.
//! - `prompt.personal_data` (block): the system prompt forbids sharing personal data, the tool
//!   is outbound, and a string argument contains personal data ([`crate::engine::pii`]). A tool
//!   is outbound when a word of its name is *send*, *post*, *share*, *email*/*mail*, *message*,
//!   *http*, *upload*, *publish*, *tweet*, *webhook*, *sms*, *reply*, *forward*, *notify*,
//!   *slack*, *chat*, *comment*, *submit*, *broadcast*, … and its first word is not a reading
//!   verb (*get*, *read*, *list*, *search*, *lookup*, *fetch*, …: `list_messages` is not
//!   outbound). Arguments under a recipient or sender key (a key whose first or last word is
//!   *to*, *cc*, *bcc*, *recipient(s)*, *rcpt*, *from* or *sender*: `to`, `reply_to`,
//!   `to_email`, `recipients[0].email`) are not scanned: e-mailing a customer at their own
//!   address is not sharing it. Personal data written in the system prompt itself (the
//!   company's support address, say) is not the customer's and does not count.
//! - `prompt.tool_allowlist` (block): the system prompt lists the tools to use and this one is
//!   in none of its lists (exact name, case-insensitive).

use serde_json::{Value, json};

use crate::engine::args::{MAX_LEAVES, number_range, string_leaves};
use crate::engine::pii;
use crate::engine::prompt::{PromptConstraint, singular};
use crate::engine::{CheckContext, Finding, Rule, Severity};

/// `prompt.amount_limit` (block): an amount over a limit the system prompt states.
pub struct AmountLimit;

impl Rule for AmountLimit {
    fn id(&self) -> &'static str {
        "prompt.amount_limit"
    }

    fn checked(&self) -> &'static str {
        "prompt amount limits"
    }

    fn evaluate(&self, ctx: &CheckContext<'_>) -> Vec<Finding> {
        if !ctx.policy.prompt_rules {
            return Vec::new();
        }
        let tool = ctx.action.tool_name;
        let words = name_words(tool);
        let mut out = Vec::new();
        for c in ctx.state.constraints() {
            let PromptConstraint::AmountLimit {
                noun,
                limit,
                approval_allows,
                sentence,
            } = c
            else {
                continue;
            };
            if !words.iter().any(|w| noun_matches(w, noun))
                || (*approval_allows && ctx.state.approved(tool))
            {
                continue;
            }
            let amounts = amounts(ctx.action.arguments, noun);
            if let Some(over) = amounts.iter().find(|a| a.value.abs() > *limit) {
                out.push(Finding {
                    rule: self.id(),
                    severity: Severity::Block,
                    message: format!(
                        "{} {} exceeds the limit of {} set by the system prompt",
                        over.path,
                        show(over.value),
                        show(*limit)
                    ),
                    evidence: json!({
                        "argument": over.path,
                        "value": number(over.value),
                        "limit": number(*limit),
                        "approval_allows": approval_allows,
                        "sentence": sentence,
                    }),
                });
            }
        }
        out
    }
}

/// `prompt.personal_data` (block): personal data in an outbound tool's arguments when the
/// system prompt forbids sharing it.
pub struct PersonalData;

impl Rule for PersonalData {
    fn id(&self) -> &'static str {
        "prompt.personal_data"
    }

    fn checked(&self) -> &'static str {
        "prompt personal-data rule"
    }

    fn evaluate(&self, ctx: &CheckContext<'_>) -> Vec<Finding> {
        if !ctx.policy.prompt_rules {
            return Vec::new();
        }
        let Some(sentence) = ctx.state.constraints().iter().find_map(|c| match c {
            PromptConstraint::NoPersonalData { sentence } => Some(sentence),
            _ => None,
        }) else {
            return Vec::new();
        };
        let tool = ctx.action.tool_name;
        if !is_outbound(tool) {
            return Vec::new();
        }
        let prompt = ctx.run.system_prompt.to_lowercase();
        let mut found = Vec::new();
        for leaf in string_leaves(ctx.action.arguments) {
            let path = dotted(&leaf.path);
            if is_addressing(&path) {
                continue;
            }
            for m in pii::find(leaf.value) {
                if !prompt.contains(&m.text.to_lowercase()) {
                    found.push((path.clone(), m));
                }
            }
        }
        let Some((path, first)) = found.first() else {
            return Vec::new();
        };
        vec![Finding {
            rule: self.id(),
            severity: Severity::Block,
            message: format!(
                "{} in argument {path} is personal data, which the system prompt forbids sharing",
                kind_label(first.kind)
            ),
            evidence: json!({
                "argument": path,
                "kind": first.kind,
                "match": first.masked(),
                "matches": found.len(),
                "sentence": sentence,
            }),
        }]
    }
}

/// `prompt.tool_allowlist` (block): a tool the system prompt does not list.
pub struct ToolAllowlist;

impl Rule for ToolAllowlist {
    fn id(&self) -> &'static str {
        "prompt.tool_allowlist"
    }

    fn checked(&self) -> &'static str {
        "prompt tool list"
    }

    fn evaluate(&self, ctx: &CheckContext<'_>) -> Vec<Finding> {
        if !ctx.policy.prompt_rules {
            return Vec::new();
        }
        let tool = ctx.action.tool_name;
        let mut allowed: Vec<&str> = Vec::new();
        let mut sentences: Vec<&str> = Vec::new();
        for c in ctx.state.constraints() {
            if let PromptConstraint::ToolAllowlist { tools, sentence } = c {
                if tools.iter().any(|t| t.eq_ignore_ascii_case(tool)) {
                    return Vec::new();
                }
                for t in tools {
                    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(t)) {
                        allowed.push(t);
                    }
                }
                sentences.push(sentence);
            }
        }
        if sentences.is_empty() {
            return Vec::new();
        }
        vec![Finding {
            rule: self.id(),
            severity: Severity::Block,
            message: format!(
                "not one of the tools the system prompt allows ({})",
                allowed.join(", ")
            ),
            evidence: json!({"tool": tool, "allowed": allowed, "sentence": sentences.join(" ")}),
        }]
    }
}

/// The words of a tool name or key, lowercase: split at anything but letters and digits and
/// at camelCase humps (`sendEmail` → send, email; `HTTPRequest` → http, request).
fn name_words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        if c.is_uppercase() && !current.is_empty() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                words.push(std::mem::take(&mut current));
            }
        }
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Whether a word of a tool name is the noun: equal when singular, or the noun with or
/// without `-ment` (`pay` and `payment`).
fn noun_matches(word: &str, noun: &str) -> bool {
    let w = singular(word);
    w == noun || w.strip_suffix("ment") == Some(noun) || noun.strip_suffix("ment") == Some(&w)
}

/// Words of a key that make its number an amount.
const AMOUNT_WORDS: &[&str] = &[
    "amount", "amt", "total", "sum", "price", "cost", "value", "subtotal",
];

/// Words of a key that make its number something else than an amount.
const NOT_AMOUNT_WORDS: &[&str] = &[
    "min",
    "minimum",
    "max",
    "maximum",
    "limit",
    "threshold",
    "id",
    "count",
    "qty",
    "quantity",
    "number",
    "num",
    "no",
    "index",
    "page",
    "percent",
    "pct",
    "percentage",
    "rate",
    "ratio",
    "day",
    "month",
    "year",
    "version",
    "code",
];

/// A number in the arguments, with the dotted path to it.
struct Amount {
    path: String,
    value: f64,
}

/// A numeric leaf of the arguments.
struct NumberLeaf {
    path: String,
    words: Vec<String>,
    value: f64,
    /// A JSON number, or a string with a currency sign or code.
    plain: bool,
}

/// The amounts in `args` for a constraint on `noun`: the amount-like keys, else the only
/// numeric argument.
fn amounts(args: &Value, noun: &str) -> Vec<Amount> {
    let mut leaves = Vec::new();
    numeric_leaves(args, String::new(), &[], &mut leaves, &mut 0);
    let excluded = |l: &NumberLeaf| {
        l.words
            .iter()
            .any(|w| NOT_AMOUNT_WORDS.contains(&w.as_str()))
    };
    let scaled = |l: &NumberLeaf| {
        let cents = l.words.iter().any(|w| w == "cent");
        Amount {
            path: if l.path.is_empty() {
                "amount".to_string()
            } else {
                l.path.clone()
            },
            value: if cents { l.value / 100.0 } else { l.value },
        }
    };
    let amount_like: Vec<Amount> = leaves
        .iter()
        .filter(|l| !excluded(l))
        .filter(|l| {
            l.words
                .iter()
                .any(|w| AMOUNT_WORDS.contains(&w.as_str()) || w == noun)
        })
        .map(scaled)
        .collect();
    if !amount_like.is_empty() {
        return amount_like;
    }
    let others: Vec<&NumberLeaf> = leaves.iter().filter(|l| !excluded(l) && l.plain).collect();
    match others.as_slice() {
        [only] => vec![scaled(only)],
        _ => Vec::new(),
    }
}

fn numeric_leaves(
    v: &Value,
    path: String,
    words: &[String],
    out: &mut Vec<NumberLeaf>,
    seen: &mut usize,
) {
    *seen += 1;
    if *seen > MAX_LEAVES {
        return;
    }
    let plain = match v {
        Value::Number(_) => true,
        Value::String(s) => {
            let upper = s.to_ascii_uppercase();
            ['$', '€', '£'].iter().any(|c| s.contains(*c))
                || ["USD", "EUR", "GBP"].iter().any(|c| upper.contains(c))
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                numeric_leaves(item, join(&path, &i.to_string()), words, out, seen);
            }
            return;
        }
        Value::Object(map) => {
            for (k, item) in map {
                let key_words: Vec<String> = name_words(k).iter().map(|w| singular(w)).collect();
                numeric_leaves(item, join(&path, k), &key_words, out, seen);
            }
            return;
        }
        _ => return,
    };
    // The highest reading: "1.000 EUR" may be a thousand, which a limit must not let pass.
    if let Some((_, value)) = number_range(v) {
        out.push(NumberLeaf {
            path,
            words: words.to_vec(),
            value,
            plain,
        });
    }
}

fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_string()
    } else {
        format!("{path}.{segment}")
    }
}

/// A JSON Pointer as a dotted path (`/to/0` → `to.0`).
fn dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

/// Words that, first or last in a key, make it an address of the message itself.
const ADDRESS_WORDS: &[&str] = &[
    "to",
    "cc",
    "bcc",
    "recipient",
    "recipients",
    "rcpt",
    "from",
    "sender",
];

/// Whether a dotted path goes through a recipient or sender key.
fn is_addressing(path: &str) -> bool {
    path.split('.').any(|segment| {
        let words = name_words(segment);
        [words.first(), words.last()]
            .into_iter()
            .flatten()
            .any(|w| ADDRESS_WORDS.contains(&w.as_str()))
    })
}

/// Words of a tool name that make it send data out.
const OUTBOUND_WORDS: &[&str] = &[
    "send",
    "sendmail",
    "sendemail",
    "sendmessage",
    "post",
    "share",
    "email",
    "mail",
    "gmail",
    "smtp",
    "message",
    "msg",
    "http",
    "https",
    "curl",
    "upload",
    "publish",
    "tweet",
    "webhook",
    "sms",
    "mms",
    "reply",
    "forward",
    "notify",
    "notification",
    "slack",
    "discord",
    "chat",
    "comment",
    "submit",
    "broadcast",
    "dm",
    "fax",
    "whatsapp",
    "telegram",
];

/// First words of a tool name that make it read rather than send.
const INBOUND_VERBS: &[&str] = &[
    "get", "read", "list", "fetch", "search", "lookup", "find", "query", "retrieve", "view",
    "show", "check", "count", "describe", "load", "download", "receive",
];

/// Whether the tool sends data out of the run (see the module doc).
pub(crate) fn is_outbound(tool: &str) -> bool {
    let words: Vec<String> = name_words(tool).iter().map(|w| singular(w)).collect();
    if words
        .first()
        .is_some_and(|w| INBOUND_VERBS.contains(&w.as_str()))
    {
        return false;
    }
    words.iter().any(|w| OUTBOUND_WORDS.contains(&w.as_str()))
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "email" => "an e-mail address",
        "phone" => "a phone number",
        "card" => "a card number",
        "iban" => "an IBAN",
        "national_id" => "a national id number",
        _ => "personal data",
    }
}

/// A number for evidence: an integer when it is one.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// A number for a message: `750`, `750.5`.
fn show(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EventType;
    use crate::engine::Engine;
    use crate::engine::state::RunState;
    use crate::engine::test_support::Case;
    use crate::policy::AgentPolicy;

    const ACME: &str = "You are a customer service agent for AcmeCorp. You help customers with orders, returns and refunds. Do not process refunds over $500 without manager approval. Never share customer personal information.";

    fn case(prompt: &'static str) -> Case {
        Case {
            prompt,
            ..Case::default()
        }
    }

    fn switched_off(prompt: &'static str) -> Case {
        Case {
            prompt,
            policy: AgentPolicy {
                prompt_rules: false,
                ..AgentPolicy::default()
            },
            ..Case::default()
        }
    }

    fn approved(prompt: &'static str, tool: &str) -> Case {
        let mut state = RunState::new(prompt);
        state.on_event(
            7,
            EventType::System,
            crate::engine::state::Trust::Neutral,
            &json!({"approval": {"tool": tool}}),
        );
        Case {
            prompt,
            state: Some(state),
            ..Case::default()
        }
    }

    #[test]
    fn the_acmecorp_refund_limit() {
        let f = case(ACME).findings(&AmountLimit, "process_refund", json!({"amount": 750}));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "prompt.amount_limit");
        assert_eq!(f[0].severity, Severity::Block);
        assert_eq!(
            f[0].message,
            "amount 750 exceeds the limit of 500 set by the system prompt"
        );
        assert_eq!(
            f[0].evidence,
            json!({"argument": "amount", "value": 750, "limit": 500, "approval_allows": true,
                   "sentence": "Do not process refunds over $500 without manager approval"})
        );
        assert!(
            case(ACME)
                .findings(&AmountLimit, "process_refund", json!({"amount": 450}))
                .is_empty()
        );
    }

    /// What fires for `tool` with `args` under `prompt`: `argument=value`, or `""`.
    fn amount_fired(prompt: &'static str, tool: &str, args: Value) -> String {
        let f = case(prompt).findings(&AmountLimit, tool, args);
        f.first().map_or(String::new(), |f| {
            format!(
                "{}={}",
                f.evidence["argument"].as_str().unwrap_or("?"),
                f.evidence["value"]
            )
        })
    }

    #[test]
    fn amount_limit_cases_under_the_acmecorp_prompt() {
        let cases = [
            ("process_refund", json!({"amount": 500}), ""),
            ("process_refund", json!({"amount": 500.01}), "amount=500.01"),
            ("process_refund", json!({"amount": "$750"}), "amount=750"),
            (
                "process_refund",
                json!({"amount": "1,250.50 USD"}),
                "amount=1250.5",
            ),
            ("process_refund", json!({"amount": -750}), "amount=-750"),
            // Money as people write it: a code first, a sign after, European separators.
            ("process_refund", json!({"amount": "USD 750"}), "amount=750"),
            ("process_refund", json!({"amount": "750$"}), "amount=750"),
            (
                "process_refund",
                json!({"amount": "1.250,00 EUR"}),
                "amount=1250",
            ),
            ("process_refund", json!({"amount": "1 250"}), "amount=1250"),
            (
                "process_refund",
                json!({"amount": "1.000 €"}),
                "amount=1000",
            ),
            ("process_refund", json!({"amount": "499,99 €"}), ""),
            (
                "refund_order",
                json!({"order_id": "A1", "refund_amount": 750}),
                "refund_amount=750",
            ),
            (
                "issue_refund",
                json!({"order_id": 123456, "total": 600}),
                "total=600",
            ),
            ("IssueRefund", json!({"amount": 600}), "amount=600"),
            ("issue-refunds", json!({"amount": 600}), "amount=600"),
            ("refunds.create", json!({"amount": 600}), "amount=600"),
            (
                "process_refund",
                json!({"refund": {"amount": 750}}),
                "refund.amount=750",
            ),
            ("process_refund", json!({"refund": 750}), "refund=750"),
            (
                "process_refund",
                json!({"items": [{"price": 100}, {"price": 900}]}),
                "items.1.price=900",
            ),
            (
                "process_refund",
                json!({"amount_cents": 75000}),
                "amount_cents=750",
            ),
            ("process_refund", json!({"amount_cents": 45000}), ""),
            // No amount-like key: the only number is the amount; ids and counts are not.
            (
                "process_refund",
                json!({"order_id": 99999, "x": 900}),
                "x=900",
            ),
            ("process_refund", json!({"order_id": 99999}), ""),
            ("process_refund", json!({"order": "12345"}), ""),
            ("process_refund", json!({"a": 900, "b": 800}), ""),
            (
                "process_refund",
                json!({"max_amount": 10000, "amount": 100}),
                "",
            ),
            // Tools whose name does not contain the noun.
            ("transfer_funds", json!({"amount": 750}), ""),
            ("refundable_items", json!({"amount": 750}), ""),
        ];
        for (tool, args, want) in cases {
            assert_eq!(
                amount_fired(ACME, tool, args.clone()),
                want,
                "{tool} {args}"
            );
        }
    }

    #[test]
    fn amount_limit_cases_under_other_prompts() {
        const PAYMENTS: &str = "Never send payments of more than €300.";
        const TRANSFERS: &str = "Don't approve transfers exceeding $10k.";
        let cases = [
            (
                PAYMENTS,
                "send_payment",
                json!({"amount": 301}),
                "amount=301",
            ),
            (
                PAYMENTS,
                "pay_invoice",
                json!({"amount": 301}),
                "amount=301",
            ),
            (
                TRANSFERS,
                "wireTransfer",
                json!({"amount": 10_001}),
                "amount=10001",
            ),
            (TRANSFERS, "wireTransfer", json!({"amount": 9_999}), ""),
            ("", "process_refund", json!({"amount": 1_000_000}), ""),
        ];
        for (prompt, tool, args, want) in cases {
            assert_eq!(
                amount_fired(prompt, tool, args.clone()),
                want,
                "{prompt} {tool} {args}"
            );
        }
    }

    #[test]
    fn every_limit_on_the_tool_applies() {
        let prompt = "Refunds over $200 require approval. Never issue refunds above $1,000.";
        let f = approved(prompt, "issue_refund").findings(
            &AmountLimit,
            "issue_refund",
            json!({"amount": 1500}),
        );
        // The approval lifts the first limit, not the second.
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["limit"], json!(1000));
        let f = case(prompt).findings(&AmountLimit, "issue_refund", json!({"amount": 1500}));
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn an_approval_lets_the_over_limit_refund_pass_once() {
        let engine = Engine::with_rules(vec![Box::new(AmountLimit)]);
        let v = case(ACME).verdict(&engine, "process_refund", json!({"amount": 750}));
        assert!(!v.is_safe);
        assert_eq!(
            v.reasoning,
            "process_refund: amount 750 exceeds the limit of 500 set by the system prompt"
        );

        let with_approval = approved(ACME, "process_refund");
        let v = with_approval.verdict(&engine, "process_refund", json!({"amount": 750}));
        assert!(v.is_safe && v.consumed_approval, "{v:?}");
        // A refund under the limit does not need, and so does not use, the approval.
        let v = with_approval.verdict(&engine, "process_refund", json!({"amount": 450}));
        assert!(v.is_safe && !v.consumed_approval, "{v:?}");

        // Once consumed, the next over-limit refund blocks again.
        let mut state = RunState::new(ACME);
        state.on_event(
            7,
            EventType::System,
            crate::engine::state::Trust::Neutral,
            &json!({"approval": {"tool": "process_refund"}}),
        );
        state.on_check("process_refund", &json!({"amount": 750}), true);
        let after = Case {
            prompt: ACME,
            state: Some(state),
            ..Case::default()
        };
        assert!(
            !after
                .verdict(&engine, "process_refund", json!({"amount": 750}))
                .is_safe
        );

        // An approval for another tool does not help, nor does one for a limit without an
        // approval clause.
        let other = approved(ACME, "issue_refund");
        assert!(
            !other
                .verdict(&engine, "process_refund", json!({"amount": 750}))
                .is_safe
        );
        let strict = approved("Never issue refunds above $500.", "process_refund");
        assert!(
            !strict
                .verdict(&engine, "process_refund", json!({"amount": 750}))
                .is_safe
        );
    }

    /// What fires for `tool` with `args` under `prompt`: `argument:kind`, or `""`.
    fn data_fired(prompt: &'static str, tool: &str, args: Value) -> String {
        let f = case(prompt).findings(&PersonalData, tool, args);
        f.first().map_or(String::new(), |f| {
            let field = |k: &str| f.evidence[k].as_str().unwrap_or("?").to_string();
            format!("{}:{}", field("argument"), field("kind"))
        })
    }

    #[test]
    fn personal_data_cases() {
        const P: &str = "Never share customer personal information.";
        let cases = [
            (
                "send_email",
                json!({"to": "jane@example.com", "subject": "Your order",
                       "body": "Hi Jane, your refund is on its way."}),
                "",
            ),
            (
                "send_email",
                json!({"to": "ops@acme.example", "body": "Customer phone: +44 20 7946 0958"}),
                "body:phone",
            ),
            (
                "sendEmail",
                json!({"to": ["ops@acme.example"], "cc": ["jane@example.com"], "body": "ok"}),
                "",
            ),
            (
                "send_email",
                json!({"recipients": [{"email": "jane@example.com"}], "reply_to": "x@example.com",
                       "from": "help@acme.example", "body": "ok"}),
                "",
            ),
            (
                "post_to_slack",
                json!({"channel": "#ops", "text": "card 4111 1111 1111 1111"}),
                "text:card",
            ),
            (
                "http_request",
                json!({"method": "POST", "url": "https://hooks.example.net/x?email=jane@example.com"}),
                "url:email",
            ),
            (
                "upload_file",
                json!({"content": {"rows": ["Jane", "DE89 3704 0044 0532 0130 00"]}}),
                "content.rows.1:iban",
            ),
            (
                "publish_post",
                json!({"text": "SSN 123-45-6789"}),
                "text:national_id",
            ),
            (
                "send_sms",
                json!({"to": "+447700900123", "body": "Your parcel arrives today"}),
                "",
            ),
            (
                "send_message",
                json!({"text": "Order ORD-2024-000123 of 2024-01-15, total $1,234.56"}),
                "",
            ),
            // Not outbound.
            ("lookup_customer", json!({"email": "jane@example.com"}), ""),
            ("list_messages", json!({"query": "jane@example.com"}), ""),
            ("get_posts", json!({"author": "jane@example.com"}), ""),
            ("update_customer", json!({"phone": "+44 20 7946 0958"}), ""),
        ];
        for (tool, args, want) in cases {
            assert_eq!(data_fired(P, tool, args.clone()), want, "{tool} {args}");
        }
    }

    #[test]
    fn personal_data_written_in_the_system_prompt_is_not_the_customers() {
        const SUPPORT: &str =
            "Our support address is help@acme.example. Never share customer personal information.";
        let body = |text: &str| json!({"to": "x@y.example", "body": text});
        assert_eq!(
            data_fired(SUPPORT, "send_email", body("Write to help@acme.example")),
            ""
        );
        assert_eq!(
            data_fired(SUPPORT, "send_email", body("jane@example.com")),
            "body:email"
        );
        // Without the sentence in the prompt, nothing is personal data.
        assert_eq!(
            data_fired("Be polite.", "send_email", body("jane@example.com")),
            ""
        );
    }

    #[test]
    fn a_personal_data_finding_masks_what_it_found() {
        let f = case(ACME).findings(
            &PersonalData,
            "send_email",
            json!({"to": "ops@acme.example", "body": "jane@example.com, +44 20 7946 0958"}),
        );
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].message,
            "an e-mail address in argument body is personal data, which the system prompt forbids sharing"
        );
        assert_eq!(
            f[0].evidence,
            json!({"argument": "body", "kind": "email", "match": "j***@example.com", "matches": 2,
                   "sentence": "Never share customer personal information"})
        );
    }

    #[test]
    fn tool_allowlist_cases() {
        const P: &str = "Only use the tools get_weather, search and send_email.";
        let cases: &[(&'static str, &str, bool)] = &[
            (P, "get_weather", false),
            (P, "GET_WEATHER", false),
            (P, "send_email", false),
            (P, "delete_file", true),
            (P, "get_weather_v2", true),
            ("Be helpful.", "delete_file", false),
            (
                "Only use the tools search and fetch. You may also only use the following tools: calc.",
                "calc",
                false,
            ),
        ];
        for (prompt, tool, fires) in cases {
            let f = case(prompt).findings(&ToolAllowlist, tool, json!({}));
            assert_eq!(!f.is_empty(), *fires, "{prompt} / {tool}");
        }
        let f = case(P).findings(&ToolAllowlist, "delete_file", json!({}));
        assert_eq!(
            f[0].message,
            "not one of the tools the system prompt allows (get_weather, search, send_email)"
        );
        assert_eq!(
            f[0].evidence,
            json!({"tool": "delete_file", "allowed": ["get_weather", "search", "send_email"],
                   "sentence": "Only use the tools get_weather, search and send_email"})
        );
    }

    #[test]
    fn prompt_rules_off_switches_all_three_off() {
        let prompt = "Do not process refunds over $500. Never share customer personal information. Only use the tools search.";
        let off = switched_off(prompt);
        let on = case(prompt);
        let calls: [(&dyn Rule, &str, Value); 3] = [
            (&AmountLimit, "process_refund", json!({"amount": 750})),
            (
                &PersonalData,
                "send_email",
                json!({"body": "jane@example.com"}),
            ),
            (&ToolAllowlist, "delete_file", json!({})),
        ];
        for (rule, tool, args) in calls {
            assert_eq!(on.findings(rule, tool, args.clone()).len(), 1, "{tool}");
            assert!(off.findings(rule, tool, args).is_empty(), "{tool}");
        }
    }

    #[test]
    fn tool_names_split_into_words() {
        for (name, want) in [
            ("process_refund", vec!["process", "refund"]),
            ("processRefund", vec!["process", "refund"]),
            ("HTTPRequest", vec!["http", "request"]),
            ("issue-refund.v2", vec!["issue", "refund", "v2"]),
            ("send2FACode", vec!["send2", "fa", "code"]),
        ] {
            assert_eq!(name_words(name), want, "{name}");
        }
    }

    #[test]
    fn outbound_tools() {
        for (tool, outbound) in [
            ("send_email", true),
            ("sendEmail", true),
            ("post_message", true),
            ("share_document", true),
            ("http_request", true),
            ("upload_file", true),
            ("publish_post", true),
            ("tweet", true),
            ("call_webhook", true),
            ("send_sms", true),
            ("slack_post", true),
            ("reply_to_ticket", true),
            ("forward_email", true),
            ("e-mail", true),
            ("get_weather", false),
            ("read_file", false),
            ("lookup_order", false),
            ("list_messages", false),
            ("get_posts", false),
            ("search", false),
            ("process_refund", false),
            ("postgres_query", false),
        ] {
            assert_eq!(is_outbound(tool), outbound, "{tool}");
        }
    }
}
