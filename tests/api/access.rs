//! Access control (issue 4): API keys and projects, key types, per-key rate limits and
//! `Idempotency-Key` retries, all black-box. Keys are made, listed and revoked with the real
//! `runwarden keys` CLI on the database the server uses (also while it runs; `--db FILE` or
//! `--database-url URL`, see `helpers::Storage`), and requests carry them in `x-api-key`.
//!
//! Covered: open mode (loopback only, while no active key exists) and the refusal to start open
//! on a non-loopback address; 401 for missing, unknown and revoked keys on every `/v1` route;
//! project isolation on `/v1/event` and `/v1/check`; restricted keys; the `X-RateLimit-*`
//! headers and the exact minute boundary; admin keys without limits; replays, 409s, per-project
//! keys, a burst of 16 identical requests and malformed keys for `Idempotency-Key`; the key
//! secret nowhere in the database; `keys list` and `keys revoke`.
//!
//! Isolation on the read endpoints (GET), admin cross-project reads and 403 for restricted
//! keys on reads are tested in `reads.rs`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{
    RATE_HEADERS, Resp, Storage, TestApp, assert_one_error_line, avoid_window_end, count_rows,
    create_key, create_key_on, fresh_dir, headers_for, http, keys_cmd, now_secs,
    parse_startup_line, pg_connect, post_as, post_to, rate, retry_after, run_to_exit,
    runwarden_command, secs_left_in_window, transfer_check, user_event,
};

const REGISTER: &str = "/v1/register-agent-run";
const EVENT: &str = "/v1/event";
const CHECK: &str = "/v1/check";

/// A key to create: (project, type, extra `keys create` flags).
type KeySpec<'a> = (&'a str, &'a str, &'a [&'a str]);

/// Builds a request body for a trace_id.
type BodyFor = fn(&str) -> Value;

/// Extra request headers.
type Extra<'a> = &'a [(&'a str, &'a str)];

/// A well-formed key that no database holds.
const UNKNOWN_KEY: &str = "rw_dev_000000000000000000000000000000000000000000000000";

// ---------------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------------

/// Revokes key `id` with the CLI and asserts that it worked.
fn revoke_key(db: &Storage, id: &str) {
    let out = keys_cmd(db, &["revoke", id]);
    assert!(
        out.status.success(),
        "keys revoke {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One row of `keys list`.
#[derive(Debug, Clone)]
struct KeyRow {
    id: String,
    project: String,
    kind: String,
    name: String,
    created: String,
    last_used: String,
    rpm: String,
    rph: String,
    revoked: String,
}

/// `keys list` on `db`: its whole output and its rows.
fn list_keys(db: &Storage) -> (String, Vec<KeyRow>) {
    let out = keys_cmd(db, &["list"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "keys list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "PROJECT", "TYPE", "NAME", "CREATED", "LAST", "USED", "RPM", "RPH", "REVOKED"
        ],
        "keys list header: {stdout}"
    );
    let rows = lines
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 9, "keys list row {line:?}");
            KeyRow {
                id: f[0].into(),
                project: f[1].into(),
                kind: f[2].into(),
                name: f[3].into(),
                created: f[4].into(),
                last_used: f[5].into(),
                rpm: f[6].into(),
                rph: f[7].into(),
                revoked: f[8].into(),
            }
        })
        .collect();
    (stdout, rows)
}

/// The `keys list` row of key `id`.
fn key_row(db: &Storage, id: &str) -> KeyRow {
    let (stdout, rows) = list_keys(db);
    rows.into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("key {id} not in keys list:\n{stdout}"))
}

/// Polls `keys list` for up to 2 s until key `id` shows a last-used time (it is written
/// asynchronously); returns its row as last seen.
fn row_once_used(db: &Storage, id: &str) -> KeyRow {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let row = key_row(db, id);
        if row.last_used != "never" || Instant::now() >= deadline {
            return row;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Unix seconds of an RFC 3339 time shown by the CLI; panics naming `what` otherwise.
#[track_caller]
fn unix_of(ts: &str, what: &str) -> f64 {
    let t = OffsetDateTime::parse(ts, &Rfc3339)
        .unwrap_or_else(|e| panic!("{what}: {ts:?} is not an RFC 3339 time: {e}"));
    t.unix_timestamp_nanos() as f64 / 1e9
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// A registration body with `prompt` (the server picks the trace_id).
fn run_body(prompt: &str) -> Value {
    json!({"agent_id": "access-agent", "timestamp": "2024-01-15T14:30:45.123Z",
           "system_prompt": prompt})
}

/// A registration body with a client-chosen `trace_id`.
fn run_body_with_id(prompt: &str, trace_id: &str) -> Value {
    json!({"agent_id": "access-agent", "timestamp": "2024-01-15T14:30:45.123Z",
           "system_prompt": prompt, "trace_id": trace_id})
}

/// A check body for `trace_id` (a plain transfer).
fn check_body(trace_id: &str) -> Value {
    transfer_check(trace_id, &json!({"amount": 10, "recipient": "bob"}))
}

/// Registers a run with `key` and returns its trace_id.
fn register_as(app: &TestApp, key: &str, prompt: &str) -> String {
    let r = post_as(app, REGISTER, Some(key), &[], &run_body(prompt));
    assert_eq!(r.status, 200, "register: {}", r.text());
    r.json()["trace_id"].as_str().expect("trace_id").to_string()
}

/// How many runs with `trace_id` are stored.
fn runs_with_id(app: &TestApp, trace_id: &str) -> i64 {
    app.query_i64("SELECT count(*) FROM runs WHERE trace_id = ?1", &[trace_id])
}

/// The trace_id of a registration's answer.
fn trace_of(r: &Resp, case: &str) -> String {
    r.json()["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: no trace_id in {}", r.text()))
        .to_string()
}

/// Sleeps `secs` seconds and a little more.
fn sleep_past(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs) + Duration::from_millis(300));
}

// ---------------------------------------------------------------------------------------------
// A server on a non-loopback address (TestApp always listens on 127.0.0.1)
// ---------------------------------------------------------------------------------------------

