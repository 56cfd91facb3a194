//! Cross-cutting behaviour of the HTTP surface: the error envelope and the `type` of each
//! status, INVALID_JSON, ROUTE_NOT_FOUND, METHOD_NOT_ALLOWED (`Allow`), UNSUPPORTED_MEDIA_TYPE,
//! PAYLOAD_TOO_LARGE (Content-Length, chunked, absurd announced lengths), INTERNAL_ERROR on a
//! broken database, STORAGE_UNAVAILABLE on a held write lock, `X-Request-Id`,
//! `Content-Type: application/json`, and `/healthz`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Resp, Storage, TestApp, count_rows, database_of, head_end, http, parse_response, pg_connect,
    skip_on_postgres, skip_without_postgres, transfer_check, user_event,
};

const ROUTES: [&str; 3] = ["/v1/register-agent-run", "/v1/event", "/v1/check"];

fn registration() -> Value {
    json!({"agent_id": "test-agent", "timestamp": "2024-01-15T14:30:45.123Z",
           "system_prompt": "You are a helpful assistant."})
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The contract's `type` for each error status.
fn type_of_status(status: u16) -> &'static str {
    match status {
        400 | 405 | 413 | 415 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        500 | 503 => "api_error",
        other => panic!("no error type is defined for status {other}"),
    }
}

/// Asserts the envelope `{"error":{"message","type","code"[,"param"][,"details"]}}` with
/// nothing else in it, and the `type` of the response's status.
#[track_caller]
fn assert_envelope(resp: &Resp, case: &str) {
    let v = resp.json();
    let top = v.as_object().expect("the body is a JSON object");
    assert_eq!(
        top.keys().collect::<Vec<_>>(),
        vec!["error"],
        "{case}: only `error` at the top level; body {v}"
    );
    let err = v["error"].as_object().expect("`error` is an object");
    for key in err.keys() {
        assert!(
            ["message", "type", "code", "param", "details"].contains(&key.as_str()),
            "{case}: unexpected key {key:?} in the envelope; body {v}"
        );
    }
    assert!(
        err.get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "{case}: message; body {v}"
    );
    assert!(
        err.get("code")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty()),
        "{case}: code; body {v}"
    );
    assert_eq!(
        err.get("type").and_then(Value::as_str),
        Some(type_of_status(resp.status)),
        "{case}: type for status {}; body {v}",
        resp.status
    );
    if let Some(param) = err.get("param") {
        assert!(param.is_string(), "{case}: param is a string; body {v}");
    }
}

/// Sends `raw` bytes as they are and reads one whole response (framed by Content-Length or
/// by the server closing the connection).
fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> Resp {
    let got = send_and_read(addr, raw, response_complete, Duration::from_secs(10));
    assert!(
        got.framed,
        "the response ended neither by its Content-Length nor by a close: {:?}",
        String::from_utf8_lossy(&got.bytes)
    );
    parse_response(&got.bytes)
}

/// What [`send_and_read`] got.
struct Received {
    bytes: Vec<u8>,
    /// The reading stopped because `done` said so or the server closed: not by a timeout.
    framed: bool,
}

/// Sends `raw` (ignoring send errors: the server may answer before reading it all) and reads
/// until `done(bytes)`, EOF or `limit`.
fn send_and_read(
    addr: SocketAddr,
    raw: &[u8],
    done: fn(&[u8]) -> bool,
    limit: Duration,
) -> Received {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(limit))
        .expect("set the read timeout");
    let _ = stream.write_all(raw);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if done(&bytes) {
            return Received {
                bytes,
                framed: true,
            };
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return Received {
                    bytes,
                    framed: true,
                };
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => {
                return Received {
                    bytes,
                    framed: false,
                };
            }
        }
    }
}

/// True when `raw` holds a complete response head.
fn head_complete(raw: &[u8]) -> bool {
    head_end(raw).is_some()
}

/// True when `raw` holds a response head and the body its Content-Length announces.
fn response_complete(raw: &[u8]) -> bool {
    let Some(split) = head_end(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim() == "content-length")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    length.is_some_and(|len| raw.len() >= split + 4 + len)
}

