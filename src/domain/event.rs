//! The requests of the three POST endpoints, from wire to domain.
//!
//! A wire struct (`*Wire`) is what serde reads: every field optional and loosely typed, unknown
//! fields ignored. `parse` turns it into a domain value ([`NewRun`], [`NewEvent`],
//! [`NewCheck`]) or a [`FieldError`] naming the field, so that handlers never see an
//! unvalidated value.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use super::ids::{AgentId, TraceId};
use super::time::{parse_event_timestamp, parse_rfc3339};

/// What is wrong with one request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// The field is absent or `null`.
    Missing(&'static str),
    /// The field is present and breaks its rule.
    Invalid(&'static str, String),
    /// The `schema` field is not a usable schema.
    InvalidSchema(String),
}

/// The eight event types of `/v1/event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Input from the end user.
    User,
    /// What was sent to the model.
    ModelInput,
    /// What the model answered.
    ModelOutput,
    /// A tool call or its result.
    Tool,
    /// Observations from the environment.
    Environment,
    /// Reads and writes of the agent's memory.
    Memory,
    /// System messages (including approvals).
    System,
    /// Errors in the agent's loop.
    Error,
}

impl EventType {
    /// All types, in the contract's order.
    pub const ALL: [EventType; 8] = [
        EventType::User,
        EventType::ModelInput,
        EventType::ModelOutput,
        EventType::Tool,
        EventType::Environment,
        EventType::Memory,
        EventType::System,
        EventType::Error,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::User => "user",
            EventType::ModelInput => "model_input",
            EventType::ModelOutput => "model_output",
            EventType::Tool => "tool",
            EventType::Environment => "environment",
            EventType::Memory => "memory",
            EventType::System => "system",
            EventType::Error => "error",
        }
    }

    /// Parses a wire name (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// How a JSON-carrying field (`content`, `schema`) was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonForm {
    /// As a string holding JSON (the contract's primary form).
    String,
    /// As JSON directly (an object or array).
    Json,
}

impl JsonForm {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JsonForm::String => "string",
            JsonForm::Json => "json",
        }
    }
}

/// A JSON-carrying field: the text exactly as sent, how it was sent, and the parsed value.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonField {
    /// For [`JsonForm::String`], the string's value; for [`JsonForm::Json`], the raw JSON text.
    pub text: String,
    /// How it was sent.
    pub form: JsonForm,
    /// The parsed JSON.
    pub value: Value,
}

/// How one JSON-carrying field is read.
struct FieldRule {
    field: &'static str,
    /// Whether JSON sent directly may be an array (content) or only an object (schema).
    direct_arrays: bool,
    /// The error for a string that holds no JSON.
    not_json: fn(serde_json::Error) -> FieldError,
    /// The error for any other JSON type.
    wrong_type: &'static str,
}

const CONTENT: FieldRule = FieldRule {
    field: "content",
    direct_arrays: true,
    not_json: |e| {
        FieldError::Invalid(
            "content",
            format!(
                "content must be stringified JSON, e.g. JSON.stringify({{\"message\": \"hi\"}}) \
                 or json.dumps(...); this string is not JSON ({e})"
            ),
        )
    },
    wrong_type: "content must be a string holding JSON, or a JSON object or array",
};

const SCHEMA: FieldRule = FieldRule {
    field: "schema",
    direct_arrays: false,
    not_json: |e| {
        FieldError::InvalidSchema(format!(
            "schema must be a stringified JSON Schema; this string is not JSON ({e})"
        ))
    },
    wrong_type: "schema must be a string holding a JSON Schema, or a JSON object",
};

/// How deep serde_json lets arrays and objects nest (its fixed recursion limit).
pub const MAX_NESTING: usize = 127;

