//! The command line: `--help`, usage errors (exit 2), start-up failures (exit 1 with one
//! `error:` line on stderr and no panic), environment variables, the start-up line, and a
//! clean exit 0 on SIGTERM and SIGINT that keeps the data. Each runs on the suite's backend
//! (`--db FILE` or `--database-url URL`), except the one-serve-per-file rule of SQLite.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    BIN, Storage, TestApp, assert_one_error_line, database_of, fresh_dir, http, on_postgres,
    parse_startup_line, pg_admin_url, run_to_exit, signal, skip_on_postgres, url_with_database,
};

const VARS: [&str; 7] = [
    "RUNWARDEN_ADDR",
    "RUNWARDEN_DB",
    "RUNWARDEN_DATABASE_URL",
    "RUNWARDEN_THREADS",
    "RUNWARDEN_MAX_BODY_BYTES",
    "RUNWARDEN_BUSY_TIMEOUT_MS",
    "RUNWARDEN_WRITE_BATCH",
];

/// The binary with `args`, run in `dir` with no RUNWARDEN_* variables but `env`, and
/// RUST_LOG=error.
fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir).env("RUST_LOG", "error");
    for var in VARS {
        cmd.env_remove(var);
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd
}

/// A server started by a test with its own arguments and environment.
struct Started {
    child: Child,
    line: String,
    addr: SocketAddr,
}

impl Started {
    fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Started {
        let mut child = command(dir, args, env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start runwarden");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the start-up line");
        let addr = parse_startup_line(&line)
            .unwrap_or_else(|| panic!("no address in the start-up line {line:?}"));
        Started { child, line, addr }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registration() -> serde_json::Value {
    json!({"agent_id": "cli-agent", "timestamp": "2024-01-15T14:30:45.123Z",
           "system_prompt": "You are a helpful assistant."})
}

#[test]
fn help_exits_zero_and_names_the_command_and_every_flag() {
    // Arrange
    let cases: &[(&[&str], &[&str])] = &[
        (&["--help"], &["serve", "Usage"]),
        (&["help"], &["serve"]),
        (
            &["serve", "--help"],
            &[
                "--addr",
                "--db",
                "--threads",
                "--max-body-bytes",
                "--busy-timeout-ms",
                "--write-batch",
                "RUNWARDEN_ADDR",
                "RUNWARDEN_MAX_BODY_BYTES",
            ],
        ),
    ];

    // The PostgreSQL flag, where the suite runs on PostgreSQL (a binary without the backend
    // has no such flag).
    let pg_words: &[&str] = if on_postgres() {
        &["--database-url", "RUNWARDEN_DATABASE_URL"]
    } else {
        &[]
    };

    for (args, words) in cases {
        // Act
        let output = run_to_exit(args);

        // Assert
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{args:?}: exit code");
        let serve_help = *args == ["serve", "--help"];
        for word in words.iter().chain(pg_words.iter().filter(|_| serve_help)) {
            assert!(stdout.contains(word), "{args:?} mentions {word}: {stdout}");
        }
    }
}

#[test]
fn usage_errors_exit_with_code_2() {
    // Arrange
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--no-such-flag"], "an unknown flag"),
        (&["--bogus"], "an unknown top-level flag"),
        (&["frobnicate"], "an unknown subcommand"),
        (&[], "no subcommand"),
        (
            &["serve", "--addr", "not-an-address"],
            "a malformed address",
        ),
        (&["serve", "--threads", "0"], "zero threads"),
        (&["serve", "--max-body-bytes", "0"], "a zero body cap"),
    ];

    for (args, why) in cases {
        // Act
        let output = run_to_exit(args);

        // Assert
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{why}: exit code; stderr {stderr}"
        );
        assert!(!stderr.trim().is_empty(), "{why}: says what is wrong");
        assert!(!stderr.contains("panicked"), "{why}: {stderr}");
    }
}

#[test]
fn an_address_in_use_exits_1_with_one_error_line_naming_it() {
    // Arrange
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let dir = fresh_dir("cli-addr");
    let [db_flag, db] = Storage::in_dir(&dir, "rw").args();

    // Act
    let output = run_to_exit(&["serve", "--addr", &addr, &db_flag, &db]);

    // Assert
    let line = assert_one_error_line(&output, "an address in use");
    assert!(line.contains(&addr), "names {addr}: {line}");
    drop(taken);
}

