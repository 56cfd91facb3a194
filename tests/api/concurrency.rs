//! Many clients at once: distinct trace ids under load, exactly one winner among simultaneous
//! registrations of one client-chosen trace_id (decided by the database), and gap-free per-run
//! sequence numbers for concurrent events.

use crate::helpers::assert_gap_free_and_acknowledged;
use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use serde_json::{Value, json};

use crate::helpers::{Resp, TestApp, run_count_and_prompt, user_event};

/// A registration body (the server picks the trace_id).
pub(crate) fn registration() -> Value {
    json!({"agent_id": "load-agent", "timestamp": "2024-01-15T14:30:45.123Z",
           "system_prompt": "You are a helpful assistant."})
}

/// Runs `work(thread_index)` on `threads` threads at once and collects the results in thread
/// order.
pub(crate) fn on_threads<T: Send + 'static>(
    threads: usize,
    work: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let work = Arc::new(work);
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let work = Arc::clone(&work);
            std::thread::spawn(move || work(i))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a client thread panicked"))
        .collect()
}

#[test]
fn eight_threads_of_250_registrations_give_2000_distinct_trace_ids_each_valid_for_events() {
    // Arrange
    const THREADS: usize = 8;
    const PER_THREAD: usize = 250;
    let app = Arc::new(TestApp::spawn());

    // Act: register
    let registered: Vec<Vec<(u16, String)>> = {
        let app = Arc::clone(&app);
        on_threads(THREADS, move |_| {
            (0..PER_THREAD)
                .map(|_| {
                    let r = app.register(&registration());
                    let id = r.json()["trace_id"].as_str().unwrap_or("").to_string();
                    (r.status, id)
                })
                .collect()
        })
    };
    let all: Vec<(u16, String)> = registered.into_iter().flatten().collect();
    let failed = all.iter().filter(|(s, _)| *s != 200).count();
    let ids: Vec<String> = all.into_iter().map(|(_, id)| id).collect();
    let distinct = ids.iter().collect::<HashSet<&String>>().len();

    // Act: one event per trace id, spread over the threads differently from the registrations
    let ids = Arc::new(ids);
    let event_statuses: Vec<Vec<(String, u16)>> = {
        let app = Arc::clone(&app);
        let ids = Arc::clone(&ids);
        on_threads(THREADS, move |t| {
            ids.iter()
                .skip(t)
                .step_by(THREADS)
                .map(|id| (id.clone(), app.event(&user_event(id)).status))
                .collect()
        })
    };

    // Assert
    assert_eq!(failed, 0, "every registration is 200");
    assert_eq!(distinct, THREADS * PER_THREAD, "distinct trace ids");
    let events: Vec<(String, u16)> = event_statuses.into_iter().flatten().collect();
    assert_eq!(events.len(), THREADS * PER_THREAD, "one event per trace id");
    let rejected: Vec<_> = events.iter().filter(|(_, s)| *s != 200).collect();
    assert!(
        rejected.is_empty(),
        "every trace id takes an event: {} rejected, e.g. {:?}",
        rejected.len(),
        rejected.first()
    );
    let counts = app.query_row(
        "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM events)",
        &[],
    );
    let (runs, events_stored) = (counts.i64(0), counts.i64(1));
    assert_eq!(runs, 2000, "rows in runs");
    assert_eq!(events_stored, 2000, "rows in events");
}

#[test]
fn twenty_simultaneous_registrations_of_one_trace_id_give_one_200_and_nineteen_conflicts() {
    // Arrange
    const CLIENTS: usize = 20;
    let app = Arc::new(TestApp::spawn());
    let trace_id = uuid::Uuid::new_v4().to_string();
    let barrier = Arc::new(Barrier::new(CLIENTS));

    // Act
    let responses: Vec<Resp> = {
        let app = Arc::clone(&app);
        let trace_id = trace_id.clone();
        on_threads(CLIENTS, move |i| {
            let mut body = registration();
            body["trace_id"] = json!(trace_id);
            body["system_prompt"] = json!(format!("client {i}"));
            barrier.wait();
            app.register(&body)
        })
    };

    // Assert
    let winners: Vec<&Resp> = responses.iter().filter(|r| r.status == 200).collect();
    assert_eq!(winners.len(), 1, "exactly one 200");
    assert_eq!(
        winners[0].json()["trace_id"],
        json!(trace_id),
        "the winner's trace_id"
    );
    for (i, resp) in responses
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status != 200)
    {
        resp.assert_error(
            409,
            "TRACE_ID_CONFLICT",
            Some("trace_id"),
            &format!("client {i}"),
        );
    }
    let (rows, prompt) = run_count_and_prompt(&app, &trace_id);
    assert_eq!(rows, 1, "exactly one row in runs");
    assert!(
        prompt.starts_with("client "),
        "one client's run: {prompt:?}"
    );
}

#[test]
fn concurrent_events_on_one_run_get_distinct_gap_free_sequence_numbers() {
    // Arrange
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    let app = Arc::new(TestApp::spawn());
    let trace_id = app.new_run();

    // Act
    let answers: Vec<Vec<(u16, String)>> = {
        let app = Arc::clone(&app);
        let trace_id = trace_id.clone();
        on_threads(THREADS, move |_| {
            (0..PER_THREAD)
                .map(|_| {
                    let r = app.event(&user_event(&trace_id));
                    let id = r.json()["event_id"].as_str().unwrap_or("").to_string();
                    (r.status, id)
                })
                .collect()
        })
    };

    // Assert
    let answers: Vec<(u16, String)> = answers.into_iter().flatten().collect();
    let failed = answers.iter().filter(|(s, _)| *s != 200).count();
    assert_eq!(failed, 0, "every event is 200");
    assert_gap_free_and_acknowledged(&app, &trace_id, &answers, THREADS * PER_THREAD);
}
