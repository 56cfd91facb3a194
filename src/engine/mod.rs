//! The check engine: judges a proposed action in the context of its run. Pure and
//! deterministic: no I/O, no clock, no randomness. The same run, action and rules give the same
//! [`Verdict`], byte for byte once serialised.
//!
//! Each rule is a separate unit implementing [`Rule`] (one file under `rules/`), with a stable
//! id, its own findings and its own tests. A rule sees a [`CheckContext`]: the run, its derived
//! state ([`state::RunState`]: prompt constraints, approvals, repetitions), the policy in force
//! for the agent, and the action. [`Engine::check`] runs every rule, orders the findings (block
//! before warn, then by rule id) and writes the reasoning.

pub mod args;
pub mod injection;
pub mod pii;
pub mod prompt;
pub mod rules;
pub mod state;
pub mod values;

use serde::Serialize;
use serde_json::Value;

use crate::domain::schema::CompiledSchema;
use crate::policy::AgentPolicy;
use state::RunState;

/// How serious a finding is. `is_safe` is false exactly when a `Block` finding exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The action must not run.
    Block,
    /// The action may run, but something deserves attention.
    Warn,
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The rule's stable id, e.g. `schema.mismatch`.
    pub rule: &'static str,
    /// Block or warn.
    pub severity: Severity,
    /// What is wrong, in plain words (without the tool name).
    pub message: String,
    /// The facts behind the finding: which argument, which value, which limit.
    pub evidence: Value,
}

/// The engine's answer for one action.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// False exactly when a block finding exists.
    pub is_safe: bool,
    /// Never empty: the deciding finding, or what was checked for a pass.
    pub reasoning: String,
    /// Every finding, block before warn, then by rule id.
    pub findings: Vec<Finding>,
    /// Whether the action passed only thanks to a pending approval, which it consumes.
    #[serde(skip)]
    pub consumed_approval: bool,
}

/// What the engine knows of the run an action belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunContext {
    /// The agent's id.
    pub agent_id: String,
    /// The run's system prompt.
    pub system_prompt: String,
}

/// The action to judge.
#[derive(Debug)]
pub struct Action<'a> {
    /// The tool's name (from the function definition).
    pub tool_name: &'a str,
    /// The proposed arguments.
    pub arguments: &'a Value,
    /// The proposed arguments as sent (the JSON text `arguments` was parsed from).
    pub arguments_text: &'a str,
    /// The compiled function definition.
    pub schema: &'a CompiledSchema,
    /// The function definition as sent.
    pub schema_text: &'a str,
}

/// Everything a rule may look at.
#[derive(Debug, Clone, Copy)]
pub struct CheckContext<'a> {
    /// The run.
    pub run: &'a RunContext,
    /// The run's derived state.
    pub state: &'a RunState,
    /// The policy in force for the run's agent.
    pub policy: &'a AgentPolicy,
    /// The action to judge.
    pub action: &'a Action<'a>,
}

/// One unit of judgement.
pub trait Rule: Send + Sync {
    /// The stable id, used in findings (a rule file may emit several related ids; this is
    /// the family, e.g. `args`).
    fn id(&self) -> &'static str;
    /// What a pass of this rule means, for the reasoning of a safe action
    /// (a short noun phrase, e.g. "declared parameters").
    fn checked(&self) -> &'static str;
    /// The findings of this rule; empty when it does not fire.
    fn evaluate(&self, ctx: &CheckContext<'_>) -> Vec<Finding>;
}

/// The set of rules in force.
pub struct Engine {
    rules: Vec<Box<dyn Rule>>,
}

impl Default for Engine {
    /// The built-in rules.
    fn default() -> Self {
        Engine {
            rules: rules::all(),
        }
    }
}

impl Engine {
    /// An engine with exactly these rules.
    pub fn with_rules(rules: Vec<Box<dyn Rule>>) -> Self {
        Engine { rules }
    }

    /// Judges the action of `ctx`. When it passes while an approval for its tool is pending,
    /// it is judged once more without approvals: if that blocks, the approval was needed and
    /// the verdict consumes it.
    pub fn check(&self, ctx: &CheckContext<'_>) -> Verdict {
        let mut verdict = self.judge(ctx);
        if verdict.is_safe && ctx.state.approved(ctx.action.tool_name) {
            let unapproved = ctx.state.without_approvals();
            let without = self.judge(&CheckContext {
                state: &unapproved,
                ..*ctx
            });
            verdict.consumed_approval = !without.is_safe;
        }
        verdict
    }

