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
//!
//! Validation is bounded: regular expressions run on the `regex` crate's engine (linear time, no
//! lookaround or backreferences) with a size limit; a schema holds at most [`MAX_PATTERNS`] of
//! them and [`MAX_SUBSCHEMAS`] subschemas; content whose validation could take more than
//! [`MAX_EVALUATIONS`] evaluations ([`schema_cost`](super::schema_cost)) is refused before it
//! starts ([`CompiledSchema::affordable`]); violations are listed only while listing them stays
//! cheap ([`CompiledSchema::violations`]).

use serde::Serialize;
use serde_json::Value;

use super::schema_cost::{SchemaCost, Work};

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

/// The most regular expressions (`pattern` values and `patternProperties` names) in a schema:
/// each is compiled, in up to about 0.2 ms and [`REGEX_SIZE_LIMIT`] bytes.
pub const MAX_PATTERNS: usize = 256;

/// The most subschemas (counted as JSON objects, wherever they are) in a schema: compiling one
/// takes 2 to 7 µs, and a chain of `$ref`s takes time quadratic in its length (10,000 took
/// 160 ms, 20,000 680 ms).
pub const MAX_SUBSCHEMAS: usize = 5_000;

/// The largest compiled form of one regular expression, in bytes (`\w{1000}` needs more).
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// The most memory one regular expression's lazy DFA keeps per thread, in bytes.
const REGEX_DFA_SIZE_LIMIT: usize = 256 * 1024;

/// The most evaluations ([`Work::evaluations`]) a validation may take: about 5 to 70 ms on the
/// development machine, depending on the keywords.
pub const MAX_EVALUATIONS: u64 = 5_000_000;

/// Up to this many evaluations, and [`REPORT_COPIED_BYTES`] of content copied by `anyOf` and
/// `oneOf` errors, every violation is collected and counted (jsonschema keeps each one, about
/// 400 bytes, and each `anyOf` branch's error a copy of the content it failed on).
const REPORT_EVALUATIONS: u64 = 200_000;

/// See [`REPORT_EVALUATIONS`].
const REPORT_COPIED_BYTES: u64 = 4 * 1024 * 1024;

/// What a compiled subschema costs in memory, at most (about 1 KiB measured), besides 16 bytes
/// per byte of schema text; used by the schema cache.
const SUBSCHEMA_BYTES: usize = 2 * 1024;

