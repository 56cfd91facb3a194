//! `json.duplicate_key` (block): the arguments, or the function definition, hold the same key
//! twice in one object. JSON parsers disagree on which value counts (the rules here read the
//! last one; many tool runtimes read the first), so such a call can be judged as `ls` and run as
//! `rm -rf /`. Nothing about an ambiguous call can be judged safe.

use serde_json::json;

use crate::engine::args::duplicate_keys;
use crate::engine::{CheckContext, Finding, Rule, Severity};

/// See the module doc.
pub struct DuplicateKeys;

impl Rule for DuplicateKeys {
    fn id(&self) -> &'static str {
        "json.duplicate_key"
    }

    fn checked(&self) -> &'static str {
        "unambiguous JSON"
    }

    fn evaluate(&self, ctx: &CheckContext<'_>) -> Vec<Finding> {
        let action = ctx.action;
        [
            ("arguments", "the arguments hold", action.arguments_text),
            (
                "function definition",
                "the function definition holds",
                action.schema_text,
            ),
        ]
        .into_iter()
        .filter_map(|(what, subject, text)| {
            let repeated = duplicate_keys(text);
            let first = repeated.first()?;
            let more = match repeated.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            Some(Finding {
                rule: self.id(),
                severity: Severity::Block,
                message: format!(
                    "{subject} the key {first} more than once{more}; parsers disagree on which \
                     value counts, so send each key once"
                ),
                evidence: json!({"in": what, "keys": repeated}),
            })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schema::CompiledSchema;
    use crate::engine::state::RunState;
    use crate::engine::{Action, RunContext};
    use crate::policy::AgentPolicy;
    use serde_json::Value;

    fn findings(arguments_text: &str, schema_text: &str) -> Vec<Finding> {
        let arguments: Value = serde_json::from_str(arguments_text).expect("arguments");
        let schema = CompiledSchema::compile(&serde_json::from_str(schema_text).expect("schema"))
            .expect("compiles");
        let run = RunContext {
            agent_id: "agent".into(),
            system_prompt: String::new(),
        };
        let state = RunState::new("");
        let policy = AgentPolicy::default();
        DuplicateKeys.evaluate(&CheckContext {
            run: &run,
            state: &state,
            policy: &policy,
            action: &Action {
                tool_name: "bash",
                arguments: &arguments,
                arguments_text,
                schema: &schema,
                schema_text,
            },
        })
    }

    const BASH: &str = r#"{"type": "function", "name": "bash"}"#;

    #[test]
    fn a_key_repeated_in_the_arguments_blocks() {
        let f = findings(r#"{"command": "rm -rf /", "command": "ls"}"#, BASH);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Block);
        assert_eq!(
            f[0].evidence,
            json!({"in": "arguments", "keys": ["/command"]})
        );
        assert!(f[0].message.contains("/command"), "{}", f[0].message);
    }

    #[test]
    fn a_key_repeated_in_the_function_definition_blocks() {
        let f = findings(
            r#"{"command": "ls"}"#,
            r#"{"type": "function", "name": "read_file", "name": "bash"}"#,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["in"], "function definition");
        assert!(
            f[0].message
                .starts_with("the function definition holds the key /name")
        );
    }

    #[test]
    fn distinct_keys_pass() {
        assert!(findings(r#"{"a": {"k": 1}, "b": {"k": 1}}"#, BASH).is_empty());
    }
}
