//! The command line: `--help`, usage errors (exit 2), start-up failures (exit 1 with one
//! `error:` line on stderr and no panic), environment variables, the start-up line, and a
//! clean exit 0 on SIGTERM and SIGINT that keeps the data. Each runs on the suite's backend
//! (`--db FILE` or `--database-url URL`), except the one-serve-per-file rule of SQLite.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    BIN, RATE_HEADERS, Storage, TestApp, assert_one_error_line, avoid_window_end, create_key,
    database_of, fresh_dir, http, on_postgres, output_within, parse_startup_line, pg_admin_url,
    run_to_exit, signal, skip_on_postgres, transfer_check, url_with_database,
};

const VARS: [&str; 9] = [
    "RUNWARDEN_ADDR",
    "RUNWARDEN_DB",
    "RUNWARDEN_DATABASE_URL",
    "RUNWARDEN_THREADS",
    "RUNWARDEN_MAX_BODY_BYTES",
    "RUNWARDEN_BUSY_TIMEOUT_MS",
    "RUNWARDEN_WRITE_BATCH",
    "RUNWARDEN_ALLOW_OPEN",
    "RUNWARDEN_POLICY",
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

/// Runs `cmd` to completion with its output captured (at most 10 s; it is killed and the test
/// fails after that).
fn output_of(cmd: Command) -> std::process::Output {
    output_within(cmd, "runwarden")
}

/// The text of stdout and of stderr.
fn texts(output: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts a usage error: exit code 2, clap's message and hint on stderr, no panic; returns
/// stderr.
#[track_caller]
fn assert_usage_error(output: &std::process::Output, case: &str) -> String {
    let (_, stderr) = texts(output);
    assert_eq!(output.status.code(), Some(2), "{case}: exit code; {stderr}");
    assert!(stderr.starts_with("error: "), "{case}: {stderr}");
    assert!(
        stderr.contains("For more information, try '--help'."),
        "{case}: clap's hint: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{case}: {stderr}");
    stderr
}

/// `path` as a `&str`.
fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Environment variables of a command: (name, value).
type Env<'a> = &'a [(&'a str, &'a str)];

/// A URL of a PostgreSQL database that nobody serves (nothing listens on the discard port),
/// so a command that uses it fails at once, naming it.
const UNREACHABLE_URL: &str = "postgres://rw@127.0.0.1:9/rw_nowhere";

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

// ---------------------------------------------------------------------------------------------
// Audit of the command line: each test below failed before its fix.
// ---------------------------------------------------------------------------------------------

#[test]
fn export_refuses_an_output_that_is_its_own_database_or_a_companion_of_it() {
    if skip_on_postgres("the SQLite file and its -wal, -shm and -journal companions") {
        return;
    }
    // Arrange: a server running on the database, with a run; links and another spelling of
    // the database's path.
    let app = TestApp::spawn();
    let trace = app.new_run();
    let db = app.db_file().to_path_buf();
    let dir = db.parent().expect("the database's directory").to_path_buf();
    let beside = |suffix: &str| PathBuf::from(format!("{}{suffix}", db.display()));
    let hard = dir.join("hard-link.db");
    std::fs::hard_link(&db, &hard).expect("a hard link to the database");
    let soft = dir.join("soft-link.db");
    std::os::unix::fs::symlink(&db, &soft).expect("a symbolic link to the database");
    std::fs::create_dir_all(dir.join("sub")).expect("a subdirectory");
    let respelled = dir
        .join("sub")
        .join("..")
        .join(db.file_name().expect("a file name"));
    assert!(
        beside("-wal").exists() && beside("-shm").exists(),
        "the running server keeps its -wal and -shm"
    );
    let cases = [
        (db.clone(), "the database itself"),
        (beside("-wal"), "its write-ahead log"),
        (beside("-shm"), "its WAL index"),
        (beside("-journal"), "its rollback journal, absent"),
        (hard, "a hard link to it"),
        (soft, "a symbolic link to it"),
        (respelled, "another spelling of its path"),
    ];

    for (out, why) in cases {
        let existed = out.exists();

        // Act
        let output = run_to_exit(&["export", "--all", "--db", s(&db), "-o", s(&out)]);

        // Assert
        let line = assert_one_error_line(&output, why);
        assert!(
            line.contains("of the database being exported") || line.contains("is the database"),
            "{why}: says it is the database: {line}"
        );
        assert!(
            std::fs::metadata(&db).expect("the database").len() > 0,
            "{why}: the database was truncated"
        );
        assert_eq!(out.exists(), existed, "{why}: nothing created");
    }
    assert_eq!(
        app.get(&format!("/v1/runs/{trace}")).status,
        200,
        "the server still serves its run"
    );
    let elsewhere = dir.join("all.jsonl");
    let ok = run_to_exit(&["export", "--all", "--db", s(&db), "-o", s(&elsewhere)]);
    assert!(ok.status.success(), "{:?}", texts(&ok));
    let exported = std::fs::read_to_string(&elsewhere).expect("the export");
    assert!(exported.contains(&trace), "{exported}");
}

#[test]
fn commands_that_only_read_refuse_a_database_file_that_does_not_exist() {
    if skip_on_postgres("a SQLite file that does not exist") {
        return;
    }
    // Arrange
    let dir = fresh_dir("cli-missing-db");
    let typo = dir.join("typo.db");
    let cases: [(&[&str], &str); 5] = [
        (&["runs", "list"], "runs list"),
        (
            &["runs", "show", "f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4"],
            "runs show",
        ),
        (&["export", "--all"], "export"),
        (&["keys", "list"], "keys list"),
        (&["keys", "revoke", "key_000000000000"], "keys revoke"),
    ];

    for (args, why) in cases {
        // Act
        let output = run_to_exit(&[args, &["--db", s(&typo)][..]].concat());

        // Assert
        let line = assert_one_error_line(&output, why);
        assert!(line.contains(s(&typo)), "{why}: names the path: {line}");
        assert!(
            line.contains("runwarden serve"),
            "{why}: says what creates it: {line}"
        );
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("list the directory")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert!(left.is_empty(), "{why}: nothing created: {left:?}");
    }

    // The commands that create a database still do.
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").expect("write an empty export");
    let created: [(&[&str], &str, &str); 2] = [
        (
            &["keys", "create", "--project", "p", "--type", "production"],
            "by-keys-create.db",
            "keys create",
        ),
        (&["import", s(&empty)], "by-import.db", "import"),
    ];
    for (args, name, why) in created {
        let path = dir.join(name);
        let output = run_to_exit(&[args, &["--db", s(&path)][..]].concat());
        assert!(output.status.success(), "{why}: {:?}", texts(&output));
        assert!(path.exists(), "{why} creates the database");
    }
}

#[test]
fn a_database_url_wins_over_runwarden_db_and_conflicts_with_a_typed_db() {
    // Arrange: a file the URL must win over; UNREACHABLE_URL fails at once, naming itself,
    // which shows that it was the database used.
    let dir = fresh_dir("cli-db-sources");
    let file = dir.join("from-db.db");
    let file = s(&file);
    let url = UNREACHABLE_URL;

    // Both typed: a usage error, as before.
    let both = output_of(command(
        &dir,
        &["runs", "list", "--db", file, "--database-url", url],
        &[],
    ));
    let stderr = assert_usage_error(&both, "--db and --database-url typed");
    assert!(
        stderr.contains("--db") && stderr.contains("--database-url"),
        "{stderr}"
    );

    // --db typed, the URL from the environment: a usage error naming the variable.
    let typed_db = output_of(command(
        &dir,
        &["runs", "list", "--db", file],
        &[("RUNWARDEN_DATABASE_URL", url)],
    ));
    let stderr = assert_usage_error(&typed_db, "--db typed, RUNWARDEN_DATABASE_URL set");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("--db") && first.contains("RUNWARDEN_DATABASE_URL"),
        "names --db and the variable: {first}"
    );
    assert!(
        !first.contains("--database-url"),
        "does not name a flag that was not typed: {first}"
    );

    // The URL wins over RUNWARDEN_DB and over the default, from either place; `serve` as the
    // systemd unit runs it (RUNWARDEN_DB from Environment=, the URL from the env file).
    let cases: [(&[&str], Env, &str); 4] = [
        (
            &["runs", "list"],
            &[("RUNWARDEN_DB", file), ("RUNWARDEN_DATABASE_URL", url)],
            "both from the environment",
        ),
        (
            &["runs", "list", "--database-url", url],
            &[("RUNWARDEN_DB", file)],
            "the URL typed, RUNWARDEN_DB set",
        ),
        (
            &["keys", "list"],
            &[("RUNWARDEN_DATABASE_URL", url)],
            "the URL from the environment over the default",
        ),
        (
            &["serve", "--addr", "127.0.0.1:0"],
            &[("RUNWARDEN_DB", file), ("RUNWARDEN_DATABASE_URL", url)],
            "serve as the systemd unit runs it",
        ),
    ];
    for (args, env, why) in cases {
        // Act
        let output = output_of(command(&dir, args, env));

        // Assert
        let line = assert_one_error_line(&output, why);
        assert!(
            line.contains("rw_nowhere"),
            "{why}: the URL's database was used: {line}"
        );
        assert!(
            !Path::new(file).exists() && !dir.join("runwarden.db").exists(),
            "{why}: no SQLite file was created"
        );
    }
}

#[test]
fn runwarden_allow_open_reads_the_usual_words_for_true_and_false() {
    for (value, open) in [
        ("1", true),
        ("yes", true),
        ("on", true),
        ("true", true),
        ("0", false),
        ("no", false),
        ("off", false),
        ("false", false),
    ] {
        // Arrange: a non-loopback address, where open mode needs --allow-open.
        let dir = fresh_dir("cli-allow-open");
        let [db_flag, db] = Storage::in_dir(&dir, "rw").args();
        let args = ["serve", "--addr", "0.0.0.0:0", &db_flag, &db];
        let env = [("RUNWARDEN_ALLOW_OPEN", value)];

        // Act, Assert
        if open {
            let server = Started::spawn(&dir, &args, &env);
            assert!(
                server.line.contains("open mode"),
                "RUNWARDEN_ALLOW_OPEN={value}: {}",
                server.line
            );
        } else {
            let output = output_of(command(&dir, &args, &env));
            let line = assert_one_error_line(&output, value);
            assert!(
                line.contains("--allow-open"),
                "RUNWARDEN_ALLOW_OPEN={value}: refused as without it: {line}"
            );
        }
    }
}

#[test]
fn export_writes_a_run_named_twice_once_in_the_order_first_named() {
    // Arrange
    let mut app = TestApp::spawn();
    let (a, b) = (app.new_run(), app.new_run());
    app.terminate();
    let [db_flag, db] = app.storage.args();
    let out = app.dir.join("named-twice.jsonl");

    // Act
    let output = run_to_exit(&[
        "export",
        "--trace-id",
        &b,
        "--trace-id",
        &a,
        "--trace-id",
        &b.to_uppercase(),
        "--trace-id",
        &a,
        &db_flag,
        &db,
        "-o",
        s(&out),
    ]);

    // Assert
    let (_, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("exported 2 runs"), "{stderr}");
    let text = std::fs::read_to_string(&out).expect("the export");
    let runs: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|v| v["kind"] == "run")
        .map(|v| v["trace_id"].as_str().expect("trace_id").to_string())
        .collect();
    assert_eq!(runs, [b, a], "each run once, in the order first named");
    let replayed = run_to_exit(&["replay", s(&out)]);
    assert!(replayed.status.success(), "{:?}", texts(&replayed));
}

