//! `POST /v1/register-agent-run`: the success shape (a lowercase v4 trace_id and a receipt time
//! in exactly `YYYY-MM-DDTHH:mm:ss.sssZ`), the run as stored in the `runs` table (agent_id,
//! started_at and system_prompt verbatim), client-chosen trace ids (any case in, lowercase out;
//! reuse is 409 TRACE_ID_CONFLICT and leaves the stored run untouched), and every field rule:
//! agent_id length and control characters, timestamps with and without a zone, missing, null
//! and wrongly typed fields, malformed trace ids, unknown fields.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, absent_and_null_cases, count_rows, is_lowercase_v4_uuid, with_field,
};

/// A valid registration body.
fn body() -> Value {
    json!({"agent_id": "cs-agent-prod-v1", "timestamp": "2024-01-15T14:30:45.123Z",
           "system_prompt": "You are a helpful assistant."})
}

/// `body()` with `field` set to `value` (`None`: removed).
fn with(field: &str, value: Option<Value>) -> Value {
    with_field(body(), field, value)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds of a timestamp in exactly `YYYY-MM-DDTHH:mm:ss.sssZ`; `None` if the text
/// has any other shape or an out-of-range field.
fn parse_millis_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let ok = match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        };
        if !ok {
            return None;
        }
    }
    let num = |from: usize, to: usize| s[from..to].parse::<i64>().ok();
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

fn now_millis() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("millis fit in i64")
}

/// The stored (agent_id, started_at, system_prompt, received_at) of a run.
fn stored_run(app: &TestApp, trace_id: &str) -> Option<(String, String, String, String)> {
    app.query_opt(
        "SELECT agent_id, started_at, system_prompt, received_at FROM runs WHERE trace_id = ?1",
        &[trace_id],
    )
    .map(|r| (r.text(0), r.text(1), r.text(2), r.text(3)))
}

#[test]
fn the_hand_written_checks_of_this_file_tell_good_from_bad() {
    // The shape checks below are the test's own code: make sure they can fail.
    assert!(is_lowercase_v4_uuid("3f2b8c1e-0d4a-4c6e-9b7a-2e5f1a8d9c04"));
    for bad in [
        "3F2B8C1E-0D4A-4C6E-9B7A-2E5F1A8D9C04",
        "3f2b8c1e-0d4a-1c6e-9b7a-2e5f1a8d9c04",
        "3f2b8c1e-0d4a-4c6e-7b7a-2e5f1a8d9c04",
        "3f2b8c1e0d4a4c6e9b7a2e5f1a8d9c04",
    ] {
        assert!(!is_lowercase_v4_uuid(bad), "{bad}");
    }
    assert_eq!(parse_millis_utc("1970-01-01T00:00:00.000Z"), Some(0));
    assert_eq!(
        parse_millis_utc("2024-01-15T14:30:45.123Z"),
        Some(1_705_329_045_123)
    );
    for bad in [
        "2024-01-15T14:30:45Z",
        "2024-01-15T14:30:45.12Z",
        "2024-01-15T14:30:45.1234Z",
        "2024-01-15T14:30:45.123+00:00",
        "2024-01-15 14:30:45.123Z",
    ] {
        assert_eq!(parse_millis_utc(bad), None, "{bad}");
    }
}

#[test]
fn a_registration_answers_a_lowercase_v4_trace_id_and_the_receipt_time_in_milliseconds_utc() {
    // Arrange
    let app = TestApp::spawn();
    let before = now_millis();

    // Act
    let resp = app.register(&body());
    let after = now_millis();

    // Assert
    assert_eq!(resp.status, 200, "body {}", resp.text());
    assert!(
        resp.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "content-type {:?}",
        resp.header("content-type")
    );
    let v = resp.json();
    let trace_id = v["trace_id"].as_str().expect("trace_id is a string");
    assert!(is_lowercase_v4_uuid(trace_id), "trace_id {trace_id:?}");
    let ts = v["timestamp"].as_str().expect("timestamp is a string");
    let ms = parse_millis_utc(ts)
        .unwrap_or_else(|| panic!("timestamp {ts:?} is not YYYY-MM-DDTHH:mm:ss.sssZ"));
    // The server truncates to milliseconds; allow a little clock slack around the request.
    assert!(
        (before - 1000..=after + 1000).contains(&ms),
        "timestamp {ts} is not the receipt time (between {before} and {after} ms)"
    );
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(2),
        "only trace_id and timestamp: {v}"
    );
}

