//! The check engine: judges a proposed action in the context of its run. Pure and
//! deterministic: no I/O, no clock, no randomness. The same run, action and rules give the same
//! [`Verdict`], byte for byte once serialised.
//!
//! Each rule is a separate unit implementing [`Rule`] (one file under `rules/`), with a stable
//! id, its own findings and its own tests. [`Engine::check`] runs every rule, orders the
//! findings (block before warn, then by rule id) and writes the reasoning.

pub mod rules;

use serde::Serialize;
use serde_json::Value;

use crate::domain::schema::CompiledSchema;

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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// False exactly when a block finding exists.
    pub is_safe: bool,
    /// Never empty: the deciding finding, or what was checked for a pass.
    pub reasoning: String,
    /// Every finding, block before warn, then by rule id.
    pub findings: Vec<Finding>,
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
    /// The compiled function definition.
    pub schema: &'a CompiledSchema,
}

/// One unit of judgement.
pub trait Rule: Send + Sync {
    /// The stable id, used in findings.
    fn id(&self) -> &'static str;
    /// What a pass of this rule means, for the reasoning of a safe action
    /// (e.g. "arguments match the declared parameters").
    fn checked(&self) -> &'static str;
    /// The findings of this rule for `action` in `run`; empty when it does not fire.
    fn evaluate(&self, run: &RunContext, action: &Action<'_>) -> Vec<Finding>;
}

/// The set of rules in force.
pub struct Engine {
    rules: Vec<Box<dyn Rule>>,
}

impl Default for Engine {
    /// The built-in rules.
    fn default() -> Self {
        Engine {
            rules: vec![Box::new(rules::schema_mismatch::SchemaMismatch)],
        }
    }
}

impl Engine {
    /// Judges `action` in the context of `run`.
    pub fn check(&self, run: &RunContext, action: &Action<'_>) -> Verdict {
        let mut findings: Vec<Finding> = self
            .rules
            .iter()
            .flat_map(|rule| rule.evaluate(run, action))
            .collect();
        findings.sort_by(|a, b| (a.severity, a.rule).cmp(&(b.severity, b.rule)));
        let is_safe = !findings.iter().any(|f| f.severity == Severity::Block);
        let tool = action.tool_name;
        let reasoning = match findings.first() {
            Some(f) if f.severity == Severity::Block => format!("{tool}: {}", f.message),
            Some(f) => format!("{tool}: allowed with a warning: {}", f.message),
            None => {
                let checked: Vec<&str> = self.rules.iter().map(|r| r.checked()).collect();
                format!(
                    "{tool}: no rule blocked the action; checked: {}",
                    checked.join("; ")
                )
            }
        };
        Verdict {
            is_safe,
            reasoning,
            findings,
        }
    }
}

#[cfg(test)]
mod tests {
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
        fn evaluate(&self, _: &RunContext, _: &Action<'_>) -> Vec<Finding> {
            vec![Finding {
                rule: self.0,
                severity: self.1,
                message: format!("{} fired", self.0),
                evidence: json!({}),
            }]
        }
    }

    fn run() -> RunContext {
        RunContext {
            agent_id: "a".into(),
            system_prompt: String::new(),
        }
    }

    #[test]
    fn findings_are_ordered_block_first_then_by_rule_id_and_block_decides() {
        let engine = Engine {
            rules: vec![
                Box::new(Fixed("z.warn", Severity::Warn)),
                Box::new(Fixed("b.block", Severity::Block)),
                Box::new(Fixed("a.block", Severity::Block)),
            ],
        };
        let schema =
            CompiledSchema::compile(&json!({"type": "function", "name": "t"})).expect("schema");
        let args = json!({});
        let v = engine.check(
            &run(),
            &Action {
                tool_name: "t",
                arguments: &args,
                schema: &schema,
            },
        );
        let ids: Vec<_> = v.findings.iter().map(|f| f.rule).collect();
        assert_eq!(ids, ["a.block", "b.block", "z.warn"]);
        assert!(!v.is_safe);
        assert_eq!(v.reasoning, "t: a.block fired");
    }

    #[test]
    fn warnings_alone_leave_the_action_safe() {
        let engine = Engine {
            rules: vec![Box::new(Fixed("w", Severity::Warn))],
        };
        let schema =
            CompiledSchema::compile(&json!({"type": "function", "name": "t"})).expect("schema");
        let args = json!({});
        let v = engine.check(
            &run(),
            &Action {
                tool_name: "t",
                arguments: &args,
                schema: &schema,
            },
        );
        assert!(v.is_safe);
        assert!(
            v.reasoning.starts_with("t: allowed with a warning"),
            "{}",
            v.reasoning
        );
    }
}
