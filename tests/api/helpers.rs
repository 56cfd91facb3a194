//! `TestApp::spawn()` starts the real server on port 0 with a fresh temporary database and
//! gives back its address; one method per endpoint; `post_raw` for malformed requests; `db()`
//! for direct reads of the file. A tiny HTTP/1.1 client over `TcpStream` (one request per
//! connection, `Connection: close`) keeps the tests free of client-library behaviour. Checks
//! and builders that more than one test file needs (`is_lowercase_v4_uuid`, `with_field`,
//! `count_rows`, ...) live here too, so that the files do not copy them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_runwarden");

/// A fresh directory under the OS temp dir, unique per test process and call.
pub fn fresh_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("rw-test-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// A running server process.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The test's directory (holds the database).
    pub dir: PathBuf,
    /// The database file.
    pub db: PathBuf,
    /// The server process.
    child: Child,
}

impl TestApp {
    /// A server on a fresh database with default settings.
    pub fn spawn() -> TestApp {
        Self::spawn_with(&[])
    }

    /// A server on a fresh database with extra `serve` flags.
    pub fn spawn_with(extra: &[&str]) -> TestApp {
        let dir = fresh_dir("app");
        Self::spawn_in(&dir, extra)
    }

    /// A server on the database in `dir` (created if absent), e.g. to restart on the same file.
    pub fn spawn_in(dir: &Path, extra: &[&str]) -> TestApp {
        let db = dir.join("rw.db");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--db"])
            .arg(&db)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if std::env::var_os("TEST_LOG").is_some() {
            cmd.stderr(Stdio::inherit());
        } else {
            cmd.env("RUST_LOG", "error").stderr(Stdio::null());
        }
        let mut child = cmd.spawn().expect("start runwarden");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the start-up line");
        let addr = parse_startup_line(&line)
            .unwrap_or_else(|| panic!("no address in the start-up line {line:?}"));
        TestApp {
            addr,
            dir: dir.to_path_buf(),
            db,
            child,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most 10 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.wait_exit(Duration::from_secs(10))
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A read connection to the database file.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).expect("open the database")
    }

