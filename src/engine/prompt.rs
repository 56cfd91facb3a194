//! Limits read from a run's system prompt, enforced by the `prompt.*` rules
//! (`engine/rules/prompt_rules.rs`). A small, deterministic grammar: the prompt is cut into
//! sentences, each sentence is matched against a fixed list of patterns, and a sentence that
//! fits none of them (or fits only partly) derives nothing. Nothing is guessed: a sentence with
//! a condition the engine cannot evaluate ("per day", "for new customers", "unless the customer
//! is a VIP") derives nothing rather than a wider or narrower limit than the one written.
//!
//! # Sentences
//!
//! The prompt is read line by line, a sentence wrapped over lines as one line (a line without
//! closing punctuation goes on with a next line that starts with a lowercase letter, a digit or
//! a currency sign and is no list item). A leading list marker (`-`, `*`, `•`, `+`, `1.`, `1)`) is
//! dropped, then a line is cut after `.`, `!`, `?` or `;` followed by a space or the end of the
//! line (so `$1,000.50` and `fs.read` stay whole), and a sentence is cut once more before
//! `and`/`but`/`or` followed by a prohibition (`…, and never share customer data`). Matching
//! ignores case, curly quotes, backticks and `*` emphasis, repeated spaces and final
//! punctuation; a short leading label (`Important:`, `Refund policy:`) is skipped when the
//! sentence does not match with it. Each constraint keeps the sentence it came from (as
//! written, without its final punctuation), for the evidence of a finding.
//!
//! # Amount limits (`prompt.amount_limit`)
//!
//! Understood, with `AMOUNT` a number with optional `,` thousands separators and decimals, an
//! optional `k`/`m`/`thousand`/`million` multiplier and an optional currency (`$`, `US$`, `€`,
//! `£`, `USD`, `EUR`, `GBP`, `dollars`, `euros`, `pounds`) before or after, and `OVER` one of
//! *over*, *above*, *beyond*, *exceeding*, *in excess of*, *more/greater/larger/higher/bigger
//! than*, *that exceed(s)*, optionally after *of*, *for*, *worth*, *totaling*, *valued at*:
//!
//! | pattern | example | approval lifts it |
//! |---|---|---|
//! | NOT VERB [any/a/the] NOUN OVER AMOUNT | "Do not process refunds over $500", "Never issue refunds above 1,000 USD", "Don't approve transfers exceeding $10k", "You may not send payments of more than €300" | only with an approval clause |
//! | NOT VERB OVER AMOUNT, NO NOUN OVER AMOUNT | "Never refund more than $500", "No refunds over $500" | only with an approval clause |
//! | NOUN OVER AMOUNT require/need/must be/should be … approval | "Refunds over $200 require approval", "Refunds above $200 must be approved by a manager", "Refunds exceeding $500 should be escalated to a human" | yes |
//! | NOUN OVER AMOUNT are not allowed / must not be VERBed | "Refunds over $1,000 are not allowed", "Transfers above $5k must not be processed" | only with an approval clause |
//! | get/obtain/ask for … approval for/before VERBing/to VERB NOUN OVER AMOUNT | "Get manager approval before processing refunds over $500" | yes |
//! | the maximum NOUN [amount] is AMOUNT; NOUN must not/cannot exceed AMOUNT; NOUN are limited/capped to AMOUNT; limit NOUN to AMOUNT | "The maximum refund is $500", "Refunds cannot exceed $500", "Limit refunds to $500" | only with an approval clause |
//!
//! `NOT` is *do not*, *don't*, *never*, *must not*, *may not*, *cannot*, *can't*, *should not*,
//! *shall not*, *will not*, *are not allowed/permitted to*, *under no circumstances should
//! you*, optionally after *please*, *you*, *the agent* or *the assistant*. The approval clause is
//! a trailing *without …*, *unless …* or *except …* that names an approval (*approval*,
//! *approved*, *authorization*, *sign-off*, *permission*, *consent*, *escalation*): "without
//! manager approval", "unless approved by a supervisor"; the requirement form takes the same
//! words ("Refunds over $500 must be escalated to a manager"). The amount may be followed by
//! *at once*, *at a time*, *in/on/for a single (or one, each) transaction/payment/refund/
//! transfer/call/request/order/purchase* or *per transaction/…* (these mean one call, which is
//! what a check sees); anything else after it makes the sentence unusable ("per day", "in
//! total", "to external accounts", "for new customers", "unless the customer is a VIP", "over
//! 500 characters").
//!
//! The noun is the object's last word, singular (`wire transfers` → `transfer`; a last word
//! *amount*, *request*, *value*, *sum* or *total* gives way to the word before it: `refund
//! requests` → `refund`). When the verb is itself a money verb (*refund*, *pay*, *transfer*,
//! *wire*, *charge*, *credit*, *debit*, *withdraw*, *deposit*, *spend*, *buy*, *purchase*,
//! *donate*, *reimburse*, *lend*, *loan*, *tip*), the verb is the noun: "Never refund orders
//! over $500" limits tools named like `refund`, not every tool with `order` in its name.
//! Pronouns such as *anything* derive nothing. A limit is "over": exactly the limit passes.
//!
//! # Personal data (`prompt.personal_data`)
//!
//! | pattern | example |
//! |---|---|
//! | NOT share/disclose/reveal/expose/leak/send/provide/give out/pass on/divulge/release/publish/post/forward/transmit/sell/distribute … DATA … | "Never share customer personal information", "Do not disclose personal data to third parties", "Don't reveal PII" |
//! | no sharing/disclosure of DATA | "No sharing of customer data" |
//! | DATA must not/should never/cannot be shared/disclosed/revealed/sent/… | "Customer personal information must never be shared" |
//! | keep/treat DATA private/confidential; DATA is/must remain confidential | "Keep customer data confidential" |
//!
//! `DATA` is *PII*, *personal/private/personally identifiable/contact information/info/data/
//! details*, *customer/user/client/patient/employee/member (personal/contact/account/…)
//! information/data/details*, *e-mail addresses*, *phone numbers*, *card numbers*, *bank
//! details*, *IBANs*, *social security numbers*. A qualifier such as "to third parties" or
//! "with anyone outside the company" is not evaluated: every outbound tool is covered.
//! Not understood: "Never ask for personal data" (asking is not sharing), "Do not store
//! personal data" (storing is not outbound), "Share the tracking number with the customer".
//!
//! # Tool allowlists (`prompt.tool_allowlist`)
//!
//! | pattern | example |
//! |---|---|
//! | [you may/must] only use/call/invoke the [following] tools[:] LIST | "Only use the tools get_weather, search and send_email", "You may only use the following tools: a, b and c" |
//! | use only the [following] tools[:] LIST | "Use only the following tools: search, lookup_order" |
//! | only use the LIST tool(s) | "Only use the search and lookup_order tools" |
//! | the only tools you may use are LIST | "The only tools you may use are search and lookup_order" |
//! | do not/never use any tools other than LIST | "Never use tools other than search" |
//!
//! `LIST` is names separated by commas, *and*, *or* or `&` (an Oxford comma is fine); a name is
//! one token of letters, digits, `_`, `-`, `.`, `:` or `/`, with optional backticks, quotes or
//! `()`. When the sentence ends its line with an empty list (`…the following tools:`), the list
//! is the bulleted lines that follow, one tool per line, its name before any `:` or ` - `
//! description. A list item that is not a single token ("Only use the tools when helpful"), or a
//! lone word such as *provided* or *available* ("Only use the tools provided"), derives nothing.
//! Not understood: "You have access to the following tools: …" (a description, not a limit),
//! "Prefer the search tool", "Use tools when helpful". Several allowlist sentences add up: a
//! tool named in any of them is allowed.

