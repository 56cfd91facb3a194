//! `loop.repeat` (block): the same tool with identical arguments (key order does not matter)
//! checked more than `loop_max_repeats` times in one run (default 5): the agent is probably
//! stuck in a loop. Every earlier check counts, passed or blocked.

use serde_json::json;

use crate::engine::{CheckContext, Finding, Rule, Severity};

/// See the module doc.
pub struct LoopRepeat;

impl Rule for LoopRepeat {
    fn id(&self) -> &'static str {
        "loop.repeat"
    }

    fn checked(&self) -> &'static str {
        "repetition"
    }

    fn evaluate(&self, ctx: &CheckContext<'_>) -> Vec<Finding> {
        let earlier = ctx
            .state
            .repeats(ctx.action.tool_name, ctx.action.arguments);
        let limit = ctx.policy.loop_max_repeats;
        if earlier < limit {
            return Vec::new();
        }
        vec![Finding {
            rule: "loop.repeat",
            severity: Severity::Block,
            message: format!(
                "the same call with identical arguments is being checked for the {} time in this run (at most {limit} allowed): a runaway loop",
                ordinal(earlier + 1)
            ),
            evidence: json!({"repeats": earlier + 1, "limit": limit}),
        }]
    }
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::RunState;
    use crate::engine::test_support::Case;
    use serde_json::json;

    #[test]
    fn the_sixth_identical_call_blocks_by_default() {
        let args = json!({"q": "weather"});
        let mut state = RunState::new("");
        for n in 1..=6u32 {
            let c = Case {
                state: Some(state.clone()),
                ..Case::default()
            };
            let f = c.findings(&LoopRepeat, "search", args.clone());
            assert_eq!(f.is_empty(), n <= 5, "call {n}");
            state.on_check("search", &args, false);
        }
    }

    #[test]
    fn different_arguments_or_tools_are_not_repeats() {
        let mut state = RunState::new("");
        for _ in 0..10 {
            state.on_check("search", &json!({"q": "a"}), false);
        }
        let c = Case {
            state: Some(state),
            ..Case::default()
        };
        assert!(
            c.findings(&LoopRepeat, "search", json!({"q": "b"}))
                .is_empty()
        );
        assert!(
            c.findings(&LoopRepeat, "lookup", json!({"q": "a"}))
                .is_empty()
        );
        assert_eq!(
            c.findings(&LoopRepeat, "search", json!({"q": "a"})).len(),
            1
        );
    }

    #[test]
    fn ordinals_read_naturally() {
        assert_eq!(
            [1, 2, 3, 4, 11, 12, 13, 21, 22].map(ordinal),
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd"
            ]
        );
    }
}