#[test]
fn two_registrations_get_distinct_trace_ids() {
    let app = TestApp::spawn();

    let a = app.register(&body()).json();
    let b = app.register(&body()).json();

    assert_ne!(a["trace_id"], b["trace_id"]);
    assert_eq!(count_rows(&app, "runs"), 2);
}

#[test]
fn the_run_is_stored_with_agent_id_started_at_and_system_prompt_verbatim() {
    // (agent_id, timestamp, system_prompt, why)
    let cases = [
        (
            "cs-agent-prod-v1",
            "2024-01-15T14:30:45.123Z",
            "You are a helpful assistant.",
            "plain ascii",
        ),
        (
            "agent-é-日本",
            "2024-01-15T20:00:45.5+05:30",
            "Réponds en français. 日本語も話せます 🚀\n\tLine two with \"quotes\" and \\ backslash.",
            "unicode, escapes and an offset timestamp",
        ),
        (
            "a",
            "2024-01-15T14:30:45.123456789Z",
            "",
            "empty prompt and nanosecond timestamp",
        ),
        (
            "  spaced agent  ",
            "2024-01-15T14:30:45-08:00",
            "   leading and trailing whitespace   \n",
            "whitespace is not trimmed",
        ),
        (
            "agent",
            "2016-12-31T23:59:60Z",
            "before\u{0}after the NUL",
            "NUL inside the prompt and a leap second",
        ),
    ];
    let app = TestApp::spawn();
    for (agent_id, timestamp, prompt, why) in cases {
        // Act
        let resp = app.register(
            &json!({"agent_id": agent_id, "timestamp": timestamp, "system_prompt": prompt}),
        );

        // Assert
        assert_eq!(resp.status, 200, "{why}: body {}", resp.text());
        let v = resp.json();
        let trace_id = v["trace_id"].as_str().expect("trace_id");
        let (a, s, p, received) =
            stored_run(&app, trace_id).unwrap_or_else(|| panic!("{why}: run not stored"));
        assert_eq!(a, agent_id, "{why}: agent_id");
        assert_eq!(
            s, timestamp,
            "{why}: started_at is the client's text verbatim"
        );
        assert_eq!(p, prompt, "{why}: system_prompt verbatim");
        assert_eq!(
            received, v["timestamp"],
            "{why}: received_at is the answered receipt time"
        );
    }
    assert_eq!(count_rows(&app, "runs"), cases.len() as i64);
}

#[test]
fn a_client_chosen_trace_id_in_upper_case_is_answered_and_stored_lowercase() {
    let app = TestApp::spawn();
    let chosen = "3F2B8C1E-0D4A-4C6E-9B7A-2E5F1A8D9C04";

    let resp = app.register(&with("trace_id", Some(json!(chosen))));

    assert_eq!(resp.status, 200, "body {}", resp.text());
    assert_eq!(resp.json()["trace_id"], chosen.to_lowercase());
    assert!(
        stored_run(&app, &chosen.to_lowercase()).is_some(),
        "the run is stored under the lowercase id"
    );
    assert!(
        stored_run(&app, chosen).is_none(),
        "nothing is stored under the upper-case spelling"
    );
}

#[test]
fn a_client_chosen_trace_id_need_not_be_version_4() {
    // The contract asks for "a client-chosen UUID (canonical hyphenated form, any case)".
    let app = TestApp::spawn();
    let chosen = "f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4";

    let resp = app.register(&with("trace_id", Some(json!(chosen))));

    assert_eq!(resp.status, 200, "body {}", resp.text());
    assert_eq!(resp.json()["trace_id"], chosen);
}