impl JsonField {
    /// Reads a field sent as a string holding JSON, or as JSON directly, keeping its text.
    fn parse(raw: Option<&RawValue>, rule: &FieldRule) -> Result<Self, FieldError> {
        let field = rule.field;
        let raw = raw.ok_or(FieldError::Missing(field))?.get();
        let (text, form) = if raw.starts_with('"') {
            let s = serde_json::from_str::<String>(raw)
                .map_err(|e| FieldError::Invalid(field, format!("{field} is not a string: {e}")))?;
            (s, JsonForm::String)
        } else if raw.starts_with('{') || (rule.direct_arrays && raw.starts_with('[')) {
            (raw.to_string(), JsonForm::Json)
        } else {
            return Err(FieldError::Invalid(field, rule.wrong_type.to_string()));
        };
        let value = serde_json::from_str(&text).map_err(|e| {
            if e.to_string().starts_with("recursion limit exceeded") {
                // serde_json's bound; the text may well be JSON.
                let why =
                    format!("{field} nests arrays and objects more than {MAX_NESTING} levels deep");
                return match rule.field {
                    "schema" => FieldError::InvalidSchema(why),
                    _ => FieldError::Invalid(field, why),
                };
            }
            match form {
                JsonForm::String => (rule.not_json)(e),
                JsonForm::Json => FieldError::Invalid(field, format!("{field} is not JSON: {e}")),
            }
        })?;
        Ok(JsonField { text, form, value })
    }
}

fn required<'v>(v: &'v Option<Value>, field: &'static str) -> Result<&'v Value, FieldError> {
    v.as_ref().ok_or(FieldError::Missing(field))
}

fn required_str<'v>(v: &'v Option<Value>, field: &'static str) -> Result<&'v str, FieldError> {
    required(v, field)?
        .as_str()
        .ok_or_else(|| FieldError::Invalid(field, format!("{field} must be a string")))
}

fn trace_id(v: &Option<Value>) -> Result<TraceId, FieldError> {
    TraceId::parse(required_str(v, "trace_id")?).map_err(|m| FieldError::Invalid("trace_id", m))
}

/// The body of `POST /v1/register-agent-run`.
#[derive(Debug, Deserialize)]
pub struct RunWire {
    agent_id: Option<Value>,
    timestamp: Option<Value>,
    system_prompt: Option<Value>,
    trace_id: Option<Value>,
}

/// A validated run registration.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// The run's id: the client's choice or a new v4 UUID.
    pub trace_id: TraceId,
    /// Whether the client chose the trace id.
    pub client_chose_id: bool,
    /// The agent's id.
    pub agent_id: AgentId,
    /// The run's start as the client sent it (a validated RFC 3339 date-time).
    pub started_at: String,
    /// The agent's instructions, verbatim.
    pub system_prompt: String,
    /// When the server received the registration.
    pub received_at: OffsetDateTime,
}

impl RunWire {
    /// Validates every field, in the order of the contract's table.
    pub fn parse(self, received_at: OffsetDateTime) -> Result<NewRun, FieldError> {
        let agent_id = AgentId::parse(required_str(&self.agent_id, "agent_id")?.to_string())
            .map_err(|m| FieldError::Invalid("agent_id", m))?;
        let started_at = required_str(&self.timestamp, "timestamp")?;
        parse_rfc3339(started_at).map_err(|_| {
            FieldError::Invalid(
                "timestamp",
                "timestamp must be an ISO 8601 date-time with a time zone, e.g. 2024-01-15T14:30:45.123Z"
                    .to_string(),
            )
        })?;
        let system_prompt = required_str(&self.system_prompt, "system_prompt")?.to_string();
        let (trace_id, client_chose_id) = match &self.trace_id {
            None => (TraceId::new_random(), false),
            Some(_) => (trace_id(&self.trace_id)?, true),
        };
        Ok(NewRun {
            trace_id,
            client_chose_id,
            agent_id,
            started_at: started_at.to_string(),
            system_prompt,
            received_at,
        })
    }
}

/// The body of `POST /v1/event` and `POST /v1/check` (same fields).
#[derive(Debug, Deserialize)]
pub struct EventWire<'a> {
    event_type: Option<Value>,
    trace_id: Option<Value>,
    timestamp: Option<Value>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
}

/// A validated event, before its content is checked against its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// A new v4 id for the event.
    pub event_id: Uuid,
    /// The run it belongs to.
    pub trace_id: TraceId,
    /// Which step of the agent loop.
    pub event_type: EventType,
    /// When it happened, Unix seconds (client's clock).
    pub occurred_at: f64,
    /// When the server received it.
    pub received_at: OffsetDateTime,
    /// The event data.
    pub content: JsonField,
    /// The schema for `content`.
    pub schema: JsonField,
}