/// A chunked POST of `body` in chunks of `chunk` bytes.
fn chunked_request(addr: SocketAddr, path: &str, body: &[u8], chunk: usize) -> Vec<u8> {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for piece in body.chunks(chunk) {
        raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

/// A registration body of exactly `len` bytes (the system prompt is padded).
fn registration_of_len(len: usize) -> Vec<u8> {
    let mut body = registration();
    let base = body.to_string().len() - "You are a helpful assistant.".len();
    body["system_prompt"] = json!("p".repeat(len - base));
    let bytes = body.to_string().into_bytes();
    assert_eq!(
        bytes.len(),
        len,
        "the padded registration has the asked length"
    );
    bytes
}

/// One response of [`sample_responses`] and what it should be.
struct Sample {
    why: &'static str,
    status: u16,
    code: Option<&'static str>,
    resp: Resp,
}

/// A spread of successful and failing requests over every route (needs a 1000-byte body cap).
fn sample_responses(app: &TestApp) -> Vec<Sample> {
    let trace_id = app.new_run();
    let mut chosen = registration();
    chosen["trace_id"] = json!(uuid::Uuid::new_v4().to_string());
    assert_eq!(app.register(&chosen).status, 200, "registering {chosen}");
    let unknown = user_event(&uuid::Uuid::new_v4().to_string());
    let safe_args = json!({"amount": 5, "recipient": "a@example.com"});
    let json_ct = Some("application/json");
    let sample = |why, status, code, resp| Sample {
        why,
        status,
        code,
        resp,
    };
    vec![
        sample("register", 200, None, app.register(&registration())),
        sample("event", 200, None, app.event(&user_event(&trace_id))),
        sample(
            "check",
            200,
            None,
            app.check(&transfer_check(&trace_id, &safe_args)),
        ),
        sample("healthz", 200, None, app.get("/healthz")),
        sample(
            "register with a syntax error",
            400,
            Some("INVALID_JSON"),
            app.post_raw(ROUTES[0], json_ct, b"{"),
        ),
        sample(
            "event without fields",
            400,
            Some("MISSING_FIELD"),
            app.event(&json!({})),
        ),
        sample(
            "event for an unknown trace",
            404,
            Some("TRACE_NOT_FOUND"),
            app.event(&unknown),
        ),
        sample("GET /nope", 404, Some("ROUTE_NOT_FOUND"), app.get("/nope")),
        sample(
            "GET /v1/check",
            405,
            Some("METHOD_NOT_ALLOWED"),
            app.get("/v1/check"),
        ),
        sample(
            "POST /healthz",
            405,
            Some("METHOD_NOT_ALLOWED"),
            app.post_raw("/healthz", json_ct, b"{}"),
        ),
        sample(
            "register with a taken trace_id",
            409,
            Some("TRACE_ID_CONFLICT"),
            app.register(&chosen),
        ),
        sample(
            "event over the body cap",
            413,
            Some("PAYLOAD_TOO_LARGE"),
            app.post_raw(ROUTES[1], json_ct, &[b' '; 2000]),
        ),
        sample(
            "check as text/plain",
            415,
            Some("UNSUPPORTED_MEDIA_TYPE"),
            app.post_raw(ROUTES[2], Some("text/plain"), b"{}"),
        ),
    ]
}

#[test]
fn malformed_bodies_are_invalid_json_on_every_post_route() {
    // Arrange
    let app = TestApp::spawn();
    let bodies: &[(&str, &[u8])] = &[
        ("a syntax error", b"{\"agent_id\": "),
        ("a trailing comma", b"{\"agent_id\": \"a\",}"),
        ("an empty body", b""),
        ("a whitespace-only body", b"  \n "),
        ("a JSON array", b"[1, 2, 3]"),
        ("a JSON string", b"\"just a string\""),
        ("a JSON number", b"42"),
        ("JSON null", b"null"),
        ("bytes that are not UTF-8", b"\xff\xfe{}"),
    ];

    for route in ROUTES {
        for (what, body) in bodies {
            // Act
            let resp = app.post_raw(route, Some("application/json"), body);

            // Assert
            let case = format!("{what} on {route}");
            resp.assert_error(400, "INVALID_JSON", None, &case);
            assert_envelope(&resp, &case);
        }
    }
}

#[test]
fn a_field_sent_twice_is_invalid_json_naming_the_field() {
    // Arrange
    let app = TestApp::spawn();
    let trace = app.new_run();
    let cases = [
        (
            "/v1/register-agent-run",
            r#"{"agent_id": "a", "timestamp": "2024-01-15T14:30:45Z", "system_prompt": "p",
                "timestamp": "2025-01-15T14:30:45Z"}"#
                .to_string(),
            "timestamp",
        ),
        (
            "/v1/event",
            format!(
                r#"{{"event_type": "user", "trace_id": "{trace}", "timestamp": 1.0,
                    "content": "{{}}", "schema": "{{}}", "content": "{{\"a\": 1}}"}}"#
            ),
            "content",
        ),
    ];
    for (route, body, field) in cases {
        // Act
        let resp = app.post_raw(route, Some("application/json"), body.as_bytes());

        // Assert
        let err = resp.assert_error(400, "INVALID_JSON", Some(field), route);
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field) && message.contains("more than once"),
            "{route}: {message}"
        );
        assert_envelope(&resp, route);
    }
}