#[test]
fn replay_of_a_file_without_sessions_exits_1() {
    // Arrange
    let dir = fresh_dir("cli-replay-empty");
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").expect("write");
    let comments = dir.join("comments.jsonl");
    std::fs::write(&comments, "// a fixture still to be recorded\n\n").expect("write");

    for file in [&empty, &comments] {
        for json in [false, true] {
            let case = format!("{} (json {json})", file.display());
            let mut args = vec!["replay", s(file)];
            if json {
                args.push("--json");
            }

            // Act
            let output = run_to_exit(&args);

            // Assert
            let line = assert_one_error_line(&output, &case);
            assert!(
                line.contains(s(file)) && line.contains("holds no sessions"),
                "{case}: {line}"
            );
        }
    }
}

#[test]
fn an_unknown_key_type_and_an_export_without_a_selector_are_usage_errors() {
    // Arrange
    let dir = fresh_dir("cli-usage");
    let db = dir.join("never.db");
    let cases: [(&[&str], &[&str], &str); 3] = [
        (
            &["keys", "create", "--project", "p", "--type", "superuser"],
            &["superuser", "development, production, restricted, admin"],
            "an unknown key type",
        ),
        (
            &["export"],
            &["--trace-id", "--agent-id", "--all"],
            "an export without a selector",
        ),
        (
            &["export", "--all", "--agent-id", "a"],
            &["--all", "--agent-id"],
            "an export with two selectors",
        ),
    ];

    for (args, words, why) in cases {
        // Act
        let output = run_to_exit(&[args, &["--db", s(&db)][..]].concat());

        // Assert
        let stderr = assert_usage_error(&output, why);
        for word in words {
            assert!(stderr.contains(word), "{why}: names {word}: {stderr}");
        }
        assert!(!db.exists(), "{why}: no database created");
    }
}

