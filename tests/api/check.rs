//! `POST /v1/check`: the verdict's shape for a safe action (non-empty reasoning naming the tool,
//! no findings, a v4 action_check_id, a numeric receipt time), arguments that break the declared
//! parameters as a `schema.mismatch` block verdict (200, not 400), the stored check row and its
//! place in the run's sequence shared with events, the nested function form, determinism, and
//! the request errors: event_type other than `action_check`, missing fields, unknown and
//! malformed trace ids, an unusable schema, content that is not JSON.

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, absent_and_null_cases, count_rows, is_lowercase_v4_uuid, now_secs, transfer_check,
    transfer_schema, user_event, with_field,
};

const UNKNOWN_TRACE: &str = "f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4";

/// A valid transfer check with `field` set to `value` (`None`: removed).
fn check_with(trace_id: &str, field: &str, value: Option<Value>) -> Value {
    let body = transfer_check(
        trace_id,
        &json!({"amount": 100, "recipient": "user@example.com"}),
    );
    with_field(body, field, value)
}

/// Asserts the verdict's invariants and returns (is_safe, reasoning, findings).
#[track_caller]
fn verdict(resp: &crate::helpers::Resp, why: &str) -> (bool, String, Vec<Value>) {
    assert_eq!(resp.status, 200, "{why}: body {}", resp.text());
    let v = resp.json();
    let is_safe = v["is_safe"]
        .as_bool()
        .unwrap_or_else(|| panic!("{why}: is_safe is a boolean: {v}"));
    let reasoning = v["reasoning"]
        .as_str()
        .unwrap_or_else(|| panic!("{why}: reasoning is a string: {v}"))
        .to_string();
    assert!(
        !reasoning.trim().is_empty(),
        "{why}: reasoning is never empty"
    );
    let findings = v["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("{why}: findings is a list: {v}"))
        .clone();
    let any_block = findings.iter().any(|f| f["severity"] == "block");
    assert_eq!(
        is_safe, !any_block,
        "{why}: is_safe is false exactly when a block finding exists"
    );
    for f in &findings {
        assert!(
            f["severity"] == "block" || f["severity"] == "warn",
            "{why}: severity: {f}"
        );
        assert!(
            f["rule"].as_str().is_some_and(|r| !r.is_empty()),
            "{why}: rule: {f}"
        );
        assert!(
            f["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{why}: message: {f}"
        );
    }
    let id = v["action_check_id"].as_str().unwrap_or("");
    assert!(is_lowercase_v4_uuid(id), "{why}: action_check_id {id:?}");
    assert!(
        v["timestamp"].is_number(),
        "{why}: timestamp is a number: {v}"
    );
    (is_safe, reasoning, findings)
}

/// The stored check: (trace_id, seq, tool_name, is_safe, reasoning, findings as JSON, content).
fn stored_check(
    app: &TestApp,
    check_id: &str,
) -> (String, i64, String, i64, String, Value, String) {
    let r = app
        .query_opt(
            "SELECT trace_id, seq, tool_name, is_safe, reasoning, findings, content
             FROM checks WHERE check_id = ?1",
            &[check_id],
        )
        .unwrap_or_else(|| panic!("check {check_id} is not stored"));
    (
        r.text(0),
        r.i64(1),
        r.text(2),
        r.i64(3),
        r.text(4),
        serde_json::from_str(&r.text(5)).expect("findings column is JSON"),
        r.text(6),
    )
}

#[test]
fn a_matching_action_is_safe_with_a_reasoning_that_starts_with_the_tool_name() {
    // Arrange
    let app = TestApp::spawn();
    let trace = app.new_run();
    let before = now_secs();

    // Act
    let resp = app.check(&transfer_check(
        &trace,
        &json!({"amount": 100, "recipient": "user@example.com"}),
    ));
    let after = now_secs();

    // Assert
    let (is_safe, reasoning, findings) = verdict(&resp, "matching transfer");
    assert!(is_safe, "reasoning: {reasoning}");
    assert!(
        reasoning.starts_with("transfer_funds"),
        "reasoning names the tool: {reasoning}"
    );
    assert_eq!(findings, Vec::<Value>::new());
    let ts = resp.json()["timestamp"].as_f64().expect("timestamp");
    assert!(
        (before - 1.0..=after + 1.0).contains(&ts),
        "timestamp {ts} is the receipt time ({before}..{after})"
    );
    assert!(
        ((ts * 1000.0).round() - ts * 1000.0).abs() < 1e-3,
        "millisecond precision: {ts}"
    );
}

#[test]
fn arguments_that_do_not_match_are_a_block_verdict_not_an_error() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (arguments, a path the violations must include, why)
    let cases = [
        (
            json!({"amount": "500", "recipient": "user@example.com"}),
            "/amount",
            "amount is a string",
        ),
        (json!({"amount": 500}), "", "recipient missing"),
        (
            json!({"amount": 500, "recipient": ["a", "b"]}),
            "/recipient",
            "recipient is a list",
        ),
        (json!("transfer 500"), "", "arguments not an object"),
        (json!([500, "user@example.com"]), "", "arguments positional"),
    ];
    let total = cases.len() as i64;
    for (args, path, why) in cases {
        // Act
        let resp = app.check(&transfer_check(&trace, &args));

        // Assert
        let (is_safe, reasoning, findings) = verdict(&resp, why);
        assert!(!is_safe, "{why}: unsafe");
        assert!(
            reasoning.starts_with("transfer_funds"),
            "{why}: reasoning {reasoning}"
        );
        let f = findings
            .iter()
            .find(|f| f["rule"] == "schema.mismatch")
            .unwrap_or_else(|| panic!("{why}: a schema.mismatch finding in {findings:?}"));
        assert_eq!(f["severity"], "block", "{why}: severity");
        let violations = f["evidence"]["violations"]
            .as_array()
            .unwrap_or_else(|| panic!("{why}: evidence.violations is a list: {f}"));
        assert!(!violations.is_empty(), "{why}: violations listed");
        assert!(violations.len() <= 20, "{why}: at most 20 violations");
        for v in violations {
            assert!(v["path"].is_string(), "{why}: violation path: {v}");
            assert!(
                v["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{why}: violation message: {v}"
            );
        }
        assert!(
            violations.iter().any(|v| v["path"] == path),
            "{why}: a violation at {path:?} in {violations:?}"
        );
    }
    assert_eq!(
        count_rows(&app, "checks"),
        total,
        "unsafe checks are stored too"
    );
}

#[test]
fn a_key_sent_twice_in_the_arguments_or_the_definition_is_a_block_verdict() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    let bash = json!({"type": "function", "name": "bash"}).to_string();
    // (content, schema, where the repeated key is, why). The rules read the last value, so
    // without this rule the first case is judged as `ls` (safe) while a runtime that keeps the
    // first value runs `rm -rf /`.
    let cases = [
        (
            r#"{"command": "rm -rf /", "command": "ls"}"#.to_string(),
            bash.clone(),
            "arguments",
            "/command",
            "a command sent twice",
        ),
        (
            r#"{"amount": 100, "recipient": "a@example.com", "amount": 5}"#.to_string(),
            transfer_schema().to_string(),
            "arguments",
            "/amount",
            "an amount sent twice",
        ),
        (
            r#"{"command": "ls"}"#.to_string(),
            r#"{"type": "function", "name": "read_file", "name": "bash"}"#.to_string(),
            "function definition",
            "/name",
            "a tool name sent twice",
        ),
    ];
    for (content, schema, place, key, why) in cases {
        // Act
        let resp = app.check(&json!({"event_type": "action_check", "trace_id": trace,
            "timestamp": 1678886415.0, "content": content, "schema": schema}));

        // Assert
        let (is_safe, _, findings) = verdict(&resp, why);
        assert!(!is_safe, "{why}: unsafe");
        let f = findings
            .iter()
            .find(|f| f["rule"] == "json.duplicate_key")
            .unwrap_or_else(|| panic!("{why}: a json.duplicate_key finding in {findings:?}"));
        assert_eq!(f["severity"], "block", "{why}");
        assert_eq!(f["evidence"], json!({"in": place, "keys": [key]}), "{why}");
    }
    // The same arguments with each key once are judged on their merits.
    let (is_safe, _, _) = verdict(
        &app.check(&json!({"event_type": "action_check", "trace_id": trace,
            "timestamp": 1678886415.0, "content": r#"{"command": "ls"}"#, "schema": bash})),
        "each key once",
    );
    assert!(is_safe, "ls alone is safe");
}

#[test]
fn a_secret_is_masked_in_every_finding_that_quotes_it() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    let token = format!("ghp_{}", "A1b2C3d4".repeat(5));
    let schema = json!({"type": "function", "name": "lookup", "parameters": {"type": "object",
        "properties": {"n": {"type": "integer"}, "url": {"type": "string"}}}});
    let args = json!({"n": token, "url": format!("http://169.254.169.254/latest?token={token}")});

    // Act
    let resp = app.check(&json!({"event_type": "action_check", "trace_id": trace,
        "timestamp": 1678886415.0, "content": args.to_string(), "schema": schema.to_string()}));

    // Assert
    let (is_safe, reasoning, findings) = verdict(&resp, "secret in a mismatched argument");
    assert!(!is_safe);
    let rules: Vec<&str> = findings.iter().filter_map(|f| f["rule"].as_str()).collect();
    for rule in ["schema.mismatch", "detect.secret", "detect.network"] {
        assert!(rules.contains(&rule), "{rule} fires: {rules:?}");
    }
    assert!(
        !resp.text().contains(&token),
        "the token appears nowhere: {}",
        resp.text()
    );
    assert!(!reasoning.contains(&token[8..]), "nor in the reasoning");
    assert!(
        resp.text().contains("ghp_…"),
        "it is shown masked: {}",
        resp.text()
    );
}

#[test]
fn a_check_is_stored_with_its_verdict_and_tool_name() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (arguments, why)
    let cases = [
        (
            json!({"amount": 100, "recipient": "user@example.com"}),
            "safe",
        ),
        (json!({"amount": "lots"}), "unsafe"),
    ];
    for (args, why) in cases {
        // Act
        let resp = app.check(&transfer_check(&trace, &args));

        // Assert
        let (is_safe, reasoning, findings) = verdict(&resp, why);
        let id = resp.json()["action_check_id"]
            .as_str()
            .expect("id")
            .to_string();
        let (t, _seq, tool, stored_safe, stored_reasoning, stored_findings, content) =
            stored_check(&app, &id);
        assert_eq!(t, trace, "{why}: trace_id");
        assert_eq!(tool, "transfer_funds", "{why}: tool_name");
        assert_eq!(stored_safe, i64::from(is_safe), "{why}: is_safe");
        assert_eq!(stored_reasoning, reasoning, "{why}: reasoning");
        assert_eq!(stored_findings, Value::Array(findings), "{why}: findings");
        assert_eq!(content, args.to_string(), "{why}: content as sent");
    }
}

#[test]
fn events_and_checks_share_the_run_sequence() {
    // Arrange
    let app = TestApp::spawn();
    let trace = app.new_run();

    // Act: event, check, event, check.
    let e1 = app.event(&user_event(&trace));
    let c1 = app.check(&transfer_check(
        &trace,
        &json!({"amount": 1, "recipient": "a"}),
    ));
    let e2 = app.event(&user_event(&trace));
    let c2 = app.check(&transfer_check(&trace, &json!({"amount": "x"})));

    // Assert
    for (r, why) in [(&e1, "first event"), (&e2, "second event")] {
        assert_eq!(r.status, 200, "{why}: {}", r.text());
    }
    verdict(&c1, "first check");
    verdict(&c2, "second check");
    let event_seq = |r: &crate::helpers::Resp| -> i64 {
        let id = r.json()["event_id"].as_str().expect("event_id").to_string();
        app.query_i64("SELECT seq FROM events WHERE event_id = ?1", &[&id])
    };
    let check_seq = |r: &crate::helpers::Resp| -> i64 {
        let id = r.json()["action_check_id"]
            .as_str()
            .expect("id")
            .to_string();
        app.query_i64("SELECT seq FROM checks WHERE check_id = ?1", &[&id])
    };
    assert_eq!(
        [
            event_seq(&e1),
            check_seq(&c1),
            event_seq(&e2),
            check_seq(&c2)
        ],
        [1, 2, 3, 4]
    );
}

#[test]
fn an_event_type_other_than_action_check_is_invalid_field() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (body, status, code, param, why)
    let cases = [
        (
            check_with(&trace, "event_type", Some(json!("user"))),
            400,
            "INVALID_FIELD",
            "event_type",
            "an event's type",
        ),
        (
            check_with(&trace, "event_type", Some(json!("tool"))),
            400,
            "INVALID_FIELD",
            "event_type",
            "tool",
        ),
        (
            check_with(&trace, "event_type", Some(json!("ACTION_CHECK"))),
            400,
            "INVALID_FIELD",
            "event_type",
            "wrong case",
        ),
        (
            check_with(&trace, "event_type", Some(json!("action-check"))),
            400,
            "INVALID_FIELD",
            "event_type",
            "hyphen",
        ),
        (
            check_with(&trace, "event_type", Some(json!(""))),
            400,
            "INVALID_FIELD",
            "event_type",
            "empty",
        ),
        (
            check_with(&trace, "event_type", Some(json!(1))),
            400,
            "INVALID_FIELD",
            "event_type",
            "number",
        ),
    ];
    for (body, status, code, param, why) in cases {
        let resp = app.check(&body);
        resp.assert_error(status, code, Some(param), why);
    }
    assert_eq!(count_rows(&app, "checks"), 0);
}

#[test]
fn each_required_field_that_is_absent_or_null_is_missing_field() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    let fields = ["event_type", "trace_id", "timestamp", "content", "schema"];
    for (body, field, why) in absent_and_null_cases(&fields, |f, v| check_with(&trace, f, v)) {
        let resp = app.check(&body);
        resp.assert_error(400, "MISSING_FIELD", Some(field), &why);
    }
    assert_eq!(count_rows(&app, "checks"), 0);
}