#[test]
fn a_body_framed_ambiguously_is_refused_and_nothing_is_stored() {
    // Arrange
    let app = TestApp::spawn();
    let body = registration().to_string();
    let len = body.len().to_string();
    let json = ("Content-Type", "application/json");
    // (headers, status, code, a word the message must hold)
    let cases = [
        (
            headers(&[json, ("Content-Length", "5"), ("Content-Length", &len)]),
            400,
            "INVALID_JSON",
            "more than one",
        ),
        (
            headers(&[
                json,
                ("Content-Length", &len),
                ("Transfer-Encoding", "chunked"),
            ]),
            400,
            "INVALID_JSON",
            "both",
        ),
        (
            headers(&[json, ("Content-Length", "-1")]),
            400,
            "INVALID_JSON",
            "decimal",
        ),
        (
            headers(&[json, ("Content-Length", "99999999999999999999")]),
            413,
            "PAYLOAD_TOO_LARGE",
            "limit",
        ),
        (
            headers(&[json, ("Content-Length", &len), ("Content-Encoding", "gzip")]),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "uncompressed",
        ),
    ];
    for (headers, status, code, word) in cases {
        // Act
        let resp = http(
            app.addr,
            "POST",
            "/v1/register-agent-run",
            &headers,
            body.as_bytes(),
        );

        // Assert
        let case = format!("{headers:?}");
        let err = resp.assert_error(status, code, None, &case);
        assert!(
            err["message"].as_str().is_some_and(|m| m.contains(word)),
            "{case}: {err}"
        );
        assert_envelope(&resp, &case);
    }
    assert_eq!(
        count_rows(&app, "runs"),
        0,
        "no request was taken as a registration"
    );
}

#[test]
fn unknown_paths_are_route_not_found_with_the_envelope() {
    // Arrange
    let app = TestApp::spawn();
    let cases = [
        ("GET", "/index.html", "a page that is not the UI"),
        ("POST", "/v1/nope", "an unknown /v1 path"),
        ("POST", "/v1/event/", "a trailing slash"),
        ("POST", "/v1/eventz", "a misspelling"),
        ("POST", "/register-agent-run", "an endpoint without /v1"),
        ("GET", "/v1", "the bare prefix"),
    ];

    for (method, path, why) in cases {
        // Act
        let resp = app.request(method, path, &headers(&[("Content-Length", "0")]), b"");

        // Assert
        let err = resp.assert_error(404, "ROUTE_NOT_FOUND", None, why);
        assert_envelope(&resp, why);
        assert!(err.get("param").is_none(), "{why}: no param; {err}");
    }
}

#[test]
fn wrong_methods_are_method_not_allowed_with_an_allow_header() {
    // Arrange
    let app = TestApp::spawn();
    let mut cases: Vec<(&str, &str, &str)> = Vec::new();
    for route in ROUTES {
        for method in ["GET", "PUT", "DELETE", "PATCH"] {
            cases.push((method, route, "POST"));
        }
    }
    cases.push(("POST", "/healthz", "GET, HEAD"));
    cases.push(("DELETE", "/healthz", "GET, HEAD"));

    for (method, path, allow) in cases {
        // Act
        let resp = app.request(
            method,
            path,
            &headers(&[
                ("Content-Type", "application/json"),
                ("Content-Length", "2"),
            ]),
            b"{}",
        );

        // Assert
        let why = format!("{method} {path}");
        resp.assert_error(405, "METHOD_NOT_ALLOWED", None, &why);
        assert_envelope(&resp, &why);
        assert_eq!(resp.header("Allow"), Some(allow), "{why}: Allow header");
    }
}