#[test]
fn admin_keys_take_no_limits_and_are_never_rate_limited() {
    // Arrange
    let app = TestApp::spawn();
    let (admin, admin_id) = create_key(&app, "ops", "admin", &[]);
    let (limited, _) = create_key(&app, "ops", "development", &["--rpm", "1"]);
    let [db_flag, db] = app.storage.args();

    // Act: limits on a new admin key are refused.
    for flag in ["--rpm", "--rph"] {
        let output = run_to_exit(&[
            "keys",
            "create",
            "--project",
            "ops",
            "--type",
            "admin",
            flag,
            "5",
            &db_flag,
            &db,
        ]);

        // Assert
        let stderr = assert_usage_error(&output, flag);
        assert!(stderr.contains("admin keys have no limits"), "{stderr}");
    }
    assert_eq!(app.storage.count_rows("api_keys"), 2, "no key was created");

    // Arrange: a row that gives the admin key limits anyway (an older database, a hand edit),
    // and a minute with room for the four requests below.
    avoid_window_end(60, 5);
    app.storage.execute(&format!(
        "UPDATE api_keys SET rpm = 1, rph = 1 WHERE id = '{admin_id}'"
    ));
    let get = |key: &str| {
        http(
            app.addr,
            "GET",
            "/v1/runs",
            &[("x-api-key".to_string(), key.to_string())],
            b"",
        )
    };

    // Act
    let answers: Vec<_> = (0..3).map(|_| get(&admin)).collect();

    // Assert
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(r.status, 200, "admin request {}: {}", i + 1, r.text());
        for name in RATE_HEADERS {
            assert_eq!(r.header(name), None, "admin request {}: no {name}", i + 1);
        }
    }
    // The same limit on a development key does bind (the limiter is on).
    assert_eq!(get(&limited).status, 200);
    assert_eq!(get(&limited).status, 429, "a development key with --rpm 1");
}

