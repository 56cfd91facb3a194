//! `POST /v1/event`: the eight event types and their per-run arrival order (`seq`), event
//! timestamps (Unix seconds or a zoned RFC 3339 string; negative, huge and zoneless ones
//! rejected), `content` and `schema` in both forms (a string holding JSON, or JSON sent
//! directly) stored exactly as sent, function definitions (flat and nested) validating
//! `content` against their `parameters`, the supported drafts, INVALID_SCHEMA,
//! SCHEMA_VALIDATION_FAILED with at most 20 `details` and nothing stored, unknown and malformed
//! trace ids, missing fields, and the response shape.

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, absent_and_null_cases, count_rows, is_lowercase_v4_uuid, now_secs, user_event,
    with_field,
};

const PATH: &str = "/v1/event";

const UNKNOWN_TRACE: &str = "f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4";

/// An event body with the given content and schema (as JSON values, sent as they are).
fn event_with(trace_id: &str, content: Value, schema: Value) -> Value {
    json!({"event_type": "tool", "trace_id": trace_id, "timestamp": 1678886405.123,
           "content": content, "schema": schema})
}

/// `user_event(trace_id)` with `field` set to `value` (`None`: removed).
fn user_with(trace_id: &str, field: &str, value: Option<Value>) -> Value {
    with_field(user_event(trace_id), field, value)
}

/// One stored event's columns, by event_id.
#[derive(Debug, PartialEq)]
struct Row {
    trace_id: String,
    seq: i64,
    event_type: String,
    occurred_at: f64,
    received_at_ms: i64,
    content: String,
    content_form: String,
    schema: String,
    schema_form: String,
}

fn stored_event(app: &TestApp, event_id: &str) -> Row {
    let r = app
        .query_opt(
            "SELECT trace_id, seq, event_type, occurred_at, received_at_ms, content, content_form,
                    schema, schema_form FROM events WHERE event_id = ?1",
            &[event_id],
        )
        .unwrap_or_else(|| panic!("event {event_id} is not stored"));
    Row {
        trace_id: r.text(0),
        seq: r.i64(1),
        event_type: r.text(2),
        occurred_at: r.f64(3),
        received_at_ms: r.i64(4),
        content: r.text(5),
        content_form: r.text(6),
        schema: r.text(7),
        schema_form: r.text(8),
    }
}

/// Posts `body` and returns the event_id of a 200 answer.
#[track_caller]
fn logged(app: &TestApp, body: &Value, why: &str) -> String {
    let resp = app.event(body);
    assert_eq!(resp.status, 200, "{why}: body {}", resp.text());
    resp.json()["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{why}: no event_id in {}", resp.text()))
        .to_string()
}

#[test]
fn each_of_the_eight_event_types_is_accepted_and_stored_in_arrival_order() {
    // Arrange
    let app = TestApp::spawn();
    let trace = app.new_run();
    let types = [
        "user",
        "model_input",
        "model_output",
        "tool",
        "environment",
        "memory",
        "system",
        "error",
    ];

    // Act: timestamps run backwards, so arrival order and event time disagree.
    let mut ids = Vec::new();
    for (i, t) in types.iter().enumerate() {
        let body = json!({"event_type": t, "trace_id": trace,
            "timestamp": 1_700_000_000.0 - i as f64,
            "content": format!("{{\"step\":{i}}}"), "schema": "{\"type\":\"object\"}"});
        ids.push(logged(&app, &body, t));
    }

    // Assert
    let rows: Vec<(String, i64, String)> = app
        .query(
            "SELECT event_id, seq, event_type FROM events WHERE trace_id = ?1 ORDER BY seq",
            &[&trace],
        )
        .iter()
        .map(|r| (r.text(0), r.i64(1), r.text(2)))
        .collect();
    let expected: Vec<(String, i64, String)> = ids
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (id, t))| (id.clone(), i as i64 + 1, t.to_string()))
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn an_unknown_event_type_is_invalid_field() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (event_type, why)
    let cases = [
        (json!("User"), "wrong case"),
        (json!("action_check"), "the check endpoint's type"),
        (json!("tool_call"), "not a type"),
        (json!(""), "empty"),
        (json!(5), "number"),
        (json!(["user"]), "array"),
    ];
    for (event_type, why) in cases {
        let resp = app.event(&user_with(&trace, "event_type", Some(event_type)));
        resp.assert_error(400, "INVALID_FIELD", Some("event_type"), why);
    }
    assert_eq!(count_rows(&app, "events"), 0);
}

