//! JSON Schemas sent by agents: telling a function definition from a plain schema, compiling
//! the part that `content` must match, and reporting violations.
//!
//! Two shapes are understood:
//! - a function definition: `{"type":"function","name":…,"parameters":{…}}`, the same nested
//!   under `"function"` (`{"type":"function","function":{"name":…,"parameters":{…}}}`), or the
//!   legacy `{"name":…,"parameters":{…}}` without `type`. `content` is validated against
//!   `parameters`; a definition without `parameters` takes any JSON object;
//! - anything else is a plain JSON Schema for `content` (drafts 4, 6, 7, 2019-09, 2020-12, chosen by
//!   `$schema`, 2020-12 when absent).
//!
//! Remote `$ref`s are never fetched: the validator is built offline, so a schema that refers
//! to another document is rejected as INVALID_SCHEMA.

use serde::Serialize;
use serde_json::Value;

/// One place where an instance breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON Pointer into the instance (`""` is the root).
    pub path: String,
    /// What is wrong there, for a human (capped at [`MAX_MESSAGE_CHARS`]).
    pub message: String,
}

/// Violation messages quote the offending value, which may be huge: cap them.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// How a schema was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaKind {
    /// A function (tool) definition; `content` holds its arguments.
    Function,
    /// A plain JSON Schema for `content`.
    Plain,
}

/// A compiled schema, ready to validate instances. Cheap to share between threads.
pub struct CompiledSchema {
    kind: SchemaKind,
    tool_name: Option<String>,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("kind", &self.kind)
            .field("tool_name", &self.tool_name)
            .finish_non_exhaustive()
    }
}

/// What [`detect`] found: the kind, the tool name if any, and the schema `content` must match.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected<'a> {
    /// Function definition or plain schema.
    pub kind: SchemaKind,
    /// `name` / `function.name` of a function definition, else a plain schema's `title`.
    pub tool_name: Option<String>,
    /// The schema that `content` is validated against.
    pub target: std::borrow::Cow<'a, Value>,
}

/// Tells a function definition from a plain schema. Errors are INVALID_SCHEMA messages.
pub fn detect(schema: &Value) -> Result<Detected<'_>, String> {
    let Some(obj) = schema.as_object() else {
        // Booleans are valid (draft 6+) plain schemas; other scalars fail at compile time.
        return Ok(Detected {
            kind: SchemaKind::Plain,
            tool_name: None,
            target: std::borrow::Cow::Borrowed(schema),
        });
    };
    let typed_function = obj.get("type").and_then(Value::as_str) == Some("function");
    let legacy_function = !typed_function
        && obj.get("name").is_some_and(Value::is_string)
        && obj.get("parameters").is_some_and(Value::is_object)
        && !obj.contains_key("properties")
        && !obj.contains_key("$schema");
    if !typed_function && !legacy_function {
        return Ok(Detected {
            kind: SchemaKind::Plain,
            tool_name: obj.get("title").and_then(Value::as_str).map(str::to_string),
            target: std::borrow::Cow::Borrowed(schema),
        });
    }
    let def = match obj.get("function") {
        Some(Value::Object(inner)) if typed_function => inner,
        Some(_) if typed_function => {
            return Err("schema.function must be an object holding name and parameters".into());
        }
        _ => obj,
    };
    let name = match def.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
        _ => return Err("a function definition needs a non-empty string \"name\"".into()),
    };
    let target = match def.get("parameters") {
        None | Some(Value::Null) => std::borrow::Cow::Owned(serde_json::json!({"type": "object"})),
        Some(p @ (Value::Object(_) | Value::Bool(_))) => std::borrow::Cow::Borrowed(p),
        Some(_) => {
            return Err("the function's \"parameters\" must be a JSON Schema object".into());
        }
    };
    Ok(Detected {
        kind: SchemaKind::Function,
        tool_name: Some(name),
        target,
    })
}

impl CompiledSchema {
    /// Detects the kind and compiles the target schema offline. Errors are INVALID_SCHEMA
    /// messages.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        let detected = detect(schema)?;
        let validator = jsonschema::options()
            .offline()
            .build(&detected.target)
            .map_err(|e| {
                let mut msg = format!("schema is not a valid JSON Schema: {e}");
                truncate_chars(&mut msg, MAX_MESSAGE_CHARS);
                msg
            })?;
        Ok(CompiledSchema {
            kind: detected.kind,
            tool_name: detected.tool_name,
            validator,
        })
    }

    /// Function definition or plain schema.
    pub fn kind(&self) -> &SchemaKind {
        &self.kind
    }

    /// The tool's name, where the schema gives one.
    pub fn tool_name(&self) -> Option<&str> {
        self.tool_name.as_deref()
    }

    /// The first `limit` violations of `instance`, and how many there are in all.
    pub fn violations(&self, instance: &Value, limit: usize) -> (Vec<Violation>, usize) {
        let mut shown = Vec::new();
        let mut total = 0;
        for err in self.validator.iter_errors(instance) {
            total += 1;
            if shown.len() < limit {
                let mut message = err.to_string();
                truncate_chars(&mut message, MAX_MESSAGE_CHARS);
                shown.push(Violation {
                    path: err.instance_path().as_str().to_string(),
                    message,
                });
            }
        }
        (shown, total)
    }
}

