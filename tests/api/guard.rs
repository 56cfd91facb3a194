//! The connection guard (`src/http/guard.rs`): clients that are slow, idle, oversized or too
//! many must not hold the server. Each test starts a server with a short `--client-timeout-secs`
//! (1 or 2 s), plays the bad client over a raw `TcpStream`, and checks both sides: the bad
//! client is cut off within the timeout plus a few seconds (never before half of it), another
//! client is still answered, and `/metrics` counts the close under its reason. Every read and
//! write has a deadline, so that a server without the guard fails a test instead of hanging it.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Resp, TestApp, head_end, parse_response};

/// The reasons `runwarden_connections_closed_total` is labelled with.
const REASONS: [&str; 6] = [
    "idle",
    "head_timeout",
    "head_too_large",
    "body_timeout",
    "send_timeout",
    "over_limit",
];

/// The text of `GET /metrics`.
fn metrics(app: &TestApp) -> String {
    let resp = app.get("/metrics");
    assert_eq!(resp.status, 200, "GET /metrics: {}", resp.text());
    resp.text()
}

/// The value of the sample `series` (name and labels, exactly as exposed) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `runwarden_connections_closed_total{reason="REASON"}` in `text`.
fn closed_total(text: &str, reason: &str) -> Option<f64> {
    sample(
        text,
        &format!("runwarden_connections_closed_total{{reason=\"{reason}\"}}"),
    )
}

/// Polls `/metrics` (the guard counts a close just after making it) until the closes for
/// `reason` reach `at_least`, for at most 3 s; returns the last count.
fn closed_eventually(app: &TestApp, reason: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = metrics(app);
        let n = closed_total(&text, reason)
            .unwrap_or_else(|| panic!("no closed_total for reason {reason:?} in\n{text}"));
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How a connection ended for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server closed it (end of file).
    Eof,
    /// The server reset it.
    Reset,
    /// It was still open when the deadline came.
    StillOpen,
    /// The server sent something where nothing was expected.
    Data,
    /// Some other error.
    Error(ErrorKind),
}

/// Reads from `stream` until the server ends the connection or `limit` passes: the bytes
/// received and how it ended.
fn read_until_end(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, End) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return (got, End::StillOpen);
        };
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set the read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (got, End::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, End::StillOpen);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return (got, End::Reset);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (got, End::Error(e.kind())),
        }
    }
}

/// Sends a keep-alive `GET /healthz` on `reader`'s stream and reads exactly one response
/// (head and Content-Length body).
fn keep_alive_healthz(reader: &mut BufReader<TcpStream>) -> std::io::Result<Resp> {
    reader
        .get_mut()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut raw = Vec::new();
    loop {
        let n = reader.read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!(
                    "closed after {:?}",
                    String::from_utf8_lossy(&raw).into_owned()
                ),
            ));
        }
        if raw.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let mut resp = parse_response(&raw);
    let length: usize = resp
        .header("Content-Length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    resp.body = body;
    Ok(resp)
}

/// `GET /healthz` on fresh connections, one attempt after another (each given at most
/// `per_attempt` for its answer), until one is answered 200 or `limit` passes: how long that
/// took from the call, and how many attempts failed first (callers expect none: a request
/// waiting for a busy worker is marked in progress and never closed by the guard); a server
/// whose workers stay stuck answers none of the attempts.
fn healthz_answered_within(
    addr: SocketAddr,
    per_attempt: Duration,
    limit: Duration,
) -> Option<(Duration, usize)> {
    let start = Instant::now();
    let mut failed = 0;
    while start.elapsed() < limit {
        let attempt = Instant::now();
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let sent = stream.write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            if sent.is_ok() {
                let left = limit.saturating_sub(start.elapsed());
                let (raw, _) = read_until_end(&mut stream, per_attempt.min(left));
                if head_end(&raw).is_some() && parse_response(&raw).status == 200 {
                    return Some((start.elapsed(), failed));
                }
            }
        }
        failed += 1;
        // Do not spin when the server refuses or closes at once.
        if let Some(pause) = Duration::from_millis(50).checked_sub(attempt.elapsed()) {
            std::thread::sleep(pause);
        }
    }
    None
}