#[test]
fn each_required_field_that_is_absent_or_null_is_missing_field() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    let fields = ["event_type", "trace_id", "timestamp", "content", "schema"];
    for (body, field, why) in absent_and_null_cases(&fields, |f, v| user_with(&trace, f, v)) {
        let resp = app.event(&body);
        resp.assert_error(400, "MISSING_FIELD", Some(field), &why);
    }
    assert_eq!(count_rows(&app, "events"), 0);
}

#[test]
fn numeric_and_zoned_string_timestamps_are_accepted_and_stored_as_unix_seconds() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (timestamp, stored occurred_at, why)
    let cases = [
        (
            json!(1678886405.123),
            1678886405.123,
            "seconds with milliseconds",
        ),
        (json!(1678886405), 1678886405.0, "integer seconds"),
        (json!(0), 0.0, "the epoch"),
        (
            json!(1678886405.123456),
            1678886405.123456,
            "microseconds kept",
        ),
        (
            json!("2023-03-15T13:20:05Z"),
            1678886405.0,
            "RFC 3339 with Z",
        ),
        (
            json!("2023-03-15T14:20:05.5+01:00"),
            1678886405.5,
            "RFC 3339 with an offset",
        ),
    ];
    for (ts, want, why) in cases {
        let id = logged(&app, &user_with(&trace, "timestamp", Some(ts)), why);
        let row = stored_event(&app, &id);
        assert_eq!(row.occurred_at, want, "{why}: occurred_at");
    }
}

#[test]
fn negative_huge_and_zoneless_timestamps_are_rejected() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (timestamp, why)
    let cases = [
        (json!(-1), "negative"),
        (json!(-0.001), "slightly negative"),
        (json!(1e300), "far beyond any date"),
        (json!(f64::MAX), "f64::MAX"),
        (json!("2023-03-15T13:20:05"), "string without a zone"),
        (json!("2023-03-15"), "bare date"),
        (json!("1678886405"), "Unix seconds as a string"),
        (json!("now"), "garbage"),
        (json!(true), "boolean"),
        (json!([1678886405]), "array"),
        (json!({"s": 1678886405}), "object"),
    ];
    for (ts, why) in cases {
        let resp = app.event(&user_with(&trace, "timestamp", Some(ts)));
        resp.assert_error(400, "INVALID_FIELD", Some("timestamp"), why);
    }
    // Non-finite numbers cannot be written in JSON; a bare NaN or Infinity is not JSON at all.
    for (raw, why) in [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("1e999", "overflowing literal"),
    ] {
        let body = format!(
            r#"{{"event_type":"user","trace_id":"{trace}","timestamp":{raw},"content":"{{}}","schema":"{{}}"}}"#
        );
        let resp = app.post_raw(PATH, Some("application/json"), body.as_bytes());
        assert_eq!(resp.status, 400, "{why}: body {}", resp.text());
        let code = resp.code();
        assert!(
            code == "INVALID_JSON" || code == "INVALID_FIELD",
            "{why}: code {code}"
        );
    }
    assert_eq!(count_rows(&app, "events"), 0);
}

