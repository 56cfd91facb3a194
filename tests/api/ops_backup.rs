//! `runwarden backup OUT --db FILE`: a consistent copy of a running server's database (SQLite's
//! online backup API). Under concurrent writes the copy opens, passes `PRAGMA integrity_check`
//! and holds every run and event acknowledged before the backup started, while the server
//! keeps acknowledging writes; an existing OUT is replaced only with `--force` (never the
//! database itself); a failed backup leaves nothing under OUT; `--database-url` is refused
//! (SQLite only); and `serve --db` on the copy serves its runs, events and checks.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::faults::Tmpfs;
use crate::helpers::{
    TestApp, assert_one_error_line, fresh_dir, run_to_exit, skip_on_postgres, transfer_check,
    user_event,
};

/// A registration with a client-chosen trace id and a 16 KiB prompt (to make the database
/// large enough for the copy to take several steps).
fn big_registration(trace_id: &str) -> Value {
    json!({"agent_id": "backup-agent", "timestamp": "2024-01-15T14:30:45.123Z",
           "system_prompt": format!("backup me {}", "b".repeat(16 * 1024)),
           "trace_id": trace_id})
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// `(pages, bytes)` from the backup's report line.
fn reported(stdout: &str) -> (u64, u64) {
    let number_before = |word: &str| -> u64 {
        let at = stdout
            .find(&format!(" {word}"))
            .unwrap_or_else(|| panic!("no {word:?} in {stdout:?}"));
        stdout[..at]
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number before {word:?} in {stdout:?}"))
    };
    (number_before("pages"), number_before("bytes"))
}

#[test]
fn a_backup_under_write_load_is_sound_and_holds_every_write_acknowledged_before_it() {
    if skip_on_postgres("runwarden backup copies SQLite files (PostgreSQL: pg_dump)") {
        return;
    }
    // Arrange: writers register runs (16 KiB prompts) and log events without pause.
    const WRITERS: usize = 4;
    const RUNS_BEFORE: usize = 400;
    let app = TestApp::spawn();
    let runs: Mutex<Vec<String>> = Mutex::default();
    let events: Mutex<Vec<(String, String)>> = Mutex::default();
    let acks = AtomicUsize::new(0);
    let unexpected: Mutex<Vec<String>> = Mutex::default();
    let stop = AtomicBool::new(false);
    let out_dir = fresh_dir("backup-load");
    let out = out_dir.join("copy.db");
    let (acked_runs, acked_events, output, acks_during, elapsed) = std::thread::scope(|s| {
        for _ in 0..WRITERS {
            let (app, runs, events, acks, stop, unexpected) =
                (&app, &runs, &events, &acks, &stop, &unexpected);
            s.spawn(move || {
                let fail = |what: &str, r: &crate::helpers::Resp| {
                    unexpected.lock().expect("lock").push(format!(
                        "{what}: {} {}",
                        r.status,
                        r.text()
                    ));
                    stop.store(true, Ordering::SeqCst);
                };
                while !stop.load(Ordering::SeqCst) {
                    let id = uuid::Uuid::new_v4().to_string();
                    let r = app.register(&big_registration(&id));
                    if r.status != 200 {
                        return fail("register", &r);
                    }
                    runs.lock().expect("lock").push(id.clone());
                    acks.fetch_add(1, Ordering::SeqCst);
                    let r = app.event(&user_event(&id));
                    if r.status != 200 {
                        return fail("event", &r);
                    }
                    let event_id = r.json()["event_id"].as_str().expect("event_id").to_string();
                    events.lock().expect("lock").push((event_id, id));
                    acks.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while runs.lock().expect("lock").len() < RUNS_BEFORE && !stop.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                stop.store(true, Ordering::SeqCst);
                panic!("the writers made no progress");
            }
            std::thread::sleep(Duration::from_millis(10));
        }

        // Act: what is acknowledged now must be in the copy; the writers go on meanwhile.
        let acked_runs = runs.lock().expect("lock").clone();
        let acked_events = events.lock().expect("lock").clone();
        let acks_before = acks.load(Ordering::SeqCst);
        let started = Instant::now();
        let output = run_to_exit(&["backup", path_str(&out), "--db", path_str(app.db_file())]);
        let elapsed = started.elapsed();
        let acks_during = acks.load(Ordering::SeqCst) - acks_before;
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
        (acked_runs, acked_events, output, acks_during, elapsed)
    });

    // Assert
    let unexpected = unexpected.into_inner().expect("lock");
    assert!(
        unexpected.is_empty(),
        "writes failed around the backup: {unexpected:?}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "backup: {:?} {stdout} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let (pages, bytes) = reported(&stdout);
    eprintln!(
        "backup under load: {stdout}  ({} runs acknowledged before it; {acks_during} writes \
         acknowledged while it ran for {elapsed:.1?}, process start included)",
        acked_runs.len()
    );
    assert!(pages > 1024, "more than one step of 1024 pages: {stdout}");
    assert_eq!(
        bytes,
        std::fs::metadata(&out).expect("the copy").len(),
        "{stdout}"
    );
    assert!(
        acks_during > 0,
        "the server acknowledged no write while the backup ran ({elapsed:?})"
    );
    assert_eq!(
        listing(&out_dir),
        ["copy.db"],
        "one file, no partial file or -wal"
    );
    let copy = rusqlite::Connection::open(&out).expect("the copy opens");
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok", "PRAGMA integrity_check of the copy");
    let mode: String = copy
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "delete", "a self-contained file");
    let stored: HashSet<String> = copy
        .prepare("SELECT trace_id FROM runs")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("read the runs");
    let missing: Vec<&String> = acked_runs
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged runs missing from the copy: {missing:?}"
    );
    let stored_events: HashSet<(String, String)> = copy
        .prepare("SELECT event_id, trace_id FROM events")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("read the events");
    let missing: Vec<_> = acked_events
        .iter()
        .filter(|e| !stored_events.contains(*e))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged events missing from the copy: {missing:?}"
    );
}

#[test]
fn a_backup_replaces_an_existing_file_only_with_force_and_never_the_database_itself() {
    if skip_on_postgres("runwarden backup copies SQLite files (PostgreSQL: pg_dump)") {
        return;
    }
    // Arrange
    let app = TestApp::spawn();
    let trace = app.new_run();
    let out_dir = fresh_dir("backup-exists");
    let out = out_dir.join("copy.db");
    std::fs::write(&out, "an older backup").expect("write OUT");
    let (out_s, db_s) = (path_str(&out), path_str(app.db_file()));

    // Act
    let refused = run_to_exit(&["backup", out_s, "--db", db_s]);

    // Assert
    let line = assert_one_error_line(&refused, "OUT exists");
    assert!(
        line.contains(out_s) && line.contains("--force"),
        "names OUT and --force: {line}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).expect("OUT"),
        "an older backup",
        "OUT untouched"
    );
    assert_eq!(listing(&out_dir), ["copy.db"], "no partial file left");

    // Act
    let forced = run_to_exit(&["backup", out_s, "--db", db_s, "--force"]);

    // Assert
    assert!(
        forced.status.success(),
        "--force: {}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let copy = rusqlite::Connection::open(&out).expect("OUT is a database now");
    let n: i64 = copy
        .query_row(
            "SELECT count(*) FROM runs WHERE trace_id = ?1",
            [&trace],
            |r| r.get(0),
        )
        .expect("read the copy");
    assert_eq!(n, 1, "the copy holds the run");
    assert_eq!(listing(&out_dir), ["copy.db"], "no partial file left");

    // Act / Assert: never onto the database itself, even with --force.
    let onto_itself = run_to_exit(&["backup", db_s, "--db", db_s, "--force"]);
    let line = assert_one_error_line(&onto_itself, "OUT is the database");
    assert!(line.contains("the database being backed up"), "{line}");
    assert_eq!(
        app.get(&format!("/v1/runs/{trace}")).status,
        200,
        "the server still serves its run"
    );

    // Act / Assert: a missing database is an error, and creates nothing.
    let missing_out = out_dir.join("other.db");
    let missing = run_to_exit(&[
        "backup",
        path_str(&missing_out),
        "--db",
        path_str(&out_dir.join("no-such.db")),
    ]);
    let line = assert_one_error_line(&missing, "no database");
    assert!(line.contains("no-such.db"), "{line}");
    assert_eq!(listing(&out_dir), ["copy.db"], "nothing created");
}

#[test]
fn backup_with_a_postgresql_url_says_it_is_for_sqlite_and_names_pg_dump() {
    if skip_on_postgres("runwarden backup copies SQLite files (PostgreSQL: pg_dump)") {
        return;
    }
    // Arrange
    let out_dir = fresh_dir("backup-pg");
    let out = out_dir.join("copy.db");

    // Act
    let output = run_to_exit(&[
        "backup",
        path_str(&out),
        "--database-url",
        "postgres://rw:secret@127.0.0.1:9/runwarden",
    ]);

    // Assert
    let line = assert_one_error_line(&output, "--database-url");
    assert!(
        line.contains("SQLite") && line.contains("pg_dump"),
        "{line}"
    );
    assert!(
        !line.contains("secret"),
        "no password in the message: {line}"
    );
    assert!(listing(&out_dir).is_empty(), "nothing written");
}

#[test]
fn a_backup_that_fails_for_want_of_space_leaves_nothing_under_out() {
    if skip_on_postgres("runwarden backup copies SQLite files (PostgreSQL: pg_dump)") {
        return;
    }
    // Arrange: a database of about 6 MiB, and 1 MiB of room where the copy goes.
    let Some(fs) = Tmpfs::mount("backup-small", "1m") else {
        return;
    };
    let app = TestApp::spawn();
    for _ in 0..300 {
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(app.register(&big_registration(&id)).status, 200);
    }
    let out = fs.dir.join("copy.db");

    // Act
    let output = run_to_exit(&["backup", path_str(&out), "--db", path_str(app.db_file())]);

    // Assert
    let line = assert_one_error_line(&output, "a full disk under OUT");
    assert!(line.contains("full"), "says the disk is full: {line}");
    assert!(
        listing(&fs.dir).is_empty(),
        "no OUT, no partial file: {:?}",
        listing(&fs.dir)
    );
}

#[test]
fn serving_a_backup_restores_its_runs_events_and_checks() {
    if skip_on_postgres("runwarden backup copies SQLite files (PostgreSQL: pg_dump)") {
        return;
    }
    // Arrange: a run with events and a blocked check, a second run, backed up while serving;
    // then the original is gone.
    let mut original = TestApp::spawn();
    let trace = original.new_run();
    let other = original.new_run();
    let mut event_ids = Vec::new();
    for _ in 0..3 {
        let r = original.event(&user_event(&trace));
        assert_eq!(r.status, 200, "{}", r.text());
        event_ids.push(r.json()["event_id"].as_str().expect("event_id").to_string());
    }
    let blocked = original.check(&transfer_check(
        &trace,
        &json!({"amount": "lots", "recipient": "x"}),
    ));
    assert_eq!(blocked.status, 200, "{}", blocked.text());
    assert_eq!(blocked.json()["is_safe"], false, "{}", blocked.text());
    let restore_dir = fresh_dir("backup-restore");
    let copy = restore_dir.join("rw.db");
    let backed_up = run_to_exit(&[
        "backup",
        path_str(&copy),
        "--db",
        path_str(original.db_file()),
    ]);
    assert!(
        backed_up.status.success(),
        "{}",
        String::from_utf8_lossy(&backed_up.stderr)
    );
    original.kill();
    std::fs::remove_dir_all(&original.dir).expect("lose the original");

    // Act
    let restored = TestApp::spawn_in(&restore_dir, &[]);

    // Assert
    let run = restored.get(&format!("/v1/runs/{trace}"));
    assert_eq!(run.status, 200, "{}", run.text());
    let run = run.json();
    assert_eq!(
        (
            &run["event_count"],
            &run["check_count"],
            &run["blocked_check_count"]
        ),
        (&json!(3), &json!(1), &json!(1)),
        "{run}"
    );
    assert_eq!(restored.get(&format!("/v1/runs/{other}")).status, 200);
    let events = restored.get(&format!("/v1/events?trace_id={trace}")).json();
    let listed: Vec<&str> = events["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(listed, event_ids, "the events, in order");
    let checks = restored.get(&format!("/v1/checks?trace_id={trace}")).json();
    assert_eq!(
        checks["data"][0]["is_safe"], false,
        "the stored verdict: {checks}"
    );
    let next = restored.event(&user_event(&trace));
    assert_eq!(
        next.status,
        200,
        "the restored run takes events: {}",
        next.text()
    );
    restored
        .register(
            &json!({"agent_id": "a", "timestamp": "2024-01-15T14:30:45.123Z",
                          "system_prompt": "again", "trace_id": trace}),
        )
        .assert_error(
            409,
            "TRACE_ID_CONFLICT",
            Some("trace_id"),
            "the trace id stays taken",
        );
}