#[test]
fn a_null_trace_id_is_the_same_as_none_and_gets_a_random_one() {
    let app = TestApp::spawn();

    let resp = app.register(&with("trace_id", Some(Value::Null)));

    assert_eq!(resp.status, 200, "body {}", resp.text());
    let v = resp.json();
    let id = v["trace_id"].as_str().expect("trace_id");
    assert!(is_lowercase_v4_uuid(id), "{id}");
}

#[test]
fn a_reused_client_trace_id_is_409_and_the_run_is_untouched() {
    // Arrange
    let app = TestApp::spawn();
    let chosen = "3f2b8c1e-0d4a-4c6e-9b7a-2e5f1a8d9c04";
    let first = json!({"agent_id": "first-agent", "timestamp": "2024-01-15T14:30:45.123Z",
                       "system_prompt": "original prompt", "trace_id": chosen});
    let resp = app.register(&first);
    assert_eq!(resp.status, 200, "first registration: {}", resp.text());
    let original = stored_run(&app, chosen).expect("stored");

    // (trace_id as re-sent, why)
    let cases = [
        (chosen.to_string(), "same spelling"),
        (chosen.to_uppercase(), "upper-case spelling of the same id"),
    ];
    for (again, why) in cases {
        // Act
        let resp = app.register(&json!({"agent_id": "second-agent",
            "timestamp": "2025-06-01T00:00:00Z", "system_prompt": "hijacked prompt",
            "trace_id": again}));

        // Assert
        resp.assert_error(409, "TRACE_ID_CONFLICT", Some("trace_id"), why);
        assert_eq!(
            resp.json()["error"]["type"],
            "conflict_error",
            "{why}: error type"
        );
        assert_eq!(
            stored_run(&app, chosen).as_ref(),
            Some(&original),
            "{why}: the stored run is untouched"
        );
    }
    assert_eq!(count_rows(&app, "runs"), 1);
}

#[test]
fn an_agent_id_of_256_characters_is_accepted_and_257_is_rejected() {
    let app = TestApp::spawn();
    // Characters, not bytes: "é" is two bytes in UTF-8.
    for (agent_id, why) in [
        ("a".repeat(256), "256 ascii characters"),
        ("é".repeat(256), "256 two-byte characters"),
    ] {
        let resp = app.register(&with("agent_id", Some(json!(agent_id))));
        assert_eq!(resp.status, 200, "{why}: body {}", resp.text());
        let id = resp.json()["trace_id"]
            .as_str()
            .expect("trace_id")
            .to_string();
        let (stored, ..) = stored_run(&app, &id).expect("stored");
        assert_eq!(stored, agent_id, "{why}: stored verbatim");
    }
    for (agent_id, why) in [
        ("a".repeat(257), "257 ascii characters"),
        ("é".repeat(257), "257 two-byte characters"),
        (String::new(), "empty"),
    ] {
        let resp = app.register(&with("agent_id", Some(json!(agent_id))));
        resp.assert_error(400, "INVALID_FIELD", Some("agent_id"), why);
    }
    assert_eq!(
        count_rows(&app, "runs"),
        2,
        "only the two valid runs are stored"
    );
}

#[test]
fn an_agent_id_with_a_control_character_is_rejected() {
    let app = TestApp::spawn();
    // (agent_id, why)
    let cases = [
        ("agent\nid", "newline"),
        ("agent\u{0}id", "NUL"),
        ("agent\tid", "tab"),
        ("agent\rid", "carriage return"),
        ("agent\u{1b}[31mred", "escape sequence"),
        ("agent\u{7f}", "DEL"),
        ("agent\u{85}", "C1 next-line"),
    ];
    for (agent_id, why) in cases {
        let resp = app.register(&with("agent_id", Some(json!(agent_id))));
        let err = resp.assert_error(400, "INVALID_FIELD", Some("agent_id"), why);
        assert_eq!(err["type"], "invalid_request_error", "{why}: type");
    }
    assert_eq!(count_rows(&app, "runs"), 0);
}