#[test]
fn content_and_schema_are_stored_exactly_as_sent_in_either_form() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // Whitespace, key order and escapes must survive, so these bodies are written by hand.
    // (content as it appears in the body, schema likewise, stored content, content_form,
    //  stored schema, schema_form, why)
    let cases = [
        (
            r#""{ \"b\": 1,\n  \"a\": [1, 2] }""#,
            r#""{\"type\":  \"object\", \"required\": [\"b\"]}""#,
            "{ \"b\": 1,\n  \"a\": [1, 2] }",
            "string",
            "{\"type\":  \"object\", \"required\": [\"b\"]}",
            "string",
            "both as strings",
        ),
        (
            r#"{ "b" : 1 ,  "a":[1,2] }"#,
            r#"{"required": ["b"],   "type": "object"}"#,
            r#"{ "b" : 1 ,  "a":[1,2] }"#,
            "json",
            r#"{"required": ["b"],   "type": "object"}"#,
            "json",
            "both as direct JSON",
        ),
        (
            r#"{"z":"é 日本","a":null}"#,
            r#""{\"type\":\"object\"}""#,
            r#"{"z":"é 日本","a":null}"#,
            "json",
            r#"{"type":"object"}"#,
            "string",
            "direct content, string schema",
        ),
        (
            r#"[3, 2,1]"#,
            r#"{"type":"array","items":{"type":"integer"}}"#,
            "[3, 2,1]",
            "json",
            r#"{"type":"array","items":{"type":"integer"}}"#,
            "json",
            "a direct array",
        ),
        (
            r#""\"just a JSON string\"""#,
            r#""{\"type\":\"string\"}""#,
            r#""just a JSON string""#,
            "string",
            r#"{"type":"string"}"#,
            "string",
            "stringified JSON scalar",
        ),
    ];
    for (content, schema, want_content, want_cform, want_schema, want_sform, why) in cases {
        // Arrange
        let body = format!(
            r#"{{"event_type": "tool", "trace_id": "{trace}", "timestamp": 1678886405.123,
                "content": {content}, "schema": {schema}}}"#
        );

        // Act
        let resp = app.post_raw(PATH, Some("application/json"), body.as_bytes());

        // Assert
        assert_eq!(resp.status, 200, "{why}: body {}", resp.text());
        let id = resp.json()["event_id"]
            .as_str()
            .expect("event_id")
            .to_string();
        let row = stored_event(&app, &id);
        assert_eq!(row.content, want_content, "{why}: content");
        assert_eq!(row.content_form, want_cform, "{why}: content_form");
        assert_eq!(row.schema, want_schema, "{why}: schema");
        assert_eq!(row.schema_form, want_sform, "{why}: schema_form");
    }
}

#[test]
fn content_that_is_a_string_but_not_json_is_rejected_with_a_hint_to_stringify() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (content, why)
    let cases = [
        ("Book a flight to Paris", "plain text"),
        ("{message: 'hi'}", "JavaScript object literal"),
        ("{\"message\": \"hi\"", "truncated JSON"),
        ("", "empty string"),
    ];
    for (content, why) in cases {
        let resp = app.event(&user_with(&trace, "content", Some(json!(content))));
        let err = resp.assert_error(400, "INVALID_FIELD", Some("content"), why);
        let msg = err["message"].as_str().unwrap_or("");
        assert!(
            msg.to_lowercase().contains("stringify"),
            "{why}: the message hints to stringify: {msg}"
        );
    }
    assert_eq!(count_rows(&app, "events"), 0);
}

#[test]
fn content_and_schema_of_the_wrong_json_type_are_invalid_field() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    let schema = json!("{\"type\":\"object\"}");
    // (body, status, code, param, why)
    let cases = [
        (
            event_with(&trace, json!(5), schema.clone()),
            400,
            "INVALID_FIELD",
            "content",
            "content a bare number",
        ),
        (
            event_with(&trace, json!(true), schema.clone()),
            400,
            "INVALID_FIELD",
            "content",
            "content a boolean",
        ),
        (
            event_with(&trace, json!({}), json!(5)),
            400,
            "INVALID_FIELD",
            "schema",
            "schema a bare number",
        ),
        (
            event_with(&trace, json!({}), json!([{"type": "object"}])),
            400,
            "INVALID_FIELD",
            "schema",
            "schema a direct array",
        ),
    ];
    for (body, status, code, param, why) in cases {
        let resp = app.event(&body);
        resp.assert_error(status, code, Some(param), why);
    }
    assert_eq!(count_rows(&app, "events"), 0);
}