#[test]
fn timestamps_follow_the_event_rules() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (timestamp, accepted, why)
    let cases = [
        (json!(1678886415.5), true, "Unix seconds"),
        (json!("2023-03-15T13:20:15Z"), true, "RFC 3339 with a zone"),
        (json!(-5), false, "negative"),
        (json!(1e300), false, "huge"),
        (json!("2023-03-15T13:20:15"), false, "no zone"),
    ];
    for (ts, accepted, why) in cases {
        let resp = app.check(&check_with(&trace, "timestamp", Some(ts)));
        if accepted {
            verdict(&resp, why);
        } else {
            resp.assert_error(400, "INVALID_FIELD", Some("timestamp"), why);
        }
    }
}

#[test]
fn an_unknown_trace_is_404_and_a_malformed_one_is_400() {
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
        (json!("not-a-uuid"), 400, "INVALID_FIELD", "garbage"),
        (
            json!("f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4"),
            400,
            "INVALID_FIELD",
            "unhyphenated",
        ),
        (json!(""), 400, "INVALID_FIELD", "empty"),
        (json!(7), 400, "INVALID_FIELD", "number"),
    ];
    for (trace_id, status, code, why) in cases {
        let resp = app.check(&check_with("", "trace_id", Some(trace_id)));
        resp.assert_error(status, code, Some("trace_id"), why);
    }
    assert_eq!(count_rows(&app, "checks"), 0);
}