#[test]
fn timestamps_with_a_zone_and_any_fractional_precision_are_accepted() {
    let app = TestApp::spawn();
    // (timestamp, why)
    let cases = [
        ("2024-01-15T14:30:45.123Z", "Z with milliseconds"),
        ("2024-01-15T14:30:45Z", "Z without a fraction"),
        ("2024-01-15T14:30:45.1Z", "one fraction digit"),
        ("2024-01-15T14:30:45.123456Z", "microseconds"),
        ("2024-01-15T14:30:45.123456789Z", "nanoseconds"),
        (
            "2024-01-15T14:30:45.123456789123Z",
            "more digits than nanoseconds",
        ),
        ("2024-01-15T20:00:45.123+05:30", "positive offset"),
        ("2024-01-15T06:30:45-08:00", "negative offset"),
        ("2024-01-15T14:30:45+00:00", "zero offset"),
    ];
    for (ts, why) in cases {
        let resp = app.register(&with("timestamp", Some(json!(ts))));
        assert_eq!(resp.status, 200, "{why} ({ts}): body {}", resp.text());
    }
    assert_eq!(count_rows(&app, "runs"), cases.len() as i64);
}

#[test]
fn timestamps_without_a_zone_or_that_are_not_date_times_are_rejected() {
    let app = TestApp::spawn();
    // (timestamp, why)
    let cases = [
        (json!("2024-01-15T14:30:45"), "no zone"),
        (json!("2024-01-15T14:30:45.123"), "no zone, with a fraction"),
        (json!("2024-01-15"), "bare date"),
        (json!("14:30:45Z"), "bare time"),
        (json!("yesterday"), "garbage"),
        (json!(""), "empty string"),
        (json!("2024-02-30T14:30:45Z"), "February 30th"),
        (json!("2024-01-15T25:30:45Z"), "hour 25"),
        (json!("2024-01-15T14:30:45+5:30"), "one-digit offset hour"),
        (json!(1_705_329_045), "Unix seconds as an integer"),
        (json!(1_705_329_045.123), "Unix seconds as a float"),
        (json!(true), "boolean"),
        (json!({"iso": "2024-01-15T14:30:45Z"}), "object"),
    ];
    for (ts, why) in cases {
        let is_string = ts.is_string();
        let resp = app.register(&with("timestamp", Some(ts)));
        let err = resp.assert_error(400, "INVALID_FIELD", Some("timestamp"), why);
        let msg = err["message"].as_str().unwrap_or("");
        assert!(
            msg.contains("timestamp"),
            "{why}: the message names the field: {msg}"
        );
        if is_string {
            assert!(
                msg.contains("time zone"),
                "{why}: the message explains the rule: {msg}"
            );
        }
    }
    assert_eq!(count_rows(&app, "runs"), 0);
}

#[test]
fn each_required_field_that_is_absent_or_null_is_missing_field() {
    let app = TestApp::spawn();
    // (body, param, why)
    let mut cases = absent_and_null_cases(&["agent_id", "timestamp", "system_prompt"], with);
    cases.push((
        json!({}),
        "agent_id",
        "empty object: the first field of the table".to_string(),
    ));
    for (body, param, why) in cases {
        let resp = app.register(&body);
        let err = resp.assert_error(400, "MISSING_FIELD", Some(param), &why);
        let msg = err["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(param),
            "{why}: the message names the field: {msg}"
        );
    }
    assert_eq!(count_rows(&app, "runs"), 0);
}

