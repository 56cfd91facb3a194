//! What survives a crash: everything acknowledged with a 200 before a SIGKILL is in the
//! database after a restart on the same database, trace ids stay valid and reserved, a SQLite
//! file passes `PRAGMA integrity_check`, and a conflict inside a group-committed batch fails
//! alone. The crash-under-load test repeats kill-and-restart on one database
//! `RUNWARDEN_CRASH_ROUNDS` times (3 by default; CI runs more). All of it runs on either
//! backend (on PostgreSQL the crash is runwarden's, the database server keeps running).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, fresh_dir, http, run_count_and_prompt, try_request, user_event};

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
    try_request(addr, path, body).map(|r| r.status)
}

/// The trace_ids of every run in `app`'s database.
fn stored_runs(app: &TestApp) -> HashSet<String> {
    app.query("SELECT trace_id FROM runs", &[])
        .iter()
        .map(|r| r.text(0))
        .collect()
}

/// How many runs of `trace_ids` are in `app`'s database.
fn runs_present(app: &TestApp, trace_ids: &[String]) -> usize {
    let stored = stored_runs(app);
    trace_ids.iter().filter(|id| stored.contains(*id)).count()
}

/// Asserts that a SQLite file passes `PRAGMA integrity_check`. Nothing to check on PostgreSQL:
/// the crash is runwarden's, and the database server, which owns the files, keeps running.
#[track_caller]
fn assert_integrity(app: &TestApp, case: &str) {
    if let crate::helpers::Storage::File(_) = app.storage {
        let result: String = app
            .db()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("run the integrity check");
        assert_eq!(result, "ok", "{case}: PRAGMA integrity_check");
    }
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
    let prompt = second.query_text(
        "SELECT system_prompt FROM runs WHERE trace_id = ?1",
        &[&trace_id],
    );
    assert_eq!(
        prompt, "before the crash",
        "the run is untouched by the reuse"
    );
    let seqs: Vec<i64> = second
        .query(
            "SELECT seq FROM events WHERE trace_id = ?1 ORDER BY seq",
            &[&trace_id],
        )
        .iter()
        .map(|r| r.i64(0))
        .collect();
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
    assert_integrity(&second, "after the restart");
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
    let (rows, prompt) = run_count_and_prompt(&second, &taken);
    assert_eq!(
        (rows, prompt.as_str()),
        (1, "original"),
        "the taken run is untouched"
    );
    assert_integrity(&second, "after the batches");
}

/// How many kill-and-restart rounds the crash-under-load test runs: `RUNWARDEN_CRASH_ROUNDS`,
/// 3 when unset (CI sets more).
fn crash_rounds() -> usize {
    let Ok(value) = std::env::var("RUNWARDEN_CRASH_ROUNDS") else {
        return 3;
    };
    let rounds: usize = value
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("RUNWARDEN_CRASH_ROUNDS={value:?} is not a count"));
    assert!(rounds >= 1, "RUNWARDEN_CRASH_ROUNDS must be at least 1");
    rounds
}

/// What the clients of one crash round share and collect.
#[derive(Default)]
struct RoundLoad {
    /// Runs answered 200: their trace_ids.
    runs: Mutex<Vec<String>>,
    /// Events answered 200: (event_id, trace_id).
    events: Mutex<Vec<(String, String)>>,
    /// `runs.len()` without the lock, for the kill trigger.
    run_acks: AtomicUsize,
    /// `events.len()` without the lock, for the kill trigger.
    event_acks: AtomicUsize,
    /// Attempts without a complete response: cut by the kill, or refused after it.
    unanswered: AtomicUsize,
    /// Requests between their connect and the end of their response right now.
    in_flight: AtomicUsize,
    /// Answers that are neither a 200 nor missing (none are expected).
    unexpected: Mutex<Vec<String>>,
    /// Set just before the kill: a client stops at its first unanswered request.
    stopping: AtomicBool,
}