#[test]
fn a_database_that_cannot_be_opened_exits_1_with_one_error_line() {
    // Arrange: (flag, value, case) on the suite's backend.
    let a_directory = fresh_dir("cli-dir-db");
    let a_directory = a_directory.to_str().expect("a UTF-8 path").to_string();
    let missing_database = pg_admin_url().map(|admin| {
        let name = format!("rw_t_missing_{}", uuid::Uuid::new_v4().simple());
        url_with_database(&admin, &name)
    });
    let cases = match &missing_database {
        None => vec![
            (
                "--db",
                "/nonexistent-dir/x.db",
                "a file in a missing directory",
            ),
            ("--db", a_directory.as_str(), "a directory"),
        ],
        Some(url) => vec![(
            "--database-url",
            url.as_str(),
            "a database that does not exist",
        )],
    };

    for (flag, db, why) in cases {
        // Act
        let output = run_to_exit(&["serve", "--addr", "127.0.0.1:0", flag, db]);

        // Assert
        let line = assert_one_error_line(&output, why);
        assert!(
            line.contains("database"),
            "{why}: says it is the database: {line}"
        );
    }
}

#[test]
fn a_database_from_a_newer_runwarden_is_refused() {
    // Arrange: schema version 999, where each backend's schema file keeps it (schema.sql:
    // PRAGMA user_version; schema.postgres.sql: the table runwarden_schema).
    let dir = fresh_dir("cli-newer");
    let storage = Storage::in_dir(&dir, "rw");
    match &storage {
        Storage::File(db) => rusqlite::Connection::open(db)
            .expect("create a database")
            .execute_batch("PRAGMA user_version = 999")
            .expect("set its version"),
        Storage::Postgres(_) => storage.execute(
            "CREATE TABLE runwarden_schema (
                 version    INTEGER NOT NULL PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );
             INSERT INTO runwarden_schema (version) VALUES (999)",
        ),
    }
    let [db_flag, db] = storage.args();

    // Act
    let output = run_to_exit(&["serve", "--addr", "127.0.0.1:0", &db_flag, &db]);

    // Assert
    let line = assert_one_error_line(&output, "schema version 999");
    assert!(line.contains("newer"), "says the database is newer: {line}");
}

#[test]
fn runwarden_max_body_bytes_sets_the_body_cap() {
    // Arrange
    let dir = fresh_dir("cli-env-max");
    let [db_flag, db] = match Storage::in_dir(&dir, "rw") {
        Storage::File(_) => ["--db".to_string(), "rw.db".to_string()],
        pg => pg.args(),
    };
    let server = Started::spawn(
        &dir,
        &["serve", "--addr", "127.0.0.1:0", &db_flag, &db],
        &[("RUNWARDEN_MAX_BODY_BYTES", "10")],
    );
    let body = registration().to_string();
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Content-Length".to_string(), body.len().to_string()),
    ];

    // Act
    let resp = http(
        server.addr,
        "POST",
        "/v1/register-agent-run",
        &headers,
        body.as_bytes(),
    );

    // Assert
    resp.assert_error(
        413,
        "PAYLOAD_TOO_LARGE",
        None,
        "a body over RUNWARDEN_MAX_BODY_BYTES",
    );
}

#[test]
fn runwarden_addr_and_runwarden_db_are_used_without_flags() {
    // Arrange: a port that was free a moment ago, so that the default 8787 cannot pass. The
    // database comes from RUNWARDEN_DB, or on PostgreSQL from RUNWARDEN_DATABASE_URL.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind a port")
        .local_addr()
        .expect("its address")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = fresh_dir("cli-env-addr");
    let storage = Storage::in_dir(&dir, "from-env");
    let (db_var, db) = match &storage {
        Storage::File(path) => ("RUNWARDEN_DB", path.to_str().expect("a UTF-8 path")),
        Storage::Postgres(url) => ("RUNWARDEN_DATABASE_URL", url.as_str()),
    };

    // Act
    let server = Started::spawn(&dir, &["serve"], &[("RUNWARDEN_ADDR", &addr), (db_var, db)]);
    let health = http(server.addr, "GET", "/healthz", &[], b"");
    let registered = http(
        server.addr,
        "POST",
        "/v1/register-agent-run",
        &[
            ("Content-Type".to_string(), "application/json".to_string()),
            (
                "Content-Length".to_string(),
                registration().to_string().len().to_string(),
            ),
        ],
        registration().to_string().as_bytes(),
    );

    // Assert
    assert_eq!(server.addr.to_string(), addr, "line {:?}", server.line);
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(registered.status, 200, "{}", registered.text());
    assert_eq!(
        storage.count_rows("runs"),
        1,
        "the run is stored in the database of {db_var}"
    );
}

