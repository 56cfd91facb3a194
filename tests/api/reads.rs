//! The read API (issue 6; the contract's "Reading back (GET)" and "Authentication"):
//! `GET /v1/runs`, `GET /v1/runs/{trace_id}`, `GET /v1/events` and `GET /v1/checks`, black-box
//! against the real binary. Keys are made with the real `runwarden keys create` CLI on the
//! server's database, as in `access.rs`.
//!
//! Covered: the `{"data", "next_cursor"}` shape; runs newest first with the `agent_id` filter
//! (also percent-encoded); one run with its event, check and blocked-check counts and the
//! constraints derived from its system prompt; events in arrival order with the `event_type`
//! filter and `content`/`schema` exactly as sent (a JSON string, or the raw JSON text with its
//! key order and whitespace); checks with verdicts and findings, filtered by `trace_id` and
//! `is_safe`; walking every list page by page with `limit=7` over 30 items; `offset`; the
//! `limit` default and bounds; keyset stability while another thread keeps writing (runs, and
//! the events and checks of a run); every 400, 404 and 405 of the read routes; project
//! isolation (lists, and 404 bodies byte-identical to an unknown trace's), admin reads across
//! projects, 403 for restricted keys and 401 without a key.
//!
//! Not covered: `HEAD` beyond one 200 without a body; a cursor with `offset=0` (the server
//! takes it as no offset, not as "both"); rate-limit headers on reads (see `access.rs`); pages
//! over 32 KiB (tiny_http sends them chunked, which the harness's client does not decode); the
//! CLI and web views of issue 6.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Resp, TestApp, transfer_check, user_event, with_field};

const REGISTER: &str = "/v1/register-agent-run";
const EVENT: &str = "/v1/event";
const CHECK: &str = "/v1/check";

/// The registration timestamp every run of this module is sent with.
const STARTED: &str = "2024-01-15T14:30:45.123Z";

/// A well-formed trace id that no test registers.
const UNKNOWN_TRACE: &str = "0badc0de-0000-4000-8000-000000000000";

/// A well-formed key that no database holds.
const UNKNOWN_KEY: &str = "rw_dev_000000000000000000000000000000000000000000000000";

/// How many items the pagination tests write to each list.
const THIRTY: usize = 30;

/// Creates a key of type `kind` for `project` on the database of `app`; returns its secret.
fn create_key(app: &TestApp, project: &str, kind: &str) -> String {
    crate::helpers::create_key(app, project, kind, &[]).0
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// `x-api-key` when `key` is given.
fn key_header(key: Option<&str>) -> Vec<(String, String)> {
    key.map(|k| vec![("x-api-key".to_string(), k.to_string())])
        .unwrap_or_default()
}

/// GET `path` with key `key` (none when `None`).
fn get_as(app: &TestApp, path: &str, key: Option<&str>) -> Resp {
    app.request("GET", path, &key_header(key), b"")
}

/// POSTs the JSON text `body` as sent, byte for byte, with key `key`.
fn post_text(app: &TestApp, path: &str, key: Option<&str>, body: &str) -> Resp {
    let mut headers = key_header(key);
    headers.push(("Content-Type".to_string(), "application/json".to_string()));
    headers.push(("Content-Length".to_string(), body.len().to_string()));
    app.request("POST", path, &headers, body.as_bytes())
}

/// POSTs `body` with key `key` and asserts a 200; returns the answer.
#[track_caller]
fn post_ok(app: &TestApp, path: &str, key: Option<&str>, body: &Value) -> Value {
    let r = post_text(app, path, key, &body.to_string());
    assert_eq!(r.status, 200, "POST {path} {body}: {}", r.text());
    r.json()
}

/// Registers a run of `agent` with `prompt` and returns its trace_id.
fn register(app: &TestApp, key: Option<&str>, agent: &str, prompt: &str) -> String {
    let body = json!({"agent_id": agent, "timestamp": STARTED, "system_prompt": prompt});
    post_ok(app, REGISTER, key, &body)["trace_id"]
        .as_str()
        .expect("trace_id")
        .to_string()
}

/// Logs `body` as an event and returns its event_id.
fn log_event(app: &TestApp, key: Option<&str>, body: &Value) -> String {
    post_ok(app, EVENT, key, body)["event_id"]
        .as_str()
        .expect("event_id")
        .to_string()
}

/// A transfer the policy lets through (`amount` varies, so no repetition rule fires).
fn safe_check(trace_id: &str, amount: u32) -> Value {
    transfer_check(trace_id, &json!({"amount": amount, "recipient": "bob"}))
}

/// A transfer without its required recipient: a `schema.mismatch` block.
fn blocked_check(trace_id: &str, amount: u32) -> Value {
    transfer_check(trace_id, &json!({"amount": amount}))
}

/// Posts a check and returns its answer, asserting that the verdict is `want_safe`.
#[track_caller]
fn check_as(app: &TestApp, key: Option<&str>, body: &Value, want_safe: bool) -> Value {
    let v = post_ok(app, CHECK, key, body);
    assert_eq!(
        v["is_safe"],
        want_safe,
        "the check {body} is meant to be {}: {v}",
        if want_safe { "safe" } else { "blocked" }
    );
    v
}

/// A query value, percent-encoded (everything but unreserved characters).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------------------------

/// Asserts a 200 list answer `{"data": [...], "next_cursor": "..." | null}` and returns its
/// items and cursor.
#[track_caller]
fn page(r: &Resp, case: &str) -> (Vec<Value>, Option<String>) {
    assert_eq!(r.status, 200, "{case}: status; body {}", r.text());
    let v = r.json();
    let mut keys: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("{case}: a list answer is an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["data", "next_cursor"], "{case}: list keys; body {v}");
    let data = v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: data is a list: {v}"))
        .clone();
    let next = match &v["next_cursor"] {
        Value::Null => None,
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        other => panic!("{case}: next_cursor is null or a non-empty string, got {other}"),
    };
    (data, next)
}

/// The `field` of each item, as strings.
#[track_caller]
fn ids(items: &[Value], field: &str, case: &str) -> Vec<String> {
    items
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .unwrap_or_else(|| panic!("{case}: item without a string {field}: {item}"))
                .to_string()
        })
        .collect()
}

/// GETs the list at `path` and returns the `field` of its items and its cursor.
#[track_caller]
fn list_ids(
    app: &TestApp,
    key: Option<&str>,
    path: &str,
    field: &str,
    case: &str,
) -> (Vec<String>, Option<String>) {
    let (items, next) = page(&get_as(app, path, key), case);
    (ids(&items, field, case), next)
}

