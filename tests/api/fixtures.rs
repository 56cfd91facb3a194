//! The example requests in `fixtures/requests/` (the ones the README shows): each file is sent
//! byte for byte, in the order of an agent's session, against a fresh server, and must get the
//! answer the README promises. Every file in the directory must be part of that replay, so a new
//! fixture without a test fails here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::helpers::{Resp, TestApp};

/// What a fixture must get when it is replayed.
enum Expect {
    /// 200 and the fixture's own trace_id echoed.
    Registered,
    /// 200 with an event_id.
    Logged,
    /// 200 with `is_safe` as given; when unsafe, a finding with this rule.
    Verdict(bool, Option<&'static str>),
}

/// The replay, in order: (file name, endpoint, expectation).
const REPLAY: [(&str, &str, Expect); 6] = [
    (
        "register.json",
        "/v1/register-agent-run",
        Expect::Registered,
    ),
    ("event-user.json", "/v1/event", Expect::Logged),
    ("event-tool.json", "/v1/event", Expect::Logged),
    (
        "check-weather.json",
        "/v1/check",
        Expect::Verdict(true, None),
    ),
    // Safe with today's rules (schema.mismatch only); a future amount-limit rule may change this.
    (
        "check-transfer.json",
        "/v1/check",
        Expect::Verdict(true, None),
    ),
    (
        "check-transfer-malformed.json",
        "/v1/check",
        Expect::Verdict(false, Some("schema.mismatch")),
    ),
];

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/requests")
}

/// Every file in the fixtures directory: name → bytes.
fn load_all() -> BTreeMap<String, Vec<u8>> {
    let dir = fixtures_dir();
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a UTF-8 file name")
                .to_string();
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (name, bytes)
        })
        .collect()
}

fn json_of(name: &str, bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

#[test]
fn every_fixture_file_is_json_and_covered_by_the_replay() {
    let files = load_all();

    let on_disk: Vec<&str> = files.keys().map(String::as_str).collect();
    let mut replayed: Vec<&str> = REPLAY.iter().map(|(name, ..)| *name).collect();
    replayed.sort_unstable();

    assert_eq!(
        on_disk, replayed,
        "every file in fixtures/requests/ must be in REPLAY (and every REPLAY entry on disk)"
    );
    for (name, bytes) in &files {
        assert!(json_of(name, bytes).is_object(), "{name} is a JSON object");
    }
}

#[test]
fn the_fixtures_replay_in_session_order_against_a_fresh_server() {
    // Arrange
    let files = load_all();
    let app = TestApp::spawn();
    let trace_id = json_of("register.json", &files["register.json"])["trace_id"]
        .as_str()
        .expect("register.json chooses a trace_id")
        .to_string();

    for (name, path, expect) in &REPLAY {
        let bytes = files
            .get(*name)
            .unwrap_or_else(|| panic!("{name} is missing from fixtures/requests/"));
        let sent = json_of(name, bytes);
        if *name != "register.json" {
            assert_eq!(
                sent["trace_id"],
                trace_id.as_str(),
                "{name}: belongs to the registered run"
            );
        }

        // Act: the file's bytes as they are.
        let resp: Resp = app.post_raw(path, Some("application/json"), bytes);

        // Assert
        assert_eq!(resp.status, 200, "{name}: body {}", resp.text());
        let v = resp.json();
        match expect {
            Expect::Registered => {
                assert_eq!(
                    v["trace_id"],
                    trace_id.as_str(),
                    "{name}: the chosen trace_id echoed"
                );
            }
            Expect::Logged => {
                assert!(
                    v["event_id"].as_str().is_some_and(|id| id.len() == 36),
                    "{name}: event_id in {v}"
                );
            }
            Expect::Verdict(safe, rule) => {
                assert_eq!(v["is_safe"], *safe, "{name}: is_safe; body {v}");
                let reasoning = v["reasoning"].as_str().unwrap_or("");
                assert!(!reasoning.is_empty(), "{name}: reasoning");
                let findings = v["findings"].as_array().expect("findings");
                match rule {
                    Some(rule) => {
                        let f = findings
                            .iter()
                            .find(|f| f["rule"] == *rule)
                            .unwrap_or_else(|| panic!("{name}: a {rule} finding in {v}"));
                        assert_eq!(f["severity"], "block", "{name}: severity");
                    }
                    None => assert!(
                        findings.iter().all(|f| f["severity"] != "block"),
                        "{name}: no block finding in {v}"
                    ),
                }
            }
        }
    }

    // The whole session is in the database, in arrival order.
    let seqs: Vec<(String, i64)> = app
        .query(
            "SELECT 'event', seq FROM events WHERE trace_id = ?1
             UNION ALL SELECT 'check', seq FROM checks WHERE trace_id = ?1 ORDER BY 2",
            &[&trace_id],
        )
        .iter()
        .map(|r| (r.text(0), r.i64(1)))
        .collect();
    let kinds: Vec<(&str, i64)> = seqs.iter().map(|(k, s)| (k.as_str(), *s)).collect();
    assert_eq!(
        kinds,
        [
            ("event", 1),
            ("event", 2),
            ("check", 3),
            ("check", 4),
            ("check", 5)
        ]
    );
}

/// The JSON bodies written inline in the README (`-d '{…}'`), in order.
fn readme_inline_bodies() -> Vec<Value> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("read README.md");
    readme
        .split("-d '")
        .skip(1)
        .filter(|rest| rest.starts_with('{'))
        .map(|rest| {
            let body = rest.split("}'").next().expect("closing quote");
            // The README writes a single quote inside a shell string as '\''.
            let body = format!("{body}}}").replace("'\\''", "'");
            serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("README body is not JSON ({e}): {body}"))
        })
        .collect()
}

#[test]
fn the_readme_inline_examples_are_the_fixture_files() {
    // Arrange
    let files = load_all();
    let expected = ["register.json", "event-user.json"];

    // Act
    let inline = readme_inline_bodies();

    // Assert
    assert_eq!(
        inline.len(),
        expected.len(),
        "inline -d '{{…}}' bodies in the README"
    );
    for (body, name) in inline.iter().zip(expected) {
        let file = json_of(name, &files[name]);
        assert_eq!(
            body, &file,
            "the README's inline body differs from fixtures/requests/{name}"
        );
    }
}