impl RoundLoad {
    /// Sends one write; the 200 body, or `None` (unanswered, or recorded as unexpected).
    fn send(&self, addr: SocketAddr, path: &str, body: &Value) -> Option<Value> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let resp = try_request(addr, path, body);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let Some(resp) = resp else {
            self.unanswered.fetch_add(1, Ordering::SeqCst);
            return None;
        };
        match serde_json::from_slice::<Value>(&resp.body) {
            Ok(v) if resp.status == 200 => Some(v),
            _ => {
                self.unexpected.lock().expect("lock").push(format!(
                    "{path} answered {}: {}",
                    resp.status,
                    resp.text()
                ));
                None
            }
        }
    }

    /// One client: registers runs (client-chosen and server-chosen trace_ids alternately) and
    /// logs events on acknowledged runs (its newest one, and one acknowledged in an earlier
    /// round), until a request goes unanswered after `stopping` was set.
    fn client(&self, addr: SocketAddr, client: usize, earlier: &[String]) {
        const EVENTS_PER_RUN: usize = 3;
        for n in 0usize.. {
            let chosen = (n % 2 == 0).then(new_trace_id);
            let body = match &chosen {
                Some(id) => registration(id, "under load"),
                None => json!({"agent_id": "durable-agent",
                    "timestamp": "2024-01-15T14:30:45.123Z", "system_prompt": "under load"}),
            };
            let Some(answer) = self.send(addr, "/v1/register-agent-run", &body) else {
                if self.stopping.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            };
            let Some(trace_id) = answer["trace_id"].as_str().map(str::to_string) else {
                self.unexpected.lock().expect("lock").push(format!(
                    "a registration answered 200 without a trace_id: {answer}"
                ));
                continue;
            };
            if chosen.as_ref().is_some_and(|c| *c != trace_id) {
                self.unexpected.lock().expect("lock").push(format!(
                    "registering {chosen:?} answered the trace_id {trace_id}"
                ));
            }
            self.runs.lock().expect("lock").push(trace_id.clone());
            self.run_acks.fetch_add(1, Ordering::SeqCst);

            for k in 0..EVENTS_PER_RUN {
                let target = match earlier.len() {
                    0 => &trace_id,
                    len if k == 0 => &earlier[(client * 7919 + n * 31) % len],
                    _ => &trace_id,
                };
                let Some(answer) = self.send(addr, "/v1/event", &user_event(target)) else {
                    if self.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    continue;
                };
                match answer["event_id"].as_str() {
                    Some(event_id) => {
                        self.events
                            .lock()
                            .expect("lock")
                            .push((event_id.to_string(), target.clone()));
                        self.event_acks.fetch_add(1, Ordering::SeqCst);
                    }
                    None => self.unexpected.lock().expect("lock").push(format!(
                        "an event answered 200 without an event_id: {answer}"
                    )),
                }
            }
        }
    }
}

/// Asserts that every acknowledged run and event is in `app`'s database (each event under its
/// run) and that a SQLite file passes `PRAGMA integrity_check`.
fn assert_acknowledged_present(
    app: &TestApp,
    round: &str,
    runs: &[String],
    events: &[(String, String)],
) {
    assert_integrity(app, &format!("{round}: after the restart"));
    let stored_runs = stored_runs(app);
    for trace_id in runs {
        assert!(
            stored_runs.contains(trace_id),
            "{round}: the acknowledged run {trace_id} is missing after the restart"
        );
    }
    let stored_events: HashMap<String, String> = app
        .query("SELECT event_id, trace_id FROM events", &[])
        .iter()
        .map(|r| (r.text(0), r.text(1)))
        .collect();
    for (event_id, trace_id) in events {
        assert_eq!(
            stored_events.get(event_id),
            Some(trace_id),
            "{round}: the acknowledged event {event_id} of run {trace_id} is missing \
             (or under another run) after the restart"
        );
    }
}