/// A function definition whose parameters cost too much to check the arguments against is
/// refused like an unusable one, before the run's rules judge anything (20 levels of `anyOf`
/// over a shared `$ref` took 17 s before).
#[test]
fn parameters_too_costly_to_validate_are_invalid_schema() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    let mut defs = serde_json::Map::new();
    for i in 0..20 {
        let next = json!({"$ref": format!("#/$defs/a{}", i + 1)});
        defs.insert(format!("a{i}"), json!({"anyOf": [next, next]}));
    }
    defs.insert("a20".into(), json!({"type": "string"}));
    let schema = json!({"type": "function", "name": "transfer_funds",
        "parameters": {"$defs": defs, "type": "object",
                       "properties": {"amount": {"$ref": "#/$defs/a0"}}}});
    let resp = app.check(&check_with(&trace, "schema", Some(schema)));
    let err = resp.assert_error(400, "INVALID_SCHEMA", Some("schema"), "20 levels");
    let msg = err["message"].as_str().unwrap_or("");
    assert!(msg.contains("too costly"), "{msg}");
    assert_eq!(count_rows(&app, "checks"), 0);
}

#[test]
fn an_unparseable_schema_is_invalid_schema() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (schema as sent, why)
    let cases = [
        (json!("not json"), "a string that is not JSON"),
        (
            json!("{\"type\": \"function\", \"name\": \"f\""),
            "truncated JSON",
        ),
        (json!({"type": "function"}), "function without a name"),
        (
            json!({"type": "function", "name": "", "parameters": {}}),
            "empty name",
        ),
        (
            json!({"type": "function", "name": "f", "parameters": 3}),
            "parameters a number",
        ),
        (
            json!({"type": "function", "name": "f", "parameters": {"type": 12}}),
            "parameters with a bad type",
        ),
        (
            json!({"type": "function", "name": "f",
                   "parameters": {"$ref": "https://example.com/params.json"}}),
            "parameters with a remote $ref",
        ),
        (json!({"type": 12}), "plain schema with a bad type"),
    ];
    for (schema, why) in cases {
        let resp = app.check(&check_with(&trace, "schema", Some(schema)));
        resp.assert_error(400, "INVALID_SCHEMA", Some("schema"), why);
    }
    assert_eq!(count_rows(&app, "checks"), 0);
}

