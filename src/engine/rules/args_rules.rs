//! `args.*` (block): the policy's constraints on arguments.

use crate::engine::{CheckContext, Finding, Rule};

/// See the module doc.
pub struct ArgConstraints;

impl Rule for ArgConstraints {
    fn id(&self) -> &'static str {
        "args"
    }

    fn checked(&self) -> &'static str {
        "arguments within the policy's constraints"
    }

    fn evaluate(&self, _ctx: &CheckContext<'_>) -> Vec<Finding> {
        Vec::new()
    }
}