#[test]
fn the_start_up_line_names_the_address_and_the_database() {
    // Arrange
    let dir = fresh_dir("cli-line");
    let storage = Storage::in_dir(&dir, "named");
    let [db_flag, db] = storage.args();

    // Act
    let server = Started::spawn(
        &dir,
        &["serve", "--addr", "127.0.0.1:0", &db_flag, &db],
        &[],
    );

    // Assert: the file's canonical path, or the PostgreSQL database's name.
    let named = match &storage {
        Storage::File(path) => std::fs::canonicalize(path)
            .expect("the database exists")
            .display()
            .to_string(),
        Storage::Postgres(url) => database_of(url),
    };
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1", "{}", server.line);
    assert_ne!(server.addr.port(), 0, "the real port: {}", server.line);
    assert!(
        server.line.contains(&format!("http://{}", server.addr)),
        "{}",
        server.line
    );
    assert!(
        server.line.contains(&named),
        "names {named}: {}",
        server.line
    );
}

#[test]
fn sigterm_and_sigint_stop_the_server_with_code_0_and_keep_its_data() {
    for sig in ["TERM", "INT"] {
        // Arrange
        let mut app = TestApp::spawn();
        let trace_id = app.new_run();

        // Act
        signal(app.pid(), sig);
        let status = app.wait_exit(Duration::from_secs(10));

        // Assert
        assert_eq!(status.code(), Some(0), "SIG{sig}: exit status {status:?}");
        let stored = app.query_i64(
            "SELECT count(*) FROM runs WHERE trace_id = ?1",
            &[&trace_id],
        );
        assert_eq!(stored, 1, "SIG{sig}: the run is in the database afterwards");
    }
}

#[test]
fn runs_list_and_show_print_a_readable_timeline_with_agent_text_escaped() {
    // Arrange: a run whose content carries a terminal escape sequence and a newline.
    let mut app = TestApp::spawn();
    let trace = app.new_run_with_prompt("You help.\nBe brief.\u{1b}[2J");
    let hostile = json!({"event_type": "user", "trace_id": trace, "timestamp": 1678886405.0,
                         "content": json!({"message": "hi\u{1b}[2J\nFAKE LINE"}).to_string(),
                         "schema": "{}"});
    assert_eq!(app.event(&hostile).status, 200);
    let check =
        crate::helpers::transfer_check(&trace, &json!({"amount": "lots", "recipient": "x"}));
    assert_eq!(app.check(&check).status, 200);
    app.terminate();
    let [db_flag, db] = app.storage.args();

    // Act
    let list = run_to_exit(&["runs", "list", &db_flag, &db]);
    let show = run_to_exit(&["runs", "show", &trace, &db_flag, &db]);

    // Assert
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        list.contains(&trace) && list.contains("test-agent"),
        "{list}"
    );
    let show_text = String::from_utf8_lossy(&show.stdout).to_string();
    assert!(show.status.success(), "{show_text}");
    assert!(
        !show_text.contains('\u{1b}'),
        "no raw escape sequence reaches the terminal: {show_text:?}"
    );
    assert!(
        show_text.contains("\\u001b[2J\\nFAKE LINE"),
        "event content is shown as stored JSON text: {show_text}"
    );
    assert!(
        show_text.contains("system prompt: You help.\\nBe brief.\\u{1b}[2J"),
        "control characters of the prompt are escaped: {show_text}"
    );
    assert!(
        show_text.contains("check BLOCK") && show_text.contains("transfer_funds: "),
        "{show_text}"
    );
    let missing = run_to_exit(&[
        "runs",
        "show",
        "f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4",
        &db_flag,
        &db,
    ]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn a_second_serve_on_the_same_database_refuses_to_start() {
    if skip_on_postgres(
        "one serve per SQLite file; servers sharing a PostgreSQL database: instances.rs",
    ) {
        return;
    }
    // Arrange
    let app = TestApp::spawn();

    // Act
    let second = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--db"])
        .arg(app.db_file())
        .env("RUST_LOG", "error")
        .output()
        .expect("run a second serve");

    // Assert
    let line = assert_one_error_line(&second, "second serve");
    assert!(line.contains("already using"), "{line}");
    assert_eq!(
        app.get("/healthz").status,
        200,
        "the first server is unaffected"
    );
    let keys = run_to_exit(&[
        "keys",
        "list",
        "--db",
        app.db_file().to_str().expect("utf-8"),
    ]);
    assert!(
        keys.status.success(),
        "key commands still work beside the server"
    );
}