#[test]
fn a_function_definition_validates_content_against_its_parameters() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    let params = json!({"type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city"], "additionalProperties": false});
    let flat = json!({"type": "function", "name": "get_weather", "description": "Weather",
                      "parameters": params});
    let nested = json!({"type": "function",
                        "function": {"name": "get_weather", "parameters": params}});
    // (schema, content, expected status, why)
    let cases = [
        (&flat, json!({"city": "Paris"}), 200, "flat: valid"),
        (
            &flat,
            json!({"city": "Paris", "days": 3}),
            200,
            "flat: valid with an optional",
        ),
        (
            &flat,
            json!({"days": 3}),
            400,
            "flat: required argument missing",
        ),
        (&flat, json!({"city": 5}), 400, "flat: wrong type"),
        (
            &flat,
            json!({"city": "Paris", "days": 0}),
            400,
            "flat: below minimum",
        ),
        (
            &flat,
            json!({"city": "Paris", "x": 1}),
            400,
            "flat: additional property",
        ),
        (&nested, json!({"city": "Paris"}), 200, "nested: valid"),
        (
            &nested,
            json!({"days": 3}),
            400,
            "nested: required argument missing",
        ),
        (
            &nested,
            json!({"city": ["Paris"]}),
            400,
            "nested: wrong type",
        ),
    ];
    let mut accepted = 0;
    for (schema, content, status, why) in cases {
        for (c, s, form) in [
            (
                json!(content.to_string()),
                json!(schema.to_string()),
                "strings",
            ),
            (content.clone(), (*schema).clone(), "direct JSON"),
        ] {
            let resp = app.event(&event_with(&trace, c, s));
            let case = format!("{why} ({form})");
            if status == 200 {
                assert_eq!(resp.status, 200, "{case}: body {}", resp.text());
                accepted += 1;
            } else {
                let err =
                    resp.assert_error(400, "SCHEMA_VALIDATION_FAILED", Some("content"), &case);
                let details = err["details"].as_array().expect("details");
                assert!(!details.is_empty(), "{case}: details listed");
            }
        }
    }
    assert_eq!(count_rows(&app, "events"), accepted);
}

#[test]
fn a_plain_schema_validates_content_as_a_whole() {
    let app = TestApp::spawn();
    let trace = app.new_run();

    let ok = app.event(&user_event(&trace));
    let bad = app.event(&user_with(
        &trace,
        "content",
        Some(json!("{\"message\": 42}")),
    ));

    assert_eq!(ok.status, 200, "valid user event: {}", ok.text());
    let err = bad.assert_error(
        400,
        "SCHEMA_VALIDATION_FAILED",
        Some("content"),
        "message not a string",
    );
    assert_eq!(err["type"], "invalid_request_error");
    let details = err["details"].as_array().expect("details is a list");
    assert_eq!(details.len(), 1, "one violation: {details:?}");
    assert_eq!(details[0]["path"], "/message");
    assert!(
        details[0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "a message for the violation: {details:?}"
    );
    assert_eq!(count_rows(&app, "events"), 1);
}

#[test]
fn an_unusable_schema_is_invalid_schema() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (schema as sent, why)
    let cases = [
        (json!({"type": 12}), "type is a number"),
        (json!("{\"type\": 12}"), "type is a number, stringified"),
        (
            json!({"$ref": "https://example.com/schemas/message.json"}),
            "remote $ref",
        ),
        (
            json!({"type": "object", "properties": {"m": {"$ref": "http://example.com/m.json#/defs/m"}}}),
            "nested remote $ref",
        ),
        (json!("not json at all"), "a string that is not JSON"),
        (json!("{\"type\": \"object\""), "truncated JSON string"),
        (json!("42"), "stringified number"),
        (
            json!({"type": "object", "minLength": "five"}),
            "keyword of the wrong type",
        ),
        (json!({"type": "function"}), "function without a name"),
        (
            json!({"type": "function", "name": "f", "parameters": 3}),
            "function parameters a number",
        ),
        (
            json!({"type": "function", "function": "f"}),
            "nested function not an object",
        ),
        (
            json!({"type": "function", "name": "f", "parameters": {"type": "strin"}}),
            "function parameters with an unknown type",
        ),
    ];
    for (schema, why) in cases {
        let resp = app.event(&event_with(&trace, json!("{}"), schema));
        let err = resp.assert_error(400, "INVALID_SCHEMA", Some("schema"), why);
        let msg = err["message"].as_str().unwrap_or("");
        assert!(
            !msg.contains("/work") && !msg.contains(".rs:"),
            "{why}: no internals in the message: {msg}"
        );
    }
    assert_eq!(count_rows(&app, "events"), 0);
}

/// `anyOf` branches that refer to one definition, `levels` deep: the work doubles per level.
fn doubling_schema(levels: usize) -> Value {
    let mut defs = serde_json::Map::new();
    for i in 0..levels {
        let next = json!({"$ref": format!("#/$defs/a{}", i + 1)});
        defs.insert(format!("a{i}"), json!({"anyOf": [next, next]}));
    }
    defs.insert(format!("a{levels}"), json!({"type": "string"}));
    json!({"$defs": defs, "$ref": "#/$defs/a0"})
}

