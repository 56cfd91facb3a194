//! `tool.deny`, `tool.not_allowed`, `tool.require_approval` (block): the policy's tool lists.

use crate::engine::{CheckContext, Finding, Rule};

/// See the module doc.
pub struct ToolLists;

impl Rule for ToolLists {
    fn id(&self) -> &'static str {
        "tool"
    }

    fn checked(&self) -> &'static str {
        "tool is allowed by the policy"
    }

    fn evaluate(&self, _ctx: &CheckContext<'_>) -> Vec<Finding> {
        Vec::new()
    }
}