    /// POST a JSON value.
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.post_raw(path, Some("application/json"), body.to_string().as_bytes())
    }

    /// POST raw bytes with an optional Content-Type.
    pub fn post_raw(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Resp {
        let mut headers = vec![("Content-Length".to_string(), body.len().to_string())];
        if let Some(ct) = content_type {
            headers.push(("Content-Type".to_string(), ct.to_string()));
        }
        self.request("POST", path, &headers, body)
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    /// Any request: method, path, headers, body (sent as given; add Content-Length yourself).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Resp {
        http(self.addr, method, path, headers, body)
    }

    /// POST /v1/register-agent-run.
    pub fn register(&self, body: &Value) -> Resp {
        self.post("/v1/register-agent-run", body)
    }

    /// Registers a run with a fixed prompt and returns its trace_id.
    pub fn new_run(&self) -> String {
        self.new_run_with_prompt("You are a helpful assistant.")
    }

    /// Registers a run with `prompt` and returns its trace_id.
    pub fn new_run_with_prompt(&self, prompt: &str) -> String {
        let r = self.register(&json!({"agent_id": "test-agent",
            "timestamp": "2024-01-15T14:30:45.123Z", "system_prompt": prompt}));
        assert_eq!(r.status, 200, "register: {}", r.text());
        r.json()["trace_id"].as_str().expect("trace_id").to_string()
    }

    /// POST /v1/event.
    pub fn event(&self, body: &Value) -> Resp {
        self.post("/v1/event", body)
    }

    /// POST /v1/check.
    pub fn check(&self, body: &Value) -> Resp {
        self.post("/v1/check", body)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with `args`, `RUST_LOG=error`, no standard input, and none of the environment's
/// `RUNWARDEN_*` variables (so a developer's settings cannot change a test).
pub fn runwarden_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "error").stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RUNWARDEN_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs the binary with `args` to completion in a fresh directory (at most 10 s; it is killed
/// and the test fails after that).
pub fn run_to_exit(args: &[&str]) -> std::process::Output {
    let child = runwarden_command(args)
        .current_dir(fresh_dir("run"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start runwarden");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(output) => output.expect("collect the output"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("runwarden {args:?} did not exit within 10 s");
        }
    }
}

/// Asserts exit code 1 and exactly one stderr line, starting `error:`, without panic text;
/// returns that line.
#[track_caller]
pub fn assert_one_error_line(output: &std::process::Output, case: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{case}: exit code; stderr {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{case}: one stderr line; stderr {stderr:?}");
    assert!(lines[0].starts_with("error:"), "{case}: {stderr:?}");
    assert!(
        !stderr.contains("panicked"),
        "{case}: panic text: {stderr:?}"
    );
    lines[0].to_string()
}

/// Sends a signal by name (`TERM`, `INT`, `KILL`) to a process.
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{name} {pid} failed");
}

/// Reads `http://IP:PORT` out of the start-up line.
pub fn parse_startup_line(line: &str) -> Option<SocketAddr> {
    let rest = line.split("http://").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A user event body for `trace_id`.
pub fn user_event(trace_id: &str) -> Value {
    json!({"event_type": "user", "trace_id": trace_id, "timestamp": 1678886405.123,
           "content": "{\"message\":\"Book a flight to Paris\"}",
           "schema": "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\"}},\"required\":[\"message\"]}"})
}

/// The transfer_funds function definition used by check tests.
pub fn transfer_schema() -> Value {
    json!({"type": "function", "name": "transfer_funds",
           "description": "Send money",
           "parameters": {"type": "object",
                          "properties": {"amount": {"type": "number"}, "recipient": {"type": "string"}},
                          "required": ["amount", "recipient"]}})
}

/// A check body for transfer_funds with `args`.
pub fn transfer_check(trace_id: &str, args: &Value) -> Value {
    json!({"event_type": "action_check", "trace_id": trace_id, "timestamp": 1678886415.0,
           "content": args.to_string(), "schema": transfer_schema().to_string()})
}

/// A canonical, lowercase, hyphenated UUID whose version is 4 and variant RFC 4122.
pub fn is_lowercase_v4_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// The current time in Unix seconds, with the fraction.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// `body` (a JSON object) with `field` set to `value` (`None`: removed).
pub fn with_field(mut body: Value, field: &str, value: Option<Value>) -> Value {
    let obj = body.as_object_mut().expect("object");
    match value {
        Some(v) => obj.insert(field.to_string(), v),
        None => obj.remove(field),
    };
    body
}

/// The MISSING_FIELD cases of a table: for each of `fields`, the bodies `make(field, None)`
/// (absent) and `make(field, Some(null))`, each with the field and a label (`"{field} absent"`,
/// `"{field} null"`).
pub fn absent_and_null_cases<'f>(
    fields: &[&'f str],
    make: impl Fn(&str, Option<Value>) -> Value,
) -> Vec<(Value, &'f str, String)> {
    fields
        .iter()
        .flat_map(|&field| {
            [
                (make(field, None), field, format!("{field} absent")),
                (
                    make(field, Some(Value::Null)),
                    field,
                    format!("{field} null"),
                ),
            ]
        })
        .collect()
}

/// How many rows `table` of `app`'s database holds (`table` is a test constant, never input).
pub fn count_rows(app: &TestApp, table: &str) -> i64 {
    app.db()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("count the rows of {table}: {e}"))
}

/// The number of stored runs with `trace_id` and the system prompt stored for it (the
/// greatest, were there several).
pub fn run_count_and_prompt(app: &TestApp, trace_id: &str) -> (i64, String) {
    app.db()
        .query_row(
            "SELECT count(*), max(system_prompt) FROM runs WHERE trace_id = ?1",
            [trace_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or_else(|e| panic!("query the run {trace_id}: {e}"))
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error envelope's `code`.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Asserts an error response: status, code and (when given) param; returns the error object.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, param: Option<&str>, case: &str) -> Value {
        assert_eq!(self.status, status, "{case}: status; body {}", self.text());
        let v = self.json();
        let err = &v["error"];
        assert_eq!(err["code"], code, "{case}: code; body {v}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: message; body {v}"
        );
        assert!(err["type"].is_string(), "{case}: type; body {v}");
        if let Some(p) = param {
            assert_eq!(err["param"], p, "{case}: param; body {v}");
        }
        err.clone()
    }
}

/// One HTTP/1.1 exchange on a new connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Resp {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    // The server may answer (413, 415) and close before reading a body; ignore send errors.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

/// Where the response head in `raw` ends: the index of the `\r\n\r\n` that closes it (`None`
/// while the head is incomplete).
pub fn head_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The payload of a `Transfer-Encoding: chunked` body (chunk extensions and trailers ignored).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).expect("chunk size");
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}

/// Parses a complete HTTP/1.1 response (Content-Length, chunked, or to EOF).
pub fn parse_response(raw: &[u8]) -> Resp {
    let split = head_end(raw).unwrap_or_else(|| {
        panic!(
            "no complete response head in {:?}",
            String::from_utf8_lossy(raw)
        )
    });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        // tiny_http chunks responses over 32 KiB.
        body = dechunk(&body);
    } else if let Some(len) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Resp {
        status,
        headers,
        body,
    }
}