#[test]
fn content_types_other_than_json_are_unsupported_media_type() {
    // Arrange
    let app = TestApp::spawn();
    let body = registration().to_string();
    let types = [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "text/json",
    ];

    for route in ROUTES {
        for content_type in types {
            // Act
            let resp = app.post_raw(route, Some(content_type), body.as_bytes());

            // Assert
            let why = format!("{content_type} on {route}");
            resp.assert_error(415, "UNSUPPORTED_MEDIA_TYPE", None, &why);
            assert_envelope(&resp, &why);
        }
    }
}

#[test]
fn json_with_parameters_or_no_content_type_at_all_is_accepted() {
    // Arrange
    let app = TestApp::spawn();
    let body = registration().to_string();
    let cases = [
        (Some("application/json"), "plain application/json"),
        (Some("application/json; charset=utf-8"), "with a charset"),
        (Some("Application/JSON;charset=UTF-8"), "in another case"),
        (None, "without a Content-Type"),
    ];

    for (content_type, why) in cases {
        // Act
        let resp = app.post_raw(ROUTES[0], content_type, body.as_bytes());

        // Assert
        assert_eq!(resp.status, 200, "{why}: {}", resp.text());
        assert!(
            resp.json()["trace_id"].is_string(),
            "{why}: {}",
            resp.text()
        );
    }
}

#[test]
fn a_body_over_the_limit_is_payload_too_large_and_one_at_the_limit_is_accepted() {
    // Arrange
    let app = TestApp::spawn_with(&["--max-body-bytes", "1000"]);
    let cases = [
        (999, 200, "one byte under the limit"),
        (1000, 200, "exactly at the limit"),
        (1001, 413, "one byte over the limit"),
        (5000, 413, "far over the limit"),
    ];

    for (len, status, why) in cases {
        // Act
        let resp = app.post_raw(
            ROUTES[0],
            Some("application/json"),
            &registration_of_len(len),
        );

        // Assert
        if status == 200 {
            assert_eq!(resp.status, 200, "{why}: {}", resp.text());
        } else {
            resp.assert_error(413, "PAYLOAD_TOO_LARGE", None, why);
            assert_envelope(&resp, why);
        }
    }
}

#[test]
fn a_chunked_body_over_the_limit_is_payload_too_large() {
    // Arrange
    let app = TestApp::spawn_with(&["--max-body-bytes", "1000"]);
    let cases = [
        (
            ROUTES[0],
            registration_of_len(1001),
            100,
            "1001 bytes in chunks of 100",
        ),
        (
            ROUTES[0],
            registration_of_len(3000),
            1000,
            "3000 bytes in chunks of 1000",
        ),
        (ROUTES[1], vec![b'x'; 5000], 4096, "5000 bytes to /v1/event"),
        (
            ROUTES[2],
            vec![b'x'; 1001],
            1001,
            "one chunk of 1001 bytes to /v1/check",
        ),
    ];

    for (route, body, chunk, why) in cases {
        // Act
        let resp = raw_exchange(app.addr, &chunked_request(app.addr, route, &body, chunk));

        // Assert
        resp.assert_error(413, "PAYLOAD_TOO_LARGE", None, why);
        assert_envelope(&resp, why);
    }
}

#[test]
fn a_chunked_body_within_the_limit_is_accepted() {
    // Arrange
    let app = TestApp::spawn_with(&["--max-body-bytes", "1000"]);
    let body = registration_of_len(1000);

    // Act
    let resp = raw_exchange(app.addr, &chunked_request(app.addr, ROUTES[0], &body, 300));

    // Assert
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.json()["trace_id"].is_string(), "{}", resp.text());
}