/// The invisible characters that must never reach a terminal raw.
const INVISIBLE: [char; 17] = [
    '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}',
    '\u{2069}', '\u{200b}', '\u{200c}', '\u{200d}', '\u{200e}', '\u{200f}', '\u{2028}', '\u{2029}',
    '\u{feff}',
];

#[test]
fn bidi_and_invisible_characters_are_escaped_in_every_cli_output() {
    // Arrange: an agent id that reorders what follows it, a prompt holding every invisible
    // character, a key label, and a check whose reasoning quotes a value.
    let all: String = INVISIBLE.iter().collect();
    let mut app = TestApp::spawn();
    let agent = "cs\u{202e}exe.txt";
    let r = app.register(
        &json!({"agent_id": agent, "timestamp": "2024-01-15T14:30:45.123Z",
                                 "system_prompt": format!("You help.{all}")}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let trace = r.json()["trace_id"].as_str().expect("trace_id").to_string();
    let check = transfer_check(
        &trace,
        &json!({"amount": "750 USD\u{2066}", "recipient": "x"}),
    );
    assert_eq!(app.check(&check).status, 200);
    create_key(&app, "ops", "production", &["--name", "label\u{2067}x"]);
    app.terminate();
    let [db_flag, db] = app.storage.args();
    let session = app.dir.join("session.jsonl");
    let exported = run_to_exit(&["export", "--all", &db_flag, &db, "-o", s(&session)]);
    assert!(exported.status.success(), "{:?}", texts(&exported));

    // Act
    let outputs = [
        ("runs list", run_to_exit(&["runs", "list", &db_flag, &db])),
        (
            "runs show",
            run_to_exit(&["runs", "show", &trace, &db_flag, &db]),
        ),
        ("keys list", run_to_exit(&["keys", "list", &db_flag, &db])),
        ("replay", run_to_exit(&["replay", s(&session)])),
    ];

    // Assert
    for (what, output) in &outputs {
        let (stdout, stderr) = texts(output);
        assert!(output.status.success(), "{what}: {stderr}");
        for c in INVISIBLE {
            assert!(
                !stdout.contains(c) && !stderr.contains(c),
                "{what}: U+{:04X} reached the terminal raw: {stdout:?}",
                c as u32
            );
        }
    }
    let stdout = |what: &str| {
        let (_, output) = outputs.iter().find(|(w, _)| *w == what).expect("ran");
        texts(output).0
    };
    assert!(stdout("runs list").contains("cs\\u{202e}exe.txt"));
    let show = stdout("runs show");
    assert!(show.contains("agent cs\\u{202e}exe.txt"), "{show}");
    let escaped_all: String = INVISIBLE
        .iter()
        .map(|c| format!("\\u{{{:x}}}", *c as u32))
        .collect();
    assert!(
        show.contains(&format!("system prompt: You help.{escaped_all}")),
        "every invisible character is shown as its code: {show}"
    );
    assert!(stdout("keys list").contains("label\\u{2067}x"));
    let replay = stdout("replay");
    assert!(
        replay.contains(r#""750 USD\u{2066}" is not of type "number""#),
        "replay escapes like the rest and leaves quotes alone: {replay}"
    );
}

#[test]
fn runs_show_prints_the_whole_reasoning_and_every_finding() {
    // Arrange: a passing check, whose reasoning lists everything checked (over 200
    // characters), and a blocked one with findings.
    let mut app = TestApp::spawn();
    let trace = app.new_run();
    let weather = json!({"event_type": "action_check", "trace_id": trace,
        "timestamp": 1705329048.1, "content": "{\"city\": \"Paris\"}",
        "schema": "{\"type\": \"function\", \"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}"});
    assert_eq!(app.check(&weather).status, 200);
    let blocked = transfer_check(&trace, &json!({"amount": "lots", "recipient": "x"}));
    assert_eq!(app.check(&blocked).status, 200);
    app.terminate();
    let stored = app.query(
        "SELECT reasoning, findings FROM checks WHERE trace_id = ?1 ORDER BY seq",
        &[&trace],
    );
    assert_eq!(stored.len(), 2);
    assert!(
        stored[0].text(0).chars().count() > 200,
        "a reasoning the old cut shortened: {:?}",
        stored[0].text(0)
    );
    let [db_flag, db] = app.storage.args();

    // Act
    let output = run_to_exit(&["runs", "show", &trace, &db_flag, &db]);

    // Assert
    let (show, stderr) = texts(&output);
    assert!(output.status.success(), "{stderr}");
    let mut findings = 0;
    for row in &stored {
        let reasoning = row.text(0);
        assert!(
            show.contains(&reasoning),
            "the whole reasoning {reasoning:?}: {show}"
        );
        let listed: Vec<serde_json::Value> =
            serde_json::from_str(&row.text(1)).expect("findings JSON");
        for f in listed {
            findings += 1;
            let shown = format!(
                "{} {}: {}",
                f["severity"].as_str().expect("severity"),
                f["rule"].as_str().expect("rule"),
                f["message"].as_str().expect("message")
            );
            assert!(show.contains(&shown), "finding {shown:?}: {show}");
        }
    }
    assert!(findings > 0, "the blocked check has findings");
}

#[test]
fn serve_help_lists_every_route_and_what_the_busy_timeout_means_on_postgresql() {
    // Act
    let output = run_to_exit(&["serve", "--help"]);

    // Assert
    let (help, _) = texts(&output);
    assert!(output.status.success());
    for word in [
        "/v1/register-agent-run",
        "/v1/runs/{trace_id}",
        "/v1/checks",
        "/healthz",
        "/metrics",
        "/openapi.json",
        "web UI at /",
        "lock_timeout",
    ] {
        assert!(help.contains(word), "serve --help mentions {word}: {help}");
    }
}

#[test]
fn counts_of_one_are_written_in_the_singular() {
    // Arrange: a run with one event and one check.
    let mut app = TestApp::spawn();
    let trace = app.new_run();
    assert_eq!(app.event(&crate::helpers::user_event(&trace)).status, 200);
    let check = transfer_check(&trace, &json!({"amount": "lots", "recipient": "x"}));
    assert_eq!(app.check(&check).status, 200);
    app.terminate();
    let [db_flag, db] = app.storage.args();
    let export = app.dir.join("one.jsonl");
    let exported = run_to_exit(&["export", "--all", &db_flag, &db, "-o", s(&export)]);
    assert!(exported.status.success(), "{:?}", texts(&exported));
    // A file with one unmet expectation, and one whose run conflicts with the imported one.
    let text = std::fs::read_to_string(&export).expect("read");
    let unmet = app.dir.join("unmet.jsonl");
    let expected_safe = text.replace(
        r#""expect":{"is_safe":false"#,
        r#""expect":{"is_safe":true"#,
    );
    assert_ne!(expected_safe, text, "the check's expectation is rewritten");
    std::fs::write(&unmet, expected_safe).expect("write");
    let conflicting = app.dir.join("conflicting.jsonl");
    let other_agent = text.replace(r#""agent_id":"test-agent""#, r#""agent_id":"other-agent""#);
    assert_ne!(other_agent, text, "the run's agent is rewritten");
    std::fs::write(&conflicting, other_agent).expect("write");
    let target = Storage::in_dir(&app.dir, "target");
    let [target_flag, target_db] = target.args();

    // Act
    let show = run_to_exit(&["runs", "show", &trace, &db_flag, &db]);
    let import = run_to_exit(&["import", s(&export), &target_flag, &target_db]);
    let replay = run_to_exit(&["replay", s(&unmet)]);
    let bad_import = run_to_exit(&["import", s(&conflicting), &target_flag, &target_db]);

    // Assert
    let (show, _) = texts(&show);
    assert!(show.contains("1 event, 1 check, 1 blocked"), "{show}");
    let (import_out, import_err) = texts(&import);
    assert!(
        import_out.contains("imported 1 run (2 events and checks)"),
        "{import_out}{import_err}"
    );
    let (replay_out, _) = texts(&replay);
    assert!(
        replay_out.contains("1 check: 0 passed, 1 blocked; 1 expectation unmet, 0 invalid lines"),
        "{replay_out}"
    );
    let line = assert_one_error_line(&replay, "one unmet expectation");
    assert!(line.contains("1 expectation unmet"), "{line}");
    let (_, bad_import_err) = texts(&bad_import);
    assert_eq!(bad_import.status.code(), Some(1), "{bad_import_err}");
    assert!(
        bad_import_err.contains("1 problem (listed above)"),
        "{bad_import_err}"
    );
}