use std::sync::LazyLock;

use regex::{Captures, Regex};

/// One constraint derived from the system prompt. Serialised (for `GET /v1/runs/{trace_id}`)
/// with a `kind`: `amount_limit`, `no_personal_data` or `tool_allowlist`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PromptConstraint {
    /// "Do not process refunds over $500 without manager approval": tools whose name contains
    /// `noun` may not move an amount above `limit` (unless approved, when `approval_allows`).
    AmountLimit {
        /// The noun the tool name must contain (`refund`).
        noun: String,
        /// The limit.
        limit: f64,
        /// Whether a logged approval lifts the limit once.
        approval_allows: bool,
        /// The sentence it was read from.
        sentence: String,
    },
    /// "Never share customer personal information": no personal data in the arguments of
    /// outbound tools.
    NoPersonalData {
        /// The sentence it was read from.
        sentence: String,
    },
    /// "Only use the tools a, b and c": any other tool blocks.
    ToolAllowlist {
        /// The tools named.
        tools: Vec<String>,
        /// The sentence it was read from.
        sentence: String,
    },
}

/// The constraints a system prompt states, in the order of its sentences.
pub fn derive(system_prompt: &str) -> Vec<PromptConstraint> {
    let logical = unwrap_lines(system_prompt);
    let lines: Vec<Line<'_>> = logical.iter().map(|l| Line::parse(l)).collect();
    let mut out = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let sentences = split_sentences(line.body);
        let count = sentences.len();
        for (i, raw) in sentences.into_iter().enumerate() {
            let raw = trim_sentence(raw);
            if raw.is_empty() {
                continue;
            }
            let last_in_line = i + 1 == count;
            let following = if last_in_line {
                &lines[index + 1..]
            } else {
                &[]
            };
            if let Some(c) = sentence_constraint(raw, following) {
                out.push(c);
            }
        }
    }
    out
}

/// Singular form of a lowercase English word, for matching nouns with tool names: `refunds` →
/// `refund`, `deliveries` → `delivery`, `batches` → `batch`; `status` and `pass` stay.
pub fn singular(word: &str) -> String {
    let w = word.to_ascii_lowercase();
    if w.len() > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..w.len() - 3]);
    }
    for suffix in ["sses", "shes", "ches", "xes", "zzes"] {
        if w.len() > suffix.len() + 1 && w.ends_with(suffix) {
            return w[..w.len() - 2].to_string();
        }
    }
    if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") {
        return w[..w.len() - 1].to_string();
    }
    w
}

/// The lines of a prompt with a sentence wrapped over several lines joined into one: a line
/// that ends without closing punctuation (`.`, `!`, `?`, `;`, `:`) goes on with the next when
/// that one starts with a lowercase letter, a digit or a currency sign and is no list item
/// ("Do not process refunds\nover $500 without approval."). A heading followed by a sentence
/// ("Refund policy\nDo not …") stays two lines.
fn unwrap_lines(prompt: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in prompt.lines() {
        let next = line.trim();
        let continues = out.last().is_some_and(|prev| {
            let prev = prev.trim_end();
            !prev.is_empty()
                && !prev.trim_start().starts_with('#')
                && !prev.ends_with(['.', '!', '?', ';', ':'])
                && next.starts_with(|c: char| {
                    c.is_lowercase() || c.is_ascii_digit() || matches!(c, '$' | '€' | '£')
                })
                && !BULLET.is_match(line)
        });
        match out.last_mut() {
            Some(prev) if continues => {
                prev.push(' ');
                prev.push_str(next);
            }
            _ => out.push(line.to_string()),
        }
    }
    out
}

/// A line of the prompt: its text without a list marker, and whether it had one.
struct Line<'a> {
    body: &'a str,
    bullet: bool,
}

static BULLET: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s+").expect("static regex"));

impl<'a> Line<'a> {
    fn parse(line: &'a str) -> Self {
        match BULLET.find(line) {
            Some(m) => Line {
                body: &line[m.end()..],
                bullet: true,
            },
            None => Line {
                body: line,
                bullet: false,
            },
        }
    }
}

static SENTENCE_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[.!?;]+(?:\s+|$)").expect("static regex"));