/// A request that announces `length` body bytes and sends only a few of them.
fn announcing(addr: SocketAddr, length: &str) -> Vec<u8> {
    format!(
        "POST /v1/register-agent-run HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{\"agent_id\":"
    )
    .into_bytes()
}

const ABSURD_LENGTHS: [(&str, &str); 3] = [
    ("100000000000000", "100 TB"),
    ("20000000", "20 MB, over the drain limit"),
    ("18446744073709551615", "u64::MAX"),
];

#[test]
fn an_absurd_announced_content_length_is_413_and_the_server_lives_on() {
    // Arrange
    let app = TestApp::spawn_with(&["--max-body-bytes", "1000"]);

    for (length, why) in ABSURD_LENGTHS {
        // Act: the head and a few bytes; the announced body never comes.
        let got = send_and_read(
            app.addr,
            &announcing(app.addr, length),
            head_complete,
            Duration::from_secs(10),
        );

        // Assert
        assert!(
            head_complete(&got.bytes),
            "{why}: a response head: {:?}",
            String::from_utf8_lossy(&got.bytes)
        );
        assert_eq!(parse_response(&got.bytes).status, 413, "{why}: status");
        let health = app.get("/healthz");
        assert_eq!(
            health.status,
            200,
            "{why}: healthz afterwards: {}",
            health.text()
        );
        let again = app.register(&registration());
        assert_eq!(
            again.status,
            200,
            "{why}: register afterwards: {}",
            again.text()
        );
    }
}

#[test]
fn an_absurd_body_sent_to_an_unknown_path_is_still_route_not_found() {
    // Arrange
    let app = TestApp::spawn_with(&["--max-body-bytes", "1000"]);
    let raw = String::from_utf8(announcing(app.addr, "20000000"))
        .expect("ascii")
        .replace("/v1/register-agent-run", "/v1/nope");

    // Act
    let got = send_and_read(
        app.addr,
        raw.as_bytes(),
        response_complete,
        Duration::from_secs(3),
    );

    // Assert
    let resp = parse_response(&got.bytes);
    resp.assert_error(
        404,
        "ROUTE_NOT_FOUND",
        None,
        "an unknown path with 20 MB announced",
    );
    assert_envelope(&resp, "an unknown path with 20 MB announced");
}

#[test]
fn an_absurd_announced_content_length_gets_a_complete_413_envelope() {
    // Arrange
    let app = TestApp::spawn_with(&["--max-body-bytes", "1000"]);

    for (length, why) in ABSURD_LENGTHS {
        // Act
        let got = send_and_read(
            app.addr,
            &announcing(app.addr, length),
            response_complete,
            Duration::from_secs(3),
        );

        // Assert
        assert!(
            got.framed,
            "{why}: the response ends by its Content-Length or a close: {:?}",
            String::from_utf8_lossy(&got.bytes)
        );
        let resp = parse_response(&got.bytes);
        resp.assert_error(413, "PAYLOAD_TOO_LARGE", None, why);
        assert_envelope(&resp, why);
    }
}

#[test]
fn clients_that_announce_an_over_limit_body_and_stall_do_not_take_the_workers() {
    // Arrange: two workers, two clients that announce 2 MB (over the cap, under the drain
    // limit), get their 413, and then send nothing more.
    let app = TestApp::spawn_with(&["--max-body-bytes", "1000", "--threads", "2"]);
    let mut stalled = Vec::new();
    for n in 0..2 {
        let mut stream = TcpStream::connect(app.addr).expect("connect");
        stream
            .write_all(&announcing(app.addr, "2000000"))
            .expect("send the head");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set the read timeout");
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).expect("read the status line");
        assert_eq!(&head, b"HTTP/1.1 413", "stalled client {n}");
        stalled.push(stream);
    }

    // Act
    let health = send_and_read(
        app.addr,
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            app.addr
        )
        .as_bytes(),
        response_complete,
        Duration::from_secs(3),
    );

    // Assert
    assert!(
        health.framed && head_complete(&health.bytes),
        "healthz answers while the stalled clients wait: {:?}",
        String::from_utf8_lossy(&health.bytes)
    );
    assert_eq!(parse_response(&health.bytes).status, 200);
    drop(stalled);
}

