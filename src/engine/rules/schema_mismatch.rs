//! `schema.mismatch` (block): the proposed arguments do not validate against the function's
//! declared `parameters`. The agent is about to run a malformed call, so this is a verdict and
//! not a 400.

use serde_json::json;

use crate::engine::{CheckContext, Finding, Rule, Severity};
use crate::error::MAX_DETAILS;

/// See the module doc.
pub struct SchemaMismatch;

impl Rule for SchemaMismatch {
    fn id(&self) -> &'static str {
        "schema.mismatch"
    }

    fn checked(&self) -> &'static str {
        "declared parameters"
    }

    fn evaluate(&self, ctx: &CheckContext<'_>) -> Vec<Finding> {
        let action = ctx.action;
        let (violations, total) = action.schema.violations(action.arguments, MAX_DETAILS);
        if total == 0 {
            return Vec::new();
        }
        let first = violations
            .first()
            .map(|v| {
                if v.path.is_empty() {
                    v.message.clone()
                } else {
                    format!("{}: {}", v.path, v.message)
                }
            })
            .unwrap_or_default();
        let more = if total > 1 {
            format!(" (and {} more)", total - 1)
        } else {
            String::new()
        };
        vec![Finding {
            rule: self.id(),
            severity: Severity::Block,
            message: format!("arguments do not match the declared parameters: {first}{more}"),
            evidence: json!({"violations": violations, "total": total}),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_support::Case;
    use serde_json::{Value, json};

    fn findings(schema: Value, args: Value) -> Vec<Finding> {
        Case {
            schema,
            ..Case::default()
        }
        .findings(&SchemaMismatch, "t", args)
    }

    fn transfer() -> Value {
        json!({"type": "function", "name": "transfer_funds", "parameters": {
            "type": "object",
            "properties": {"amount": {"type": "number"}, "recipient": {"type": "string"}},
            "required": ["amount", "recipient"]}})
    }

    #[test]
    fn matching_arguments_give_no_finding() {
        assert!(findings(transfer(), json!({"amount": 5, "recipient": "a@b.c"})).is_empty());
    }

    #[test]
    fn cases_that_fire() {
        let cases = [
            (json!({"amount": "5", "recipient": "a@b.c"}), "/amount", 1),
            (json!({"recipient": "a@b.c"}), "", 1),
            (json!({"amount": "x"}), "", 2),
            (json!("not an object"), "", 1),
        ];
        for (args, path, total) in cases {
            let f = findings(transfer(), args.clone());
            assert_eq!(f.len(), 1, "{args}");
            assert_eq!(f[0].rule, "schema.mismatch");
            assert_eq!(f[0].severity, Severity::Block);
            assert_eq!(f[0].evidence["total"], total, "{args}");
            let paths: Vec<_> = f[0].evidence["violations"]
                .as_array()
                .expect("array")
                .iter()
                .map(|v| v["path"].as_str().unwrap_or("?").to_string())
                .collect();
            assert!(paths.contains(&path.to_string()), "{args}: {paths:?}");
        }
    }
}