/// Walks a list from `base` (a path ending in `?` or `&`) with `limit`, following
/// `next_cursor` to the end; returns each page's `field`s.
#[track_caller]
fn walk(
    app: &TestApp,
    key: Option<&str>,
    base: &str,
    limit: usize,
    field: &str,
    case: &str,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut path = format!("{base}limit={limit}");
    loop {
        let (got, next) = list_ids(
            app,
            key,
            &path,
            field,
            &format!("{case}, page {}", pages.len() + 1),
        );
        pages.push(got);
        let Some(cursor) = next else {
            return pages;
        };
        assert!(
            pages.len() <= 4 * THIRTY,
            "{case}: the cursor never ends; pages {pages:?}"
        );
        path = format!("{base}limit={limit}&cursor={}", enc(&cursor));
    }
}

/// Thirty runs (the first with thirty events and thirty checks) on an open server.
struct Thirty {
    app: TestApp,
    /// The trace_ids, newest first.
    runs: Vec<String>,
    /// The run that holds the events and checks.
    trace: String,
    /// Its event_ids, in arrival order.
    events: Vec<String>,
    /// Its action_check_ids, in arrival order.
    checks: Vec<String>,
}

impl Thirty {
    fn new() -> Thirty {
        let app = TestApp::spawn();
        let mut runs: Vec<String> = (0..THIRTY)
            .map(|i| register(&app, None, "pager", &format!("Run number {i}.")))
            .collect();
        let trace = runs[0].clone();
        runs.reverse();
        let events = (0..THIRTY)
            .map(|_| log_event(&app, None, &user_event(&trace)))
            .collect();
        let checks = (0..THIRTY as u32)
            .map(|i| {
                post_ok(&app, CHECK, None, &safe_check(&trace, 10 + i))["action_check_id"]
                    .as_str()
                    .expect("action_check_id")
                    .to_string()
            })
            .collect();
        Thirty {
            app,
            runs,
            trace,
            events,
            checks,
        }
    }