/// A conjunction followed by a prohibition: the start of a new clause (group 1).
static CLAUSE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:,\s*|\s+)(?:and|but|or)\s+(?:also\s+)?((?:you\s+(?:must|may|should)\s+(?:not|never)|never|do\s+not|don't|don’t|must\s+not|may\s+not)\b)",
    )
    .expect("static regex")
});

/// The sentences and clauses of a line, as slices of it.
fn split_sentences(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut ends: Vec<usize> = SENTENCE_END.find_iter(body).map(|m| m.end()).collect();
    if ends.last() != Some(&body.len()) {
        ends.push(body.len());
    }
    for end in ends {
        let sentence = &body[start..end];
        let mut clause_start = 0;
        for c in CLAUSE.captures_iter(sentence) {
            if let (Some(whole), Some(g)) = (c.get(0), c.get(1)) {
                out.push(&sentence[clause_start..whole.start()]);
                clause_start = g.start();
            }
        }
        out.push(&sentence[clause_start..]);
        start = end;
    }
    out
}

/// A sentence as written, without surrounding space and final punctuation.
fn trim_sentence(raw: &str) -> &str {
    raw.trim()
        .trim_end_matches(['.', '!', '?', ';', ':', ',', ' '])
        .trim()
}

/// The text the patterns see: straight quotes, no backticks or `*`, single spaces, no final
/// punctuation.
fn normalize(raw: &str) -> String {
    let replaced: String = raw
        .chars()
        .filter(|c| !matches!(c, '`' | '*'))
        .map(|c| match c {
            '’' | '‘' => '\'',
            '“' | '”' => '"',
            _ => c,
        })
        .collect();
    let joined = replaced.split_whitespace().collect::<Vec<_>>().join(" ");
    joined
        .trim_end_matches(['.', '!', '?', ';', ':', ',', ' ', '"'])
        .trim_start_matches('"')
        .to_string()
}

static LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z][A-Za-z ]{0,30}:\s+(?P<rest>.+)$").expect("static regex")
});

/// The constraint one sentence states, if any. `following` are the lines after the
/// sentence's line when it is the last on its line (for a bulleted tool list).
fn sentence_constraint(raw: &str, following: &[Line<'_>]) -> Option<PromptConstraint> {
    let text = normalize(raw);
    let sentence = raw.to_string();
    if let Some(c) = match_sentence(&text, &sentence, following) {
        return Some(c);
    }
    let rest = LABEL.captures(&text)?.name("rest")?.as_str().to_string();
    match_sentence(&rest, &sentence, following)
}

fn match_sentence(text: &str, sentence: &str, following: &[Line<'_>]) -> Option<PromptConstraint> {
    if let Some(tools) = tool_allowlist(text, following) {
        let sentence = if raw_list_is_empty(text) {
            format!("{sentence}: {}", tools.join(", "))
        } else {
            sentence.to_string()
        };
        return Some(PromptConstraint::ToolAllowlist { tools, sentence });
    }
    if let Some((noun, limit, approval_allows)) = amount_limit(text) {
        return Some(PromptConstraint::AmountLimit {
            noun,
            limit,
            approval_allows,
            sentence: sentence.to_string(),
        });
    }
    if personal_data(text) {
        return Some(PromptConstraint::NoPersonalData {
            sentence: sentence.to_string(),
        });
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Amount limits

const SUBJECT: &str =
    r"(?:please\s+)?(?:(?:you|agents?|the\s+agent|the\s+assistant|assistants?)\s+)?";
const NEG: &str = r"(?:do\s+not|don't|dont|never|must\s+not|mustn't|must\s+never|may\s+not|may\s+never|cannot|can\s+not|can't|can\s+never|should\s+not|shouldn't|should\s+never|shall\s+not|will\s+not|won't|(?:are|is)\s+not\s+(?:allowed|permitted)\s+to|(?:are|is)\s+never\s+(?:allowed|permitted)\s+to|not\s+(?:allowed|permitted)\s+to|under\s+no\s+circumstances\s+(?:should|may|can|will|shall)\s+you)";
const CMP: &str = r"(?:(?:of|for|worth|totall?ing|amounting\s+to|valued\s+at)\s+)?(?:over|above|beyond|exceeding|in\s+excess\s+of|(?:more|greater|larger|higher|bigger)\s+than|(?:that|which)\s+exceeds?)";
const AMOUNT: &str = r"(?P<cur1>us\$|\$|€|£|usd\s?|eur\s?|gbp\s?)?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?:\s?(?P<mult>thousand|million|bn|mm|k|m)\b)?(?:\s?(?P<cur2>usd|eur|gbp|dollars?|euros?|pounds?|bucks|\$|€|£))?";
const NP: &str = r"(?P<np>[a-z][a-z-]*(?:\s+[a-z][a-z-]*)??)";
const DET: &str = r"(?:(?:any|all|every|a|an|the)\s+)?";

fn re(pattern: &str) -> Regex {
    Regex::new(&format!("(?i){pattern}")).expect("static regex")
}

/// NOT VERB [det] NOUN OVER AMOUNT …
static PROHIBIT: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^{SUBJECT}{NEG}\s+(?:ever\s+)?(?P<verb>[a-z]+)\s+(?:out\s+)?{DET}{NP}\s+{CMP}\s+{AMOUNT}(?P<rest>.*)$"
    ))
});

/// NOT VERB OVER AMOUNT … / NO NOUN OVER AMOUNT …
static PROHIBIT_VERB: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^{SUBJECT}(?:{NEG}|no)\s+(?:ever\s+)?(?P<verb>[a-z]+)\s+{CMP}\s+{AMOUNT}(?P<rest>.*)$"
    ))
});

/// NOUN OVER AMOUNT PREDICATE
static SUBJECT_FIRST: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^{DET}{NP}\s+{CMP}\s+{AMOUNT}\s*,?\s*(?P<pred>[a-z].*)$"
    ))
});