    fn judge(&self, ctx: &CheckContext<'_>) -> Verdict {
        let mut findings: Vec<Finding> = self
            .rules
            .iter()
            .flat_map(|rule| rule.evaluate(ctx))
            .collect();
        for f in &mut findings {
            mask_secrets_in(f);
        }
        findings.sort_by(|a, b| (a.severity, a.rule).cmp(&(b.severity, b.rule)));
        let is_safe = !findings.iter().any(|f| f.severity == Severity::Block);
        let tool = ctx.action.tool_name;
        let reasoning = match findings.first() {
            Some(f) if f.severity == Severity::Block => format!("{tool}: {}", f.message),
            Some(f) => format!("{tool}: allowed with a warning: {}", f.message),
            None => {
                let checked: Vec<&str> = self.rules.iter().map(|r| r.checked()).collect();
                format!(
                    "{tool}: no rule blocked the action; checked {}",
                    checked.join(", ")
                )
            }
        };
        Verdict {
            is_safe,
            reasoning,
            findings,
            consumed_approval: false,
        }
    }
}

/// Masks every secret a finding quotes, in its message and anywhere in its evidence.
fn mask_secrets_in(finding: &mut Finding) {
    fn walk(v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Some(masked) = rules::detectors::mask_secrets(s) {
                    *s = masked;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(map) => map.values_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(masked) = rules::detectors::mask_secrets(&finding.message) {
        finding.message = masked;
    }
    walk(&mut finding.evidence);
}

/// Builders for rule tests: a context around a tool call with defaults for the rest.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use serde_json::json;

    /// What a test varies; everything else is a plain default.
    pub struct Case {
        /// The run's system prompt.
        pub prompt: &'static str,
        /// The policy in force.
        pub policy: AgentPolicy,
        /// The run's derived state (`None`: a fresh run with `prompt`).
        pub state: Option<RunState>,
        /// The function definition.
        pub schema: Value,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                prompt: "",
                policy: AgentPolicy::default(),
                state: None,
                schema: json!({"type": "function", "name": "tool"}),
            }
        }
    }

    impl Case {
        /// The findings of `rule` for `tool` called with `args`.
        pub fn findings(&self, rule: &dyn Rule, tool: &str, args: Value) -> Vec<Finding> {
            self.with_context(tool, args, |ctx| rule.evaluate(ctx))
        }

        /// The verdict of `engine` for `tool` called with `args`.
        pub fn verdict(&self, engine: &Engine, tool: &str, args: Value) -> Verdict {
            self.with_context(tool, args, |ctx| engine.check(ctx))
        }

        fn with_context<T>(
            &self,
            tool: &str,
            args: Value,
            f: impl FnOnce(&CheckContext<'_>) -> T,
        ) -> T {
            let schema = CompiledSchema::compile(&self.schema).expect("schema compiles");
            let run = RunContext {
                agent_id: "agent".into(),
                system_prompt: self.prompt.into(),
            };
            let state = self
                .state
                .clone()
                .unwrap_or_else(|| RunState::new(self.prompt));
            let (arguments_text, schema_text) = (args.to_string(), self.schema.to_string());
            let action = Action {
                tool_name: tool,
                arguments: &args,
                arguments_text: &arguments_text,
                schema: &schema,
                schema_text: &schema_text,
            };
            f(&CheckContext {
                run: &run,
                state: &state,
                policy: &self.policy,
                action: &action,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::Case;
    use super::*;
    use serde_json::json;

    struct Fixed(&'static str, Severity);
    impl Rule for Fixed {
        fn id(&self) -> &'static str {
            self.0
        }
        fn checked(&self) -> &'static str {
            "fixed"
        }
        fn evaluate(&self, _: &CheckContext<'_>) -> Vec<Finding> {
            vec![Finding {
                rule: self.0,
                severity: self.1,
                message: format!("{} fired", self.0),
                evidence: json!({}),
            }]
        }
    }

    /// Blocks unless an approval for the tool is pending.
    struct NeedsApproval;
    impl Rule for NeedsApproval {
        fn id(&self) -> &'static str {
            "needs.approval"
        }
        fn checked(&self) -> &'static str {
            "approval"
        }
        fn evaluate(&self, ctx: &CheckContext<'_>) -> Vec<Finding> {
            if ctx.state.approved(ctx.action.tool_name) {
                return Vec::new();
            }
            Fixed("needs.approval", Severity::Block).evaluate(ctx)
        }
    }

    #[test]
    fn findings_are_ordered_block_first_then_by_rule_id_and_block_decides() {
        let engine = Engine::with_rules(vec![
            Box::new(Fixed("z.warn", Severity::Warn)),
            Box::new(Fixed("b.block", Severity::Block)),
            Box::new(Fixed("a.block", Severity::Block)),
        ]);
        let v = Case::default().verdict(&engine, "t", json!({}));
        let ids: Vec<_> = v.findings.iter().map(|f| f.rule).collect();
        assert_eq!(ids, ["a.block", "b.block", "z.warn"]);
        assert!(!v.is_safe);
        assert_eq!(v.reasoning, "t: a.block fired");
    }

    #[test]
    fn warnings_alone_leave_the_action_safe() {
        let engine = Engine::with_rules(vec![Box::new(Fixed("w", Severity::Warn))]);
        let v = Case::default().verdict(&engine, "t", json!({}));
        assert!(v.is_safe);
        assert!(
            v.reasoning.starts_with("t: allowed with a warning"),
            "{}",
            v.reasoning
        );
    }

    #[test]
    fn a_pass_that_needed_a_pending_approval_consumes_it_and_one_that_did_not_does_not() {
        let engine = Engine::with_rules(vec![Box::new(NeedsApproval)]);
        let mut approved = RunState::new("");
        approved.on_event(
            1,
            crate::domain::event::EventType::System,
            crate::engine::state::Trust::Neutral,
            &json!({"approval": {"tool": "t"}}),
        );
        let case = Case {
            state: Some(approved),
            ..Case::default()
        };
        let v = case.verdict(&engine, "t", json!({}));
        assert!(v.is_safe && v.consumed_approval);
        let plain = Engine::with_rules(vec![Box::new(Fixed("w", Severity::Warn))]);
        assert!(!case.verdict(&plain, "t", json!({})).consumed_approval);
        assert!(!Case::default().verdict(&engine, "t", json!({})).is_safe);
    }
}