#[test]
fn a_broken_database_is_an_internal_error_that_leaks_nothing_and_the_server_keeps_serving() {
    // Arrange
    let app = TestApp::spawn();
    let trace_id = app.new_run();
    assert_eq!(
        app.event(&user_event(&trace_id)).status,
        200,
        "an event before the damage"
    );
    app.storage.execute("DROP TABLE events");

    // Act
    let resp = app.event(&user_event(&trace_id));

    // Assert
    let err = resp.assert_error(500, "INTERNAL_ERROR", None, "an event without its table");
    assert_envelope(&resp, "an event without its table");
    let message = err["message"].as_str().unwrap_or("").to_ascii_lowercase();
    let dir = app.dir.display().to_string().to_ascii_lowercase();
    let database = match &app.storage {
        crate::helpers::Storage::Postgres(url) => database_of(url),
        crate::helpers::Storage::File(_) => "rw.db".to_string(),
    };
    let secrets = [
        "events",
        "table",
        "sql",
        "insert",
        "relation",
        "rw.db",
        dir.as_str(),
        database.as_str(),
    ];
    for secret in secrets {
        assert!(
            !message.contains(secret),
            "the message leaks {secret:?}: {message}"
        );
    }
    let body = resp.text().to_ascii_lowercase();
    for leak in ["no such table", "does not exist"] {
        assert!(
            !body.contains(leak),
            "the body leaks the database's error: {}",
            resp.text()
        );
    }
    let health = app.get("/healthz");
    assert_eq!(health.status, 200, "healthz afterwards: {}", health.text());
    let again = app.register(&registration());
    assert_eq!(again.status, 200, "register afterwards: {}", again.text());
}

#[test]
fn a_write_lock_held_past_the_busy_timeout_is_storage_unavailable_until_released() {
    if skip_on_postgres(
        "holds SQLite's write lock; the PostgreSQL form holds a run's row lock (next test)",
    ) {
        return;
    }
    // Arrange
    let app = TestApp::spawn_with(&["--busy-timeout-ms", "200"]);
    let trace_id = uuid::Uuid::new_v4().to_string();
    let mut body = registration();
    body["trace_id"] = json!(trace_id);
    let conn = rusqlite::Connection::open_with_flags(
        app.db_file(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
    )
    .expect("open the database for writing");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("set a busy timeout");
    conn.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");

    // Act
    let locked = app.register(&body);
    let health_while_locked = app.get("/healthz");
    conn.execute_batch("ROLLBACK")
        .expect("release the write lock");
    let released = app.register(&body);

    // Assert
    let why = "a registration while another process holds the write lock";
    locked.assert_error(503, "STORAGE_UNAVAILABLE", None, why);
    assert_envelope(&locked, why);
    let retry_after = locked.header("Retry-After").expect("a Retry-After header");
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After is a number of seconds: {retry_after:?}"
    );
    assert_eq!(
        health_while_locked.status,
        200,
        "reads do not wait for the writer: {}",
        health_while_locked.text()
    );
    assert_eq!(
        released.status,
        200,
        "the same trace_id registers after the release (the 503 stored nothing): {}",
        released.text()
    );
    assert_eq!(released.json()["trace_id"], json!(trace_id));
}

/// PostgreSQL: a run's row locked by another transaction (another instance appending to it,
/// or an operator's session) makes an event wait at most `--busy-timeout-ms`
/// (`lock_timeout`), then 503; once the lock is gone, the same event is stored.
#[test]
fn a_row_lock_held_past_the_busy_timeout_is_storage_unavailable_until_released() {
    if skip_without_postgres() {
        return;
    }
    // Arrange
    let app = TestApp::spawn_with(&["--busy-timeout-ms", "200"]);
    let Storage::Postgres(url) = &app.storage else {
        panic!("a PostgreSQL database was expected");
    };
    let trace_id = app.new_run();
    let mut locker = pg_connect(url);
    let mut tx = locker.transaction().expect("begin");
    tx.execute(
        "SELECT 1 FROM runs WHERE trace_id = $1 FOR UPDATE",
        &[&trace_id],
    )
    .expect("lock the run's row");

    // Act
    let started = std::time::Instant::now();
    let locked = app.event(&user_event(&trace_id));
    let waited = started.elapsed();
    tx.rollback().expect("release the lock");
    let released = app.event(&user_event(&trace_id));

    // Assert
    let why = "an event while another transaction holds its run's row";
    locked.assert_error(503, "STORAGE_UNAVAILABLE", None, why);
    assert!(locked.header("Retry-After").is_some(), "{why}: Retry-After");
    assert!(
        waited < Duration::from_secs(3),
        "{why}: answered after {waited:?}"
    );
    assert_eq!(
        released.status,
        200,
        "after the release: {}",
        released.text()
    );
    assert_eq!(count_rows(&app, "events"), 1, "the 503 stored nothing");
}

