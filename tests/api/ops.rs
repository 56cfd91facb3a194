//! Operations: `GET /metrics` (Prometheus text) reflects what the server answered (and, on
//! SQLite, the size of the database file).

use crate::helpers::{Storage, TestApp, transfer_check};

#[test]
fn metrics_count_requests_by_route_and_status_and_checks_by_verdict() {
    // Arrange: one registration, one 404, one blocked check.
    let app = TestApp::spawn();
    let trace = app.new_run();
    assert_eq!(app.get("/nope").status, 404);
    let blocked = transfer_check(
        &trace,
        &serde_json::json!({"amount": "lots", "recipient": "x"}),
    );
    assert_eq!(app.check(&blocked).status, 200);

    // Act
    let resp = app.get("/metrics");

    // Assert
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    let text = resp.text();
    for line in [
        "runwarden_requests_total{route=\"register-agent-run\",status=\"200\"} 1",
        "runwarden_requests_total{route=\"unmatched\",status=\"404\"} 1",
        "runwarden_requests_total{route=\"check\",status=\"200\"} 1",
        "runwarden_checks_total{verdict=\"blocked\"} 1",
        "runwarden_checks_total{verdict=\"safe\"} 0",
        "runwarden_findings_total{rule=\"schema.mismatch\"} 1",
        "runwarden_request_duration_seconds_count{route=\"check\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // The size on disk is the SQLite file's; PostgreSQL's size is its own monitoring's.
    if let Storage::File(_) = app.storage {
        let size: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("runwarden_database_size_bytes "))
            .and_then(|v| v.parse().ok())
            .expect("database size");
        assert!(size > 0, "the database has a size on disk");
    }
}