#[test]
fn fields_of_the_wrong_type_are_invalid_field_naming_the_field() {
    let app = TestApp::spawn();
    // (body, status, code, param, why)
    let cases = [
        (
            with("agent_id", Some(json!(5))),
            400,
            "INVALID_FIELD",
            "agent_id",
            "agent_id number",
        ),
        (
            with("agent_id", Some(json!(["a"]))),
            400,
            "INVALID_FIELD",
            "agent_id",
            "agent_id array",
        ),
        (
            with("agent_id", Some(json!({"id": "a"}))),
            400,
            "INVALID_FIELD",
            "agent_id",
            "agent_id object",
        ),
        (
            with("agent_id", Some(json!(true))),
            400,
            "INVALID_FIELD",
            "agent_id",
            "agent_id boolean",
        ),
        (
            with("timestamp", Some(json!(["2024-01-15T14:30:45Z"]))),
            400,
            "INVALID_FIELD",
            "timestamp",
            "timestamp array",
        ),
        (
            with("system_prompt", Some(json!(7))),
            400,
            "INVALID_FIELD",
            "system_prompt",
            "system_prompt number",
        ),
        (
            with("system_prompt", Some(json!(false))),
            400,
            "INVALID_FIELD",
            "system_prompt",
            "system_prompt boolean",
        ),
        (
            with("system_prompt", Some(json!(["You are"]))),
            400,
            "INVALID_FIELD",
            "system_prompt",
            "system_prompt array",
        ),
        (
            with("system_prompt", Some(json!({"text": "x"}))),
            400,
            "INVALID_FIELD",
            "system_prompt",
            "system_prompt object",
        ),
        (
            with("trace_id", Some(json!(5))),
            400,
            "INVALID_FIELD",
            "trace_id",
            "trace_id number",
        ),
        (
            with("trace_id", Some(json!({}))),
            400,
            "INVALID_FIELD",
            "trace_id",
            "trace_id object",
        ),
    ];
    for (body, status, code, param, why) in cases {
        let resp = app.register(&body);
        resp.assert_error(status, code, Some(param), why);
    }
    assert_eq!(count_rows(&app, "runs"), 0);
}

#[test]
fn a_malformed_trace_id_is_invalid_field() {
    let app = TestApp::spawn();
    // (trace_id, why)
    let cases = [
        ("x", "garbage"),
        ("", "empty"),
        ("not-a-uuid", "words with hyphens"),
        ("3f2b8c1e0d4a4c6e9b7a2e5f1a8d9c04", "unhyphenated"),
        ("{3f2b8c1e-0d4a-4c6e-9b7a-2e5f1a8d9c04}", "braced"),
        ("urn:uuid:3f2b8c1e-0d4a-4c6e-9b7a-2e5f1a8d9c04", "URN"),
        ("3f2b8c1e-0d4a-4c6e-9b7a-2e5f1a8d9c0", "one digit short"),
        ("3f2b8c1e-0d4a-4c6e-9b7a-2e5f1a8d9c045", "one digit long"),
        ("gf2b8c1e-0d4a-4c6e-9b7a-2e5f1a8d9c04", "non-hex digit"),
        (
            "3f2b8c1e-0d4a4-c6e-9b7a-2e5f1a8d9c04",
            "hyphen in the wrong place",
        ),
        (" 3f2b8c1e-0d4a-4c6e-9b7a-2e5f1a8d9c04", "leading space"),
    ];
    for (trace_id, why) in cases {
        let resp = app.register(&with("trace_id", Some(json!(trace_id))));
        resp.assert_error(400, "INVALID_FIELD", Some("trace_id"), why);
    }
    assert_eq!(count_rows(&app, "runs"), 0);
}

#[test]
fn unknown_fields_are_ignored() {
    let app = TestApp::spawn();
    let mut b = body();
    let obj = b.as_object_mut().expect("object");
    obj.insert(
        "metadata".into(),
        json!({"team": "support", "nested": [1, 2]}),
    );
    obj.insert("AGENT_ID".into(), json!(42));
    obj.insert("extra".into(), Value::Null);

    let resp = app.register(&b);

    assert_eq!(resp.status, 200, "body {}", resp.text());
    let id = resp.json()["trace_id"]
        .as_str()
        .expect("trace_id")
        .to_string();
    let (agent_id, ..) = stored_run(&app, &id).expect("stored");
    assert_eq!(agent_id, "cs-agent-prod-v1");
}