/// Schemas whose validation has no useful bound are refused up front with INVALID_SCHEMA
/// saying why. Before: the 22-level `anyOf` took 29 s and 6 GB for the content `5`, the
/// recursive schema at 24 levels was killed for lack of memory, 1,000 branches for each of
/// 10,000 items took minutes, and one backtracking pattern 17 ms per member name.
#[test]
fn schemas_too_costly_to_validate_are_invalid_schema_and_say_why() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    let nested = (0..24).fold(json!(0), |v, _| json!([v]));
    let branches: Vec<Value> = (0..1000).map(|i| json!({"const": i})).collect();
    let patterns: Vec<Value> = (0..300)
        .map(|i| json!({"pattern": format!("^a{i}$")}))
        .collect();
    // (content, schema, what the message names, why)
    let cases = [
        (
            json!(5),
            doubling_schema(22),
            "too costly",
            "anyOf over a shared $ref, 22 levels",
        ),
        (
            nested,
            json!({"anyOf": [{"items": {"$ref": "#"}}, {"items": {"$ref": "#"}}]}),
            "too costly",
            "two recursive branches, content 24 levels deep",
        ),
        (
            json!(vec![-1; 10_000]),
            json!({"items": {"anyOf": branches}}),
            "too costly",
            "1,000 branches for each of 10,000 items",
        ),
        (
            json!({"ab": 1}),
            json!({"patternProperties": {"^(a|a)*(?=b)\\1c": {}}}),
            "lookaround",
            "a pattern that needs backtracking",
        ),
        (
            json!("a"),
            json!({"allOf": patterns}),
            "regular expressions",
            "300 patterns",
        ),
        (
            json!("a"),
            json!({"allOf": vec![json!({}); 6000]}),
            "subschemas",
            "6,000 subschemas",
        ),
        (
            json!("a"),
            json!({"anyOf": [{"$ref": "#"}, {"type": "string"}]}),
            "loop",
            "a $ref loop that never descends into the content",
        ),
    ];
    for (content, schema, names, why) in cases {
        let content = json!(content.to_string());
        let resp = app.event(&event_with(&trace, content, schema));
        let err = resp.assert_error(400, "INVALID_SCHEMA", Some("schema"), why);
        let msg = err["message"].as_str().unwrap_or("");
        assert!(msg.contains(names), "{why}: {msg}");
    }
    assert_eq!(count_rows(&app, "events"), 0);
    // The same schema with cheaper content passes.
    let cheap = event_with(&trace, json!("\"x\""), doubling_schema(8));
    logged(&app, &cheap, "8 levels");
}

/// Violations of large content are not all collected (each costs memory, and an `anyOf`
/// branch's a copy of the content it failed on: 100 branches against 40,000 members held
/// 500 MB): the first is given, or one at the root when the schema branches.
#[test]
fn violations_of_large_content_are_reported_without_collecting_them_all() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    let items = json!(serde_json::to_string(&vec![0; 200_000]).expect("content"));
    let resp = app.event(&event_with(
        &trace,
        items,
        json!({"items": {"type": "string"}}),
    ));
    let err = resp.assert_error(400, "SCHEMA_VALIDATION_FAILED", Some("content"), "items");
    assert_eq!(
        err["details"],
        json!([{"path": "/0", "message": "0 is not of type \"string\""}])
    );
    let members: Value = (0..40_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let schema = json!({"anyOf": vec![json!({"type": "string"}); 100]});
    let resp = app.event(&event_with(&trace, members, schema));
    let err = resp.assert_error(400, "SCHEMA_VALIDATION_FAILED", Some("content"), "anyOf");
    let details = err["details"].as_array().expect("details");
    assert_eq!(details.len(), 1, "{details:?}");
    assert_eq!(details[0]["path"], "");
    let msg = details[0]["message"].as_str().unwrap_or("");
    assert!(msg.contains("too large to list"), "{msg}");
    assert_eq!(count_rows(&app, "events"), 0);
}