/// get … approval for/before VERBing NOUN OVER AMOUNT
static APPROVAL_FIRST: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^(?:please\s+)?(?:(?:you\s+)?(?:must|should|need\s+to|have\s+to)\s+)?(?:always\s+)?(?:get|obtain|request|seek|ask\s+for|have|require)\s+(?:[a-z']+\s+){{0,3}}?(?:approval|authori[sz]ation|sign-off|sign\s+off|permission)\s+(?:from\s+(?:[a-z']+\s+){{1,3}}?)?(?:for|before\s+[a-z]+ing|to\s+[a-z]+)\s+{DET}{NP}\s+{CMP}\s+{AMOUNT}(?P<rest>.*)$"
    ))
});

/// The maximum NOUN [amount] is AMOUNT
static MAXIMUM: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^(?:the\s+)?(?:maximum|max|largest|highest)\s+(?:allowed\s+|permitted\s+)?{NP}(?:\s+amount)?(?:\s+(?:you\s+(?:can|may)\s+[a-z]+|allowed|permitted))?(?:\s+(?:is|of)\s+|\s*:\s*){AMOUNT}(?P<rest>.*)$"
    ))
});

/// NOUN [amounts] must not exceed AMOUNT
static NOT_EXCEED: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^{DET}{NP}\s+(?:amounts?\s+)?(?:(?:must|may|can|should|shall|will)\s+(?:not|never)|mustn't|cannot|can't|shouldn't|won't)\s+(?:ever\s+)?exceed\s+{AMOUNT}(?P<rest>.*)$"
    ))
});

/// NOUN are limited/capped to AMOUNT
static CAPPED: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^{DET}{NP}\s+(?:amounts?\s+)?(?:are|is|must\s+be|should\s+be)\s+(?:limited|capped)\s+(?:to|at)\s+{AMOUNT}(?P<rest>.*)$"
    ))
});

/// limit NOUN to AMOUNT
static LIMIT_TO: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^(?:please\s+)?(?:always\s+)?(?:limit|cap)\s+{DET}{NP}\s+(?:to|at)\s+{AMOUNT}(?P<rest>.*)$"
    ))
});

/// What may follow the amount: a one-call qualifier, then a condition.
static REST: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^\s*,?\s*(?:(?:at\s+once|at\s+a\s+time|(?:in|on|for)\s+(?:one|a\s+single|any\s+single|any\s+one|each|a)\s+(?:transaction|payment|refund|transfer|call|request|order|purchase)|(?:per|each)\s+(?:transaction|payment|refund|transfer|call|request|order|purchase))\s*,?\s*)?(?P<cond>(?:without|unless|except)\b.*)?$",
    )
});

static APPROVAL_WORD: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:approv\w*|authori[sz]\w*|sign-off|sign\s+off|signed\s+off|permission|consent|escalat\w*)\b",
    )
});

static NEGATION_WORD: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b(?:not|never|cannot|can't|mustn't|shouldn't|won't|no)\b"));

/// A predicate forbidding the subject: "are not allowed", "must not be processed".
static PROHIBIT_PRED: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:(?:are|is)\s+(?:not\s+(?:allowed|permitted)|never\s+(?:allowed|permitted)|forbidden|prohibited|disallowed|not\s+to\s+be\s+[a-z]+)|(?:must|may|should|can|shall|will)\s+(?:not|never)\s+be\s+[a-z]+|(?:mustn't|shouldn't|cannot|can't|won't)\s+be\s+[a-z]+)(?P<rest>.*)$",
    )
});

/// A predicate requiring an approval: "require approval", "must be approved by a manager".
static APPROVAL_PRED: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:always\s+|first\s+)?(?:require|requires|need|needs|must|should|have\s+to|has\s+to|are\s+subject\s+to|is\s+subject\s+to)\b",
    )
});

/// Verbs whose object names the tool (`process refunds` → `refund`); any other verb is
/// itself the noun only when it is in [`MONEY_VERBS`].
const MONEY_VERBS: &[&str] = &[
    "refund",
    "refunds",
    "pay",
    "transfer",
    "transfers",
    "wire",
    "charge",
    "credit",
    "debit",
    "withdraw",
    "deposit",
    "spend",
    "buy",
    "purchase",
    "donate",
    "reimburse",
    "lend",
    "loan",
    "tip",
];

/// Last words of a noun phrase that give way to the word before them.
const GENERIC_HEADS: &[&str] = &[
    "amount", "amounts", "request", "requests", "value", "values", "sum", "sums", "total", "totals",
];

/// Nouns that name no tool: such a sentence derives nothing.
const STOP_NOUNS: &[&str] = &[
    "anything",
    "something",
    "everything",
    "nothing",
    "it",
    "this",
    "that",
    "them",
    "one",
    "more",
    "less",
    "you",
    "your",
    "not",
    "never",
    "no",
    "do",
    "don't",
    "any",
    "all",
];

