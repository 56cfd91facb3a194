//! `GET /metrics` in the Prometheus text format: requests by route and status, latency
//! histograms by route, checks by verdict and findings by rule, and the database's size on
//! disk. Counters live in memory and start at zero with the process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::Verdict;
use crate::http::guard::{Reason, ScanReport};

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    checks: BTreeMap<&'static str, u64>,
    findings: BTreeMap<&'static str, u64>,
    /// Open client connections at the guard's last scan (`None`: no guard).
    connections_open: Option<usize>,
    connections_closed: [u64; Reason::ALL.len()],
}

/// The counters of one server process.
pub struct Metrics {
    inner: Mutex<Inner>,
    db: Option<PathBuf>,
}

impl Metrics {
    /// Counters for a server whose database is the SQLite file `db` (`None` for PostgreSQL,
    /// whose size its own monitoring reports).
    pub fn new(db: Option<PathBuf>) -> Self {
        Metrics {
            inner: Mutex::new(Inner::default()),
            db,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request of `route` answered with `status` after `took`.
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let mut m = self.lock();
        *m.requests.entry((route, status)).or_insert(0) += 1;
        let h = m.latency.entry(route).or_default();
        h.count += 1;
        h.sum += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
    }

    /// Counts one judged check.
    pub fn check(&self, verdict: &Verdict) {
        let mut m = self.lock();
        let key = if verdict.is_safe { "safe" } else { "blocked" };
        *m.checks.entry(key).or_insert(0) += 1;
        for f in &verdict.findings {
            *m.findings.entry(f.rule).or_insert(0) += 1;
        }
    }

    /// Takes one scan of the connection guard.
    pub fn connections(&self, report: &ScanReport) {
        let mut m = self.lock();
        m.connections_open = Some(report.open);
        for reason in &report.closed {
            if let Some(i) = Reason::ALL.iter().position(|r| r == reason) {
                m.connections_closed[i] += 1;
            }
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let m = self.lock();
        out.push_str("# HELP runwarden_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE runwarden_requests_total counter\n");
        for ((route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "runwarden_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP runwarden_request_duration_seconds Time to answer a request, by route.\n",
        );
        out.push_str("# TYPE runwarden_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "runwarden_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "runwarden_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "runwarden_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "runwarden_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP runwarden_checks_total Actions judged, by verdict.\n");
        out.push_str("# TYPE runwarden_checks_total counter\n");
        for verdict in ["safe", "blocked"] {
            let n = m.checks.get(verdict).copied().unwrap_or(0);
            let _ = writeln!(out, "runwarden_checks_total{{verdict=\"{verdict}\"}} {n}");
        }
        out.push_str("# HELP runwarden_findings_total Findings of judged actions, by rule.\n");
        out.push_str("# TYPE runwarden_findings_total counter\n");
        for (rule, n) in &m.findings {
            let _ = writeln!(out, "runwarden_findings_total{{rule=\"{rule}\"}} {n}");
        }
        if let Some(open) = m.connections_open {
            out.push_str("# HELP runwarden_connections_open Client connections open.\n");
            out.push_str("# TYPE runwarden_connections_open gauge\n");
            let _ = writeln!(out, "runwarden_connections_open {open}");
            out.push_str(
                "# HELP runwarden_connections_closed_total Client connections the server closed, \
                 by reason (idle, head_timeout, head_too_large, body_timeout, send_timeout, over_limit).\n",
            );
            out.push_str("# TYPE runwarden_connections_closed_total counter\n");
            for (reason, n) in Reason::ALL.iter().zip(m.connections_closed) {
                let _ = writeln!(
                    out,
                    "runwarden_connections_closed_total{{reason=\"{}\"}} {n}",
                    reason.label()
                );
            }
        }
        drop(m);
        if let Some(db) = &self.db {
            let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let mut wal = db.clone().into_os_string();
            wal.push("-wal");
            let bytes = size(db.clone()) + size(PathBuf::from(wal));
            out.push_str(
                "# HELP runwarden_database_size_bytes The database file and its WAL on disk.\n",
            );
            out.push_str("# TYPE runwarden_database_size_bytes gauge\n");
            let _ = writeln!(out, "runwarden_database_size_bytes {bytes}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Finding, Severity};

    #[test]
    fn counters_histograms_and_verdicts_are_rendered() {
        let m = Metrics::new(Some(PathBuf::from("/nonexistent/rw.db")));
        m.request("event", 200, Duration::from_millis(3));
        m.request("event", 200, Duration::from_millis(30));
        m.request("event", 400, Duration::from_micros(100));
        m.check(&Verdict {
            is_safe: false,
            reasoning: "t: x".into(),
            findings: vec![Finding {
                rule: "detect.sql",
                severity: Severity::Block,
                message: "x".into(),
                evidence: serde_json::json!({}),
            }],
            consumed_approval: false,
        });
        m.connections(&ScanReport {
            open: 7,
            closed: vec![Reason::Idle, Reason::OverLimit, Reason::Idle],
        });
        let text = m.render();
        for line in [
            "runwarden_requests_total{route=\"event\",status=\"200\"} 2",
            "runwarden_requests_total{route=\"event\",status=\"400\"} 1",
            "runwarden_request_duration_seconds_bucket{route=\"event\",le=\"0.005\"} 2",
            "runwarden_request_duration_seconds_bucket{route=\"event\",le=\"+Inf\"} 3",
            "runwarden_request_duration_seconds_count{route=\"event\"} 3",
            "runwarden_checks_total{verdict=\"blocked\"} 1",
            "runwarden_checks_total{verdict=\"safe\"} 0",
            "runwarden_findings_total{rule=\"detect.sql\"} 1",
            "runwarden_database_size_bytes 0",
            "runwarden_connections_open 7",
            "runwarden_connections_closed_total{reason=\"idle\"} 2",
            "runwarden_connections_closed_total{reason=\"over_limit\"} 1",
            "runwarden_connections_closed_total{reason=\"body_timeout\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