#[test]
fn schema_violations_are_capped_at_20_details_and_nothing_is_stored() {
    // Arrange
    let app = TestApp::spawn();
    let trace = app.new_run();
    let content: Vec<i64> = (0..30).collect();
    let body = event_with(
        &trace,
        json!(serde_json::to_string(&content).expect("content")),
        json!("{\"type\":\"array\",\"items\":{\"type\":\"string\"}}"),
    );

    // Act
    let resp = app.event(&body);

    // Assert
    let err = resp.assert_error(
        400,
        "SCHEMA_VALIDATION_FAILED",
        Some("content"),
        "30 wrong items",
    );
    let details = err["details"].as_array().expect("details is a list");
    assert_eq!(details.len(), 20, "capped at 20: {details:?}");
    for d in details {
        let path = d["path"].as_str().expect("path is a string");
        let index: usize = path
            .strip_prefix('/')
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("path {path:?} points at an item"));
        assert!(index < 30, "{path}");
        assert!(
            d["message"].as_str().is_some_and(|m| !m.is_empty()),
            "a message: {d}"
        );
        assert_eq!(
            d.as_object().map(|o| o.len()),
            Some(2),
            "only path and message: {d}"
        );
    }
    let msg = err["message"].as_str().unwrap_or("");
    assert!(msg.contains("30"), "the message gives the total: {msg}");
    assert_eq!(count_rows(&app, "events"), 0, "nothing is stored");
    let last_seq = app.query_i64("SELECT last_seq FROM runs WHERE trace_id = ?1", &[&trace]);
    assert_eq!(last_seq, 0, "no sequence number is used up");
}

#[test]
fn a_rejected_event_does_not_use_up_a_sequence_number() {
    let app = TestApp::spawn();
    let trace = app.new_run();

    let bad = app.event(&user_with(
        &trace,
        "content",
        Some(json!("{\"message\": 1}")),
    ));
    let id = logged(
        &app,
        &user_event(&trace),
        "valid event after a rejected one",
    );

    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(stored_event(&app, &id).seq, 1);
}

#[test]
fn an_unknown_trace_id_is_404_and_a_malformed_one_is_400() {
    let app = TestApp::spawn();
    app.new_run();
    // (trace_id, status, code, why)
    let cases = [
        (
            json!(UNKNOWN_TRACE),
            404,
            "TRACE_NOT_FOUND",
            "well-formed, never registered",
        ),
        (
            json!("3F2B8C1E-0D4A-4C6E-9B7A-2E5F1A8D9C04"),
            404,
            "TRACE_NOT_FOUND",
            "upper case, never registered",
        ),
        (json!("not-a-uuid"), 400, "INVALID_FIELD", "garbage"),
        (
            json!("f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4"),
            400,
            "INVALID_FIELD",
            "unhyphenated",
        ),
        (
            json!("{f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4}"),
            400,
            "INVALID_FIELD",
            "braced",
        ),
        (json!(""), 400, "INVALID_FIELD", "empty"),
        (json!(42), 400, "INVALID_FIELD", "number"),
    ];
    for (trace_id, status, code, why) in cases {
        let resp = app.event(&user_with("", "trace_id", Some(trace_id)));
        let err = resp.assert_error(status, code, Some("trace_id"), why);
        if status == 404 {
            assert_eq!(err["type"], "not_found_error", "{why}: type");
        }
    }
    assert_eq!(count_rows(&app, "events"), 0);
}

#[test]
fn a_registered_trace_id_is_found_in_any_case() {
    let app = TestApp::spawn();
    let trace = app.new_run();

    let id = logged(
        &app,
        &user_event(&trace.to_uppercase()),
        "upper-case trace_id",
    );

    assert_eq!(stored_event(&app, &id).trace_id, trace);
}

#[test]
fn the_answer_is_a_v4_event_id_and_the_receipt_time_in_unix_seconds_with_milliseconds() {
    // Arrange
    let app = TestApp::spawn();
    let trace = app.new_run();
    let before = now_secs();

    // Act
    let resp = app.event(&user_event(&trace));
    let after = now_secs();

    // Assert
    assert_eq!(resp.status, 200, "body {}", resp.text());
    assert!(
        resp.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "content-type {:?}",
        resp.header("content-type")
    );
    let v = resp.json();
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(2),
        "event_id and timestamp only: {v}"
    );
    let id = v["event_id"].as_str().expect("event_id is a string");
    assert!(is_lowercase_v4_uuid(id), "event_id {id:?}");
    let ts = v["timestamp"].as_f64().expect("timestamp is a number");
    assert!(
        (before - 1.0..=after + 1.0).contains(&ts),
        "timestamp {ts} is the receipt time ({before}..{after})"
    );
    // At most three decimals, as written on the wire.
    let text = resp.text();
    let raw = text
        .split("\"timestamp\":")
        .nth(1)
        .expect("timestamp in the body")
        .trim_start()
        .split([',', '}'])
        .next()
        .expect("number")
        .trim();
    let decimals = raw.split_once('.').map_or(0, |(_, f)| f.len());
    assert!(decimals <= 3, "timestamp {raw} has more than 3 decimals");
    assert!(
        !raw.contains(['e', 'E']),
        "timestamp {raw} in plain notation"
    );
    let row = stored_event(&app, id);
    assert_eq!(row.trace_id, trace);
    assert_eq!(row.event_type, "user");
    assert_eq!(
        row.received_at_ms,
        (ts * 1000.0).round() as i64,
        "stored receipt time"
    );
}