/// A validated action check, before it is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCheck {
    /// A new v4 id for the check.
    pub check_id: Uuid,
    /// The run it belongs to.
    pub trace_id: TraceId,
    /// When the action was proposed, Unix seconds (client's clock).
    pub occurred_at: f64,
    /// When the server received it.
    pub received_at: OffsetDateTime,
    /// The action's arguments.
    pub content: JsonField,
    /// The action's function definition.
    pub schema: JsonField,
}

impl EventWire<'_> {
    fn common(&self) -> Result<(TraceId, f64, JsonField, JsonField), FieldError> {
        let trace_id = trace_id(&self.trace_id)?;
        let occurred_at = parse_event_timestamp(required(&self.timestamp, "timestamp")?)
            .map_err(|m| FieldError::Invalid("timestamp", m))?;
        let content = JsonField::parse(self.content, &CONTENT)?;
        let schema = JsonField::parse(self.schema, &SCHEMA)?;
        Ok((trace_id, occurred_at, content, schema))
    }

    /// Validates an event for `/v1/event`.
    pub fn parse_event(self, received_at: OffsetDateTime) -> Result<NewEvent, FieldError> {
        let name = required_str(&self.event_type, "event_type")?;
        let event_type = EventType::parse(name).ok_or_else(|| {
            let all: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            FieldError::Invalid(
                "event_type",
                format!("event_type must be one of {}", all.join(", ")),
            )
        })?;
        let (trace_id, occurred_at, content, schema) = self.common()?;
        Ok(NewEvent {
            event_id: Uuid::new_v4(),
            trace_id,
            event_type,
            occurred_at,
            received_at,
            content,
            schema,
        })
    }

    /// Validates an action check for `/v1/check`.
    pub fn parse_check(self, received_at: OffsetDateTime) -> Result<NewCheck, FieldError> {
        if required_str(&self.event_type, "event_type")? != "action_check" {
            return Err(FieldError::Invalid(
                "event_type",
                "event_type must be \"action_check\"".to_string(),
            ));
        }
        let (trace_id, occurred_at, content, schema) = self.common()?;
        Ok(NewCheck {
            check_id: Uuid::new_v4(),
            trace_id,
            occurred_at,
            received_at,
            content,
            schema,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH
    }

    fn run(body: &str) -> Result<NewRun, FieldError> {
        serde_json::from_str::<RunWire>(body)
            .expect("wire")
            .parse(now())
    }

    fn event(body: &str) -> Result<NewEvent, FieldError> {
        serde_json::from_str::<EventWire>(body)
            .expect("wire")
            .parse_event(now())
    }

    const TRACE: &str = "f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4";

    #[test]
    fn content_nested_past_the_parser_limit_is_named_as_such() {
        let nested = |depth: usize| {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let body = json!({"event_type": "user", "trace_id": TRACE, "timestamp": 1.0,
                              "content": text, "schema": "{}"});
            event(&body.to_string())
        };
        assert!(nested(MAX_NESTING).is_ok());
        match nested(MAX_NESTING + 1) {
            Err(FieldError::Invalid("content", why)) => {
                assert!(why.contains("more than 127 levels"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_run_gets_a_random_trace_id_unless_the_client_chose_one() {
        let r =
            run(r#"{"agent_id":"a","timestamp":"2024-01-15T14:30:45.123Z","system_prompt":""}"#)
                .expect("valid");
        assert!(!r.client_chose_id);
        // An explicit null is the same as leaving trace_id out.
        let r = run(r#"{"agent_id":"a","timestamp":"2024-01-15T14:30:45Z","system_prompt":"","trace_id":null}"#)
            .expect("valid");
        assert!(!r.client_chose_id);
        let r = run(&format!(
            r#"{{"agent_id":"a","timestamp":"2024-01-15T14:30:45Z","system_prompt":"p","trace_id":"{}"}}"#,
            TRACE.to_uppercase()
        ))
        .expect("valid");
        assert!(r.client_chose_id);
        assert_eq!(r.trace_id.to_string(), TRACE);
    }

    #[test]
    fn run_fields_are_reported_by_name() {
        let cases = [
            (
                r#"{"timestamp":"2024-01-15T14:30:45Z","system_prompt":""}"#,
                FieldError::Missing("agent_id"),
            ),
            (
                r#"{"agent_id":null,"timestamp":"2024-01-15T14:30:45Z","system_prompt":""}"#,
                FieldError::Missing("agent_id"),
            ),
            (
                r#"{"agent_id":"a","system_prompt":""}"#,
                FieldError::Missing("timestamp"),
            ),
            (
                r#"{"agent_id":"a","timestamp":"2024-01-15T14:30:45Z"}"#,
                FieldError::Missing("system_prompt"),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(run(body).expect_err(body), want, "{body}");
        }
        let invalid = [
            (
                r#"{"agent_id":5,"timestamp":"2024-01-15T14:30:45Z","system_prompt":""}"#,
                "agent_id",
            ),
            (
                r#"{"agent_id":"a","timestamp":"2024-01-15","system_prompt":""}"#,
                "timestamp",
            ),
            (
                r#"{"agent_id":"a","timestamp":1705329045,"system_prompt":""}"#,
                "timestamp",
            ),
            (
                r#"{"agent_id":"a","timestamp":"2024-01-15T14:30:45Z","system_prompt":7}"#,
                "system_prompt",
            ),
            (
                r#"{"agent_id":"a","timestamp":"2024-01-15T14:30:45Z","system_prompt":"","trace_id":"x"}"#,
                "trace_id",
            ),
            (
                r#"{"agent_id":"a","timestamp":"2024-01-15T14:30:45Z","system_prompt":"","trace_id":7}"#,
                "trace_id",
            ),
        ];
        for (body, field) in invalid {
            match run(body) {
                Err(FieldError::Invalid(f, _)) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: expected Invalid({field}), got {other:?}"),
            }
        }
    }

    #[test]
    fn content_is_kept_exactly_as_sent_in_either_form() {
        let e = event(&format!(
            r#"{{"event_type":"user","trace_id":"{TRACE}","timestamp":1,"content":"{{\"b\": 1,  \"a\":2}}","schema":"{{}}"}}"#
        ))
        .expect("valid");
        assert_eq!(e.content.text, r#"{"b": 1,  "a":2}"#);
        assert_eq!(e.content.form, JsonForm::String);
        let e = event(&format!(
            r#"{{"event_type":"user","trace_id":"{TRACE}","timestamp":1,"content":{{"b": 1,  "a":2}},"schema":{{}}}}"#
        ))
        .expect("valid");
        assert_eq!(e.content.text, r#"{"b": 1,  "a":2}"#);
        assert_eq!(e.content.form, JsonForm::Json);
        assert_eq!(e.schema.form, JsonForm::Json);
    }

    #[test]
    fn content_that_is_not_json_gets_a_hint_to_stringify() {
        let e = event(&format!(
            r#"{{"event_type":"user","trace_id":"{TRACE}","timestamp":1,"content":"hello","schema":"{{}}"}}"#
        ));
        match e {
            Err(FieldError::Invalid("content", m)) => assert!(m.contains("stringified"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_as_a_bare_number_is_invalid() {
        let e = event(&format!(
            r#"{{"event_type":"user","trace_id":"{TRACE}","timestamp":1,"content":5,"schema":"{{}}"}}"#
        ));
        assert!(matches!(e, Err(FieldError::Invalid("content", _))), "{e:?}");
    }

    #[test]
    fn a_schema_string_that_is_not_json_is_an_invalid_schema() {
        let e = event(&format!(
            r#"{{"event_type":"user","trace_id":"{TRACE}","timestamp":1,"content":"{{}}","schema":"nope"}}"#
        ));
        assert!(matches!(e, Err(FieldError::InvalidSchema(_))), "{e:?}");
    }

    #[test]
    fn every_event_type_parses_and_others_do_not() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        for s in ["USER", "action_check", "", "tools"] {
            assert_eq!(EventType::parse(s), None, "{s}");
        }
    }

    #[test]
    fn a_check_needs_event_type_action_check() {
        let body = format!(
            r#"{{"event_type":"tool","trace_id":"{TRACE}","timestamp":1,"content":"{{}}","schema":"{{}}"}}"#
        );
        let c = serde_json::from_str::<EventWire>(&body)
            .expect("wire")
            .parse_check(now());
        assert!(
            matches!(c, Err(FieldError::Invalid("event_type", _))),
            "{c:?}"
        );
    }
}