/// What a compiled regular expression costs in memory after use, at most (about 200 KiB
/// measured for one close to [`REGEX_SIZE_LIMIT`]); used by the schema cache.
const PATTERN_BYTES: usize = 256 * 1024;

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
    cost: SchemaCost,
    patterns: usize,
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
        let Size {
            subschemas,
            patterns,
        } = size(&detected.target);
        if subschemas > MAX_SUBSCHEMAS {
            return Err(format!(
                "schema has {subschemas} subschemas (JSON objects); at most {MAX_SUBSCHEMAS} \
                 are accepted"
            ));
        }
        if patterns > MAX_PATTERNS {
            return Err(format!(
                "schema has {patterns} regular expressions (pattern, patternProperties); \
                 at most {MAX_PATTERNS} are accepted"
            ));
        }
        let regex = jsonschema::PatternOptions::regex()
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT);
        let validator = jsonschema::options()
            .offline()
            .with_pattern_options(regex)
            .build(&detected.target)
            .map_err(|e| {
                let mut msg = format!("schema is not a valid JSON Schema: {e}");
                if msg.contains("is not a \"regex\"") {
                    msg.insert_str(
                        0,
                        "schema has a pattern that is not accepted (no lookaround, no \
                         backreferences, at most 64 KiB compiled): ",
                    );
                }
                truncate_chars(&mut msg, MAX_MESSAGE_CHARS);
                msg
            })?;
        let cost = SchemaCost::of(&detected.target)?;
        Ok(CompiledSchema {
            kind: detected.kind,
            tool_name: detected.tool_name,
            validator,
            cost,
            patterns,
        })
    }

    /// An upper bound of the memory this compiled schema holds, for a schema of
    /// `text_len` bytes of text (the schema cache weighs its entries by it).
    pub fn memory_bound(&self, text_len: usize) -> usize {
        text_len
            .saturating_mul(16)
            .saturating_add(self.cost.subschemas().saturating_mul(SUBSCHEMA_BYTES))
            .saturating_add(self.patterns.saturating_mul(PATTERN_BYTES))
    }

    /// Whether validating `instance` stays within [`MAX_EVALUATIONS`]; the error is an
    /// INVALID_SCHEMA message. Call it before [`CompiledSchema::violations`] on untrusted input.
    pub fn affordable(&self, instance: &Value) -> Result<(), String> {
        let work = self.cost.work(instance);
        if work.evaluations <= MAX_EVALUATIONS {
            return Ok(());
        }
        Err(format!(
            "schema is too costly to validate this content against: up to {} evaluations, \
             at most {MAX_EVALUATIONS} are accepted; use fewer anyOf/oneOf branches, $refs to \
             branching definitions or patternProperties, or smaller content",
            if work.evaluations == u64::MAX {
                "more than 10^19".to_string()
            } else {
                work.evaluations.to_string()
            }
        ))
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
    ///
    /// jsonschema collects every violation before the first can be read, each `anyOf` and
    /// `oneOf` branch's with a copy of the content it failed on. So they are all collected
    /// only while that stays small ([`REPORT_EVALUATIONS`], [`REPORT_COPIED_BYTES`]). Beyond,
    /// only the first violation is given (found without collecting the others), and for a
    /// schema with `anyOf` or `oneOf` (whose first violation holds those of every branch)
    /// one at the root saying that the content does not match.
    pub fn violations(&self, instance: &Value, limit: usize) -> (Vec<Violation>, usize) {
        if self.validator.is_valid(instance) {
            return (Vec::new(), 0);
        }
        let work = self.cost.work(instance);
        if work.evaluations <= REPORT_EVALUATIONS && work.copied_bytes <= REPORT_COPIED_BYTES {
            let mut shown = Vec::new();
            let mut total = 0;
            for err in self.validator.iter_errors(instance) {
                total += 1;
                if shown.len() < limit {
                    shown.push(violation(&err));
                }
            }
            return (shown, total);
        }
        let first = if work.copied_bytes == 0 {
            self.validator
                .validate(instance)
                .err()
                .map(|e| violation(&e))
        } else {
            None
        };
        let first = first.unwrap_or_else(|| Violation {
            path: String::new(),
            message: too_large_to_list(&work),
        });
        (std::iter::once(first).take(limit).collect(), 1)
    }
}

fn violation(err: &jsonschema::ValidationError<'_>) -> Violation {
    let mut message = err.to_string();
    truncate_chars(&mut message, MAX_MESSAGE_CHARS);
    Violation {
        path: err.instance_path().as_str().to_string(),
        message,
    }
}

fn too_large_to_list(work: &Work) -> String {
    format!(
        "content does not match the schema; it is too large to list where (up to {} \
         evaluations, violations are listed up to {REPORT_EVALUATIONS})",
        work.evaluations
    )
}

/// What compiling a schema takes: its subschemas and regular expressions.
#[derive(Debug, Default, PartialEq, Eq)]
struct Size {
    /// JSON objects (those in `enum`, `const` or `examples` too: telling them apart would
    /// need to know which keys are keywords).
    subschemas: usize,
    /// `pattern` strings and `patternProperties` names.
    patterns: usize,
}