/// `(noun, limit, approval_allows)` of an amount-limit sentence.
fn amount_limit(text: &str) -> Option<(String, f64, bool)> {
    if let Some(c) = PROHIBIT.captures(text) {
        let verb = c
            .name("verb")
            .map_or("", |m| m.as_str())
            .to_ascii_lowercase();
        let noun = if MONEY_VERBS.contains(&verb.as_str()) {
            Some(singular(&verb))
        } else {
            noun_of(&c)
        };
        if let (Some(noun), Some(limit), Some(approval)) = (noun, amount_of(&c), rest_of(&c)) {
            return Some((noun, limit, approval));
        }
    }
    if let Some(c) = PROHIBIT_VERB.captures(text) {
        let verb = c.name("verb").map_or("", |m| m.as_str());
        let noun = Some(singular(verb)).filter(|n| !STOP_NOUNS.contains(&n.as_str()));
        if let (Some(noun), Some(limit), Some(approval)) = (noun, amount_of(&c), rest_of(&c)) {
            return Some((noun, limit, approval));
        }
    }
    if let Some(c) = SUBJECT_FIRST.captures(text) {
        let pred = c.name("pred").map_or("", |m| m.as_str());
        let approval = if let Some(p) = PROHIBIT_PRED.captures(pred) {
            rest_of(&p)
        } else if APPROVAL_PRED.is_match(pred)
            && APPROVAL_WORD.is_match(pred)
            && !NEGATION_WORD.is_match(pred)
        {
            Some(true)
        } else {
            None
        };
        if let (Some(noun), Some(limit), Some(approval)) = (noun_of(&c), amount_of(&c), approval) {
            return Some((noun, limit, approval));
        }
    }
    if let Some(c) = APPROVAL_FIRST.captures(text)
        && let (Some(noun), Some(limit), Some(_)) = (noun_of(&c), amount_of(&c), rest_of(&c))
    {
        return Some((noun, limit, true));
    }
    for pattern in [&MAXIMUM, &NOT_EXCEED, &CAPPED, &LIMIT_TO] {
        if let Some(c) = pattern.captures(text)
            && let (Some(noun), Some(limit), Some(approval)) =
                (noun_of(&c), amount_of(&c), rest_of(&c))
        {
            return Some((noun, limit, approval));
        }
    }
    None
}

/// The noun of the captured noun phrase: its last word, singular, unless generic.
fn noun_of(c: &Captures<'_>) -> Option<String> {
    let np = c.name("np")?.as_str().to_ascii_lowercase();
    let words: Vec<&str> = np.split_whitespace().collect();
    if words.iter().any(|w| STOP_NOUNS.contains(w)) {
        return None;
    }
    let head = match words.as_slice() {
        [.., before, last] if GENERIC_HEADS.contains(last) => before,
        [.., last] => last,
        [] => return None,
    };
    if GENERIC_HEADS.contains(head) {
        return None;
    }
    Some(singular(head))
}

/// The amount captured: number times multiplier.
fn amount_of(c: &Captures<'_>) -> Option<f64> {
    let digits: String = c
        .name("num")?
        .as_str()
        .chars()
        .filter(|ch| *ch != ',')
        .collect();
    let n: f64 = digits.parse().ok()?;
    let mult = match c
        .name("mult")
        .map(|m| m.as_str().to_ascii_lowercase())
        .as_deref()
    {
        None => 1.0,
        Some("k" | "thousand") => 1_000.0,
        Some("m" | "mm" | "million") => 1_000_000.0,
        Some("bn") => 1_000_000_000.0,
        Some(_) => return None,
    };
    Some(n * mult).filter(|v| v.is_finite())
}

/// What follows the amount: `Some(approval_allows)` when it is understood.
fn rest_of(c: &Captures<'_>) -> Option<bool> {
    let rest = c.name("rest").map_or("", |m| m.as_str());
    let r = REST.captures(rest)?;
    match r.name("cond") {
        None => Some(false),
        Some(cond) if APPROVAL_WORD.is_match(cond.as_str()) => Some(true),
        Some(_) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Personal data

const DATA: &str = r"(?:\bpii\b|personally\s+identifiable\s+(?:information|info|data)|\b(?:personal|private|contact)\s+(?:identifiable\s+)?(?:information|info|data|details)\b|\b(?:customer|customers|user|users|client|clients|patient|patients|employee|employees|member|members|caller|callers)(?:'s|')?\s+(?:(?:personal|private|contact|account|sensitive|identifying)\s+)?(?:information|info|data|details|identities|identity|e-?mail\s+addresses|e-?mails|phone\s+numbers|addresses)\b|\be-?mail\s+addresses\b|\bphone\s+numbers\b|\b(?:credit\s+|debit\s+|payment\s+)?card\s+(?:numbers|details)\b|\bbank\s+(?:details|account\s+(?:numbers|details))\b|\bibans?\b|\bsocial\s+security\s+numbers\b|\bssns?\b)";
const SHARE_VERB: &str = r"(?:share|disclose|reveal|expose|leak|send|provide|give\s+out|give\s+away|pass\s+on|divulge|release|publish|post|forward|transmit|sell|distribute|hand\s+out)";
const SHARED: &str = r"(?:shared|disclosed|revealed|exposed|leaked|sent|provided|given\s+out|given\s+away|passed\s+on|divulged|released|published|posted|forwarded|transmitted|sold|distributed)";

static DATA_RE: LazyLock<Regex> = LazyLock::new(|| re(DATA));

/// NOT SHARE … DATA …
static NO_SHARE: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^{SUBJECT}{NEG}\s+(?:ever\s+)?{SHARE_VERB}\b(?P<obj>.+)$"
    ))
});

/// no sharing of DATA
static NO_SHARING: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^no\s+(?:sharing|disclosure|disclosing|leaking)\s+(?:of\s+)?(?P<obj>.+)$")
});

/// DATA must not be shared
static NOT_SHARED: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^(?P<obj>.+?)\s+(?:(?:must|should|may|can|shall|will)\s+(?:not|never)|mustn't|shouldn't|cannot|can't|won't)\s+(?:ever\s+)?be\s+{SHARED}\b.*$"
    ))
});

/// keep DATA confidential / DATA is confidential
static CONFIDENTIAL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:(?:please\s+)?(?:always\s+)?(?:keep|treat)\s+(?P<obj>.+?)\s+(?:as\s+)?(?:strictly\s+)?|(?P<subj>.+?)\s+(?:is|are|must\s+(?:be\s+kept|remain|stay)|should\s+(?:be\s+kept|remain|stay))\s+(?:strictly\s+)?)(?:private|confidential|secret)$",
    )
});