fn truncate_chars(s: &mut String, max: usize) {
    if let Some((idx, _)) = s.char_indices().nth(max) {
        s.truncate(idx);
        s.push('…');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(v: Value) -> CompiledSchema {
        CompiledSchema::compile(&v).expect("schema compiles")
    }

    #[test]
    fn a_typed_function_definition_is_detected_and_validates_its_parameters() {
        let s = compile(json!({"type": "function", "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}));
        assert_eq!(s.kind(), &SchemaKind::Function);
        assert_eq!(s.tool_name(), Some("get_weather"));
        assert_eq!(s.violations(&json!({"city": "Paris"}), 20).1, 0);
        let (v, n) = s.violations(&json!({"city": 5}), 20);
        assert_eq!(n, 1);
        assert_eq!(v[0].path, "/city");
    }

    #[test]
    fn a_nested_function_definition_is_detected() {
        let s = compile(
            json!({"type": "function", "function": {"name": "transfer_funds",
            "parameters": {"type": "object", "required": ["amount"]}}}),
        );
        assert_eq!(s.kind(), &SchemaKind::Function);
        assert_eq!(s.tool_name(), Some("transfer_funds"));
        assert_eq!(s.violations(&json!({}), 20).1, 1);
    }

    #[test]
    fn a_legacy_function_definition_without_type_is_detected() {
        let s = compile(json!({"name": "f", "parameters": {"type": "object"}}));
        assert_eq!(s.kind(), &SchemaKind::Function);
    }

    #[test]
    fn a_plain_schema_is_detected_and_takes_its_title_as_name() {
        let s = compile(json!({"title": "msg", "type": "object",
            "properties": {"message": {"type": "string"}}}));
        assert_eq!(s.kind(), &SchemaKind::Plain);
        assert_eq!(s.tool_name(), Some("msg"));
    }

    #[test]
    fn a_plain_schema_with_a_name_property_stays_plain() {
        let s = compile(
            json!({"type": "object", "properties": {"name": {"type": "string"}},
            "name": "x", "parameters": {}}),
        );
        assert_eq!(s.kind(), &SchemaKind::Plain);
    }

    #[test]
    fn a_function_without_parameters_accepts_any_object() {
        let s = compile(json!({"type": "function", "name": "ping"}));
        assert_eq!(s.violations(&json!({"a": 1}), 20).1, 0);
        assert_eq!(s.violations(&json!(5), 20).1, 1);
    }

    #[test]
    fn invalid_schemas_are_rejected() {
        for v in [
            json!({"type": 12}),
            json!({"type": "function"}),
            json!({"type": "function", "name": "f", "parameters": 3}),
            json!({"type": "function", "function": "f"}),
            json!({"$ref": "https://example.com/schema.json"}),
            json!(42),
        ] {
            assert!(
                CompiledSchema::compile(&v).is_err(),
                "{v} should be rejected"
            );
        }
    }

    #[test]
    fn every_supported_draft_compiles() {
        for draft in [
            "http://json-schema.org/draft-04/schema#",
            "http://json-schema.org/draft-06/schema#",
            "http://json-schema.org/draft-07/schema#",
            "https://json-schema.org/draft/2019-09/schema",
            "https://json-schema.org/draft/2020-12/schema",
        ] {
            let s = compile(json!({"$schema": draft, "type": "object", "required": ["a"]}));
            assert_eq!(s.violations(&json!({}), 20).1, 1, "{draft}");
        }
    }

    #[test]
    fn violations_are_limited_but_counted() {
        let s = compile(json!({"type": "array", "items": {"type": "string"}}));
        let (v, n) = s.violations(&json!((0..30).collect::<Vec<_>>()), 20);
        assert_eq!((v.len(), n), (20, 30));
    }

    #[test]
    fn long_violation_messages_are_capped() {
        let s = compile(json!({"type": "number"}));
        let (v, _) = s.violations(&json!("x".repeat(10_000)), 20);
        assert!(v[0].message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