#[test]
fn every_run_and_event_acknowledged_under_load_survives_repeated_kills_on_one_database() {
    // Arrange
    const CLIENTS: usize = 8;
    const RUNS_BEFORE_KILL: usize = 100;
    const EVENTS_BEFORE_KILL: usize = 250;
    let rounds = crash_rounds();
    let started = Instant::now();
    let dir = fresh_dir("durable-crash-rounds");
    let mut app = TestApp::spawn_in(&dir, &[]);
    let mut acked_runs: Vec<String> = Vec::new();
    let mut acked_events: Vec<(String, String)> = Vec::new();
    let mut unanswered_total = 0;

    for round in 0..rounds {
        // Act: load from every client; kill once enough writes were acknowledged in this
        // round, while requests are in flight and the clients keep sending; restart.
        let load = RoundLoad::default();
        let addr = app.addr;
        let in_flight_at_kill = std::thread::scope(|s| {
            for client in 0..CLIENTS {
                let (load, earlier) = (&load, &acked_runs);
                s.spawn(move || load.client(addr, client, earlier));
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            let reached = loop {
                let in_flight = load.in_flight.load(Ordering::SeqCst);
                if load.run_acks.load(Ordering::SeqCst) >= RUNS_BEFORE_KILL
                    && load.event_acks.load(Ordering::SeqCst) >= EVENTS_BEFORE_KILL
                    && in_flight > 0
                {
                    break Some(in_flight);
                }
                if Instant::now() >= deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            // Kill even on a timeout, or the clients would never stop.
            load.stopping.store(true, Ordering::SeqCst);
            app.kill();
            reached
        });
        app = TestApp::spawn_in(&dir, &[]);
        let round_runs = load.runs.into_inner().expect("lock");
        let round_events = load.events.into_inner().expect("lock");
        let unexpected = load.unexpected.into_inner().expect("lock");
        let unanswered = load.unanswered.into_inner();
        eprintln!(
            "crash round {round}: {} runs and {} events acknowledged, {unanswered} attempts \
             unacknowledged ({} in flight at the kill)",
            round_runs.len(),
            round_events.len(),
            in_flight_at_kill.unwrap_or(0)
        );
        let round_event_count = round_events.len();
        acked_runs.extend(round_runs.iter().cloned());
        acked_events.extend(round_events);
        unanswered_total += unanswered;

        // Assert
        assert!(
            unexpected.is_empty(),
            "round {round}: answers other than 200 before the kill: {unexpected:?}"
        );
        assert!(
            in_flight_at_kill.is_some(),
            "round {round}: the clients got {} runs and {} events acknowledged in 20 s \
             (wanted {RUNS_BEFORE_KILL} and {EVENTS_BEFORE_KILL})",
            round_runs.len(),
            round_event_count
        );
        assert_acknowledged_present(&app, &format!("round {round}"), &acked_runs, &acked_events);
        for trace_id in &round_runs {
            let event = app.event(&user_event(trace_id));
            assert_eq!(
                event.status,
                200,
                "round {round}: the acknowledged run {trace_id} takes an event after the \
                 restart: {}",
                event.text()
            );
            let event_id = event.json()["event_id"]
                .as_str()
                .expect("an event_id")
                .to_string();
            acked_events.push((event_id, trace_id.clone()));
            app.register(&registration(trace_id, "reused after a crash"))
                .assert_error(
                    409,
                    "TRACE_ID_CONFLICT",
                    Some("trace_id"),
                    &format!("round {round}: reusing the acknowledged trace_id {trace_id}"),
                );
        }
    }

    // Act: one more kill, so that the events logged after the last restart are covered too.
    app.kill();
    let last = TestApp::spawn_in(&dir, &[]);

    // Assert
    assert_acknowledged_present(&last, "after the last round", &acked_runs, &acked_events);
    eprintln!(
        "crash rounds: {rounds} rounds in {:.1?}: {} runs and {} events acknowledged and \
         present, {unanswered_total} attempts unacknowledged",
        started.elapsed(),
        acked_runs.len(),
        acked_events.len()
    );
}

#[test]
fn sigterm_under_load_finishes_in_flight_requests_loses_nothing_and_exits_0() {
    // Arrange: writers registering runs in a loop.
    let mut app = TestApp::spawn();
    let addr = app.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..6)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = new_trace_id();
                    match try_post(addr, "/v1/register-agent-run", &registration(&id, "p")) {
                        Some(200) => acknowledged.push(id),
                        // Stopping: 503 for requests that arrived after the signal, or no answer.
                        Some(503) | None => break,
                        Some(status) => panic!("unexpected status {status}"),
                    }
                }
                acknowledged
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runs_present_count(&app) < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writers made no progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // Act
    let status = app.terminate();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();

    // Assert
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert_eq!(
        runs_present(&app, &acknowledged),
        acknowledged.len(),
        "every acknowledged registration is stored"
    );
    assert_integrity(&app, "after SIGTERM");
}

fn runs_present_count(app: &TestApp) -> i64 {
    crate::helpers::count_rows(app, "runs")
}
