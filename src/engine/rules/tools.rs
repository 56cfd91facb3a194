//! The policy's tool lists (block):
//! - `tool.deny`: the tool matches a `deny_tools` glob (as named, or in lowercase: `DELETE_USER`
//!   matches `delete_*`);
//! - `tool.not_allowed`: `allow_tools` is set and the tool matches none of its globs;
//! - `tool.require_approval`: the tool matches a `require_approval` glob (as named or in
//!   lowercase) and the run has no pending approval for it. An approval is a `system` event
//!   whose content is `{"approval": {"tool": "<name>"}}`; one passing check uses it up.

use serde_json::json;

use crate::engine::{CheckContext, Finding, Rule, Severity};

/// See the module doc.
pub struct ToolLists;

impl Rule for ToolLists {
    fn id(&self) -> &'static str {
        "tool"
    }

    fn checked(&self) -> &'static str {
        "tool lists"
    }

    fn evaluate(&self, ctx: &CheckContext<'_>) -> Vec<Finding> {
        let tool = ctx.action.tool_name;
        let policy = ctx.policy;
        // Denials and approvals hold whatever the case of the name (`DELETE_USER` for
        // `delete_*`): a tool list that a change of case escapes protects nothing.
        let lower = tool.to_lowercase();
        let hits = |g: &&crate::policy::Pattern| g.matches(tool) || g.matches(&lower);
        let mut out = Vec::new();
        if let Some(g) = policy.deny_tools.iter().find(hits) {
            out.push(Finding {
                rule: "tool.deny",
                severity: Severity::Block,
                message: format!("the policy denies this tool (pattern {:?})", g.as_str()),
                evidence: json!({"tool": tool, "pattern": g.as_str()}),
            });
        }
        if let Some(allow) = &policy.allow_tools
            && !allow.iter().any(|g| g.matches(tool))
        {
            let patterns: Vec<&str> = allow.iter().map(|g| g.as_str()).collect();
            out.push(Finding {
                rule: "tool.not_allowed",
                severity: Severity::Block,
                message: "the tool is not among the tools the policy allows".to_string(),
                evidence: json!({"tool": tool, "allowed": patterns}),
            });
        }
        if let Some(g) = policy.require_approval.iter().find(hits)
            && !ctx.state.approved(tool)
        {
            out.push(Finding {
                rule: "tool.require_approval",
                severity: Severity::Block,
                message: format!(
                    "requires human approval; log a system event {{\"approval\": {{\"tool\": \"{tool}\"}}}} first"
                ),
                evidence: json!({"tool": tool, "pattern": g.as_str()}),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EventType;
    use crate::engine::state::RunState;
    use crate::engine::test_support::Case;
    use crate::policy::Policy;
    use serde_json::json;

    fn case(policy: &str) -> Case {
        Case {
            policy: Policy::parse(policy).expect("policy").for_agent("agent"),
            ..Case::default()
        }
    }

    fn rules(case: &Case, tool: &str) -> Vec<&'static str> {
        case.findings(&ToolLists, tool, json!({}))
            .iter()
            .map(|f| f.rule)
            .collect()
    }

    #[test]
    fn the_tool_lists_decide_by_glob() {
        let c = case(
            "[[section]]\ndeny_tools = [\"delete_*\"]\nallow_tools = [\"get_*\", \"delete_user\", \"refund\"]\nrequire_approval = [\"refund\"]\n",
        );
        let table: &[(&str, &[&str])] = &[
            ("get_order", &[]),
            ("delete_user", &["tool.deny"]),
            ("send_email", &["tool.not_allowed"]),
            ("refund", &["tool.require_approval"]),
            // A change of case escapes neither a denial nor an approval.
            ("DELETE_USER", &["tool.deny", "tool.not_allowed"]),
            ("Delete_User", &["tool.deny", "tool.not_allowed"]),
            ("REFUND", &["tool.not_allowed", "tool.require_approval"]),
        ];
        for (tool, want) in table {
            assert_eq!(rules(&c, tool), *want, "{tool}");
        }
    }

    #[test]
    fn a_pending_approval_lets_a_tool_that_requires_one_pass() {
        let mut state = RunState::new("");
        state.on_event(
            4,
            EventType::System,
            crate::engine::state::Trust::Neutral,
            &json!({"approval": {"tool": "refund"}}),
        );
        let c = Case {
            state: Some(state),
            ..case("[[section]]\nrequire_approval = [\"refund\"]\n")
        };
        assert!(rules(&c, "refund").is_empty());
        assert_eq!(
            rules(&c, "refund_all"),
            Vec::<&str>::new(),
            "not matched by the glob"
        );
    }

    #[test]
    fn no_lists_means_no_findings() {
        assert!(rules(&Case::default(), "anything").is_empty());
    }
}