    /// The lists: (name, base path ending in `?` or `&`, id field, expected ids in order).
    fn lists(&self) -> Vec<(&'static str, String, &'static str, &[String])> {
        let t = &self.trace;
        vec![
            ("runs", "/v1/runs?".to_string(), "trace_id", &self.runs[..]),
            (
                "events",
                format!("/v1/events?trace_id={t}&"),
                "event_id",
                &self.events[..],
            ),
            (
                "checks of the trace",
                format!("/v1/checks?trace_id={t}&"),
                "action_check_id",
                &self.checks[..],
            ),
            (
                "all checks",
                "/v1/checks?".to_string(),
                "action_check_id",
                &self.checks[..],
            ),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

#[test]
fn runs_are_listed_newest_first_with_their_fields_and_filtered_by_agent_id() {
    // Arrange: five runs of three agents, interleaved
    let app = TestApp::spawn();
    let spaced = "ops team/β";
    let registered: Vec<(String, &str, String)> = ["alpha", "beta", "alpha", spaced, "alpha"]
        .into_iter()
        .enumerate()
        .map(|(i, agent)| {
            let prompt = format!("Prompt {i} of {agent}.");
            (register(&app, None, agent, &prompt), agent, prompt)
        })
        .collect();
    let newest_first = |agent: Option<&str>| -> Vec<String> {
        registered
            .iter()
            .rev()
            .filter(|(_, a, _)| agent.is_none_or(|want| *a == want))
            .map(|(t, _, _)| t.clone())
            .collect()
    };
    // (query, expected trace_ids, case)
    let cases = [
        ("", newest_first(None), "no filter"),
        ("?agent_id=alpha", newest_first(Some("alpha")), "alpha"),
        ("?agent_id=beta", newest_first(Some("beta")), "beta"),
        (
            "?agent_id=ops%20team%2F%CE%B2",
            newest_first(Some(spaced)),
            "percent-encoded agent_id",
        ),
        (
            "?agent_id=ops+team%2F%CE%B2",
            newest_first(Some(spaced)),
            "agent_id with + for the space",
        ),
        ("?agent_id=nobody", Vec::new(), "an agent without runs"),
        ("?agent_id=ALPHA", Vec::new(), "agent_id is case-sensitive"),
    ];

    for (query, want, case) in cases {
        // Act
        let (items, next) = page(&get_as(&app, &format!("/v1/runs{query}"), None), case);

        // Assert
        assert_eq!(ids(&items, "trace_id", case), want, "{case}: trace_ids");
        assert_eq!(next, None, "{case}: one page holds everything");
        for item in &items {
            let (_, agent, prompt) = registered
                .iter()
                .find(|(t, _, _)| *t == item["trace_id"])
                .unwrap_or_else(|| panic!("{case}: an unknown run {item}"));
            assert_eq!(item["agent_id"], *agent, "{case}: agent_id of {item}");
            assert_eq!(item["system_prompt"], *prompt, "{case}: prompt of {item}");
            assert_eq!(item["timestamp"], STARTED, "{case}: timestamp of {item}");
            assert_eq!(item["project"], "default", "{case}: project of {item}");
            assert!(
                item["received_at"].as_str().is_some_and(|s| !s.is_empty()),
                "{case}: received_at of {item}"
            );
            for count in ["event_count", "check_count", "blocked_check_count"] {
                assert_eq!(item[count], 0, "{case}: {count} of {item}");
            }
        }
    }
}

#[test]
fn one_run_counts_its_events_checks_and_blocked_checks_and_so_does_the_list() {
    // Arrange: (events, safe checks, blocked checks) per run
    let app = TestApp::spawn();
    let plan = [(3, 2, 2), (0, 0, 0), (1, 0, 1), (0, 3, 0)];
    let traces: Vec<String> = plan
        .iter()
        .map(|_| register(&app, None, "counter", "You are a helpful assistant."))
        .collect();
    for ((events, safe, blocked), trace) in plan.iter().zip(&traces) {
        for _ in 0..*events {
            log_event(&app, None, &user_event(trace));
        }
        for i in 0..*safe {
            check_as(&app, None, &safe_check(trace, 10 + i), true);
        }
        for i in 0..*blocked {
            check_as(&app, None, &blocked_check(trace, 10 + i), false);
        }
    }
    let (listed, _) = page(&get_as(&app, "/v1/runs", None), "the list");

    for ((events, safe, blocked), trace) in plan.iter().zip(&traces) {
        let case = format!("{events} events, {safe} safe and {blocked} blocked checks");

        // Act
        let r = get_as(&app, &format!("/v1/runs/{trace}"), None);

        // Assert
        assert_eq!(r.status, 200, "{case}: status; body {}", r.text());
        let run = r.json();
        assert_eq!(run["trace_id"], *trace, "{case}: trace_id");
        assert_eq!(run["agent_id"], "counter", "{case}: agent_id");
        let in_list = listed
            .iter()
            .find(|item| item["trace_id"] == *trace)
            .unwrap_or_else(|| panic!("{case}: the run is in the list"));
        for (name, body) in [("the run", &run), ("its list item", in_list)] {
            assert_eq!(body["event_count"], *events, "{case}: {name}: event_count");
            assert_eq!(
                body["check_count"],
                safe + blocked,
                "{case}: {name}: check_count"
            );
            assert_eq!(
                body["blocked_check_count"], *blocked,
                "{case}: {name}: blocked_check_count"
            );
        }
    }
}

#[test]
fn one_run_shows_the_constraints_its_system_prompt_states() {
    // Arrange
    let app = TestApp::spawn();
    // (system prompt, expected constraints, case)
    let cases = [
        (
            "Do not process refunds over $500 without manager approval.",
            json!([{"kind": "amount_limit", "noun": "refund", "limit": 500.0,
                    "approval_allows": true,
                    "sentence": "Do not process refunds over $500 without manager approval"}]),
            "an amount limit lifted by approval",
        ),
        (
            "You are a support agent. Never issue refunds above 1,000 USD.",
            json!([{"kind": "amount_limit", "noun": "refund", "limit": 1000.0,
                    "approval_allows": false,
                    "sentence": "Never issue refunds above 1,000 USD"}]),
            "an amount limit after a plain sentence",
        ),
        (
            "Never share customer personal information.",
            json!([{"kind": "no_personal_data",
                    "sentence": "Never share customer personal information"}]),
            "no personal data",
        ),
        (
            "You are a helpful assistant.",
            json!([]),
            "a prompt without constraints",
        ),
    ];

    for (prompt, want, case) in cases {
        let trace = register(&app, None, "constrained", prompt);

        // Act
        let r = get_as(&app, &format!("/v1/runs/{trace}"), None);

        // Assert
        assert_eq!(r.status, 200, "{case}: status; body {}", r.text());
        let run = r.json();
        assert_eq!(run["constraints"], want, "{case}: constraints");
        assert_eq!(run["system_prompt"], prompt, "{case}: system_prompt");
    }
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

#[test]
fn events_come_back_in_arrival_order_with_content_and_schema_exactly_as_sent() {
    // Arrange: one event with string content and schema, two with raw JSON (odd key order,
    // whitespace, an escape) sent byte for byte
    let app = TestApp::spawn();
    let trace = register(&app, None, "echo", "You are a helpful assistant.");
    let as_string = user_event(&trace);
    let raw_object = r#"{"z": 1,  "a" : [1,2 ], "m":{"y":null,"b":"é\u00e9"}}"#;
    let raw_object_schema = r#"{ "type" : "object",  "required":["z"] }"#;
    let raw_array = "[3, 1 ,2]";
    let raw_array_schema = r#"{"type":"array","items":{"type":"integer"}}"#;
    // (body text, event type, timestamp, content fragment, schema fragment, case)
    let sent = [
        (
            as_string.to_string(),
            "user",
            1678886405.123,
            format!("\"content\":{}", as_string["content"]),
            format!("\"schema\":{}", as_string["schema"]),
            "content and schema as strings",
        ),
        (
            format!(
                r#"{{"event_type":"tool","trace_id":"{trace}","timestamp":1700000000.5,"content":{raw_object},"schema":{raw_object_schema}}}"#
            ),
            "tool",
            1700000000.5,
            format!("\"content\":{raw_object}"),
            format!("\"schema\":{raw_object_schema}"),
            "content and schema as raw objects",
        ),
        (
            format!(
                r#"{{"event_type":"memory","trace_id":"{trace}","timestamp":1700000001.0,"content":{raw_array},"schema":{raw_array_schema}}}"#
            ),
            "memory",
            1700000001.0,
            format!("\"content\":{raw_array}"),
            format!("\"schema\":{raw_array_schema}"),
            "content as a raw array",
        ),
    ];
    let event_ids: Vec<String> = sent
        .iter()
        .map(|(body, _, _, _, _, case)| {
            let r = post_text(&app, EVENT, None, body);
            assert_eq!(r.status, 200, "{case}: logging; body {}", r.text());
            r.json()["event_id"].as_str().expect("event_id").to_string()
        })
        .collect();

    // Act
    let r = get_as(&app, &format!("/v1/events?trace_id={trace}"), None);

    // Assert
    let text = r.text();
    let (items, next) = page(&r, "events");
    assert_eq!(next, None, "one page");
    assert_eq!(
        ids(&items, "event_id", "events"),
        event_ids,
        "arrival order"
    );
    let mut last_seq = i64::MIN;
    for ((body, event_type, timestamp, content, schema, case), item) in sent.iter().zip(&items) {
        assert!(
            text.contains(content.as_str()),
            "{case}: {content} in {text}"
        );
        assert!(text.contains(schema.as_str()), "{case}: {schema} in {text}");
        let sent_json: Value = serde_json::from_str(body).expect("the sent body is JSON");
        assert_eq!(
            item["content"], sent_json["content"],
            "{case}: content value"
        );
        assert_eq!(item["schema"], sent_json["schema"], "{case}: schema value");
        assert_eq!(item["trace_id"], trace, "{case}: trace_id");
        assert_eq!(item["event_type"], *event_type, "{case}: event_type");
        assert_eq!(item["timestamp"], *timestamp, "{case}: timestamp");
        assert!(item["received_at"].is_f64(), "{case}: received_at {item}");
        let seq = item["seq"]
            .as_i64()
            .unwrap_or_else(|| panic!("{case}: seq {item}"));
        assert!(seq > last_seq, "{case}: seq {seq} after {last_seq}");
        last_seq = seq;
    }
}

#[test]
fn events_are_filtered_by_event_type_also_page_by_page() {
    // Arrange
    let app = TestApp::spawn();
    let trace = register(&app, None, "filter", "You are a helpful assistant.");
    let types = ["user", "tool", "user", "model_output", "memory", "user"];
    let logged: Vec<(String, &str)> = types
        .iter()
        .map(|t| {
            let body = with_field(user_event(&trace), "event_type", Some(json!(t)));
            (log_event(&app, None, &body), *t)
        })
        .collect();
    let of_type = |t: &str| -> Vec<String> {
        logged
            .iter()
            .filter(|(_, lt)| *lt == t)
            .map(|(id, _)| id.clone())
            .collect()
    };
    // (event_type, expected event_ids)
    let cases = [
        ("user", of_type("user")),
        ("tool", of_type("tool")),
        ("model_output", of_type("model_output")),
        ("memory", of_type("memory")),
        ("error", Vec::new()),
    ];

    for (event_type, want) in cases {
        let case = format!("event_type={event_type}");
        let base = format!("/v1/events?trace_id={trace}&event_type={event_type}&");

        // Act
        let (whole, next) = list_ids(&app, None, &base, "event_id", &case);
        let pages = walk(&app, None, &base, 1, "event_id", &case);

        // Assert
        assert_eq!(whole, want, "{case}: one page");
        assert_eq!(next, None, "{case}: no cursor after everything");
        assert_eq!(pages.concat(), want, "{case}: page by page");
        assert!(
            pages.iter().all(|p| p.len() <= 1),
            "{case}: pages of one: {pages:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

#[test]
fn checks_come_back_in_arrival_order_with_verdicts_and_filter_by_trace_and_is_safe() {
    // Arrange: checks of two runs, interleaved, safe and blocked
    let app = TestApp::spawn();
    let a = register(&app, None, "checker", "You are a helpful assistant.");
    let b = register(&app, None, "checker", "You are a helpful assistant.");
    let plan = [
        (&a, true),
        (&b, false),
        (&a, false),
        (&b, true),
        (&a, true),
        (&a, false),
    ];
    // (trace, answer of POST /v1/check)
    let answers: Vec<(&String, Value)> = plan
        .iter()
        .zip(10..)
        .map(|((trace, safe), amount)| {
            let body = if *safe {
                safe_check(trace, amount)
            } else {
                blocked_check(trace, amount)
            };
            (*trace, check_as(&app, None, &body, *safe))
        })
        .collect();
    let expect = |trace: Option<&String>, safe: Option<bool>| -> Vec<&Value> {
        answers
            .iter()
            .filter(|(t, v)| {
                trace.is_none_or(|want| *t == want) && safe.is_none_or(|s| v["is_safe"] == s)
            })
            .map(|(_, v)| v)
            .collect()
    };
    // (query, expected answers in order, case)
    let cases = [
        (String::new(), expect(None, None), "all checks"),
        (format!("trace_id={a}"), expect(Some(&a), None), "run a"),
        (format!("trace_id={b}"), expect(Some(&b), None), "run b"),
        ("is_safe=true".to_string(), expect(None, Some(true)), "safe"),
        (
            "is_safe=false".to_string(),
            expect(None, Some(false)),
            "blocked",
        ),
        (
            format!("trace_id={a}&is_safe=false"),
            expect(Some(&a), Some(false)),
            "run a blocked",
        ),
        (
            format!("is_safe=true&trace_id={b}"),
            expect(Some(&b), Some(true)),
            "run b safe",
        ),
    ];

    for (query, want, case) in cases {
        // Act
        let (items, next) = page(&get_as(&app, &format!("/v1/checks?{query}"), None), case);

        // Assert
        assert_eq!(next, None, "{case}: one page");
        let want_ids: Vec<&Value> = want.iter().map(|v| &v["action_check_id"]).collect();
        let got_ids: Vec<&Value> = items.iter().map(|v| &v["action_check_id"]).collect();
        assert_eq!(
            got_ids, want_ids,
            "{case}: action_check_ids in arrival order"
        );
        for (item, answer) in items.iter().zip(&want) {
            for field in ["is_safe", "reasoning", "findings"] {
                assert_eq!(item[field], answer[field], "{case}: {field} of {item}");
            }
            assert_eq!(item["tool_name"], "transfer_funds", "{case}: tool_name");
            let (trace, _) = answers
                .iter()
                .find(|(_, v)| v["action_check_id"] == item["action_check_id"])
                .unwrap_or_else(|| panic!("{case}: an unknown check {item}"));
            assert_eq!(item["trace_id"], **trace, "{case}: trace_id of {item}");
        }
    }
}

#[test]
fn a_check_comes_back_with_content_and_schema_exactly_as_sent() {
    // Arrange: raw JSON with odd key order and whitespace, and the string form
    let app = TestApp::spawn();
    let trace = register(&app, None, "echo", "You are a helpful assistant.");
    let raw_content = r#"{"recipient": "bob",   "amount" : 10}"#;
    let raw_schema = r#"{ "type": "function", "name": "transfer_funds",
        "parameters": {"type": "object", "required": ["recipient", "amount"],
                       "properties": {"recipient": {"type": "string"}, "amount": {"type": "number"}}}}"#;
    let raw_body = format!(
        r#"{{"event_type":"action_check","trace_id":"{trace}","timestamp":1678886415.0,"content":{raw_content},"schema":{raw_schema}}}"#
    );
    let string_body = safe_check(&trace, 11);
    // (body text, content fragment, schema fragment, case)
    let cases = [
        (
            raw_body,
            format!("\"content\":{raw_content}"),
            format!("\"schema\":{raw_schema}"),
            "raw JSON",
        ),
        (
            string_body.to_string(),
            format!("\"content\":{}", string_body["content"]),
            format!("\"schema\":{}", string_body["schema"]),
            "strings",
        ),
    ];

    for (body, content, schema, case) in cases {
        let r = post_text(&app, CHECK, None, &body);
        assert_eq!(r.status, 200, "{case}: check; body {}", r.text());
        let id = r.json()["action_check_id"].clone();

        // Act
        let r = get_as(&app, &format!("/v1/checks?trace_id={trace}"), None);

        // Assert
        let text = r.text();
        let (items, _) = page(&r, case);
        let item = items
            .iter()
            .find(|item| item["action_check_id"] == id)
            .unwrap_or_else(|| panic!("{case}: the check {id} is listed: {text}"));
        assert!(
            text.contains(content.as_str()),
            "{case}: {content} in {text}"
        );
        assert!(text.contains(schema.as_str()), "{case}: {schema} in {text}");
        let sent: Value = serde_json::from_str(&body).expect("the sent body is JSON");
        assert_eq!(item["content"], sent["content"], "{case}: content value");
        assert_eq!(item["schema"], sent["schema"], "{case}: schema value");
        assert_eq!(item["is_safe"], true, "{case}: is_safe");
    }
}

// ---------------------------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------------------------

#[test]
fn every_list_walked_with_limit_7_over_30_items_returns_each_once_in_order() {
    // Arrange
    let t = Thirty::new();

    for (name, base, field, want) in t.lists() {
        // Act
        let pages = walk(&t.app, None, &base, 7, field, name);

        // Assert
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [7, 7, 7, 7, 2], "{name}: page sizes");
        assert_eq!(pages.concat(), want, "{name}: every item once, in order");
    }
}

#[test]
fn offset_skips_items_and_a_cursor_from_an_offset_page_continues_after_it() {
    // Arrange
    let t = Thirty::new();
    // (offset, expected range of items, whether a next_cursor is expected)
    let cases = [
        (0, 0..7, true),
        (10, 10..17, true),
        (23, 23..30, false),
        (28, 28..30, false),
        (30, 30..30, false),
        (1000, 30..30, false),
    ];

    for (name, base, field, want) in t.lists() {
        for (offset, range, more) in cases.clone() {
            let case = format!("{name}, offset={offset}");

            // Act
            let (got, next) = list_ids(
                &t.app,
                None,
                &format!("{base}limit=7&offset={offset}"),
                field,
                &case,
            );

            // Assert
            assert_eq!(got, want[range.clone()], "{case}: items");
            assert_eq!(next.is_some(), more, "{case}: next_cursor {next:?}");
            if let Some(cursor) = next {
                let path = format!("{base}limit=7&cursor={}", enc(&cursor));
                let (after, _) = list_ids(&t.app, None, &path, field, &case);
                let end = (range.end + 7).min(THIRTY);
                assert_eq!(after, want[range.end..end], "{case}: the page after");
            }
        }
    }
}

#[test]
fn limit_defaults_to_20_and_accepts_1_to_100() {
    // Arrange
    let t = Thirty::new();
    // (limit parameter, expected number of items, whether a next_cursor is expected)
    let cases = [
        ("", 20, true),
        ("limit=1", 1, true),
        ("limit=29", 29, true),
        ("limit=30", 30, false),
        ("limit=100", 30, false),
    ];

    for (name, base, field, want) in t.lists() {
        for (limit, n, more) in cases {
            let case = format!("{name}, {limit:?}");

            // Act
            let (got, next) = list_ids(&t.app, None, &format!("{base}{limit}"), field, &case);

            // Assert
            assert_eq!(got, want[..n], "{case}: items");
            assert_eq!(next.is_some(), more, "{case}: next_cursor {next:?}");
        }
    }
}

#[test]
fn a_limit_outside_1_to_100_is_invalid_on_every_list() {
    // Arrange
    let t = Thirty::new();
    let bad = [
        "0",
        "101",
        "-1",
        "abc",
        "",
        "1.5",
        "4294967317",
        "99999999999999999999",
    ];

    for (name, base, _, _) in t.lists() {
        for limit in bad {
            let case = format!("{name}, limit={limit:?}");

            // Act
            let r = get_as(&t.app, &format!("{base}limit={limit}"), None);

            // Assert
            r.assert_error(400, "INVALID_FIELD", Some("limit"), &case);
        }
    }
}

/// Walks the list at `base` (ending in `?` or `&`) with `limit=7` and a cursor while another
/// thread keeps calling `write`, waiting after each page until `write` has run at least once
/// more; returns the `field`s seen, in order.
fn walk_while_writing(
    app: &TestApp,
    base: &str,
    field: &str,
    write: impl Fn() + Sync,
) -> Vec<String> {
    let stop = AtomicBool::new(false);
    let written = AtomicUsize::new(0);
    let mut seen: Vec<String> = Vec::new();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                write();
                written.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut path = format!("{base}limit=7");
        for page_no in 1.. {
            let (got, next) = list_ids(app, None, &path, field, &format!("{base} page {page_no}"));
            seen.extend(got);
            let Some(cursor) = next else { break };
            assert!(page_no <= 100, "{base}: the walk never ends");
            let target = written.load(Ordering::SeqCst) + 1;
            let deadline = Instant::now() + Duration::from_secs(10);
            while written.load(Ordering::SeqCst) < target {
                assert!(
                    Instant::now() < deadline,
                    "{base}: the writer wrote nothing in 10 s"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            path = format!("{base}limit=7&cursor={}", enc(&cursor));
        }
        stop.store(true, Ordering::SeqCst);
        writer.join().expect("the writer thread");
    });
    seen
}

#[test]
fn a_cursor_walk_over_runs_never_repeats_or_skips_a_run_while_runs_are_being_registered() {
    // Arrange: thirty runs, newest first
    let app = TestApp::spawn();
    let mut before: Vec<String> = (0..THIRTY)
        .map(|i| register(&app, None, "steady", &format!("Existing run {i}.")))
        .collect();
    before.reverse();

    // Act: page through while a writer keeps registering runs
    let seen = walk_while_writing(&app, "/v1/runs?", "trace_id", || {
        register(&app, None, "steady", "A run written while paging.");
    });

    // Assert
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no run repeats: {seen:?}");
    let old: HashSet<&String> = before.iter().collect();
    let old_seen: Vec<String> = seen.iter().filter(|t| old.contains(t)).cloned().collect();
    assert_eq!(old_seen, before, "every earlier run once, newest first");
    let first_old = seen
        .iter()
        .position(|t| *t == before[0])
        .expect("the newest earlier run is listed");
    assert!(
        seen[first_old..].iter().all(|t| old.contains(t)),
        "no later run after the earlier ones begin: {seen:?}"
    );
}

/// Writes one more item to a list.
type Writer<'a> = Box<dyn Fn() + Sync + 'a>;

#[test]
fn a_cursor_walk_over_events_and_checks_never_repeats_or_skips_one_while_more_arrive() {
    // Arrange: thirty events and thirty checks of one run
    let t = Thirty::new();
    let trace = t.trace.clone();
    let amount = AtomicUsize::new(100);
    let check_more = || {
        let a = u32::try_from(amount.fetch_add(1, Ordering::SeqCst)).expect("a small amount");
        post_ok(&t.app, CHECK, None, &safe_check(&trace, a));
    };
    // (list, base path, id field, how to write one more)
    let cases: [(&str, String, &str, Writer<'_>); 3] = [
        (
            "events",
            format!("/v1/events?trace_id={trace}&"),
            "event_id",
            Box::new(|| {
                log_event(&t.app, None, &user_event(&trace));
            }),
        ),
        (
            "checks of the trace",
            format!("/v1/checks?trace_id={trace}&"),
            "action_check_id",
            Box::new(check_more),
        ),
        (
            "all checks",
            "/v1/checks?".to_string(),
            "action_check_id",
            Box::new(check_more),
        ),
    ];

    for (name, base, field, write) in cases {
        // Pages of 20 stay under 32 KiB: tiny_http sends larger bodies chunked, which the
        // harness's client does not decode.
        let existing = walk(&t.app, None, &base, 20, field, name).concat();
        assert!(existing.len() >= THIRTY, "{name}: {existing:?}");

        // Act
        let seen = walk_while_writing(&t.app, &base, field, write);

        // Assert
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{name}: nothing repeats: {seen:?}"
        );
        assert!(
            seen.len() > existing.len(),
            "{name}: {} seen, {} existed before; what arrived while paging is listed too",
            seen.len(),
            existing.len()
        );
        assert_eq!(
            seen[..existing.len()],
            existing[..],
            "{name}: what existed comes first, once each, in arrival order"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_parameters_missing_trace_ids_and_unknown_traces_get_their_error() {
    // Arrange
    let app = TestApp::spawn();
    let t = register(&app, None, "errors", "You are a helpful assistant.");
    log_event(&app, None, &user_event(&t));
    log_event(&app, None, &user_event(&t));
    let (_, cursor) = list_ids(
        &app,
        None,
        &format!("/v1/events?trace_id={t}&limit=1"),
        "event_id",
        "a cursor",
    );
    let c = enc(&cursor.expect("a cursor after the first of two events"));
    register(&app, None, "errors", "You are a helpful assistant.");
    let (_, runs_cursor) = list_ids(&app, None, "/v1/runs?limit=1", "trace_id", "a runs cursor");
    let rc = enc(&runs_cursor.expect("a cursor after the first of two runs"));
    // A runs cursor for a run that does not exist (or that the key cannot see).
    let unknown_rc = format!("r{}", "f4".repeat(16));
    check_as(&app, None, &safe_check(&t, 1), true);
    check_as(&app, None, &safe_check(&t, 2), true);
    let (_, checks_cursor) = list_ids(
        &app,
        None,
        "/v1/checks?limit=1",
        "action_check_id",
        "a checks cursor",
    );
    let kc = enc(&checks_cursor.expect("a cursor after the first of two checks"));
    let upper = t.to_uppercase().replace('-', "");
    // (path, status, code, param, case)
    let cases = [
        (
            "/v1/runs?cursor=zzz".to_string(),
            400,
            "INVALID_FIELD",
            "cursor",
            "runs: garbage cursor",
        ),
        (
            "/v1/runs?cursor=".to_string(),
            400,
            "INVALID_FIELD",
            "cursor",
            "runs: empty cursor",
        ),
        (
            "/v1/runs?cursor=c".to_string(),
            400,
            "INVALID_FIELD",
            "cursor",
            "runs: bare prefix",
        ),
        (
            format!("/v1/runs?cursor={rc}&offset=3"),
            400,
            "INVALID_FIELD",
            "offset",
            "runs: cursor and offset",
        ),
        (
            format!("/v1/runs?cursor={c}"),
            400,
            "INVALID_FIELD",
            "cursor",
            "runs: an events cursor",
        ),
        (
            format!("/v1/runs?cursor={unknown_rc}"),
            400,
            "INVALID_FIELD",
            "cursor",
            "runs: a cursor naming no visible run",
        ),
        (
            format!("/v1/checks?cursor=k{}", "f4".repeat(16)),
            400,
            "INVALID_FIELD",
            "cursor",
            "checks: a cursor naming no visible check",
        ),
        (
            format!("/v1/checks?cursor={c}"),
            400,
            "INVALID_FIELD",
            "cursor",
            "checks: an events cursor",
        ),
        (
            format!("/v1/events?trace_id={t}&cursor={rc}"),
            400,
            "INVALID_FIELD",
            "cursor",
            "events: a runs cursor",
        ),
        (
            "/v1/runs?offset=-1".to_string(),
            400,
            "INVALID_FIELD",
            "offset",
            "runs: negative offset",
        ),
        (
            "/v1/runs?offset=abc".to_string(),
            400,
            "INVALID_FIELD",
            "offset",
            "runs: offset not a number",
        ),
        (
            "/v1/runs/not-a-uuid".to_string(),
            400,
            "INVALID_FIELD",
            "trace_id",
            "run: not a UUID",
        ),
        (
            format!("/v1/runs/{upper}"),
            400,
            "INVALID_FIELD",
            "trace_id",
            "run: unhyphenated",
        ),
        (
            format!("/v1/runs/{UNKNOWN_TRACE}"),
            404,
            "TRACE_NOT_FOUND",
            "trace_id",
            "run: unknown trace",
        ),
        (
            "/v1/events".to_string(),
            400,
            "MISSING_FIELD",
            "trace_id",
            "events: no trace_id",
        ),
        (
            "/v1/events?event_type=user&limit=5".to_string(),
            400,
            "MISSING_FIELD",
            "trace_id",
            "events: filters without trace_id",
        ),
        (
            "/v1/events?trace_id=not-a-uuid".to_string(),
            400,
            "INVALID_FIELD",
            "trace_id",
            "events: trace_id not a UUID",
        ),
        (
            format!("/v1/events?trace_id={t}&event_type=bogus"),
            400,
            "INVALID_FIELD",
            "event_type",
            "events: unknown event_type",
        ),
        (
            format!("/v1/events?trace_id={t}&event_type=USER"),
            400,
            "INVALID_FIELD",
            "event_type",
            "events: event_type in capitals",
        ),
        (
            format!("/v1/events?trace_id={t}&cursor=nope"),
            400,
            "INVALID_FIELD",
            "cursor",
            "events: garbage cursor",
        ),
        (
            format!("/v1/events?trace_id={t}&cursor={c}&offset=1"),
            400,
            "INVALID_FIELD",
            "offset",
            "events: cursor and offset",
        ),
        (
            format!("/v1/events?trace_id={UNKNOWN_TRACE}"),
            404,
            "TRACE_NOT_FOUND",
            "trace_id",
            "events: unknown trace",
        ),
        (
            "/v1/checks?trace_id=123".to_string(),
            400,
            "INVALID_FIELD",
            "trace_id",
            "checks: trace_id not a UUID",
        ),
        (
            "/v1/checks?is_safe=yes".to_string(),
            400,
            "INVALID_FIELD",
            "is_safe",
            "checks: is_safe=yes",
        ),
        (
            "/v1/checks?is_safe=TRUE".to_string(),
            400,
            "INVALID_FIELD",
            "is_safe",
            "checks: is_safe=TRUE",
        ),
        (
            "/v1/checks?is_safe=1".to_string(),
            400,
            "INVALID_FIELD",
            "is_safe",
            "checks: is_safe=1",
        ),
        (
            "/v1/checks?is_safe=".to_string(),
            400,
            "INVALID_FIELD",
            "is_safe",
            "checks: empty is_safe",
        ),
        (
            "/v1/checks?cursor=c-zz".to_string(),
            400,
            "INVALID_FIELD",
            "cursor",
            "checks: garbage cursor",
        ),
        (
            format!("/v1/checks?cursor={kc}&offset=2"),
            400,
            "INVALID_FIELD",
            "offset",
            "checks: cursor and offset",
        ),
        (
            format!("/v1/checks?trace_id={UNKNOWN_TRACE}"),
            404,
            "TRACE_NOT_FOUND",
            "trace_id",
            "checks: unknown trace",
        ),
        (
            format!("/v1/checks?trace_id={UNKNOWN_TRACE}&is_safe=false"),
            404,
            "TRACE_NOT_FOUND",
            "trace_id",
            "checks: unknown trace, filtered",
        ),
    ];

    for (path, status, code, param, case) in cases {
        // Act
        let r = get_as(&app, &path, None);

        // Assert
        r.assert_error(status, code, Some(param), &format!("{case} ({path})"));
    }
}

#[test]
fn other_methods_on_the_read_routes_are_405_with_allow_get_head() {
    // Arrange
    let app = TestApp::spawn();
    let t = register(&app, None, "methods", "You are a helpful assistant.");
    let paths = [
        "/v1/runs".to_string(),
        format!("/v1/runs/{t}"),
        format!("/v1/events?trace_id={t}"),
        "/v1/checks".to_string(),
    ];
    let empty = vec![("Content-Length".to_string(), "0".to_string())];

    for path in &paths {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let case = format!("{method} {path}");

            // Act
            let r = app.request(method, path, &empty, b"");

            // Assert
            r.assert_error(405, "METHOD_NOT_ALLOWED", None, &case);
            assert_eq!(r.header("Allow"), Some("GET, HEAD"), "{case}: Allow");
        }

        // Act: HEAD is answered like GET, without a body
        let r = app.request("HEAD", path, &[], b"");

        // Assert
        assert_eq!(r.status, 200, "HEAD {path}: status");
        assert!(r.body.is_empty(), "HEAD {path}: no body, got {}", r.text());
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and projects
// ---------------------------------------------------------------------------------------------

/// What two projects wrote, with a key for each, an admin key and a restricted key.
struct TwoProjects {
    app: TestApp,
    alpha_key: String,
    beta_key: String,
    admin_key: String,
    restricted_key: String,
    /// Alpha's trace_ids, newest first.
    alpha_runs: Vec<String>,
    /// Beta's trace_ids, newest first.
    beta_runs: Vec<String>,
    /// Alpha's action_check_ids, in arrival order.
    alpha_checks: Vec<String>,
    /// Beta's action_check_ids, in arrival order.
    beta_checks: Vec<String>,
    /// Every trace_id, newest first.
    all_runs: Vec<String>,
    /// Every action_check_id, in arrival order.
    all_checks: Vec<String>,
}

/// A text that only beta's data holds: no alpha response may contain it.
const BETA_SECRET: &str = "beta-secret-7f3a";

impl TwoProjects {
    /// Alpha and beta each register three runs (interleaved, with the same agent_id), log an
    /// event and check twice (once blocked) on each.
    fn new() -> TwoProjects {
        let app = TestApp::spawn();
        let alpha_key = create_key(&app, "alpha", "production");
        let beta_key = create_key(&app, "beta", "production");
        let admin_key = create_key(&app, "ops", "admin");
        let restricted_key = create_key(&app, "alpha", "restricted");
        let mut t = TwoProjects {
            app,
            alpha_key,
            beta_key,
            admin_key,
            restricted_key,
            alpha_runs: Vec::new(),
            beta_runs: Vec::new(),
            alpha_checks: Vec::new(),
            beta_checks: Vec::new(),
            all_runs: Vec::new(),
            all_checks: Vec::new(),
        };
        for i in 0..3u32 {
            for beta in [false, true] {
                let (key, prompt) = if beta {
                    (&t.beta_key, format!("Beta prompt {i} {BETA_SECRET}."))
                } else {
                    (&t.alpha_key, format!("Alpha prompt {i}."))
                };
                let key = Some(key.as_str());
                let trace = register(&t.app, key, "shared-agent", &prompt);
                let mut event = user_event(&trace);
                if beta {
                    let content = json!({"message": BETA_SECRET}).to_string();
                    event = with_field(event, "content", Some(json!(content)));
                }
                log_event(&t.app, key, &event);
                let safe = check_as(&t.app, key, &safe_check(&trace, 10 + i), true);
                let blocked = check_as(&t.app, key, &blocked_check(&trace, 20 + i), false);
                let checks = [safe, blocked].map(|v| {
                    v["action_check_id"]
                        .as_str()
                        .expect("action_check_id")
                        .to_string()
                });
                let (runs, own_checks) = if beta {
                    (&mut t.beta_runs, &mut t.beta_checks)
                } else {
                    (&mut t.alpha_runs, &mut t.alpha_checks)
                };
                runs.insert(0, trace.clone());
                own_checks.extend(checks.iter().cloned());
                t.all_runs.insert(0, trace);
                t.all_checks.extend(checks);
            }
        }
        t
    }
}

#[test]
fn a_projects_key_lists_only_its_projects_runs_and_checks_page_by_page_too() {
    // Arrange
    let t = TwoProjects::new();
    // (project, key, its runs, its checks)
    let cases = [
        ("alpha", &t.alpha_key, &t.alpha_runs, &t.alpha_checks),
        ("beta", &t.beta_key, &t.beta_runs, &t.beta_checks),
    ];

    for (project, key, runs, checks) in cases {
        let key = Some(key.as_str());
        // (path, id field, expected ids)
        let lists = [
            ("/v1/runs?", "trace_id", runs),
            ("/v1/runs?agent_id=shared-agent&", "trace_id", runs),
            ("/v1/checks?", "action_check_id", checks),
            ("/v1/checks?is_safe=false&", "action_check_id", checks),
        ];
        for (base, field, want) in lists {
            let case = format!("{project}: {base}");
            let want: Vec<String> = if base.contains("is_safe=false") {
                want.iter().skip(1).step_by(2).cloned().collect()
            } else {
                want.clone()
            };

            // Act
            let r = get_as(&t.app, base, key);
            let pages = walk(&t.app, key, base, 2, field, &case);

            // Assert
            let (items, _) = page(&r, &case);
            assert_eq!(ids(&items, field, &case), want, "{case}: one page");
            assert_eq!(pages.concat(), want, "{case}: pages of two");
            for item in &items {
                if let Some(p) = item.get("project") {
                    assert_eq!(p, project, "{case}: project of {item}");
                }
            }
            if project == "alpha" {
                assert!(
                    !r.text().contains(BETA_SECRET),
                    "{case}: beta's data leaked: {}",
                    r.text()
                );
            }
        }
    }
}

#[test]
fn another_projects_trace_answers_every_get_exactly_as_an_unknown_trace() {
    // Arrange
    let t = TwoProjects::new();
    let paths = [
        "/v1/runs/{t}",
        "/v1/events?trace_id={t}",
        "/v1/events?trace_id={t}&event_type=user&limit=1",
        "/v1/checks?trace_id={t}",
        "/v1/checks?trace_id={t}&is_safe=false&offset=1",
    ];
    // (whose key, another project's trace, own trace)
    let cases = [
        ("alpha", &t.alpha_key, &t.beta_runs[0], &t.alpha_runs[0]),
        ("beta", &t.beta_key, &t.alpha_runs[0], &t.beta_runs[0]),
    ];

    for (project, key, other, own) in cases {
        for path in paths {
            let case = format!("{project}'s key on {path}");
            let key = Some(key.as_str());

            // Act
            let foreign = get_as(&t.app, &path.replace("{t}", other), key);
            let unknown = get_as(&t.app, &path.replace("{t}", UNKNOWN_TRACE), key);
            let mine = get_as(&t.app, &path.replace("{t}", own), key);

            // Assert
            unknown.assert_error(404, "TRACE_NOT_FOUND", Some("trace_id"), &case);
            assert_eq!(foreign.status, 404, "{case}: status; {}", foreign.text());
            assert_eq!(
                foreign.text(),
                unknown.text(),
                "{case}: the body is byte-identical to an unknown trace's"
            );
            assert_eq!(
                foreign.header("Content-Type"),
                unknown.header("Content-Type"),
                "{case}: Content-Type"
            );
            assert_eq!(mine.status, 200, "{case}: own trace; {}", mine.text());
        }
    }
}

#[test]
fn an_admin_key_reads_every_project() {
    // Arrange
    let t = TwoProjects::new();
    let admin = Some(t.admin_key.as_str());
    // (path, id field, expected ids, case)
    let lists = [
        ("/v1/runs?", "trace_id", &t.all_runs, "runs"),
        (
            "/v1/runs?agent_id=shared-agent&",
            "trace_id",
            &t.all_runs,
            "runs of the shared agent",
        ),
        ("/v1/checks?", "action_check_id", &t.all_checks, "checks"),
        (
            "/v1/checks?trace_id={beta}&",
            "action_check_id",
            &t.beta_checks[..2].to_vec(),
            "checks of beta's first run",
        ),
    ];

    for (base, field, want, case) in lists {
        let base = base.replace("{beta}", &t.beta_runs[t.beta_runs.len() - 1]);

        // Act
        let pages = walk(&t.app, admin, &base, 4, field, case);

        // Assert
        assert_eq!(pages.concat(), *want, "{case}: every project's, in order");
    }
    for (project, runs) in [("alpha", &t.alpha_runs), ("beta", &t.beta_runs)] {
        for trace in runs {
            let case = format!("admin on {project}'s run {trace}");

            // Act
            let run = get_as(&t.app, &format!("/v1/runs/{trace}"), admin);
            let (events, _) = page(
                &get_as(&t.app, &format!("/v1/events?trace_id={trace}"), admin),
                &case,
            );

            // Assert
            assert_eq!(run.status, 200, "{case}: status; {}", run.text());
            let run = run.json();
            assert_eq!(run["project"], project, "{case}: project");
            assert_eq!(run["event_count"], 1, "{case}: event_count");
            assert_eq!(run["blocked_check_count"], 1, "{case}: blocked_check_count");
            assert_eq!(events.len(), 1, "{case}: its event");
        }
    }
}

#[test]
fn a_restricted_key_gets_403_and_no_key_gets_401_on_every_read() {
    // Arrange
    let t = TwoProjects::new();
    let own = &t.alpha_runs[0];
    let restricted = Some(t.restricted_key.as_str());
    let logged = post_text(&t.app, EVENT, restricted, &user_event(own).to_string());
    assert_eq!(logged.status, 200, "the restricted key works for events");
    let paths = [
        "/v1/runs".to_string(),
        "/v1/runs?limit=0".to_string(),
        format!("/v1/runs/{own}"),
        format!("/v1/runs/{UNKNOWN_TRACE}"),
        format!("/v1/events?trace_id={own}"),
        "/v1/events".to_string(),
        "/v1/checks".to_string(),
        format!("/v1/checks?trace_id={own}&is_safe=false"),
    ];
    // (key, status, code, case)
    let keys = [
        (
            restricted,
            403,
            "INSUFFICIENT_PERMISSIONS",
            "restricted key",
        ),
        (None, 401, "MISSING_API_KEY", "no key"),
        (Some(UNKNOWN_KEY), 401, "INVALID_API_KEY", "unknown key"),
    ];

    for (key, status, code, who) in keys {
        for path in &paths {
            let case = format!("{who} on {path}");

            // Act
            let r = get_as(&t.app, path, key);

            // Assert
            r.assert_error(status, code, None, &case);
            assert!(
                !r.text().contains(own.as_str()),
                "{case}: nothing of the run in {}",
                r.text()
            );
        }
    }
}

#[test]
fn a_page_of_large_items_ends_early_and_its_cursor_goes_on() {
    // Arrange: six events of 900 KB each, 5.4 MB in all (a page holds about 4 MiB of text).
    let app = TestApp::spawn();
    let t = register(&app, None, "large", "You are a helpful assistant.");
    let big = json!({"blob": "x".repeat(900_000)}).to_string();
    let mut logged = Vec::new();
    for i in 0..6 {
        let body = json!({"event_type": "tool", "trace_id": t, "timestamp": 1705329000 + i,
                          "content": big, "schema": "{}"});
        logged.push(log_event(&app, None, &body));
    }

    // Act
    let pages = walk(
        &app,
        None,
        &format!("/v1/events?trace_id={t}&"),
        100,
        "event_id",
        "large events",
    );

    // Assert
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        [5, 1],
        "the first page stops at the item that reaches 4 MiB"
    );
    assert_eq!(pages.concat(), logged, "every event once, in order");
}