#[test]
fn a_sane_request_id_is_echoed_and_any_other_is_replaced() {
    // Arrange
    let app = TestApp::spawn();
    let long = "a".repeat(200);
    let cases: &[(Option<&str>, bool, &str)] = &[
        (Some("abc-123"), true, "a plain id"),
        (Some("req_1.2:3-X"), true, "an id with . _ : -"),
        (Some("has spaces in it"), false, "an id with spaces"),
        (Some(long.as_str()), false, "a 200-character id"),
        (Some("<script>"), false, "an id with markup"),
        (None, false, "no id"),
    ];

    for (sent, echoed, why) in cases {
        let hdrs = match sent {
            Some(id) => headers(&[("X-Request-Id", id)]),
            None => Vec::new(),
        };

        // Act
        let resp = app.request("GET", "/healthz", &hdrs, b"");

        // Assert
        assert_eq!(resp.status, 200, "{why}: {}", resp.text());
        let got = resp.header("X-Request-Id").expect("an X-Request-Id header");
        if *echoed {
            assert_eq!(Some(got), *sent, "{why}: echoed");
        } else {
            assert_ne!(Some(got), *sent, "{why}: replaced");
            assert!(
                (1..=128).contains(&got.len())
                    && got
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)),
                "{why}: the generated id is itself sane: {got:?}"
            );
        }
    }
}

#[test]
fn generated_request_ids_differ_between_requests() {
    // Arrange
    let app = TestApp::spawn();

    // Act
    let ids: std::collections::HashSet<String> = (0..5)
        .map(|_| {
            app.get("/healthz")
                .header("X-Request-Id")
                .expect("an X-Request-Id header")
                .to_string()
        })
        .collect();

    // Assert
    assert_eq!(ids.len(), 5, "five requests, five ids: {ids:?}");
}

#[test]
fn every_response_carries_a_json_content_type_and_a_request_id() {
    // Arrange
    let app = TestApp::spawn_with(&["--max-body-bytes", "1000"]);

    // Act
    let samples = sample_responses(&app);

    // Assert
    for Sample { why, resp, .. } in &samples {
        let content_type = resp.header("Content-Type").unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "{why}: Content-Type {content_type:?}"
        );
        assert!(
            resp.header("X-Request-Id").is_some_and(|id| !id.is_empty()),
            "{why}: X-Request-Id in {:?}",
            resp.headers
        );
        assert!(resp.json().is_object(), "{why}: a JSON object body");
    }
}

#[test]
fn every_error_has_the_envelope_and_the_type_of_its_status() {
    // Arrange
    let app = TestApp::spawn_with(&["--max-body-bytes", "1000"]);

    // Act
    let samples = sample_responses(&app);

    // Assert
    for Sample {
        why,
        status,
        code,
        resp,
    } in &samples
    {
        match code {
            Some(code) => {
                resp.assert_error(*status, code, None, why);
                assert_envelope(resp, why);
            }
            None => assert_eq!(resp.status, *status, "{why}: {}", resp.text()),
        }
    }
}

#[test]
fn healthz_answers_status_ok_and_the_version() {
    // Arrange
    let app = TestApp::spawn();

    // Act
    let get = app.get("/healthz");
    let head = app.request("HEAD", "/healthz", &[], b"");
    let with_query = app.get("/healthz?verbose=1");

    // Assert
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(
        get.json(),
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})
    );
    assert_eq!(head.status, 200, "HEAD /healthz");
    assert!(head.body.is_empty(), "HEAD has no body: {}", head.text());
    assert_eq!(with_query.status, 200, "a query string is ignored");
}