/// The [`Size`] of `schema`.
fn size(schema: &Value) -> Size {
    let mut total = Size::default();
    let mut todo = vec![schema];
    while let Some(v) = todo.pop() {
        match v {
            Value::Object(o) => {
                total.subschemas += 1;
                total.patterns += usize::from(o.get("pattern").is_some_and(Value::is_string))
                    + o.get("patternProperties")
                        .and_then(Value::as_object)
                        .map_or(0, serde_json::Map::len);
                todo.extend(o.values());
            }
            Value::Array(a) => todo.extend(a),
            _ => {}
        }
    }
    total
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
    fn patterns_run_in_linear_time_so_lookaround_and_backreferences_are_refused() {
        // With backtracking, each of these costs 17 ms per string (1,000 member names: 17 s).
        for pattern in ["^(a|a)*(?=b)\\1c", "(?<=a)b", "^(?!rm).*", "(\\w)\\1"] {
            let e = CompiledSchema::compile(&json!({"pattern": pattern})).expect_err(pattern);
            assert!(e.contains("lookaround"), "{e}");
        }
        let s = compile(json!({"pattern": "^(a+)+$"}));
        let (v, n) = s.violations(&json!(format!("{}b", "a".repeat(100_000))), 20);
        assert_eq!((v.len(), n), (1, 1));
    }

    #[test]
    fn schemas_with_too_many_patterns_or_subschemas_are_refused() {
        let patterns: Vec<Value> = (0..=MAX_PATTERNS)
            .map(|i| json!({"pattern": format!("^a{i}$")}))
            .collect();
        let e = CompiledSchema::compile(&json!({ "allOf": patterns })).expect_err("patterns");
        assert!(e.contains("regular expressions"), "{e}");
        let e = CompiledSchema::compile(&json!({ "allOf": vec![json!({}); MAX_SUBSCHEMAS] }))
            .expect_err("subschemas");
        assert!(e.contains("subschemas"), "{e}");
    }

    #[test]
    fn content_too_costly_to_validate_is_refused_before_validating() {
        // anyOf branches that refer to one definition, 22 levels: 29 s and 6 GB before.
        let mut defs = serde_json::Map::new();
        for i in 0..22 {
            let next = json!({"$ref": format!("#/$defs/a{}", i + 1)});
            defs.insert(format!("a{i}"), json!({"anyOf": [next, next]}));
        }
        defs.insert("a22".into(), json!({"type": "string"}));
        let s = compile(json!({"$defs": defs, "$ref": "#/$defs/a0"}));
        let e = s.affordable(&json!(5)).expect_err("too costly");
        assert!(e.contains("too costly"), "{e}");
        // 1,000 branches for each of 1,000 items: 0.6 s and 400 MB of errors before.
        let s = compile(
            json!({"items": {"anyOf": (0..1000).map(|i| json!({"const": i}))
            .collect::<Vec<_>>()}}),
        );
        assert!(s.affordable(&json!(vec![0; 10])).is_ok());
        assert!(s.affordable(&json!(vec![-1; 10_000])).is_err());
    }

    #[test]
    fn a_ref_loop_that_never_descends_is_refused() {
        let e = CompiledSchema::compile(&json!({"anyOf": [{"$ref": "#"}, {"type": "string"}]}))
            .expect_err("a loop");
        assert!(e.contains("loop"), "{e}");
    }

    #[test]
    fn violations_of_large_content_are_not_all_collected() {
        // Every item breaks the schema: collecting them all held 190 MB for 500,000 items.
        let s = compile(json!({"items": {"type": "string"}}));
        let (v, n) = s.violations(&json!(vec![0; 500_000]), 20);
        assert_eq!(n, 1);
        assert_eq!(v[0].path, "/0");
        // An anyOf error copies the content for each branch: 100 branches against 40,000
        // members held 500 MB.
        let s = compile(json!({"anyOf": vec![json!({"type": "string"}); 100]}));
        let big: Value = (0..40_000).map(|i| (format!("k{i}"), json!(i))).collect();
        let (v, n) = s.violations(&big, 20);
        assert_eq!(n, 1);
        assert_eq!(v[0].path, "");
        assert!(v[0].message.contains("too large to list"), "{v:?}");
        // Small content gets every violation.
        let (v, n) = s.violations(&json!({"a": 1}), 20);
        assert_eq!((v.len(), n), (1, 1));
        assert!(v[0].message.contains("anyOf"), "{v:?}");
    }

    #[test]
    fn long_violation_messages_are_capped() {
        let s = compile(json!({"type": "number"}));
        let (v, _) = s.violations(&json!("x".repeat(10_000)), 20);
        assert!(v[0].message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
