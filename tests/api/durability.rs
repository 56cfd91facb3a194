//! What survives a crash: everything acknowledged with a 200 before a SIGKILL is in the
//! database after a restart on the same file, trace ids stay valid and reserved, the file
//! passes `PRAGMA integrity_check`, and a conflict inside a group-committed batch fails alone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, fresh_dir, http, parse_response, user_event};

fn registration(trace_id: &str, prompt: &str) -> Value {
    json!({"agent_id": "durable-agent", "timestamp": "2024-01-15T14:30:45.123Z",
           "system_prompt": prompt, "trace_id": trace_id})
}

fn new_trace_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One POST that may fail at any point (the server may be killed mid-request): the status,
/// or `None` when there is no complete response.
fn try_post(addr: SocketAddr, path: &str, body: &Value) -> Option<u16> {
    let body = body.to_string();
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return None;
    }
    Some(parse_response(&raw).status)
}

/// How many runs of `trace_ids` are in `app`'s database.
fn runs_present(app: &TestApp, trace_ids: &[String]) -> usize {
    let conn = app.db();
    let mut stmt = conn
        .prepare("SELECT count(*) FROM runs WHERE trace_id = ?1")
        .expect("prepare");
    trace_ids
        .iter()
        .filter(|id| {
            stmt.query_row([id], |r| r.get::<_, i64>(0))
                .expect("query a run")
                == 1
        })
        .count()
}

fn integrity(app: &TestApp) -> String {
    app.db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("run the integrity check")
}

#[test]
fn a_run_and_its_events_survive_a_kill_and_the_trace_stays_valid_and_reserved() {
    // Arrange
    let dir = fresh_dir("durable-run");
    let mut first = TestApp::spawn_in(&dir, &[]);
    let trace_id = new_trace_id();
    let registered = first.register(&registration(&trace_id, "before the crash"));
    assert_eq!(registered.status, 200, "{}", registered.text());
    for n in 0..3 {
        let r = first.event(&user_event(&trace_id));
        assert_eq!(r.status, 200, "event {n}: {}", r.text());
    }

    // Act
    first.kill();
    let second = TestApp::spawn_in(&dir, &[]);
    let event_after = second.event(&user_event(&trace_id));
    let reuse = second.register(&registration(&trace_id, "after the crash"));

    // Assert
    assert_eq!(
        event_after.status,
        200,
        "the trace takes events: {}",
        event_after.text()
    );
    reuse.assert_error(
        409,
        "TRACE_ID_CONFLICT",
        Some("trace_id"),
        "reuse after a restart",
    );
    let conn = second.db();
    let prompt: String = conn
        .query_row(
            "SELECT system_prompt FROM runs WHERE trace_id = ?1",
            [&trace_id],
            |r| r.get(0),
        )
        .expect("the run is stored");
    assert_eq!(
        prompt, "before the crash",
        "the run is untouched by the reuse"
    );
    let mut stmt = conn
        .prepare("SELECT seq FROM events WHERE trace_id = ?1 ORDER BY seq")
        .expect("prepare");
    let seqs: Vec<i64> = stmt
        .query_map([&trace_id], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("read");
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4],
        "three events before, one after the crash"
    );
}

#[test]
fn every_registration_acknowledged_before_a_kill_is_present_after_a_restart() {
    // Arrange
    const THREADS: usize = 6;
    const ACKS_BEFORE_KILL: usize = 150;
    let dir = fresh_dir("durable-batch");
    let mut first = TestApp::spawn_in(&dir, &[]);
    let addr = first.addr;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..THREADS)
        .map(|_| {
            let acked = Arc::clone(&acked);
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                // Until the server dies under us.
                loop {
                    let id = new_trace_id();
                    match try_post(addr, "/v1/register-agent-run", &registration(&id, "load")) {
                        Some(200) => {
                            acked.lock().expect("lock").push(id);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(other) => panic!("registration answered {other}"),
                        None => return,
                    }
                }
            })
        })
        .collect();

    // Act: kill while the clients are still writing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count.load(Ordering::SeqCst) < ACKS_BEFORE_KILL {
        assert!(Instant::now() < deadline, "the clients made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill();
    for client in clients {
        client.join().expect("a client thread panicked");
    }
    let acked = acked.lock().expect("lock").clone();
    let second = TestApp::spawn_in(&dir, &[]);

    // Assert
    assert!(
        acked.len() >= ACKS_BEFORE_KILL,
        "{} acknowledged",
        acked.len()
    );
    assert_eq!(
        runs_present(&second, &acked),
        acked.len(),
        "every acknowledged run is present after the restart"
    );
    assert_eq!(integrity(&second), "ok", "PRAGMA integrity_check");
    assert_eq!(
        second
            .register(&registration(&new_trace_id(), "after"))
            .status,
        200,
        "the restarted server takes writes"
    );
}

#[test]
fn a_trace_id_conflict_inside_a_concurrent_batch_fails_alone() {
    // Arrange
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 3;
    let dir = fresh_dir("durable-conflict");
    let mut first = TestApp::spawn_in(&dir, &[]);
    let taken = new_trace_id();
    assert_eq!(
        first.register(&registration(&taken, "original")).status,
        200
    );
    let addr = first.addr;
    let mut others: Vec<String> = Vec::new();

    for round in 0..ROUNDS {
        // Every fourth client reuses the taken trace_id; the rest choose fresh ones.
        let ids: Vec<String> = (0..CLIENTS)
            .map(|i| {
                if i % 4 == 0 {
                    taken.clone()
                } else {
                    new_trace_id()
                }
            })
            .collect();
        let barrier = Arc::new(Barrier::new(CLIENTS));

        // Act
        let handles: Vec<_> = ids
            .iter()
            .cloned()
            .map(|id| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let body = registration(&id, "concurrent").to_string();
                    let headers = [
                        ("Content-Type".to_string(), "application/json".to_string()),
                        ("Content-Length".to_string(), body.len().to_string()),
                    ];
                    barrier.wait();
                    http(
                        addr,
                        "POST",
                        "/v1/register-agent-run",
                        &headers,
                        body.as_bytes(),
                    )
                })
            })
            .collect();
        let responses: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect();

        // Assert
        for (i, (id, resp)) in ids.iter().zip(&responses).enumerate() {
            let why = format!("round {round}, client {i}");
            if *id == taken {
                resp.assert_error(409, "TRACE_ID_CONFLICT", Some("trace_id"), &why);
            } else {
                assert_eq!(resp.status, 200, "{why}: {}", resp.text());
                others.push(id.clone());
            }
        }
    }
    first.kill();
    let second = TestApp::spawn_in(&dir, &[]);
    assert_eq!(
        runs_present(&second, &others),
        others.len(),
        "every non-conflicting registration of the batches is stored"
    );
    let (rows, prompt): (i64, String) = second
        .db()
        .query_row(
            "SELECT count(*), max(system_prompt) FROM runs WHERE trace_id = ?1",
            [&taken],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("query the taken run");
    assert_eq!(
        (rows, prompt.as_str()),
        (1, "original"),
        "the taken run is untouched"
    );
    assert_eq!(integrity(&second), "ok", "PRAGMA integrity_check");
}
