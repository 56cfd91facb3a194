//! Faults of the disk under the database: a full disk answers writes 503 STORAGE_UNAVAILABLE
//! (with `Retry-After`), never 500, the server stays up and serves reads, nothing is
//! half-written, and writes work again once space is freed, without a restart. `GET /healthz`
//! stays 200 while the disk is full: the database still answers (reads are served), and a
//! restart, which is what a failing health check leads to, would not free any space; the
//! 503s of the writes are the signal. A database path that cannot be used (read-only, under a
//! regular file, a directory, not a database) is one `error:` line and exit code 1 at
//! start-up.
//!
//! The disk-full and read-only cases mount a small tmpfs, which needs root (the suite runs as
//! root here and in CI); without it they print `skipped: cannot mount a tmpfs (needs root)`
//! and pass.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    Resp, TestApp, assert_one_error_line, fresh_dir, run_to_exit, skip_on_postgres,
};

/// A tmpfs mounted on a fresh directory for one test, unmounted when dropped (after the
/// server on it, which must be declared after it so that it is dropped first).
pub struct Tmpfs {
    /// The mount point.
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. `4m`); `None`, after
    /// printing why, when this process may not mount.
    pub fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let dir = fresh_dir(name);
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs (needs root)");
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Tmpfs { dir })
    }

    /// Makes the mount read-only.
    pub fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {} read-only", self.dir.display());
    }

    /// Free bytes on the mount.
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.dir)
            .output()
            .expect("run df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df's answer")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file on it: detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Whether the process is running (not gone, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Writes `path` until the filesystem is full, then shrinks it by `leave` bytes, so that
/// about that much room is left.
fn fill_leaving(path: &Path, leave: u64) {
    let mut file = std::fs::File::create(path).expect("create the junk file");
    let chunk = vec![0x5a_u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let len = file.metadata().expect("junk size").len();
    file.set_len(len.saturating_sub(leave))
        .expect("shrink the junk file");
}

fn registration(trace_id: &str) -> Value {
    json!({"agent_id": "disk-agent", "timestamp": "2024-01-15T14:30:45.123Z",
           "system_prompt": format!("fill the disk {}", "p".repeat(1000)), "trace_id": trace_id})
}

/// An event whose content carries `marker`, so that the database can be searched for it.
fn marked_event(trace_id: &str, marker: &str) -> Value {
    let content = json!({"message": format!("{marker} {}", "e".repeat(2000))}).to_string();
    json!({"event_type": "user", "trace_id": trace_id, "timestamp": 1678886405.123,
           "content": content,
           "schema": "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\"}}}"})
}

/// What the writers saw while the disk filled up.
#[derive(Default)]
struct Outcomes {
    /// Registrations answered 200 (client-chosen trace ids).
    runs_ok: Mutex<Vec<String>>,
    /// Registrations answered 503.
    runs_failed: Mutex<Vec<String>>,
    /// Events answered 200: (event_id, trace_id, marker).
    events_ok: Mutex<Vec<(String, String, String)>>,
    /// Markers of events answered 503.
    events_failed: Mutex<Vec<String>>,
    /// Answers other than 200 and a proper 503.
    unexpected: Mutex<Vec<String>>,
    /// 503 answers so far.
    failures: AtomicUsize,
}

impl Outcomes {
    /// Sorts one answer: `Some(true)` 200, `Some(false)` a proper 503 (STORAGE_UNAVAILABLE
    /// with Retry-After), `None` anything else (recorded).
    fn judge(&self, what: &str, resp: &Resp) -> Option<bool> {
        if resp.status == 200 {
            return Some(true);
        }
        let proper = resp.status == 503
            && serde_json::from_slice::<Value>(&resp.body)
                .is_ok_and(|v| v["error"]["code"] == "STORAGE_UNAVAILABLE")
            && resp
                .header("Retry-After")
                .is_some_and(|v| v.parse::<u32>().is_ok_and(|s| s >= 1));
        if proper {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Some(false);
        }
        self.unexpected.lock().expect("lock").push(format!(
            "{what}: {} {:?} {}",
            resp.status,
            resp.header("Retry-After"),
            resp.text()
        ));
        None
    }

    /// One writer: registers runs and logs events on its acknowledged runs until `stop`.
    fn writer(&self, app: &TestApp, client: usize, stop: &AtomicBool) {
        let mut mine: Vec<String> = Vec::new();
        for n in 0usize.. {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let id = uuid::Uuid::new_v4().to_string();
            match self.judge("register", &app.register(&registration(&id))) {
                Some(true) => {
                    self.runs_ok.lock().expect("lock").push(id.clone());
                    mine.push(id);
                }
                Some(false) => self.runs_failed.lock().expect("lock").push(id),
                None => return,
            }
            let Some(target) = mine.get(n % mine.len().max(1)).cloned() else {
                continue;
            };
            for k in 0..3 {
                let marker = format!("marker-{client}-{n}-{k}-{}", uuid::Uuid::new_v4());
                let resp = app.event(&marked_event(&target, &marker));
                match self.judge("event", &resp) {
                    Some(true) => {
                        let event_id = resp.json()["event_id"]
                            .as_str()
                            .expect("event_id")
                            .to_string();
                        self.events_ok.lock().expect("lock").push((
                            event_id,
                            target.clone(),
                            marker,
                        ));
                    }
                    Some(false) => self.events_failed.lock().expect("lock").push(marker),
                    None => return,
                }
            }
        }
    }
}

#[test]
fn a_full_disk_answers_503_keeps_serving_and_recovers_without_a_restart_losing_nothing() {
    if skip_on_postgres("a SQLite file on a small or read-only filesystem") {
        return;
    }
    // Arrange: a server on a 16 MiB tmpfs with some runs, then the disk filled up to
    // about 256 KiB.
    const WRITERS: usize = 4;
    const FAILURES_WANTED: usize = 200;
    let Some(fs) = Tmpfs::mount("faults-full", "16m") else {
        return;
    };
    let mut app = TestApp::spawn_in(&fs.dir, &[]);
    let before: Vec<String> = (0..20).map(|_| app.new_run()).collect();
    let junk = fs.dir.join("junk");
    fill_leaving(&junk, 256 * 1024);
    let free_at_start = fs.free_bytes();

    // Act: writers until the writes have failed often enough.
    let out = Outcomes::default();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for client in 0..WRITERS {
            let (out, app, stop) = (&out, &app, &stop);
            s.spawn(move || out.writer(app, client, stop));
        }
        while out.failures.load(Ordering::SeqCst) < FAILURES_WANTED
            && out.unexpected.lock().expect("lock").is_empty()
            && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let unexpected = out.unexpected.lock().expect("lock").clone();
    let (runs_ok, runs_failed) = (
        out.runs_ok.lock().expect("lock").clone(),
        out.runs_failed.lock().expect("lock").clone(),
    );
    let (events_ok, events_failed) = (
        out.events_ok.lock().expect("lock").clone(),
        out.events_failed.lock().expect("lock").clone(),
    );
    eprintln!(
        "disk full: {} KiB free at the start; {} runs and {} events acknowledged, then {} \
         registrations and {} events answered 503, in {:.1?}",
        free_at_start / 1024,
        runs_ok.len(),
        events_ok.len(),
        runs_failed.len(),
        events_failed.len(),
        started.elapsed()
    );

    // Assert: only 200 or a proper 503, enough 503s; the server is up and reads work.
    assert!(
        unexpected.is_empty(),
        "answers other than 200 or 503 STORAGE_UNAVAILABLE with Retry-After: {unexpected:?}"
    );
    assert!(
        out.failures.load(Ordering::SeqCst) >= FAILURES_WANTED,
        "the full disk made only {} writes fail in {:.1?}",
        out.failures.load(Ordering::SeqCst),
        started.elapsed()
    );
    assert!(alive(app.pid()), "the server is still running");
    let health = app.get("/healthz");
    assert_eq!(
        health.status,
        200,
        "healthz while the disk is full: the database still answers reads: {}",
        health.text()
    );
    let read = app.get(&format!("/v1/runs/{}", before[0]));
    assert_eq!(
        read.status,
        200,
        "a read while the disk is full: {}",
        read.text()
    );
    let still_full = app.register(&registration(&uuid::Uuid::new_v4().to_string()));
    still_full.assert_error(503, "STORAGE_UNAVAILABLE", None, "a write while still full");

    // Act: free the space.
    std::fs::remove_file(&junk).expect("remove the junk file");

    // Assert: writes work again on the same process.
    let deadline = Instant::now() + Duration::from_secs(5);
    let recovered = loop {
        let id = uuid::Uuid::new_v4().to_string();
        let resp = app.register(&registration(&id));
        if resp.status == 200 {
            break id;
        }
        resp.assert_error(
            503,
            "STORAGE_UNAVAILABLE",
            None,
            "a write just after freeing",
        );
        assert!(
            Instant::now() < deadline,
            "writes still fail 5 s after space was freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut after_runs = vec![recovered];
    let mut after_events = Vec::new();
    for n in 0..20 {
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(
            app.register(&registration(&id)).status,
            200,
            "write {n} after freeing"
        );
        after_runs.push(id);
        let target = &before[n % before.len()];
        let marker = format!("after-{n}");
        let resp = app.event(&marked_event(target, &marker));
        assert_eq!(resp.status, 200, "event {n} after freeing: {}", resp.text());
        let event_id = resp.json()["event_id"]
            .as_str()
            .expect("event_id")
            .to_string();
        after_events.push((event_id, target.clone(), marker));
    }
    let status = app.terminate();
    assert!(status.success(), "a clean stop after the fault: {status:?}");

    // Assert: the file is sound; every acknowledged write is there, no failed one is, not
    // even in part; every run's sequence numbers are gap-free.
    let conn = rusqlite::Connection::open(app.db_file()).expect("open the database");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok", "PRAGMA integrity_check");
    let stored_runs: HashSet<String> = conn
        .prepare("SELECT trace_id FROM runs")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("read the runs");
    for id in before.iter().chain(&runs_ok).chain(&after_runs) {
        assert!(stored_runs.contains(id), "acknowledged run {id} is missing");
    }
    for id in &runs_failed {
        assert!(
            !stored_runs.contains(id),
            "run {id} answered 503 but is stored"
        );
    }
    let stored_events: Vec<(String, String, String)> = conn
        .prepare("SELECT event_id, trace_id, content FROM events")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .expect("read the events");
    let by_id: std::collections::HashMap<&str, (&str, &str)> = stored_events
        .iter()
        .map(|(e, t, c)| (e.as_str(), (t.as_str(), c.as_str())))
        .collect();
    for (event_id, trace_id, marker) in events_ok.iter().chain(&after_events) {
        let (stored_trace, content) = by_id
            .get(event_id.as_str())
            .unwrap_or_else(|| panic!("acknowledged event {event_id} is missing"));
        assert_eq!(stored_trace, trace_id, "event {event_id} under its run");
        assert!(
            content.contains(marker.as_str()),
            "event {event_id} holds its content"
        );
    }
    let mut stray = conn
        .prepare("SELECT count(*) FROM events WHERE instr(content, ?1) > 0")
        .expect("prepare");
    for marker in &events_failed {
        let n: i64 = stray
            .query_row([marker], |r| r.get(0))
            .expect("search a marker");
        assert_eq!(n, 0, "the event {marker} answered 503 but is stored");
    }
    let gaps: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs r
              WHERE r.last_seq != (SELECT count(*) FROM (
                        SELECT seq FROM events e WHERE e.trace_id = r.trace_id
                        UNION ALL SELECT seq FROM checks c WHERE c.trace_id = r.trace_id))
                 OR r.last_seq != coalesce((SELECT max(seq) FROM (
                        SELECT seq FROM events e WHERE e.trace_id = r.trace_id
                        UNION ALL SELECT seq FROM checks c WHERE c.trace_id = r.trace_id)), 0)",
            [],
            |r| r.get(0),
        )
        .expect("compare sequence numbers");
    assert_eq!(
        gaps, 0,
        "runs whose sequence numbers have gaps or a stray last_seq"
    );
}

/// Bytes of one WAL frame with 4 KiB pages (24-byte frame header).
const WAL_FRAME: u64 = 4096 + 24;

/// The first WAL frame whose index entry needs a third 32 KiB region of the `-shm` file (the
/// first region indexes 4062 frames, each further one 4096).
const FIRST_FRAME_OF_SHM_REGION_3: u64 = 4062 + 4096 + 1;

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn a_full_disk_while_the_wal_index_grows_answers_503_not_500() {
    if skip_on_postgres("a SQLite file on a small or read-only filesystem") {
        return;
    }
    // Arrange: a reader holds an old snapshot, so that the checkpointer cannot restart the WAL
    // and it grows to just below the frame whose index entry needs a new -shm region; then
    // the disk is filled completely.
    let Some(fs) = Tmpfs::mount("faults-shm", "64m") else {
        return;
    };
    let app = TestApp::spawn_in(&fs.dir, &[]);
    let trace = app.new_run();
    let reader = rusqlite::Connection::open(app.db_file()).expect("open the database");
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM runs;")
        .expect("hold a snapshot");
    let (wal, shm) = (fs.dir.join("rw.db-wal"), fs.dir.join("rw.db-shm"));
    let mut acked = 0;
    while file_len(&wal) / WAL_FRAME < FIRST_FRAME_OF_SHM_REGION_3 - 60 {
        let r = app.event(&marked_event(&trace, &format!("grow-{acked}")));
        assert_eq!(r.status, 200, "growing the WAL: {}", r.text());
        acked += 1;
    }
    let shm_before = file_len(&shm);
    assert_eq!(shm_before, 2 * 32 * 1024, "the -shm file has two regions");
    let junk = fs.dir.join("junk");
    fill_leaving(&junk, 0);

    // Act: one write at a time, giving back one page of disk after each that fails, until a
    // commit has reached the new region (the -shm file has begun to grow) and failed there.
    let mut statuses: Vec<u16> = Vec::new();
    let mut junk_len = file_len(&junk);
    let mut failed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_the_edge = loop {
        assert!(
            Instant::now() < deadline,
            "never reached the new -shm region: {statuses:?}"
        );
        let marker = format!("edge-{}", uuid::Uuid::new_v4());
        let resp = app.event(&marked_event(&trace, &marker));
        statuses.push(resp.status);
        if resp.status == 200 {
            acked += 1;
            assert_eq!(
                file_len(&shm),
                shm_before,
                "crossed into the new region with room to spare"
            );
            continue;
        }
        failed.push(marker);
        if file_len(&shm) > shm_before {
            break resp;
        }
        junk_len = junk_len.saturating_sub(4096);
        std::fs::File::options()
            .write(true)
            .open(&junk)
            .and_then(|f| f.set_len(junk_len))
            .expect("give back a page");
    };

    // Assert
    eprintln!(
        "WAL index on a full disk: {acked} events acknowledged, then {} attempts ({} of them \
         200) until the -shm file could not grow ({} -> {} bytes)",
        statuses.len(),
        statuses.iter().filter(|s| **s == 200).count(),
        shm_before,
        file_len(&shm)
    );
    at_the_edge.assert_error(
        503,
        "STORAGE_UNAVAILABLE",
        None,
        "the -shm file cannot grow",
    );
    assert!(at_the_edge.header("Retry-After").is_some(), "Retry-After");
    let marker = format!("edge-{}", uuid::Uuid::new_v4());
    let again = app.event(&marked_event(&trace, &marker));
    again.assert_error(
        503,
        "STORAGE_UNAVAILABLE",
        None,
        "the next write, still no room",
    );
    failed.push(marker);
    assert!(alive(app.pid()), "the server is still running");
    std::fs::remove_file(&junk).expect("free the disk");
    let after = app.event(&marked_event(&trace, "after"));
    assert_eq!(
        after.status,
        200,
        "a write once there is room: {}",
        after.text()
    );
    drop(reader);
    let conn = rusqlite::Connection::open(app.db_file()).expect("open the database");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok", "PRAGMA integrity_check");
    let (events, last_seq): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM events WHERE trace_id = ?1),
                    (SELECT last_seq FROM runs WHERE trace_id = ?1)",
            [&trace],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("count the events");
    assert_eq!(events, acked + 1, "every acknowledged event, no failed one");
    assert_eq!(last_seq, events, "sequence numbers without gaps");
    for marker in &failed {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE instr(content, ?1) > 0",
                [marker.as_str()],
                |r| r.get(0),
            )
            .expect("search a marker");
        assert_eq!(n, 0, "the failed event {marker} is not stored");
    }
}

#[test]
fn a_database_path_that_cannot_be_used_is_one_error_line_at_start_up() {
    if skip_on_postgres("a SQLite file on a small or read-only filesystem") {
        return;
    }
    // Arrange
    let dir = fresh_dir("faults-paths");
    let regular = dir.join("regular-file");
    std::fs::write(&regular, "not a directory").expect("write a file");
    let under_a_file = regular.join("x.db");
    let not_a_database = dir.join("notes.db");
    std::fs::write(&not_a_database, "plain text, not SQLite ".repeat(100)).expect("write");
    let cases: [(&Path, &str, &str); 3] = [
        (
            &under_a_file,
            "a path under a regular file",
            "is not a directory",
        ),
        (&dir, "a directory", "is a directory"),
        (
            &not_a_database,
            "a file that is not a database",
            "not a database",
        ),
    ];

    for (db, why, says) in cases {
        // Act
        let db = db.to_str().expect("a UTF-8 path");
        let output = run_to_exit(&["serve", "--addr", "127.0.0.1:0", "--db", db]);

        // Assert
        let line = assert_one_error_line(&output, why);
        assert!(line.contains(db), "{why}: names the path: {line}");
        assert!(line.contains(says), "{why}: says {says:?}: {line}");
    }
}

#[test]
fn a_database_on_a_read_only_filesystem_is_one_error_line_at_start_up() {
    if skip_on_postgres("a SQLite file on a small or read-only filesystem") {
        return;
    }
    // Arrange: one existing database and one place for a new one, on a read-only mount.
    let Some(fs) = Tmpfs::mount("faults-ro", "4m") else {
        return;
    };
    let existing = fs.dir.join("rw.db");
    let existing = existing.to_str().expect("a UTF-8 path").to_string();
    // `import` of an empty file creates the database (`keys list` refuses a missing one).
    let created = run_to_exit(&["import", "/dev/null", "--db", &existing]);
    assert!(created.status.success(), "create the database: {created:?}");
    fs.remount_read_only();
    let new = fs.dir.join("new.db");
    let new = new.to_str().expect("a UTF-8 path").to_string();

    for (db, why) in [
        (&existing, "an existing database"),
        (&new, "a new database"),
    ] {
        // Act
        let output = run_to_exit(&["serve", "--addr", "127.0.0.1:0", "--db", db]);

        // Assert
        let line = assert_one_error_line(&output, why);
        assert!(line.contains(db.as_str()), "{why}: names the path: {line}");
        assert!(
            line.to_lowercase().contains("read-only"),
            "{why}: says the filesystem is read-only: {line}"
        );
    }
    assert!(
        !Path::new(&new).exists(),
        "nothing was created on the read-only mount"
    );
}

/// Out of file descriptors (here: `ulimit -n 64` and 80 idle connections), tiny_http's accept
/// thread ends and nothing would ever accept again. The server notices (its nudger's
/// connections are refused), stops cleanly and exits 1 with one `error:` line, so that a
/// supervisor starts it again; every acknowledged write is there after the restart.
#[test]
fn a_listener_that_dies_of_too_many_connections_stops_the_process_with_an_error() {
    if skip_on_postgres("the descriptor limit of a SQLite server (PostgreSQL: same code path)") {
        return;
    }
    // Arrange
    let dir = fresh_dir("fd-limit");
    let db = dir.join("rw.db");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {} serve --addr 127.0.0.1:0 --db {}",
            crate::helpers::BIN,
            db.display()
        ))
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start runwarden under a descriptor limit");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the start-up line");
    let addr = crate::helpers::parse_startup_line(&line).expect("an address");
    let body = br#"{"agent_id":"a","timestamp":"2024-01-15T14:30:45Z","system_prompt":"p"}"#;
    let run = crate::helpers::http(
        addr,
        "POST",
        "/v1/register-agent-run",
        &[
            ("Content-Type".into(), "application/json".into()),
            ("Content-Length".into(), body.len().to_string()),
        ],
        body,
    );
    assert_eq!(run.status, 200, "{}", run.text());
    let trace_id = run.json()["trace_id"]
        .as_str()
        .expect("trace_id")
        .to_string();

    // Act: more idle connections than descriptors, then let them go.
    let held: Vec<_> = (0..80)
        .map_while(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server neither served nor exited after its listener died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    // Assert
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "exit status; stderr: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the HTTP listener stopped accepting connections"),
        "the last line says why: {last:?}"
    );
    let app = TestApp::spawn_in(&dir, &[]);
    let again = app.get(&format!("/v1/runs/{trace_id}"));
    assert_eq!(
        again.status,
        200,
        "the acknowledged run after a restart: {}",
        again.text()
    );
}