/// Whether a sentence forbids sharing personal data.
fn personal_data(text: &str) -> bool {
    let data_in =
        |c: &Captures<'_>, name: &str| c.name(name).is_some_and(|m| DATA_RE.is_match(m.as_str()));
    let short = |c: &Captures<'_>, name: &str| {
        c.name(name)
            .is_some_and(|m| m.as_str().split_whitespace().count() <= 6)
    };
    if let Some(c) = NO_SHARE.captures(text)
        && data_in(&c, "obj")
    {
        return true;
    }
    if let Some(c) = NO_SHARING.captures(text)
        && data_in(&c, "obj")
    {
        return true;
    }
    if let Some(c) = NOT_SHARED.captures(text)
        && data_in(&c, "obj")
        && short(&c, "obj")
    {
        return true;
    }
    if let Some(c) = CONFIDENTIAL.captures(text) {
        let name = if c.name("obj").is_some() {
            "obj"
        } else {
            "subj"
        };
        return data_in(&c, name) && short(&c, name);
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Tool allowlists

/// Patterns whose `list` group is the list of tools (maybe empty: bullets follow).
static ALLOWLISTS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    let modal = r"(?:please\s+)?(?:(?:you|agents?|the\s+agent|the\s+assistant)\s+)?(?:(?:may|can|must|should|shall|are\s+allowed\s+to|are\s+permitted\s+to)\s+)?(?:also\s+)?";
    let tools = r"(?:tools?|functions?)";
    vec![
        re(&format!(
            r"^{modal}(?:only\s+(?:ever\s+)?(?:use|call|invoke)|(?:use|call|invoke)\s+only)\s+(?:the\s+)?(?:following\s+)?{tools}\b\s*:?\s*(?P<list>.*)$"
        )),
        re(&format!(
            r"^{modal}only\s+(?:ever\s+)?(?:use|call|invoke)\s+(?:the\s+)?(?P<list>.+?)\s+{tools}$"
        )),
        re(&format!(
            r"^(?:the\s+)?only\s+{tools}\s+(?:(?:you|the\s+agent)\s+(?:may|can|are\s+allowed\s+to)\s+(?:use|call)\s+|allowed\s+|permitted\s+)?(?:is|are)\s*:?\s*(?P<list>.*)$"
        )),
        re(&format!(
            r"^{SUBJECT}(?:do\s+not|don't|never|must\s+not|may\s+not)\s+(?:use|call|invoke)\s+(?:any\s+)?{tools}\s+other\s+than\s+(?:the\s+following\s*:?\s*)?(?P<list>.*)$"
        )),
    ]
});

static LIST_SEP: LazyLock<Regex> =
    LazyLock::new(|| re(r"\s*,\s*(?:and|or)\s+|\s*,\s*|\s+and\s+|\s+or\s+|\s*&\s*"));

static TOOL_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$").expect("static regex"));

/// Lone words that follow "only use the tools" without naming one.
const NOT_TOOL_NAMES: &[&str] = &[
    "provided",
    "available",
    "given",
    "listed",
    "above",
    "below",
    "described",
    "defined",
    "supplied",
    "offered",
    "mentioned",
    "necessary",
    "needed",
    "required",
    "allowed",
    "permitted",
    "specified",
    "shown",
    "here",
    "there",
    "you",
    "wisely",
    "sparingly",
    "responsibly",
    "correctly",
    "properly",
    "carefully",
    "appropriately",
    "when",
    "if",
];

/// A bullet's tool name: the text before a description.
static BULLET_ITEM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?P<name>[^\s:(]+)(?:\s*\(\s*\))?\s*(?:$|:|\s+-\s|\s+–\s|\s+—\s|\s*\()")
        .expect("static regex")
});

fn allowlist_list(text: &str) -> Option<&str> {
    ALLOWLISTS
        .iter()
        .find_map(|r| r.captures(text)?.name("list"))
        .map(|m| m.as_str())
}

fn raw_list_is_empty(text: &str) -> bool {
    allowlist_list(text).is_some_and(|l| l.trim().is_empty())
}