/// Sends 64 KiB chunks of `a` (an endless header value) on `stream` until a send fails, `cap`
/// bytes have gone or 8 s have passed: the bytes sent, the failure, and how long it took.
fn send_endless_header(
    stream: &mut TcpStream,
    cap: u64,
) -> (u64, Option<std::io::Error>, Duration) {
    let chunk = vec![b'a'; 64 * 1024];
    let start = Instant::now();
    let mut sent: u64 = 0;
    let failure = loop {
        if sent >= cap || start.elapsed() > Duration::from_secs(8) {
            break None;
        }
        match stream.write_all(&chunk) {
            Ok(()) => sent += chunk.len() as u64,
            Err(e) => break Some(e),
        }
    };
    (sent, failure, start.elapsed())
}

/// The resident set (`VmRSS`) and its peak (`VmHWM`) of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read the server's /proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const MIB: u64 = 1024 * 1024;

#[test]
fn partial_bodies_do_not_hold_the_workers_and_each_gets_a_400_naming_its_length() {
    // Arrange: two workers, four clients that announce 5000 bytes (over tiny_http's 1 KiB
    // pre-read, so a worker reads the body) and send 12.
    let app = TestApp::spawn_with(&["--threads", "2", "--client-timeout-secs", "1"]);
    // Connect once the server has run a moment, so that the guard's scans fall at an arbitrary
    // time relative to the clients, as on a running server: right at start-up its first scan
    // comes a fixed 100 ms after them, which happens to spare the clients that wait for a
    // worker.
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let mut partial: Vec<TcpStream> = (0..4)
        .map(|n| {
            let mut stream = TcpStream::connect(app.addr).expect("connect a partial client");
            stream
                .write_all(
                    b"POST /v1/register-agent-run HTTP/1.1\r\nHost: localhost\r\n\
                      Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n\
                      {\"agent_id\":",
                )
                .unwrap_or_else(|e| panic!("partial client {n}: send: {e}"));
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));

    // Act: a fresh client asks while the partial clients hold the workers.
    let health = healthz_answered_within(app.addr, Duration::from_secs(6), Duration::from_secs(6));

    // Assert
    let (took, failed) =
        health.expect("GET /healthz answered within 6 s while four clients stall their bodies");
    println!("healthz answered after {took:?} ({failed} attempts failed first)");
    assert_eq!(
        failed, 0,
        "the request waiting for a worker was answered on its own connection"
    );
    let outcomes: Vec<(Vec<u8>, End, Duration)> = partial
        .iter_mut()
        .map(|stream| {
            let left = Duration::from_secs(5).saturating_sub(start.elapsed());
            let (raw, end) = read_until_end(stream, left);
            (raw, end, start.elapsed())
        })
        .collect();
    let summary: Vec<String> = outcomes
        .iter()
        .map(|(raw, end, at)| {
            let status = String::from_utf8_lossy(raw.get(..12).unwrap_or(raw)).into_owned();
            format!("{status:?} then {end:?} by {at:?}")
        })
        .collect();
    println!("partial clients: {summary:?}");
    for (n, (raw, end, _)) in outcomes.iter().enumerate() {
        assert!(
            head_end(raw).is_some(),
            "partial client {n}: no response within timeout + 4 s; the four clients got \
             {summary:?}"
        );
        let resp = parse_response(raw);
        let err = resp.assert_error(400, "INVALID_JSON", None, &format!("partial client {n}"));
        let message = err["message"].as_str().unwrap_or("");
        assert!(
            message.contains("5000") && message.contains("12"),
            "partial client {n}: the message names the bytes received and announced: {message:?}"
        );
        assert_ne!(
            *end,
            End::StillOpen,
            "partial client {n}: the connection closes after the 400"
        );
    }
    let closes = closed_eventually(&app, "body_timeout", 4.0);
    assert!(closes >= 4.0, "body_timeout closes: {closes}, want >= 4");
}