#[test]
fn sequence_numbers_are_independent_between_runs() {
    let app = TestApp::spawn();
    let a = app.new_run();
    let b = app.new_run();

    // Interleave: a, b, a, a, b.
    let order = [&a, &b, &a, &a, &b];
    let ids: Vec<String> = order
        .iter()
        .map(|t| logged(&app, &user_event(t), "interleaved"))
        .collect();

    let seqs: Vec<(String, i64)> = ids
        .iter()
        .map(|id| {
            let row = stored_event(&app, id);
            (row.trace_id, row.seq)
        })
        .collect();
    assert_eq!(
        seqs,
        vec![
            (a.clone(), 1),
            (b.clone(), 1),
            (a.clone(), 2),
            (a.clone(), 3),
            (b.clone(), 2)
        ]
    );
}

#[test]
fn schemas_of_every_supported_draft_are_honoured() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (schema, content, expected status, why)
    let cases = [
        // Draft 4's boolean exclusiveMaximum: 10 is excluded.
        (
            json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer",
                   "maximum": 10, "exclusiveMaximum": true}),
            json!(9),
            200,
            "draft-04: below an exclusive maximum",
        ),
        (
            json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer",
                   "maximum": 10, "exclusiveMaximum": true}),
            json!(10),
            400,
            "draft-04: at a boolean exclusive maximum",
        ),
        (
            json!({"$schema": "http://json-schema.org/draft-06/schema#", "type": "object",
                   "required": ["a"]}),
            json!({}),
            400,
            "draft-06: required",
        ),
        (
            json!({"$schema": "http://json-schema.org/draft-07/schema#",
                   "if": {"properties": {"kind": {"const": "card"}}},
                   "then": {"required": ["number"]}}),
            json!({"kind": "card"}),
            400,
            "draft-07: if/then",
        ),
        (
            json!({"$schema": "https://json-schema.org/draft/2019-09/schema", "type": "object",
                   "dependentRequired": {"a": ["b"]}}),
            json!({"a": 1}),
            400,
            "2019-09: dependentRequired",
        ),
        // 2020-12's prefixItems: the first item must be a string.
        (
            json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array",
                   "prefixItems": [{"type": "string"}]}),
            json!(["x", 1]),
            200,
            "2020-12: prefixItems satisfied",
        ),
        (
            json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array",
                   "prefixItems": [{"type": "string"}]}),
            json!([1]),
            400,
            "2020-12: prefixItems violated",
        ),
        (
            json!({"type": "array", "prefixItems": [{"type": "string"}]}),
            json!([1]),
            400,
            "no $schema: 2020-12 by default",
        ),
    ];
    for (schema, content, status, why) in cases {
        let body = event_with(
            &trace,
            json!(content.to_string()),
            json!(schema.to_string()),
        );
        let resp = app.event(&body);
        if status == 200 {
            assert_eq!(resp.status, 200, "{why}: body {}", resp.text());
        } else {
            resp.assert_error(400, "SCHEMA_VALIDATION_FAILED", Some("content"), why);
        }
    }
}

#[test]
fn unknown_fields_are_ignored() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    let mut body = user_event(&trace);
    let obj = body.as_object_mut().expect("object");
    obj.insert("metadata".into(), json!({"model": "gpt"}));
    obj.insert("seq".into(), json!(99));

    let id = logged(&app, &body, "extra fields");

    assert_eq!(stored_event(&app, &id).seq, 1, "a client cannot set seq");
}