/// A `serve` process started by a test itself; killed when dropped.
struct Served {
    child: Child,
    /// Its start-up line.
    line: String,
    /// Where to reach it: the loopback address with the port it bound.
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on `storage` with `args` and reads its start-up line.
fn serve(storage: &Storage, args: &[&str]) -> Served {
    let mut child = runwarden_command(&["serve"])
        .args(storage.args())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start runwarden");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the start-up line");
    let Some(bound) = parse_startup_line(&line) else {
        let _ = child.kill();
        let _ = child.wait();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        panic!("serve {args:?} did not start: stdout {line:?}, stderr {stderr:?}");
    };
    Served {
        child,
        line,
        addr: SocketAddr::from(([127, 0, 0, 1], bound.port())),
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and the CLI
// ---------------------------------------------------------------------------------------------

#[test]
fn keys_create_prints_one_secret_with_its_type_prefix_and_at_least_128_random_bits() {
    // Arrange
    let dir = fresh_dir("keys-create");
    let db = Storage::in_dir(&dir, "rw");
    let cases = [
        ("development", "rw_dev_"),
        ("production", "rw_prod_"),
        ("restricted", "rw_rst_"),
        ("admin", "rw_adm_"),
    ];
    let mut secrets = HashSet::new();
    let mut ids = Vec::new();

    for (kind, prefix) in cases {
        // Act
        let (secret, id) = create_key_on(&db, "team-a", kind, &[]);

        // Assert
        assert!(secret.starts_with(prefix), "{kind}: prefix of {secret}");
        let random = &secret[prefix.len()..];
        assert!(
            random.len() >= 32
                && random
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{kind}: at least 32 lowercase hex digits (128 bits) after the prefix: {secret}"
        );
        assert!(id.starts_with("key_"), "{kind}: id {id}");
        assert!(secrets.insert(secret), "{kind}: a secret repeats");
        ids.push((kind, id));
    }
    let (_, rows) = list_keys(&db);
    for (kind, id) in ids {
        let row = rows
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("{kind}: key {id} not listed"));
        assert_eq!(
            (row.project.as_str(), row.kind.as_str()),
            ("team-a", kind),
            "{kind}: listed project and type"
        );
    }
}

#[test]
fn keys_list_shows_project_type_name_limits_revocation_and_last_use_but_never_a_secret() {
    // Arrange
    let started = now_secs();
    let app = TestApp::spawn();
    // (project, type, flags) and what `keys list` shows: (name, RPM, RPH)
    let cases: [(KeySpec, [&str; 3]); 4] = [
        (
            ("alpha", "development", &["--name", "ci-bot"]),
            ["ci-bot", "60", "1000"],
        ),
        (
            ("alpha", "production", &["--rpm", "5", "--rph", "50"]),
            ["-", "5", "50"],
        ),
        (
            ("beta", "restricted", &["--name", "edge"]),
            ["edge", "600", "10000"],
        ),
        (("beta", "admin", &[]), ["-", "-", "-"]),
    ];
    let keys: Vec<(String, String)> = cases
        .iter()
        .map(|((project, kind, flags), _)| create_key(&app, project, kind, flags))
        .collect();
    let (dev_secret, dev_id) = &keys[0];
    let (_, revoked_id) = &keys[1];
    let before_revoke = key_row(&app.storage, revoked_id);

    // Act: revoke the production key, use the development key on the running server.
    revoke_key(&app.storage, revoked_id);
    let used_at = now_secs();
    register_as(&app, dev_secret, "listed key in use");
    let dev_row = row_once_used(&app.storage, dev_id);
    let (stdout, rows) = list_keys(&app.storage);

    // Assert
    assert_eq!(
        before_revoke.revoked, "no",
        "before revoke: {before_revoke:?}"
    );
    assert_eq!(rows.len(), cases.len(), "one row per key:\n{stdout}");
    for (((project, kind, _), [name, rpm, rph]), (secret, id)) in cases.iter().zip(&keys) {
        let case = format!("{kind} key of {project}");
        let row = rows
            .iter()
            .find(|r| &r.id == id)
            .unwrap_or_else(|| panic!("{case}: not listed:\n{stdout}"));
        assert_eq!(
            (
                row.project.as_str(),
                row.kind.as_str(),
                row.name.as_str(),
                row.rpm.as_str(),
                row.rph.as_str()
            ),
            (*project, *kind, *name, *rpm, *rph),
            "{case}: project, type, name, limits"
        );
        let created = unix_of(&row.created, &format!("{case}: created"));
        assert!(
            created >= started - 1.0 && created <= now_secs() + 1.0,
            "{case}: created {} is not during the test",
            row.created
        );
        let random = &secret[secret.rfind('_').expect("prefix") + 1..];
        assert!(
            !stdout.contains(secret.as_str()) && !stdout.contains(random),
            "{case}: keys list shows the secret:\n{stdout}"
        );
        if id == revoked_id {
            let revoked = unix_of(&row.revoked, &format!("{case}: revoked"));
            assert!(
                revoked >= started - 1.0 && revoked <= now_secs() + 1.0,
                "{case}: revoked {} is not during the test",
                row.revoked
            );
        } else {
            assert_eq!(row.revoked, "no", "{case}: not revoked");
        }
        if id != dev_id {
            assert_eq!(row.last_used, "never", "{case}: never used");
        }
    }
    // Last use is the time of the (only) request, never before the key was created.
    let last_used = unix_of(&dev_row.last_used, "development key: last used");
    let created = unix_of(&dev_row.created, "development key: created");
    assert!(
        last_used >= used_at - 0.5 && last_used <= now_secs() + 1.0,
        "development key: last used {} does not match the request at {used_at}",
        dev_row.last_used
    );
    assert!(
        last_used >= created,
        "development key: last used {} before created {}",
        dev_row.last_used,
        dev_row.created
    );
}

#[test]
fn keys_revoke_takes_effect_on_the_next_request_of_a_running_server() {
    // Arrange
    let app = TestApp::spawn();
    let (revoked, revoked_id) = create_key(&app, "shop", "development", &[]);
    let (kept, _) = create_key(&app, "shop", "development", &[]);
    let trace = register_as(&app, &revoked, "revocation");
    let before = post_as(&app, EVENT, Some(&revoked), &[], &user_event(&trace));

    // Act
    revoke_key(&app.storage, &revoked_id);
    let after = post_as(&app, EVENT, Some(&revoked), &[], &user_event(&trace));
    let other_key = post_as(&app, EVENT, Some(&kept), &[], &user_event(&trace));

    // Assert
    assert_eq!(before.status, 200, "before revoke: {}", before.text());
    after.assert_error(401, "INVALID_API_KEY", None, "right after revoke");
    assert_eq!(
        other_key.status,
        200,
        "the project's other key still works: {}",
        other_key.text()
    );
    assert_eq!(
        count_rows(&app, "events"),
        2,
        "the refused event is not stored"
    );
}

#[test]
fn keys_revoke_of_an_unknown_id_fails_with_one_error_line() {
    // Arrange
    let dir = fresh_dir("revoke-unknown");
    let db = Storage::in_dir(&dir, "rw");
    create_key_on(&db, "shop", "development", &[]);

    // Act
    let out = keys_cmd(&db, &["revoke", "key_000000000000"]);

    // Assert
    let line = assert_one_error_line(&out, "unknown id");
    assert!(line.contains("key_000000000000"), "names the id: {line}");
    let (_, rows) = list_keys(&db);
    assert!(
        rows.iter().all(|r| r.revoked == "no"),
        "no key was revoked: {rows:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Authentication and open mode
// ---------------------------------------------------------------------------------------------

#[test]
fn a_fresh_server_on_loopback_is_open_and_puts_runs_in_the_default_project() {
    // Arrange
    let app = TestApp::spawn();

    // Act
    let registered = post_as(&app, REGISTER, None, &[], &run_body("open mode"));
    let trace = trace_of(&registered, "open register");
    let event = post_as(&app, EVENT, None, &[], &user_event(&trace));
    let check = post_as(&app, CHECK, None, &[], &check_body(&trace));

    // Assert
    assert_eq!(registered.status, 200, "register: {}", registered.text());
    assert_eq!(event.status, 200, "event: {}", event.text());
    assert_eq!(check.status, 200, "check: {}", check.text());
    let project = app.query_text("SELECT project FROM runs WHERE trace_id = ?1", &[&trace]);
    assert_eq!(project, "default");
}

#[test]
fn an_unknown_key_is_refused_even_in_open_mode() {
    // Arrange
    let app = TestApp::spawn();

    // Act
    let r = post_as(&app, REGISTER, Some(UNKNOWN_KEY), &[], &run_body("x"));

    // Assert
    r.assert_error(401, "INVALID_API_KEY", None, "unknown key in open mode");
    assert_eq!(count_rows(&app, "runs"), 0);
}

#[test]
fn once_a_key_exists_every_v1_route_needs_a_valid_one_and_healthz_needs_none() {
    // Arrange: a running open server gets its first key, and a second key that is revoked.
    let app = TestApp::spawn();
    let (good, _) = create_key(&app, "shop", "development", &[]);
    let (revoked, revoked_id) = create_key(&app, "shop", "development", &[]);
    revoke_key(&app.storage, &revoked_id);
    let trace = register_as(&app, &good, "keyed run");
    let routes = [
        ("register", REGISTER, run_body("refused run")),
        ("event", EVENT, user_event(&trace)),
        ("check", CHECK, check_body(&trace)),
    ];
    let callers = [
        ("no key", None, "MISSING_API_KEY"),
        ("unknown key", Some(UNKNOWN_KEY), "INVALID_API_KEY"),
        ("revoked key", Some(revoked.as_str()), "INVALID_API_KEY"),
    ];

    for (route, path, body) in &routes {
        for (caller, key, code) in &callers {
            // Act
            let r = post_as(&app, path, *key, &[], body);

            // Assert
            r.assert_error(401, code, None, &format!("{route} with {caller}"));
        }
    }
    assert_eq!(
        (
            count_rows(&app, "runs"),
            count_rows(&app, "events"),
            count_rows(&app, "checks")
        ),
        (1, 0, 0),
        "refused requests store nothing"
    );
    let health = app.get("/healthz");
    assert_eq!(
        health.status,
        200,
        "healthz without a key: {}",
        health.text()
    );
    for (route, path, body) in &routes {
        let r = post_as(&app, path, Some(&good), &[], body);
        assert_eq!(r.status, 200, "{route} with the valid key: {}", r.text());
    }
}

#[test]
fn serve_on_a_non_loopback_address_without_an_active_key_refuses_to_start() {
    // (case, whether to create and revoke a key first)
    let cases = [("no key at all", false), ("only a revoked key", true)];
    for (case, revoked_key) in cases {
        // Arrange
        let dir = fresh_dir("non-loopback-refused");
        let db = Storage::in_dir(&dir, "rw");
        if revoked_key {
            let (_, id) = create_key_on(&db, "ops", "production", &[]);
            revoke_key(&db, &id);
        }
        let [db_flag, db_value] = db.args();

        // Act
        let out = run_to_exit(&["serve", "--addr", "0.0.0.0:0", &db_flag, &db_value]);

        // Assert
        let line = assert_one_error_line(&out, case);
        assert!(
            line.contains("--allow-open"),
            "{case}: the message names the way out: {line}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "{case}: it must not start"
        );
    }
}

#[test]
fn serve_on_a_non_loopback_address_with_allow_open_starts_in_open_mode() {
    // Arrange
    let dir = fresh_dir("non-loopback-open");

    // Act
    let server = serve(
        &Storage::in_dir(&dir, "rw"),
        &["--addr", "0.0.0.0:0", "--allow-open"],
    );
    let r = post_to(server.addr, REGISTER, None, &[], &run_body("allowed open"));

    // Assert
    assert!(
        server.line.contains("open mode"),
        "the start-up line says open mode: {}",
        server.line
    );
    assert_eq!(r.status, 200, "no key needed: {}", r.text());
}

#[test]
fn serve_on_a_non_loopback_address_starts_when_a_key_exists_and_requires_it() {
    // Arrange
    let dir = fresh_dir("non-loopback-keyed");
    let db = Storage::in_dir(&dir, "rw");
    let (secret, _) = create_key_on(&db, "ops", "production", &[]);

    // Act
    let server = serve(&db, &["--addr", "0.0.0.0:0"]);
    let without = post_to(server.addr, REGISTER, None, &[], &run_body("no key"));
    let with = post_to(server.addr, REGISTER, Some(&secret), &[], &run_body("key"));

    // Assert
    assert!(
        server.line.contains("API keys required"),
        "the start-up line says keys are required: {}",
        server.line
    );
    without.assert_error(401, "MISSING_API_KEY", None, "without a key");
    assert_eq!(with.status, 200, "with the key: {}", with.text());
}

// ---------------------------------------------------------------------------------------------
// Projects and key types
// ---------------------------------------------------------------------------------------------

#[test]
fn a_run_of_another_project_answers_event_and_check_exactly_as_an_unknown_trace() {
    // Only /v1/event and /v1/check take a trace today; GET endpoints do not exist yet, so there
    // is no read or list to test for isolation.
    // Arrange
    let app = TestApp::spawn();
    let (a, _) = create_key(&app, "project-a", "development", &[]);
    let (b, _) = create_key(&app, "project-b", "development", &[]);
    let b_prompt = "B only: the vault code is 4242";
    let b_register = post_as(
        &app,
        REGISTER,
        Some(&b),
        &[],
        &json!({"agent_id": "b-private-agent", "timestamp": "2024-01-15T14:30:45.123Z",
                "system_prompt": b_prompt}),
    );
    let b_trace = trace_of(&b_register, "B registers");
    let unknown = "7f0c2a8e-3b7d-4c1a-9e2f-5a6b7c8d9e0f";
    let cases: [(&str, &str, BodyFor); 2] =
        [("event", EVENT, user_event), ("check", CHECK, check_body)];

    for (case, path, body) in cases {
        // Act
        let foreign = post_as(&app, path, Some(&a), &[], &body(&b_trace));
        let missing = post_as(&app, path, Some(&a), &[], &body(unknown));

        // Assert
        foreign.assert_error(404, "TRACE_NOT_FOUND", Some("trace_id"), case);
        assert_eq!(
            (foreign.status, foreign.text()),
            (missing.status, missing.text()),
            "{case}: B's trace answers exactly as an unknown one"
        );
        let text = foreign.text();
        for secret in [b_trace.as_str(), b_prompt, "b-private-agent", "project-b"] {
            assert!(!text.contains(secret), "{case}: leaks {secret:?}: {text}");
        }
    }
    let history = app.query_row(
        "SELECT (SELECT count(*) FROM events WHERE trace_id = ?1),
                (SELECT count(*) FROM checks WHERE trace_id = ?1)",
        &[&b_trace],
    );
    let (events, checks) = (history.i64(0), history.i64(1));
    assert_eq!((events, checks), (0, 0), "nothing was added to B's run");
    let own = post_as(&app, EVENT, Some(&b), &[], &user_event(&b_trace));
    assert_eq!(own.status, 200, "B still logs on its run: {}", own.text());
    let run = app.query_row(
        "SELECT project, last_seq FROM runs WHERE trace_id = ?1",
        &[&b_trace],
    );
    let (project, last_seq) = (run.text(0), run.i64(1));
    assert_eq!(
        (project.as_str(), last_seq),
        ("project-b", 1),
        "B's run belongs to B and A's attempts took no sequence number"
    );
}

#[test]
fn a_restricted_key_may_log_events_and_check_actions_but_not_register_runs() {
    // Arrange
    let app = TestApp::spawn();
    let (dev, _) = create_key(&app, "shop", "development", &[]);
    let (restricted, _) = create_key(&app, "shop", "restricted", &[]);
    let trace = register_as(&app, &dev, "run for a restricted key");
    let chosen = "3d6f4a2b-8c1e-4f7a-9b2c-1e2f3a4b5c6d";
    // (case, path, body, expected status, table that gains a row when allowed)
    let cases = [
        (
            "register",
            REGISTER,
            run_body_with_id("restricted", chosen),
            403,
            "runs",
        ),
        ("event", EVENT, user_event(&trace), 200, "events"),
        ("check", CHECK, check_body(&trace), 200, "checks"),
    ];

    for (case, path, body, status, table) in cases {
        let before = count_rows(&app, table);

        // Act
        let r = post_as(&app, path, Some(&restricted), &[], &body);

        // Assert
        let after = count_rows(&app, table);
        if status == 403 {
            r.assert_error(403, "INSUFFICIENT_PERMISSIONS", None, case);
            assert_eq!(after, before, "{case}: nothing stored");
        } else {
            assert_eq!(r.status, status, "{case}: {}", r.text());
            assert_eq!(after, before + 1, "{case}: stored");
        }
    }
    assert_eq!(
        runs_with_id(&app, chosen),
        0,
        "the refused registration is not stored"
    );
}

#[test]
fn a_403_to_a_restricted_key_carries_the_rate_limit_headers() {
    // Arrange
    let app = TestApp::spawn();
    let (restricted, _) = create_key(&app, "shop", "restricted", &[]);

    // Act
    let r = post_as(&app, REGISTER, Some(&restricted), &[], &run_body("no"));

    // Assert
    r.assert_error(403, "INSUFFICIENT_PERMISSIONS", None, "restricted register");
    let (limit, remaining, reset) = rate(&r, "restricted register");
    assert_eq!(limit, 600, "restricted keys have production limits");
    assert!(
        remaining <= 600 && (1..=60).contains(&reset),
        "{:?}",
        r.headers
    );
}

// ---------------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------------

#[test]
fn every_keyed_response_carries_rate_limit_headers_that_count_down_in_the_minute_window() {
    // Arrange
    let app = TestApp::spawn();
    let (key, _) = create_key(&app, "shop", "development", &[]);
    avoid_window_end(60, 10);
    let trace = register_as(&app, &key, "headers");
    let k = Some(key.as_str());
    let idem = [("Idempotency-Key", "headers-1")];
    // (case, path, extra headers, body, expected status); the registration above was request 1.
    let cases: Vec<(&str, &str, Extra<'_>, Value, u16)> = vec![
        ("event", EVENT, &[], user_event(&trace), 200),
        ("check", CHECK, &[], check_body(&trace), 200),
        (
            "unknown trace",
            EVENT,
            &[],
            user_event("7f0c2a8e-3b7d-4c1a-9e2f-5a6b7c8d9e0f"),
            404,
        ),
        ("not an object", REGISTER, &[], json!([1, 2]), 400),
        ("idempotent first", REGISTER, &idem, run_body("idem"), 200),
        ("idempotent reuse", REGISTER, &idem, run_body("other"), 409),
        ("idempotent replay", REGISTER, &idem, run_body("idem"), 200),
    ];

    for (i, (case, path, extra, body, status)) in cases.into_iter().enumerate() {
        // Act
        let left_before = secs_left_in_window(60);
        let r = post_as(&app, path, k, extra, &body);
        let left_after = secs_left_in_window(60);

        // Assert
        assert_eq!(r.status, status, "{case}: status; {}", r.text());
        let (limit, remaining, reset) = rate(&r, case);
        assert_eq!(limit, 60, "{case}: the development default per minute");
        assert_eq!(remaining, 60 - 2 - i as u64, "{case}: remaining");
        // The time left in the minute when the server answered: between the two readings
        // (however slow a loaded machine made the request), give or take a rounding second.
        assert!(
            (1..=60).contains(&reset) && reset + 1 >= left_after && reset <= left_before + 1,
            "{case}: reset {reset} is not the time left in the minute ({left_after}..={left_before})"
        );
        assert_eq!(r.header("Retry-After"), None, "{case}: no Retry-After");
    }
}

#[test]
fn the_minute_limit_is_exact_at_the_window_boundary_and_a_refused_request_has_no_effect() {
    // Arrange
    let app = TestApp::spawn();
    let (key, _) = create_key(&app, "shop", "development", &["--rpm", "3"]);
    let k = Some(key.as_str());
    // The first allowed request; if its window ends within 5 s, start over in the next one.
    let first = loop {
        let r = post_as(&app, REGISTER, k, &[], &run_body("within the limit"));
        assert_eq!(r.status, 200, "request 1: {}", r.text());
        let (_, _, reset) = rate(&r, "request 1");
        if reset >= 5 {
            break r;
        }
        sleep_past(reset);
    };
    let runs_before = count_rows(&app, "runs");
    let chosen = "5b2e8f1a-6c3d-4e9b-8a7f-0d1c2b3a4e5f";
    let refused_body = run_body_with_id("over the limit", chosen);
    let idem = [("Idempotency-Key", "over-the-limit-1")];

    // Act
    let second = post_as(&app, REGISTER, k, &[], &run_body("within the limit"));
    let third = post_as(&app, REGISTER, k, &[], &run_body("within the limit"));
    let fourth = post_as(&app, REGISTER, k, &idem, &refused_body);
    let runs_after_refusal = count_rows(&app, "runs");
    let remembered = count_rows(&app, "idempotency");
    let (_, _, wait) = rate(&fourth, "request 4");
    sleep_past(wait);
    let next = post_as(&app, REGISTER, k, &idem, &refused_body);

    // Assert
    for (i, r) in [&first, &second, &third].into_iter().enumerate() {
        let case = format!("request {}", i + 1);
        assert_eq!(r.status, 200, "{case}: {}", r.text());
        let (limit, remaining, _) = rate(r, &case);
        assert_eq!(
            (limit, remaining),
            (3, 2 - i as u64),
            "{case}: limit, remaining"
        );
    }
    fourth.assert_error(429, "RATE_LIMITED", None, "request 4");
    let (limit, remaining, reset) = rate(&fourth, "request 4");
    assert_eq!((limit, remaining), (3, 0), "request 4: limit, remaining");
    assert_eq!(
        retry_after(&fourth, "request 4"),
        reset,
        "request 4: Retry-After equals X-RateLimit-Reset"
    );
    assert!(
        (1..=60).contains(&reset) && reset <= rate(&first, "request 1").2,
        "request 4: reset {reset} is within the first request's window"
    );
    assert_eq!(
        runs_after_refusal,
        runs_before + 2,
        "the refused registration is not stored"
    );
    assert_eq!(
        remembered, 0,
        "the refused Idempotency-Key is not remembered"
    );
    assert_eq!(
        next.status,
        200,
        "first request of the next window: {}",
        next.text()
    );
    assert_eq!(
        trace_of(&next, "next window"),
        chosen,
        "the refused trace_id was free"
    );
    assert_eq!(
        next.header("Idempotent-Replayed"),
        None,
        "the refused request left no answer to replay"
    );
    let (limit, remaining, _) = rate(&next, "next window");
    assert_eq!((limit, remaining), (3, 2), "next window: a fresh count");
}

#[test]
fn the_hourly_limit_binds_when_it_is_the_tighter_one() {
    // Arrange
    let app = TestApp::spawn();
    let (key, _) = create_key(&app, "shop", "development", &["--rph", "2"]);
    let k = Some(key.as_str());
    avoid_window_end(3600, 10);

    // Act
    let responses: Vec<Resp> = (0..3)
        .map(|_| post_as(&app, REGISTER, k, &[], &run_body("hourly")))
        .collect();

    // Assert
    for (i, r) in responses[..2].iter().enumerate() {
        let case = format!("request {}", i + 1);
        assert_eq!(r.status, 200, "{case}: {}", r.text());
        let (limit, remaining, reset) = rate(r, &case);
        assert_eq!(
            (limit, remaining),
            (2, 1 - i as u64),
            "{case}: limit, remaining"
        );
        assert!(
            reset.abs_diff(secs_left_in_window(3600)) <= 1,
            "{case}: reset {reset} is not the time left in the hour"
        );
    }
    let refused = &responses[2];
    refused.assert_error(429, "RATE_LIMITED", None, "request 3");
    let (limit, remaining, reset) = rate(refused, "request 3");
    assert_eq!((limit, remaining), (2, 0), "request 3: limit, remaining");
    assert!(
        reset.abs_diff(secs_left_in_window(3600)) <= 1,
        "request 3: reset {reset} is not the time left in the hour"
    );
    assert_eq!(
        retry_after(refused, "request 3"),
        reset,
        "Retry-After = Reset"
    );
    assert_eq!(
        count_rows(&app, "runs"),
        2,
        "the refused registration is not stored"
    );
}

#[test]
fn limits_are_counted_per_key_not_per_project() {
    // Arrange
    let app = TestApp::spawn();
    let (first, _) = create_key(&app, "shop", "development", &["--rph", "1"]);
    let (second, _) = create_key(&app, "shop", "development", &["--rph", "1"]);
    avoid_window_end(3600, 10);

    // Act
    let used = post_as(&app, REGISTER, Some(&first), &[], &run_body("first key"));
    let exhausted = post_as(&app, REGISTER, Some(&first), &[], &run_body("first key"));
    let other = post_as(&app, REGISTER, Some(&second), &[], &run_body("second key"));

    // Assert
    assert_eq!(used.status, 200, "first key, request 1: {}", used.text());
    exhausted.assert_error(429, "RATE_LIMITED", None, "first key, request 2");
    assert_eq!(other.status, 200, "second key, request 1: {}", other.text());
    let (limit, remaining, _) = rate(&other, "second key");
    assert_eq!((limit, remaining), (1, 0), "second key: its own count");
}

#[test]
fn admin_keys_are_unlimited_and_get_no_rate_limit_headers() {
    // Arrange: more requests than a development key may make in a minute.
    let app = TestApp::spawn();
    let (admin, _) = create_key(&app, "ops", "admin", &[]);
    let trace = register_as(&app, &admin, "admin run");

    for i in 0..64 {
        let case = format!("admin request {}", i + 2);

        // Act
        let r = post_as(&app, EVENT, Some(&admin), &[], &user_event(&trace));

        // Assert
        assert_eq!(r.status, 200, "{case}: {}", r.text());
        for name in RATE_HEADERS.iter().chain(&["Retry-After"]) {
            assert_eq!(r.header(name), None, "{case}: no {name}");
        }
    }
    assert_eq!(count_rows(&app, "events"), 64);
}

// ---------------------------------------------------------------------------------------------
// Idempotent retries
// ---------------------------------------------------------------------------------------------

#[test]
fn a_retry_with_the_same_idempotency_key_and_body_replays_the_original_answer_without_a_write() {
    // Arrange
    let app = TestApp::spawn();
    let (key, _) = create_key(&app, "shop", "development", &[]);
    let k = Some(key.as_str());
    let trace = register_as(&app, &key, "idempotent history");
    // (case, path, body, the table the write goes to)
    let cases = [
        ("register", REGISTER, run_body("idempotent run"), "runs"),
        ("event", EVENT, user_event(&trace), "events"),
        ("check", CHECK, check_body(&trace), "checks"),
    ];

    for (case, path, body, table) in cases {
        let idem_key = format!("retry-{case}-1");
        let idem = [("Idempotency-Key", idem_key.as_str())];
        let before = count_rows(&app, table);

        // Act
        let original = post_as(&app, path, k, &idem, &body);
        let after_original = count_rows(&app, table);
        let retry = post_as(&app, path, k, &idem, &body);

        // Assert
        assert_eq!(
            original.status,
            200,
            "{case}: original: {}",
            original.text()
        );
        assert_eq!(
            original.header("Idempotent-Replayed"),
            None,
            "{case}: the original is not a replay"
        );
        assert_eq!(after_original, before + 1, "{case}: the original writes");
        assert_eq!(retry.status, original.status, "{case}: replayed status");
        assert_eq!(
            retry.body, original.body,
            "{case}: replayed body, byte for byte"
        );
        assert_eq!(
            retry.header("Idempotent-Replayed"),
            Some("true"),
            "{case}: marked as a replay"
        );
        assert_eq!(
            count_rows(&app, table),
            before + 1,
            "{case}: no second write"
        );
    }
}

#[test]
fn an_idempotent_answer_is_replayed_after_a_restart() {
    // Arrange
    let dir = fresh_dir("idem-restart");
    let mut app = TestApp::spawn_in(&dir, &[]);
    let (key, _) = create_key(&app, "durable", "development", &[]);
    let idem = [("Idempotency-Key", "restart-1")];
    let body = run_body("survives a restart");
    let original = post_as(&app, REGISTER, Some(&key), &idem, &body);
    assert_eq!(original.status, 200, "original: {}", original.text());
    assert!(app.terminate().success(), "clean stop");
    drop(app);

    // Act
    let app = TestApp::spawn_in(&dir, &[]);
    let retry = post_as(&app, REGISTER, Some(&key), &idem, &body);

    // Assert
    assert_eq!(retry.status, 200, "retry: {}", retry.text());
    assert_eq!(
        retry.body, original.body,
        "the original body, byte for byte"
    );
    assert_eq!(retry.header("Idempotent-Replayed"), Some("true"));
    assert_eq!(count_rows(&app, "runs"), 1, "no second run");
}

#[test]
fn the_same_idempotency_key_for_a_different_request_is_409_and_writes_nothing() {
    // Arrange
    let app = TestApp::spawn();
    let (key, _) = create_key(&app, "shop", "development", &[]);
    let k = Some(key.as_str());
    let trace = register_as(&app, &key, "history");
    let idem = [("Idempotency-Key", "reused-1")];
    let original = post_as(&app, REGISTER, k, &idem, &run_body("first"));
    assert_eq!(original.status, 200, "original: {}", original.text());
    let cases = [
        ("different body", REGISTER, run_body("second")),
        ("different route", EVENT, user_event(&trace)),
    ];

    for (case, path, body) in cases {
        // Act
        let r = post_as(&app, path, k, &idem, &body);

        // Assert
        r.assert_error(409, "IDEMPOTENCY_KEY_REUSED", None, case);
        assert_eq!(
            (count_rows(&app, "runs"), count_rows(&app, "events")),
            (2, 0),
            "{case}: nothing written"
        );
    }
    let retry = post_as(&app, REGISTER, k, &idem, &run_body("first"));
    assert_eq!(
        retry.body, original.body,
        "the original answer is still the one remembered"
    );
}

#[test]
fn an_idempotency_key_is_forgotten_after_its_retention() {
    // Arrange: answers are remembered for 1 s only.
    let app = TestApp::spawn_with(&["--idempotency-ttl-secs", "1"]);
    let (key, _) = create_key(&app, "shop", "development", &[]);
    let k = Some(key.as_str());
    let idem = [("Idempotency-Key", "short-lived-1")];
    let original = post_as(&app, REGISTER, k, &idem, &run_body("first"));
    assert_eq!(original.status, 200, "original: {}", original.text());
    std::thread::sleep(Duration::from_millis(1500));

    // Act
    let reused = post_as(&app, REGISTER, k, &idem, &run_body("second"));
    let retry = post_as(&app, REGISTER, k, &idem, &run_body("second"));

    // Assert
    assert_eq!(
        reused.status,
        200,
        "an expired key is free: {}",
        reused.text()
    );
    assert_eq!(reused.header("Idempotent-Replayed"), None, "not a replay");
    assert_ne!(
        trace_of(&reused, "reused"),
        trace_of(&original, "original"),
        "a new run"
    );
    assert_eq!(retry.body, reused.body, "the new answer is remembered");
    assert_eq!(retry.header("Idempotent-Replayed"), Some("true"));
    assert_eq!(count_rows(&app, "runs"), 2);
}

#[test]
fn idempotency_keys_are_per_project() {
    // Arrange
    let app = TestApp::spawn();
    let (a, _) = create_key(&app, "project-a", "development", &[]);
    let (b, _) = create_key(&app, "project-b", "development", &[]);
    let idem = [("Idempotency-Key", "shared-key-1")];
    let body = run_body("same body in two projects");

    // Act
    let from_a = post_as(&app, REGISTER, Some(&a), &idem, &body);
    let from_b = post_as(&app, REGISTER, Some(&b), &idem, &body);
    let retry_a = post_as(&app, REGISTER, Some(&a), &idem, &body);
    let retry_b = post_as(&app, REGISTER, Some(&b), &idem, &body);

    // Assert
    assert_eq!(from_a.status, 200, "A: {}", from_a.text());
    assert_eq!(from_b.status, 200, "B: {}", from_b.text());
    assert_eq!(
        from_b.header("Idempotent-Replayed"),
        None,
        "B's first use is not a replay of A's"
    );
    let (ta, tb) = (trace_of(&from_a, "A"), trace_of(&from_b, "B"));
    assert_ne!(ta, tb, "each project got its own run");
    assert_eq!(count_rows(&app, "runs"), 2, "two runs");
    let project_of = |t: &str| -> String {
        app.query_text("SELECT project FROM runs WHERE trace_id = ?1", &[t])
    };
    assert_eq!(project_of(&ta), "project-a");
    assert_eq!(project_of(&tb), "project-b");
    assert_eq!(retry_a.body, from_a.body, "A's retry replays A's answer");
    assert_eq!(retry_b.body, from_b.body, "B's retry replays B's answer");
}

#[test]
fn sixteen_concurrent_identical_registrations_with_one_idempotency_key_create_one_run() {
    // Arrange: no client-chosen trace_id, so only the key can tell that they are one request.
    const CLIENTS: usize = 16;
    let app = TestApp::spawn();
    let (key, _) = create_key(&app, "burst", "production", &[]);
    let body = run_body("one run, sixteen tries").to_string().into_bytes();
    let headers = headers_for(&body, Some(&key), &[("Idempotency-Key", "burst-1")]);
    let barrier = Barrier::new(CLIENTS);

    // Act
    let responses: Vec<Resp> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    http(app.addr, "POST", REGISTER, &headers, &body)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });

    // Assert
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(r.status, 200, "client {i}: {}", r.text());
        assert_eq!(r.body, responses[0].body, "client {i}: the same answer");
    }
    let trace = trace_of(&responses[0], "client 0");
    assert_eq!(count_rows(&app, "runs"), 1, "exactly one run");
    assert_eq!(runs_with_id(&app, &trace), 1, "the run answered");
    let replayed = responses
        .iter()
        .filter(|r| r.header("Idempotent-Replayed") == Some("true"))
        .count();
    assert_eq!(
        replayed,
        CLIENTS - 1,
        "all but the one that wrote are replays"
    );
}