#[test]
fn a_registration_queued_behind_a_stalled_body_is_answered_and_stored_once() {
    // Arrange: the only worker reads a body that stalls; announced at 200 kB, it is given
    // 1 s + 3 s (a second per 64 KiB), so the registration below waits for the worker well
    // past its own 1 s head deadline.
    let app = TestApp::spawn_with(&["--threads", "1", "--client-timeout-secs", "1"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut stalled = TcpStream::connect(app.addr).expect("connect the stalling client");
    stalled
        .write_all(
            b"POST /v1/register-agent-run HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 200000\r\n\r\n{\"agent_id\":",
        )
        .expect("send the stalling head");
    std::thread::sleep(Duration::from_millis(100));

    // Act: a registration arrives while the worker is held; it waits for the worker longer
    // than the client timeout would allow an idle connection.
    let trace_id = uuid::Uuid::new_v4().to_string();
    let body = json!({"agent_id": "queued", "timestamp": "2024-01-15T14:30:45Z",
                      "system_prompt": "", "trace_id": trace_id})
    .to_string();
    let mut queued = TcpStream::connect(app.addr).expect("connect the queued client");
    queued
        .write_all(
            format!(
                "POST /v1/register-agent-run HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .expect("send the registration");
    let (raw, _) = read_until_end(&mut queued, Duration::from_secs(10));

    // Assert: answered 200 on its own connection, and stored once.
    assert!(
        head_end(&raw).is_some(),
        "the queued registration got no answer: {:?}",
        String::from_utf8_lossy(&raw)
    );
    let resp = parse_response(&raw);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&raw));
    let run = app.get(&format!("/v1/runs/{trace_id}"));
    assert_eq!(run.status, 200, "the run is stored: {}", run.text());
    let (_, end) = read_until_end(&mut stalled, Duration::from_secs(5));
    assert_ne!(end, End::StillOpen, "the stalled client was cut off");
}

#[test]
fn a_head_sent_one_byte_at_a_time_is_cut_off_after_the_client_timeout() {
    // Arrange: a client that sends a head (which never completes) one byte every 200 ms.
    let app = TestApp::spawn_with(&["--client-timeout-secs", "1"]);
    let addr = app.addr;
    let slow = std::thread::spawn(move || -> Result<(Duration, String), String> {
        let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        let start = Instant::now();
        stream
            .set_nonblocking(true)
            .map_err(|e| format!("set non-blocking: {e}"))?;
        let head = format!(
            "POST /v1/register-agent-run HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}",
            "s".repeat(200)
        );
        for b in head.bytes() {
            if start.elapsed() > Duration::from_secs(8) {
                break;
            }
            if let Err(e) = stream.write_all(&[b]) {
                return Ok((start.elapsed(), format!("write failed: {e}")));
            }
            match stream.read(&mut [0u8; 1024]) {
                Ok(0) => return Ok((start.elapsed(), "end of file".into())),
                Ok(n) => return Err(format!("the server answered a partial head ({n} bytes)")),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Ok((start.elapsed(), format!("read failed: {e}"))),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "still connected after {:?} of one byte per 200 ms",
            start.elapsed()
        ))
    });

    // Act: another client meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let health = app.get("/healthz");
    let health_took = asked.elapsed();
    let outcome = slow.join().expect("the slow client's thread");

    // Assert
    assert_eq!(health.status, 200, "healthz beside the slow client");
    assert!(
        health_took < Duration::from_secs(2),
        "healthz beside the slow client took {health_took:?}"
    );
    let (after, how) = outcome.unwrap_or_else(|e| panic!("the slow client: {e}"));
    println!("the slow head was cut off after {after:?}: {how}");
    assert!(
        after >= Duration::from_millis(500) && after <= Duration::from_secs(4),
        "the slow head should be cut off 1 s after it began (allowing 0.5 to 4 s), \
         was after {after:?} ({how})"
    );
    let closes = closed_eventually(&app, "head_timeout", 1.0);
    assert!(closes >= 1.0, "head_timeout closes: {closes}, want >= 1");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_client_timeout_but_keep_alive_still_works() {
    // Arrange
    let app = TestApp::spawn_with(&["--client-timeout-secs", "2"]);
    let stream = TcpStream::connect(app.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set the read timeout");
    let mut reader = BufReader::new(stream);

    // Act: two requests half a second apart on the same connection, then silence.
    let first = keep_alive_healthz(&mut reader).expect("the first request");
    std::thread::sleep(Duration::from_millis(500));
    let second = keep_alive_healthz(&mut reader).expect("the second request, 0.5 s later");
    let answered = Instant::now();
    let mut stream = reader.into_inner();
    let (rest, end) = read_until_end(&mut stream, Duration::from_secs(7));
    let closed_after = answered.elapsed();

    // Assert
    assert_eq!(first.status, 200, "first: {}", first.text());
    assert_eq!(second.status, 200, "second: {}", second.text());
    println!("the idle connection ended ({end:?}) {closed_after:?} after the last response");
    assert_eq!(
        end,
        End::Eof,
        "the idle connection is closed (FIN) by the server; got {end:?} after {closed_after:?}"
    );
    assert!(rest.is_empty(), "nothing sent before the close: {rest:?}");
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after <= Duration::from_secs(5),
        "closed 2 s after the last response (allowing 1.5 to 5 s), was after {closed_after:?}"
    );
    let closes = closed_eventually(&app, "idle", 1.0);
    assert!(closes >= 1.0, "idle closes: {closes}, want >= 1");
}

#[test]
fn an_endless_request_head_is_reset_before_it_costs_memory_and_a_head_under_the_limit_is_served() {
    // Arrange
    let app = TestApp::spawn_with(&["--client-timeout-secs", "2"]);
    let mut stream = TcpStream::connect(app.addr).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("set the write timeout");

    // Act: an endless header value, 64 KiB at a time, until a send fails.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        .expect("send the start of the head");
    let (sent, failure, took) = send_endless_header(&mut stream, 64 * MIB);
    let (rss, peak) = resident_bytes(app.pid());

    // Assert
    println!(
        "endless head: {failure:?} after {} KiB in {took:?}; server VmRSS {} MiB, VmHWM {} MiB",
        sent / 1024,
        rss / MIB,
        peak / MIB
    );
    let failure = failure.unwrap_or_else(|| {
        panic!(
            "the server took {} MiB of one header line in {took:?} without resetting",
            sent / MIB
        )
    });
    assert!(
        matches!(
            failure.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
        ),
        "the send fails because the server reset the connection, not {failure:?} \
         (after {} KiB in {took:?})",
        sent / 1024
    );
    assert!(
        peak < 150 * MIB,
        "the server's peak resident memory is {} MiB (VmRSS now {} MiB)",
        peak / MIB,
        rss / MIB
    );
    assert_eq!(app.get("/healthz").status, 200, "healthz afterwards");
    let big_but_fine = app.request(
        "GET",
        "/healthz",
        &[("X-Big".to_string(), "b".repeat(30 * 1024))],
        b"",
    );
    assert_eq!(
        big_but_fine.status,
        200,
        "a 30 KiB header is under the limit: {}",
        big_but_fine.text()
    );
    let closes = closed_eventually(&app, "head_too_large", 1.0);
    assert!(closes >= 1.0, "head_too_large closes: {closes}, want >= 1");
}

/// Logs `events` events of about 1 MB each to a new run of `app`: a `GET /v1/events` of them
/// answers far more than the loopback socket buffers hold.
fn run_with_large_events(app: &TestApp, events: usize) -> String {
    let trace = app.new_run();
    let blob = "x".repeat(1_000_000);
    for n in 0..events {
        let resp = app.event(&json!({"event_type": "tool", "trace_id": trace,
            "timestamp": 1678886405.123, "content": {"n": n, "blob": blob},
            "schema": {"type": "object"}}));
        assert_eq!(resp.status, 200, "event {n}: {}", resp.text());
    }
    trace
}

/// A connection to `addr` whose receive buffer is small, for a client that does not read.
fn connect_with_small_receive_buffer(addr: SocketAddr) -> TcpStream {
    let sock = rustix::net::socket(
        match addr {
            SocketAddr::V4(_) => rustix::net::AddressFamily::INET,
            SocketAddr::V6(_) => rustix::net::AddressFamily::INET6,
        },
        rustix::net::SocketType::STREAM,
        None,
    )
    .expect("a socket");
    rustix::net::sockopt::set_socket_recv_buffer_size(&sock, 4096).expect("a small receive buffer");
    rustix::net::connect(&sock, &addr).expect("connect");
    TcpStream::from(sock)
}

#[test]
fn an_endless_head_pipelined_behind_a_response_the_client_does_not_take_is_reset() {
    // Arrange: a response the client will not read keeps its request in progress for the
    // client timeout (5 s); behind it, the client pipelines the head of a next request that
    // never ends. tiny_http reads that head while the first request is still in progress.
    let app = TestApp::spawn_with(&["--client-timeout-secs", "5"]);
    let trace = run_with_large_events(&app, 25);
    let mut stream = connect_with_small_receive_buffer(app.addr);
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("set the write timeout");
    stream
        .write_all(
            format!(
                "GET /v1/events?trace_id={trace}&limit=100 HTTP/1.1\r\nHost: localhost\r\n\r\n\
                 GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: "
            )
            .as_bytes(),
        )
        .expect("send the first request and the start of the second");

    // Act
    let (sent, failure, took) = send_endless_header(&mut stream, 256 * MIB);
    let (rss, peak) = resident_bytes(app.pid());

    // Assert: reset once the head is over its allowance, whatever the first request is doing.
    println!(
        "pipelined endless head: {failure:?} after {} KiB in {took:?}; server VmRSS {} MiB, \
         VmHWM {} MiB",
        sent / 1024,
        rss / MIB,
        peak / MIB
    );
    assert!(
        failure.is_some() && sent < 32 * MIB,
        "the server took {} MiB of a pipelined header line in {took:?} without resetting",
        sent / MIB
    );
    assert_eq!(app.get("/healthz").status, 200, "healthz afterwards");
    let closes = closed_eventually(&app, "head_too_large", 1.0);
    assert!(closes >= 1.0, "head_too_large closes: {closes}, want >= 1");
}

#[test]
fn connections_over_the_bound_are_closed_and_the_rest_stay_open() {
    // Arrange
    let app = TestApp::spawn_with(&["--max-connections", "20", "--client-timeout-secs", "30"]);

    // Act: 40 connections that send nothing.
    let mut idle: Vec<TcpStream> = (0..40)
        .map(|n| TcpStream::connect(app.addr).unwrap_or_else(|e| panic!("connection {n}: {e}")))
        .collect();
    for s in &idle {
        s.set_nonblocking(true).expect("set non-blocking");
    }
    let state = |s: &mut TcpStream| -> End {
        match s.read(&mut [0u8; 64]) {
            Ok(0) => End::Eof,
            Ok(_) => End::Data,
            Err(e) if e.kind() == ErrorKind::WouldBlock => End::StillOpen,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => End::Reset,
            Err(e) => End::Error(e.kind()),
        }
    };
    let start = Instant::now();
    let mut states: Vec<End> = Vec::new();
    while start.elapsed() < Duration::from_secs(3) {
        states = idle.iter_mut().map(state).collect();
        if states.iter().filter(|e| **e != End::StillOpen).count() >= 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let reached = start.elapsed();
    // A few more scans: no more must go.
    std::thread::sleep(Duration::from_millis(500));
    for (s, e) in idle.iter_mut().zip(states.iter_mut()) {
        if *e == End::StillOpen {
            *e = state(s);
        }
    }

    // Assert
    let closed = states.iter().filter(|e| **e == End::Eof).count();
    let open = states.iter().filter(|e| **e == End::StillOpen).count();
    println!("20 of 40 closed after {reached:?}; states {states:?}");
    assert_eq!(
        (closed, open),
        (20, 20),
        "40 idle connections, bound 20: 20 closed (FIN) and 20 open; states {states:?}"
    );
    let health = app.get("/healthz");
    assert_eq!(health.status, 200, "a new client at the bound is answered");
    let over = closed_eventually(&app, "over_limit", 20.0);
    assert!(over >= 20.0, "over_limit closes: {over}, want >= 20");
    let text = metrics(&app);
    let gauge = sample(&text, "runwarden_connections_open")
        .unwrap_or_else(|| panic!("no runwarden_connections_open in\n{text}"));
    assert!(
        gauge <= 21.0,
        "runwarden_connections_open {gauge}, want <= 21"
    );
    drop(idle);
}

#[test]
fn a_client_that_does_not_read_its_response_frees_the_only_worker_after_the_client_timeout() {
    // Arrange: one worker, and a run whose events make a response of about 25 MB, far more
    // than the loopback socket buffers hold (4 MiB to send, a few KiB to receive below).
    let app = TestApp::spawn_with(&["--threads", "1", "--client-timeout-secs", "1"]);
    let events = 25;
    let trace = run_with_large_events(&app, events);
    let mut lazy = connect_with_small_receive_buffer(app.addr);

    // Act: ask for all of them, never read; then another client asks.
    lazy.write_all(
        format!(
            "GET /v1/events?trace_id={trace}&limit=100 HTTP/1.1\r\nHost: localhost\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("send the GET");
    let asked = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let health = healthz_answered_within(app.addr, Duration::from_secs(2), Duration::from_secs(12));
    let answered = asked.elapsed();

    // Assert
    let (_, failed) = health.unwrap_or_else(|| {
        panic!(
            "GET /healthz unanswered for {answered:?} while the only worker writes to a client \
             that does not read"
        )
    });
    println!("healthz answered {answered:?} after the big GET ({failed} attempts failed first)");
    assert_eq!(
        failed, 0,
        "the waiting request was answered on its own connection"
    );
    assert!(
        answered <= Duration::from_secs(4),
        "the worker writing to a client that does not read should be free within the 1 s \
         client timeout (allowing 4 s); healthz was answered only {answered:?} after the GET"
    );
    // The worker was freed by giving up on the write, not by finishing it: the lazy client,
    // reading now, gets only what the socket buffers held.
    let (raw, end) = read_until_end(&mut lazy, Duration::from_secs(5));
    println!(
        "the lazy client then read {} KiB and {end:?}",
        raw.len() / 1024
    );
    assert_ne!(
        end,
        End::StillOpen,
        "the server has ended the connection it gave up writing to"
    );
    assert!(
        raw.len() < events * 1_000_000,
        "the response was cut short (the server gave up writing), got {} bytes",
        raw.len()
    );
    assert!(
        closed_eventually(&app, "send_timeout", 1.0) >= 1.0,
        "the close is counted as send_timeout"
    );
}

#[test]
fn metrics_expose_open_connections_and_closes_by_reason() {
    // Arrange
    let app = TestApp::spawn();

    // Act
    let text = metrics(&app);

    // Assert
    for (family, kind) in [
        ("runwarden_connections_open", "gauge"),
        ("runwarden_connections_closed_total", "counter"),
    ] {
        let type_line = format!("# TYPE {family} {kind}");
        assert!(
            text.lines().any(|l| l == type_line),
            "missing {type_line:?} in\n{text}"
        );
    }
    let open = sample(&text, "runwarden_connections_open")
        .unwrap_or_else(|| panic!("no runwarden_connections_open sample in\n{text}"));
    assert!(open >= 0.0, "runwarden_connections_open {open}");
    for reason in REASONS {
        let n = closed_total(&text, reason)
            .unwrap_or_else(|| panic!("no closed_total for reason {reason:?} in\n{text}"));
        assert_eq!(n, 0.0, "a fresh server has closed nothing for {reason}");
    }
    // The gauge counts a connection held open across a few scans.
    let held = TcpStream::connect(app.addr).expect("connect");
    std::thread::sleep(Duration::from_millis(400));
    let text = metrics(&app);
    let open = sample(&text, "runwarden_connections_open")
        .unwrap_or_else(|| panic!("no runwarden_connections_open sample in\n{text}"));
    assert!(
        open >= 1.0,
        "runwarden_connections_open {open} with one connection held open"
    );
    drop(held);
}