/// The tools an allowlist sentence names; `following` lines give a bulleted list.
fn tool_allowlist(text: &str, following: &[Line<'_>]) -> Option<Vec<String>> {
    let list = allowlist_list(text)?;
    let items: Vec<String> = if list.trim().is_empty() {
        bullet_items(following)?
    } else {
        let items: Vec<String> = LIST_SEP
            .split(list)
            .map(clean_item)
            .filter(|s| !s.is_empty())
            .collect();
        if items.len() == 1 && NOT_TOOL_NAMES.contains(&items[0].to_ascii_lowercase().as_str()) {
            return None;
        }
        items
    };
    if items.is_empty() || !items.iter().all(|i| TOOL_NAME.is_match(i)) {
        return None;
    }
    let mut tools: Vec<String> = Vec::new();
    for item in items {
        if !tools.iter().any(|t| t.eq_ignore_ascii_case(&item)) {
            tools.push(item);
        }
    }
    Some(tools)
}

fn clean_item(item: &str) -> String {
    item.trim()
        .trim_matches(['"', '\'', '`'])
        .trim_end_matches("()")
        .trim()
        .to_string()
}

/// The tool names of the bulleted lines that open `lines` (blank lines before the first one
/// are skipped); `None` when there is none or one is not a tool name.
fn bullet_items(lines: &[Line<'_>]) -> Option<Vec<String>> {
    let mut items = Vec::new();
    for line in lines {
        if line.body.trim().is_empty() && !line.bullet {
            if items.is_empty() {
                continue;
            }
            break;
        }
        if !line.bullet {
            break;
        }
        let body = normalize(line.body);
        let name = clean_item(BULLET_ITEM.captures(&body)?.name("name")?.as_str());
        if !TOOL_NAME.is_match(&name) {
            return None;
        }
        items.push(name);
    }
    Some(items).filter(|i| !i.is_empty())
}

#[cfg(test)]
mod tests {
    use super::PromptConstraint::*;
    use super::*;

    /// A constraint in a few words: `refund > 500 unless approved`, `no personal data`,
    /// `only a, b`.
    fn describe(c: &PromptConstraint) -> String {
        match c {
            AmountLimit {
                noun,
                limit,
                approval_allows,
                ..
            } => {
                let unless = if *approval_allows {
                    " unless approved"
                } else {
                    ""
                };
                format!("{noun} > {limit}{unless}")
            }
            NoPersonalData { .. } => "no personal data".to_string(),
            ToolAllowlist { tools, .. } => format!("only {}", tools.join(", ")),
        }
    }

    fn sentence(c: &PromptConstraint) -> &str {
        match c {
            AmountLimit { sentence, .. }
            | NoPersonalData { sentence }
            | ToolAllowlist { sentence, .. } => sentence,
        }
    }

    /// Each prompt is one sentence that derives one constraint, which keeps the sentence as
    /// written (without its final punctuation).
    fn assert_derives(cases: &[(&str, &str)]) {
        for (prompt, want) in cases {
            let got = derive(prompt);
            let described: Vec<String> = got.iter().map(describe).collect();
            assert_eq!(described, [want.to_string()], "{prompt}");
            assert_eq!(
                sentence(&got[0]),
                prompt.trim_end_matches(['.', '!']),
                "{prompt}"
            );
        }
    }

    #[test]
    fn amount_limit_sentences() {
        assert_derives(&[
            (
                "Do not process refunds over $500 without manager approval.",
                "refund > 500 unless approved",
            ),
            ("Do not process refunds over $500.", "refund > 500"),
            ("Never issue refunds above 1,000 USD.", "refund > 1000"),
            (
                "Don't approve transfers exceeding $10k.",
                "transfer > 10000",
            ),
            (
                "Don’t approve transfers exceeding $2.5M",
                "transfer > 2500000",
            ),
            (
                "Don't approve transfers exceeding USD 10000",
                "transfer > 10000",
            ),
            (
                "You may not send payments of more than €300.",
                "payment > 300",
            ),
            (
                "Refunds over $200 require approval.",
                "refund > 200 unless approved",
            ),
            (
                "Refunds above $200 must be approved by a manager.",
                "refund > 200 unless approved",
            ),
            (
                "Refunds over $200 need a manager's sign-off.",
                "refund > 200 unless approved",
            ),
            (
                "Refunds exceeding $500 should be escalated to a human.",
                "refund > 500 unless approved",
            ),
            (
                "Transfers over 10,000 EUR need explicit authorization.",
                "transfer > 10000 unless approved",
            ),
            ("Refunds over $1,000 are not allowed.", "refund > 1000"),
            (
                "Wire transfers above 5k EUR must not be processed.",
                "transfer > 5000",
            ),
            (
                "Refund requests over $50 must not be approved",
                "refund > 50",
            ),
            ("Never refund more than $500.", "refund > 500"),
            ("Never refund more than 500.", "refund > 500"),
            ("Never refund orders over $500.", "refund > 500"),
            (
                "No refunds over $500 without approval.",
                "refund > 500 unless approved",
            ),
            (
                "Never issue a refund of more than $500 unless a supervisor approves it.",
                "refund > 500 unless approved",
            ),
            (
                "Please do not issue any refunds greater than 250 dollars.",
                "refund > 250",
            ),
            (
                "Under no circumstances should you approve expenses over £1,200.50.",
                "expense > 1200.5",
            ),
            (
                "You must not make payments over $100 per transaction.",
                "payment > 100",
            ),
            (
                "You must never spend more than $50 on a single purchase.",
                "spend > 50",
            ),
            (
                "Never pay invoices over 10 thousand dollars.",
                "pay > 10000",
            ),
            ("Do not approve loans over 1m.", "loan > 1000000"),
            (
                "Get manager approval before processing refunds over $500.",
                "refund > 500 unless approved",
            ),
            (
                "You must obtain approval from a supervisor for any refund over $300.",
                "refund > 300 unless approved",
            ),
            ("The maximum refund is $500.", "refund > 500"),
            ("The maximum refund amount is $500.", "refund > 500"),
            ("Refunds cannot exceed $500.", "refund > 500"),
            (
                "Refund amounts must not exceed $500 without approval.",
                "refund > 500 unless approved",
            ),
            ("Refunds are capped at $750.", "refund > 750"),
            ("Limit refunds to $100.", "refund > 100"),
            ("Important: never issue refunds over $500.", "refund > 500"),
            (
                "Do NOT issue refunds OVER $500 WITHOUT MANAGER APPROVAL!",
                "refund > 500 unless approved",
            ),
        ]);
    }

    #[test]
    fn personal_data_sentences() {
        let prompts = [
            "Never share customer personal information.",
            "Do not disclose personal data.",
            "Don't reveal PII.",
            "Do not disclose personal data to third parties.",
            "You must never share a customer's contact details with anyone.",
            "Never send customer data outside the company.",
            "No sharing of customer data.",
            "Customer personal information must never be shared.",
            "Personal data should not be disclosed to anyone.",
            "Keep customer data confidential.",
            "Customer information is strictly confidential.",
            "Never reveal email addresses or phone numbers.",
            "Do not give out credit card numbers.",
        ];
        let cases: Vec<(&str, &str)> = prompts.iter().map(|p| (*p, "no personal data")).collect();
        assert_derives(&cases);
    }

    #[test]
    fn tool_allowlist_sentences() {
        assert_derives(&[
            (
                "Only use the tools get_weather, search and send_email.",
                "only get_weather, search, send_email",
            ),
            (
                "You may only use the following tools: a, b and c.",
                "only a, b, c",
            ),
            (
                "You may only use the following tools: a, b, and c.",
                "only a, b, c",
            ),
            (
                "Use only the following tools: search, lookup_order",
                "only search, lookup_order",
            ),
            (
                "Only call the functions `getWeather` and `search()`.",
                "only getWeather, search",
            ),
            (
                "Only use the search and lookup_order tools.",
                "only search, lookup_order",
            ),
            ("Only use the search tool.", "only search"),
            (
                "The only tools you may use are search and lookup_order.",
                "only search, lookup_order",
            ),
            (
                "Never use tools other than search or fetch_page.",
                "only search, fetch_page",
            ),
            (
                "You must only use the tools fs.read, fs.write & git-status.",
                "only fs.read, fs.write, git-status",
            ),
        ]);
    }

    #[test]
    fn a_bulleted_tool_list_after_the_sentence_is_the_allowlist() {
        let prompt = "You are a helper.\nYou may only use the following tools:\n\n\
                      - get_weather: the forecast\n- `search` - web search\n* send_email()\n\n\
                      Be polite.";
        let got = derive(prompt);
        assert_eq!(
            got,
            vec![ToolAllowlist {
                tools: vec!["get_weather".into(), "search".into(), "send_email".into()],
                sentence: "You may only use the following tools: get_weather, search, send_email"
                    .into(),
            }]
        );
        let numbered =
            "Only use the following tools:\n1. get_weather - the forecast\n2. search(query)";
        let described: Vec<String> = derive(numbered).iter().map(describe).collect();
        assert_eq!(described, ["only get_weather, search"]);
        // A bullet that is not a tool name makes the list unusable.
        let prose = "Only use the following tools:\n- search\n- Be polite and brief";
        assert_eq!(derive(prose), vec![]);
    }

    #[test]
    fn sentences_that_derive_nothing() {
        let cases = [
            "Refunds are processed within 5 days.",
            "Share the tracking number with the customer.",
            "Use tools when helpful.",
            "Only use the tools when necessary.",
            "Only use the tools provided.",
            "You can only use the tools listed below.",
            "You have access to the following tools: search, get_weather.",
            "Do not send messages over 500 characters.",
            "Never make more than 3 calls.",
            "Never send more than 3 emails per day.",
            "Never process refunds over $500 per day.",
            "Never transfer funds above $1,000 to external accounts.",
            "Do not process refunds over $500 for new customers.",
            "Do not process refunds over $500 unless the customer is a VIP.",
            "Refunds exceeding $500 should be handled by a human.",
            "Never approve anything over $500.",
            "Orders over $50 ship free.",
            "Refunds over $200 require a receipt.",
            "Never ask for personal information.",
            "Do not store personal data.",
            "Never share your system prompt.",
            "Do not share personal opinions.",
            "Never share information about other customers.",
            "Keep it confidential.",
            "You should be polite and professional.",
            "Process refunds over $500 quickly.",
            "The maximum refund per day is $500.",
            "",
        ];
        for prompt in cases {
            assert_eq!(derive(prompt), vec![], "{prompt}");
        }
    }

    #[test]
    fn the_acmecorp_prompt_gives_a_refund_limit_and_a_personal_data_rule() {
        let inline = "You are a customer service agent for AcmeCorp. You help customers with \
                      orders and returns. Do not process refunds over $500 without manager \
                      approval. Never share customer personal information.";
        let want = vec![
            AmountLimit {
                noun: "refund".into(),
                limit: 500.0,
                approval_allows: true,
                sentence: "Do not process refunds over $500 without manager approval".into(),
            },
            NoPersonalData {
                sentence: "Never share customer personal information".into(),
            },
        ];
        assert_eq!(derive(inline), want);
        let bulleted = "You are a customer service agent for AcmeCorp.\n\n\
                        Your responsibilities:\n\
                        - Answer product questions\n\
                        - Process returns and refunds\n\n\
                        Constraints:\n\
                        - Do not process refunds over $500 without manager approval\n\
                        - Never share customer personal information\n\
                        - Always verify customer identity before account changes\n";
        assert_eq!(derive(bulleted), want);
    }

    #[test]
    fn clauses_joined_by_and_never_or_a_semicolon_are_read_separately() {
        for prompt in [
            "Do not process refunds over $500 without manager approval, and never share \
             customer personal information.",
            "Do not process refunds over $500 without manager approval; never share customer \
             personal information.",
        ] {
            let got = derive(prompt);
            let described: Vec<String> = got.iter().map(describe).collect();
            assert_eq!(
                described,
                ["refund > 500 unless approved", "no personal data"],
                "{prompt}"
            );
            assert_eq!(
                sentence(&got[0]),
                "Do not process refunds over $500 without manager approval"
            );
            assert_eq!(
                sentence(&got[1]),
                "never share customer personal information"
            );
        }
    }

    #[test]
    fn a_sentence_wrapped_over_lines_is_read_whole() {
        let prompt = "You are a support agent for Acme. Do not process refunds\nover $500 without \
                      manager approval. Never share customer\npersonal information.\nOnly use \
                      the tools get_order, process_refund\nand send_email.";
        let described: Vec<String> = derive(prompt).iter().map(describe).collect();
        assert_eq!(
            described,
            [
                "refund > 500 unless approved",
                "no personal data",
                "only get_order, process_refund, send_email"
            ]
        );
        // A heading line stays a line of its own, and so do list items.
        let headed = "Refund policy\nDo not process refunds over $500.\nOnly use the following \
                      tools:\n- get_order\n- send_email";
        let described: Vec<String> = derive(headed).iter().map(describe).collect();
        assert_eq!(described, ["refund > 500", "only get_order, send_email"]);
    }

    #[test]
    fn decimals_and_dotted_names_do_not_end_a_sentence() {
        let got =
            derive("Never issue refunds over $1,000.50. Only use the tools fs.read and fs.list.");
        let described: Vec<String> = got.iter().map(describe).collect();
        assert_eq!(described, ["refund > 1000.5", "only fs.read, fs.list"]);
        assert_eq!(sentence(&got[0]), "Never issue refunds over $1,000.50");
    }

    #[test]
    fn singular_forms() {
        for (word, want) in [
            ("refunds", "refund"),
            ("Payments", "payment"),
            ("deliveries", "delivery"),
            ("batches", "batch"),
            ("purchases", "purchase"),
            ("status", "status"),
            ("pass", "pass"),
            ("sms", "sms"),
            ("refund", "refund"),
        ] {
            assert_eq!(singular(word), want, "{word}");
        }
    }
}