#[test]
fn a_malformed_idempotency_key_is_400_invalid_field_and_writes_nothing() {
    // Arrange
    let app = TestApp::spawn();
    let (key, _) = create_key(&app, "shop", "development", &[]);
    let k = Some(key.as_str());
    let trace = register_as(&app, &key, "history");
    let long = "k".repeat(300);
    let cases = [
        (
            "300 characters on register",
            REGISTER,
            long.as_str(),
            run_body("x"),
        ),
        (
            "300 characters on event",
            EVENT,
            long.as_str(),
            user_event(&trace),
        ),
        (
            "a space inside on check",
            CHECK,
            "retry key",
            check_body(&trace),
        ),
        (
            "a space inside on register",
            REGISTER,
            "retry key",
            run_body("y"),
        ),
    ];

    for (case, path, idem_key, body) in cases {
        // Act
        let r = post_as(&app, path, k, &[("Idempotency-Key", idem_key)], &body);

        // Assert
        r.assert_error(400, "INVALID_FIELD", Some("Idempotency-Key"), case);
        assert_eq!(
            (
                count_rows(&app, "runs"),
                count_rows(&app, "events"),
                count_rows(&app, "checks"),
                count_rows(&app, "idempotency")
            ),
            (1, 0, 0, 0),
            "{case}: nothing written"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets at rest
// ---------------------------------------------------------------------------------------------

#[test]
fn the_plaintext_key_appears_nowhere_in_the_database() {
    // Arrange: keys of several types, each used, so every table that touches keys is written.
    let dir = fresh_dir("secret-at-rest");
    let mut app = TestApp::spawn_in(&dir, &[]);
    let keys: Vec<(&str, String, String)> = ["development", "restricted", "admin"]
        .into_iter()
        .map(|kind| {
            let (secret, id) = create_key(&app, "vault", kind, &[]);
            (kind, secret, id)
        })
        .collect();
    let trace = post_as(
        &app,
        REGISTER,
        Some(&keys[0].1),
        &[("Idempotency-Key", "at-rest-1")],
        &run_body("secret at rest"),
    );
    let trace = trace_of(&trace, "register");
    for (kind, secret, id) in &keys[1..] {
        let r = post_as(&app, EVENT, Some(secret), &[], &user_event(&trace));
        assert_eq!(r.status, 200, "{kind} logs an event: {}", r.text());
        assert_ne!(
            row_once_used(&app.storage, id).last_used,
            "never",
            "{kind} used"
        );
    }
    assert_ne!(row_once_used(&app.storage, &keys[0].2).last_used, "never");
    revoke_key(&app.storage, &keys[1].2);

    // Act
    assert!(app.terminate().success(), "clean stop");
    let files = everything_stored(&app);

    // Assert
    let all: Vec<u8> = files.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    for (kind, secret, id) in &keys {
        // The scan does see the keys table: the public id is stored in plain text.
        assert!(
            contains(&all, id.as_bytes()),
            "{kind}: the scan finds the key id {id} in {:?}",
            files.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
        let random = &secret[secret.rfind('_').expect("prefix") + 1..];
        for (file, bytes) in &files {
            for (what, needle) in [("secret", secret.as_str()), ("its hex part", random)] {
                assert!(
                    !contains(bytes, needle.as_bytes()),
                    "{kind}: the {what} is in {file}"
                );
            }
        }
    }
}

/// Everything `app` stored, as (name, bytes): on SQLite each database file (`rw.db` and its
/// `-wal` and `-shm`) byte for byte; on PostgreSQL, whose files belong to the database server,
/// each table of the database with every row as text.
fn everything_stored(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    match &app.storage {
        Storage::File(_) => std::fs::read_dir(&app.dir)
            .expect("read the test directory")
            .map(|e| e.expect("directory entry").path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("rw.db"))
            })
            .map(|p| {
                let bytes = std::fs::read(&p).expect("read a database file");
                (p.display().to_string(), bytes)
            })
            .collect(),
        Storage::Postgres(url) => {
            let tables: Vec<String> = pg_connect(url)
                .query(
                    "SELECT schemaname::text || '.' || tablename::text FROM pg_tables
                     WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
                    &[],
                )
                .expect("list the tables")
                .iter()
                .map(|r| r.get(0))
                .collect();
            tables
                .into_iter()
                .map(|table| {
                    // Each row twice: its values (BYTEA decoded), and its text form (BYTEA in hex).
                    let mut text = String::new();
                    let values = app.storage.query(&format!("SELECT * FROM {table}"), &[]);
                    for value in values.iter().flat_map(|row| row.0.iter().flatten()) {
                        text.push_str(value);
                        text.push('\n');
                    }
                    for row in app
                        .storage
                        .query(&format!("SELECT t::text FROM {table} t"), &[])
                    {
                        text.push_str(&row.text(0));
                        text.push('\n');
                    }
                    (format!("table {table}"), text.into_bytes())
                })
                .collect()
        }
    }
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A raw HTTP/1.1 request with exactly `headers` (no Host added), answered on a new connection.
fn raw_exchange(addr: SocketAddr, head: &str, body: &str) -> crate::helpers::Resp {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    crate::helpers::parse_response(&raw)
}

#[test]
fn open_mode_refuses_requests_from_other_web_pages_and_host_names() {
    // Arrange
    let app = TestApp::spawn();
    let addr = app.addr;
    let body = run_body("from a web page").to_string();
    let post = "POST /v1/register-agent-run HTTP/1.1";
    // (request head, body, expected status, why)
    let cases = [
        (
            format!("{post}\r\nHost: {addr}\r\nOrigin: http://attacker.example"),
            body.as_str(),
            403,
            "a POST from another site's page",
        ),
        (
            format!("{post}\r\nHost: {addr}\r\nOrigin: null"),
            body.as_str(),
            403,
            "a POST from a sandboxed page or a file",
        ),
        (
            format!(
                "GET /v1/runs HTTP/1.1\r\nHost: rebind.attacker.test:{}",
                addr.port()
            ),
            "",
            403,
            "a read through a host name made to resolve to 127.0.0.1",
        ),
        (
            format!("{post}\r\nHost: {addr}\r\nOrigin: http://{addr}"),
            body.as_str(),
            200,
            "a POST from the server's own page",
        ),
        (
            format!("{post}\r\nHost: localhost:{}", addr.port()),
            body.as_str(),
            200,
            "an SDK addressing localhost",
        ),
    ];
    for (head, body, status, why) in cases {
        // Act
        let resp = raw_exchange(addr, &head, body);

        // Assert
        if status == 403 {
            resp.assert_error(403, "INSUFFICIENT_PERMISSIONS", None, why);
        } else {
            assert_eq!(resp.status, status, "{why}: {}", resp.text());
        }
    }
    assert_eq!(
        count_rows(&app, "runs"),
        2,
        "only the two local registrations"
    );

    // --allow-open opts out (e.g. behind a proxy that forwards its own Host).
    let proxied = TestApp::spawn_with(&["--allow-open"]);
    let resp = raw_exchange(
        proxied.addr,
        &format!("{post}\r\nHost: runwarden.example.com"),
        &body,
    );
    assert_eq!(resp.status, 200, "with --allow-open: {}", resp.text());
}
