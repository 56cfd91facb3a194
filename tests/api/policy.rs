//! Policies and the check engine end to end (issue 5): `serve --policy`, approvals and
//! repetitions over HTTP, verdicts that survive a restart, `policy check`, and `replay` of
//! every session in `fixtures/sessions/` (each rule fires in at least one of them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::helpers::{BIN, Storage, TestApp, fresh_dir};

pub(crate) const ACME: &str = "You are a customer service agent for AcmeCorp. You help customers with \
    orders, deliveries and refunds. Be polite and professional. Do not process refunds over \
    $500 without manager approval. Never share customer personal information.";

/// Every rule id the engine has; each must fire in some session fixture.
const ALL_RULES: &[&str] = &[
    "schema.mismatch",
    "tool.deny",
    "tool.not_allowed",
    "tool.require_approval",
    "args.max",
    "args.min",
    "args.deny_pattern",
    "args.allow_pattern",
    "args.one_of",
    "args.email_domain",
    "args.url_domain",
    "args.path_root",
    "detect.shell",
    "detect.sql",
    "detect.sensitive_path",
    "detect.secret",
    "detect.network",
    "prompt.amount_limit",
    "prompt.personal_data",
    "prompt.tool_allowlist",
    "loop.repeat",
    "context.injected_argument",
    "context.untrusted_argument",
    "context.exfiltration",
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn runwarden(args: &[&str]) -> Output {
    crate::helpers::run_to_exit(args)
}

pub(crate) fn refund_check(trace_id: &str, amount: f64) -> Value {
    json!({"event_type": "action_check", "trace_id": trace_id, "timestamp": 1705329050.0,
           "content": json!({"order_id": "1234", "amount": amount}).to_string(),
           "schema": json!({"type": "function", "name": "process_refund",
               "parameters": {"type": "object", "properties": {
                   "order_id": {"type": "string"}, "amount": {"type": "number"}}}}).to_string()})
}

pub(crate) fn approval(trace_id: &str, tool: &str) -> Value {
    json!({"event_type": "system", "trace_id": trace_id, "timestamp": 1705329049.0,
           "content": json!({"approval": {"tool": tool}}).to_string(), "schema": "{}"})
}

/// (is_safe, rule ids) of a check answer.
#[track_caller]
pub(crate) fn verdict(app: &TestApp, body: &Value) -> (bool, Vec<String>) {
    let r = app.check(body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let rules = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["rule"].as_str().unwrap_or("").to_string())
        .collect();
    (v["is_safe"].as_bool().expect("is_safe"), rules)
}

#[test]
fn the_hosted_apis_refund_example_blocks_750_passes_450_and_750_once_after_an_approval() {
    // Arrange
    let app = TestApp::spawn();
    let trace = app.new_run_with_prompt(ACME);

    // Act / Assert
    let (safe, rules) = verdict(&app, &refund_check(&trace, 750.0));
    assert!(
        !safe && rules.contains(&"prompt.amount_limit".to_string()),
        "{rules:?}"
    );
    assert!(
        verdict(&app, &refund_check(&trace, 450.0)).0,
        "450 is under the limit"
    );
    assert_eq!(app.event(&approval(&trace, "process_refund")).status, 200);
    assert!(
        verdict(&app, &refund_check(&trace, 750.0)).0,
        "approved once"
    );
    assert!(
        !verdict(&app, &refund_check(&trace, 750.0)).0,
        "the approval is used up"
    );
}

#[test]
fn a_blocked_reasoning_starts_with_the_tool_and_states_the_limit() {
    let app = TestApp::spawn();
    let trace = app.new_run_with_prompt(ACME);
    let r = app.check(&refund_check(&trace, 750.0)).json();
    let reasoning = r["reasoning"].as_str().expect("reasoning");
    assert!(reasoning.starts_with("process_refund: "), "{reasoning}");
    assert!(
        reasoning.contains("750") && reasoning.contains("500"),
        "{reasoning}"
    );
}

#[test]
fn approvals_and_repetitions_survive_a_restart() {
    // Arrange: a policy that needs approvals and allows 2 identical calls.
    let dir = fresh_dir("policy-restart");
    let policy = dir.join("p.toml");
    std::fs::write(
        &policy,
        "[[section]]\nrequire_approval = [\"process_refund\"]\nloop_max_repeats = 2\n",
    )
    .expect("write policy");
    let flags = ["--policy", policy.to_str().expect("utf-8 path")];
    let mut app = TestApp::spawn_in(&dir, &flags);
    let trace = app.new_run_with_prompt("You process refunds.");
    assert!(
        !verdict(&app, &refund_check(&trace, 10.0)).0,
        "needs an approval"
    );
    assert_eq!(app.event(&approval(&trace, "process_refund")).status, 200);

    // Act: crash and restart; the state is rebuilt from the stored history.
    app.kill();
    let app = TestApp::spawn_in(&dir, &flags);

    // Assert
    let (safe, _) = verdict(&app, &refund_check(&trace, 10.0));
    assert!(safe, "the approval logged before the crash still counts");
    let (safe, rules) = verdict(&app, &refund_check(&trace, 10.0));
    assert!(!safe, "the approval was used before this call");
    assert!(
        rules.contains(&"tool.require_approval".to_string()),
        "{rules:?}"
    );
    assert!(
        rules.contains(&"loop.repeat".to_string()),
        "the third identical call, counting the ones before the crash: {rules:?}"
    );
}

#[test]
fn serve_applies_its_policy_file_and_refuses_a_bad_one_naming_the_line() {
    // Arrange
    let dir = fresh_dir("policy-serve");
    let good = dir.join("good.toml");
    std::fs::write(&good, "[[section]]\ndeny_tools = [\"delete_*\"]\n").expect("write");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[section]]\n\ndeny_tools = [\"a\"]\nallow_tool = []\n",
    )
    .expect("write");

    // Act
    let app = TestApp::spawn_with(&["--policy", good.to_str().expect("utf-8")]);
    let trace = app.new_run();
    let body = json!({"event_type": "action_check", "trace_id": trace, "timestamp": 1,
                      "content": "{}", "schema": "{\"type\":\"function\",\"name\":\"delete_user\"}"});
    let (safe, rules) = verdict(&app, &body);
    let refused = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(Storage::in_dir(&dir, "rw").args())
        .arg("--policy")
        .arg(&bad)
        .env("RUST_LOG", "error")
        .output()
        .expect("run serve");

    // Assert
    assert!(!safe && rules == ["tool.deny"], "{rules:?}");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains("line 4"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn policy_check_accepts_the_fixture_policies_and_rejects_errors_with_their_line() {
    for name in ["customer-service", "coding-agent", "payments"] {
        let path = repo(&format!("fixtures/policies/{name}.toml"));
        let out = runwarden(&["policy", "check", path.to_str().expect("utf-8")]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = fresh_dir("policy-check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[section]]\n[[section.args]]\ntool = \"x\"\npath = \"a\"\ndeny_patterns = [\"(\"]\n",
    )
    .expect("write");
    let out = runwarden(&["policy", "check", bad.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 5") && stderr.contains("regular expression"),
        "{stderr}"
    );
}

/// The session files (`fixtures/sessions/`, `fixtures/checks/`) and the policy each names in its
/// `// policy:` header.
fn sessions() -> Vec<(PathBuf, Option<PathBuf>)> {
    let mut out: Vec<_> = ["fixtures/sessions", "fixtures/checks"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo(d)).expect("fixture directory"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read session");
            let policy = text
                .lines()
                .find_map(|l| l.strip_prefix("// policy: "))
                .map(|rel| repo(rel.trim()));
            (p, policy)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_session_fixture_replays_with_every_expectation_met() {
    let sessions = sessions();
    assert!(sessions.len() >= 4, "{sessions:?}");
    for (session, policy) in sessions {
        let mut args = vec!["replay".to_string(), session.display().to_string()];
        if let Some(p) = &policy {
            args.extend(["--policy".to_string(), p.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = runwarden(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}:\n{stdout}\n{}",
            session.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.contains("UNMET"), "{stdout}");
        assert!(
            stdout.contains("expectations unmet"),
            "summary line: {stdout}"
        );
    }
}

#[test]
fn every_rule_fires_in_some_session_fixture() {
    let mut expected: Vec<String> = Vec::new();
    for (session, _) in sessions() {
        for line in std::fs::read_to_string(&session).expect("read").lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line)
                && let Some(rule) = v["expect"]["rule"].as_str()
            {
                expected.push(rule.to_string());
            }
        }
    }
    let missing: Vec<&&str> = ALL_RULES
        .iter()
        .filter(|r| !expected.iter().any(|e| e == *r))
        .collect();
    assert!(
        missing.is_empty(),
        "rules no session expects to fire: {missing:?}"
    );
}

#[test]
fn replay_exits_1_and_names_the_line_of_an_unmet_expectation() {
    let dir = fresh_dir("replay");
    let file = dir.join("s.jsonl");
    let check = json!({"kind": "check", "timestamp": 1, "content": "{}",
                       "schema": "{\"type\":\"function\",\"name\":\"noop\"}",
                       "expect": {"is_safe": false}});
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            json!({"kind": "run", "agent_id": "a", "timestamp": "2024-01-15T14:30:45Z", "system_prompt": ""}),
            check
        ),
    )
    .expect("write");
    let out = runwarden(&["replay", file.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("line 2") && stdout.contains("UNMET"),
        "{stdout}"
    );
}

#[test]
fn the_same_check_gets_the_same_verdict_after_a_restart() {
    // Arrange: a run with history, judged once.
    let dir = fresh_dir("policy-same-verdict");
    let mut app = TestApp::spawn_in(&dir, &[]);
    let trace = app.new_run_with_prompt(ACME);
    assert_eq!(app.event(&crate::helpers::user_event(&trace)).status, 200);
    let before = app.check(&refund_check(&trace, 750.0)).json();

    // Act
    app.kill();
    let app = TestApp::spawn_in(&dir, &[]);
    let after = app.check(&refund_check(&trace, 750.0)).json();

    // Assert: everything but the new check's id and time is identical.
    for field in ["is_safe", "reasoning", "findings"] {
        assert_eq!(before[field], after[field], "{field}");
    }
}

#[test]
fn an_exported_run_replays_offline_with_its_stored_verdicts_as_expectations() {
    // Arrange: a run with an approval flow, recorded over HTTP.
    let mut app = TestApp::spawn();
    let trace = app.new_run_with_prompt(ACME);
    assert_eq!(app.event(&crate::helpers::user_event(&trace)).status, 200);
    for body in [
        refund_check(&trace, 750.0),
        approval(&trace, "process_refund"),
        refund_check(&trace, 750.0),
        refund_check(&trace, 750.0),
    ] {
        let r = if body["event_type"] == "system" {
            app.event(&body)
        } else {
            app.check(&body)
        };
        assert_eq!(r.status, 200, "{}", r.text());
    }
    app.terminate();
    let file = app.dir.join("export.jsonl");
    let [db_flag, db] = app.storage.args();

    // Act
    let exported = runwarden(&[
        "export",
        "--trace-id",
        &trace,
        &db_flag,
        &db,
        "-o",
        file.to_str().expect("utf-8"),
    ]);
    let replayed = runwarden(&["replay", file.to_str().expect("utf-8")]);

    // Assert
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("read the export");
    assert_eq!(text.lines().count(), 6, "run, 2 events, 3 checks:\n{text}");
    let stdout = String::from_utf8_lossy(&replayed.stdout);
    assert!(replayed.status.success(), "{stdout}");
    assert!(
        stdout.contains("3 checks: 1 passed, 2 blocked; 0 expectations unmet"),
        "{stdout}"
    );
}

/// Exports every run of `db` to a string.
fn export_all(db: &Storage) -> String {
    let [db_flag, db] = db.args();
    let out = runwarden(&["export", "--all", &db_flag, &db]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 export")
}

#[test]
fn import_keeps_ids_and_verdicts_and_a_second_import_changes_nothing() {
    // Arrange: a recorded run, exported.
    let mut app = TestApp::spawn();
    let trace = app.new_run_with_prompt(ACME);
    assert_eq!(app.event(&crate::helpers::user_event(&trace)).status, 200);
    assert_eq!(app.check(&refund_check(&trace, 750.0)).status, 200);
    app.terminate();
    let dir = fresh_dir("import");
    let file = dir.join("export.jsonl");
    std::fs::write(&file, export_all(&app.storage)).expect("write");
    let target = Storage::in_dir(&dir, "target");
    let [target_flag, target_s] = target.args();
    let file_s = file.to_str().expect("utf-8");

    // Act
    let first = runwarden(&["import", file_s, &target_flag, &target_s]);
    let second = runwarden(&["import", file_s, &target_flag, &target_s]);

    // Assert
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("imported 1 run (2 events and checks)")
    );
    assert!(second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("nothing changed"),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
    assert_eq!(
        export_all(&target),
        std::fs::read_to_string(&file).expect("read"),
        "the imported run exports exactly as the original"
    );
}

#[test]
fn import_skips_a_conflicting_run_and_a_run_with_a_bad_line_writing_nothing_of_them() {
    // Arrange: a database with one run, and a file with a changed copy of it and a new run
    // whose second event is malformed.
    let mut app = TestApp::spawn();
    let trace = app.new_run_with_prompt("original prompt");
    app.terminate();
    let exported = export_all(&app.storage);
    let conflicting = exported.replace("original prompt", "changed prompt");
    let new_run = [
        json!({"kind": "run", "trace_id": "5b1e8e6a-2c4d-4f7a-9e3b-1a2b3c4d5eff", "agent_id": "a",
               "timestamp": "2024-01-15T14:30:45Z", "system_prompt": ""})
        .to_string(),
        json!({"kind": "event", "event_type": "user", "timestamp": 1, "content": "{}", "schema": "{}"})
            .to_string(),
        json!({"kind": "event", "event_type": "user", "timestamp": 1, "content": "not json", "schema": "{}"})
            .to_string(),
    ]
    .join("\n");
    let file = app.dir.join("mixed.jsonl");
    std::fs::write(&file, format!("{conflicting}{new_run}\n")).expect("write");

    // Act
    let [db_flag, db] = app.storage.args();
    let out = runwarden(&["import", file.to_str().expect("utf-8"), &db_flag, &db]);

    // Assert
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&trace) && stderr.contains("not overwritten"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 4") && stderr.contains("skipped"),
        "{stderr}"
    );
    let prompt = app.query_text(
        "SELECT system_prompt FROM runs WHERE trace_id = ?1",
        &[&trace],
    );
    assert_eq!(prompt, "original prompt");
    let runs = crate::helpers::count_rows(&app, "runs");
    assert_eq!(runs, 1, "nothing of the run with a bad line was written");
}