#[test]
fn content_that_is_not_json_is_invalid_field() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (content as sent, why)
    let cases = [
        (json!("amount=500&recipient=user"), "form-encoded text"),
        (json!("{amount: 500}"), "JavaScript object literal"),
        (json!(""), "empty string"),
        (json!(500), "a bare number"),
    ];
    for (content, why) in cases {
        let resp = app.check(&check_with(&trace, "content", Some(content)));
        resp.assert_error(400, "INVALID_FIELD", Some("content"), why);
    }
    assert_eq!(count_rows(&app, "checks"), 0);
}

#[test]
fn the_nested_function_form_is_judged_like_the_flat_one() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    let flat = transfer_schema();
    let nested = json!({"type": "function", "function": {
        "name": "transfer_funds", "description": "Send money",
        "parameters": flat["parameters"].clone()}});
    // (arguments, expected is_safe, why)
    let cases = [
        (
            json!({"amount": 10, "recipient": "user@example.com"}),
            true,
            "matching",
        ),
        (
            json!({"amount": "ten", "recipient": "user@example.com"}),
            false,
            "mismatching",
        ),
    ];
    for (args, safe, why) in cases {
        let mut results = Vec::new();
        for (schema, form) in [(&flat, "flat"), (&nested, "nested")] {
            let body = json!({"event_type": "action_check", "trace_id": trace,
                "timestamp": 1678886415.0, "content": args.to_string(),
                "schema": schema.to_string()});
            let resp = app.check(&body);
            let case = format!("{why} ({form})");
            let (is_safe, reasoning, findings) = verdict(&resp, &case);
            assert_eq!(is_safe, safe, "{case}: is_safe");
            let id = resp.json()["action_check_id"]
                .as_str()
                .expect("id")
                .to_string();
            let (_, _, tool, ..) = stored_check(&app, &id);
            assert_eq!(
                tool, "transfer_funds",
                "{case}: tool name from the definition"
            );
            results.push((is_safe, reasoning, findings));
        }
        assert_eq!(results[0], results[1], "{why}: same verdict in both forms");
    }
}

#[test]
fn the_same_request_twice_gets_the_same_verdict() {
    let app = TestApp::spawn();
    let trace = app.new_run();
    // (arguments, why)
    let cases = [
        (
            json!({"amount": 100, "recipient": "user@example.com"}),
            "safe",
        ),
        (
            json!({"amount": "100", "recipient": 5, "extra": true}),
            "unsafe, several violations",
        ),
    ];
    for (args, why) in cases {
        let body = transfer_check(&trace, &args);

        let first = app.check(&body);
        let second = app.check(&body);

        let a = verdict(&first, why);
        let b = verdict(&second, why);
        assert_eq!(a, b, "{why}: is_safe, reasoning and findings");
        assert_ne!(
            first.json()["action_check_id"],
            second.json()["action_check_id"],
            "{why}: each check is its own record"
        );
    }
    assert_eq!(count_rows(&app, "checks"), 4);
}
