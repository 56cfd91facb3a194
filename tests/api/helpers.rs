//! `TestApp::spawn()` starts the real server on port 0 with a fresh database and gives back its
//! address; one method per endpoint; `post_raw` for malformed requests. A tiny HTTP/1.1 client
//! over `TcpStream` (one request per connection, `Connection: close`) keeps the tests free of
//! client-library behaviour. Checks and builders that more than one test file needs
//! (`is_lowercase_v4_uuid`, `with_field`, `count_rows`, the `keys` CLI, ...) live here too, so
//! that the files do not copy them.
//!
//! The backend: SQLite by default, a fresh file per test. With `RUNWARDEN_TEST_DATABASE_URL` set
//! to an admin URL of a PostgreSQL server (`.ci/pg-start` prints one), every test gets a fresh
//! database on that server instead and `serve` (and the CLI) is given `--database-url`. Such a
//! database (`rw_t_<secs>_<uuid>`) is dropped with the `TestApp` that made it, kept when the
//! test fails or `RUNWARDEN_TEST_KEEP_DATABASES` is set, and swept by a run two hours later.
//! Tests read the stored rows through [`Storage`] (`app.query_i64(..)`, `count_rows`, ...),
//! which runs the same SQL on either backend; the few tests that need the SQLite file itself
//! return early on PostgreSQL through [`skip_on_postgres`], printing why.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_runwarden");

/// A fresh directory under the OS temp dir, unique per test process and call.
pub fn fresh_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("rw-test-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

// ---------------------------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------------------------

/// The variable that puts the suite on PostgreSQL: an admin URL (`postgres://USER@HOST:PORT/DB`)
/// of a server on which the suite may create databases.
pub const PG_URL_VAR: &str = "RUNWARDEN_TEST_DATABASE_URL";

/// The admin URL of `RUNWARDEN_TEST_DATABASE_URL` (`None`: the suite runs on SQLite).
pub fn pg_admin_url() -> Option<String> {
    let url = std::env::var(PG_URL_VAR).ok()?.trim().to_string();
    if url.is_empty() {
        return None;
    }
    assert!(
        url.starts_with("postgres://") || url.starts_with("postgresql://"),
        "{PG_URL_VAR}={url:?} is not a postgres:// URL"
    );
    Some(url)
}

/// Whether the suite runs on PostgreSQL.
pub fn on_postgres() -> bool {
    pg_admin_url().is_some()
}

/// For a test that needs the SQLite file itself: on PostgreSQL, prints
/// `skipped on PostgreSQL: {reason}` and returns `true` (the test then returns).
pub fn skip_on_postgres(reason: &str) -> bool {
    if on_postgres() {
        println!("skipped on PostgreSQL: {reason}");
        return true;
    }
    false
}

/// The line printed where PostgreSQL-only tests are skipped.
pub const PG_SKIPPED: &str =
    "PostgreSQL runs skipped: set RUNWARDEN_TEST_DATABASE_URL (see .ci/pg-start)";

/// For a test of PostgreSQL only: without `RUNWARDEN_TEST_DATABASE_URL`, prints
/// [`PG_SKIPPED`] and returns `true` (the test then returns).
pub fn skip_without_postgres() -> bool {
    if on_postgres() {
        return false;
    }
    println!("{PG_SKIPPED}");
    true
}

/// A connection to the PostgreSQL database at `url` (10 s to connect).
pub fn pg_connect(url: &str) -> postgres::Client {
    let mut config: postgres::Config = url
        .parse()
        .unwrap_or_else(|e| panic!("{url:?} is not a PostgreSQL URL: {e}"));
    config.connect_timeout(Duration::from_secs(10));
    config
        .connect(postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// `url` with its database name replaced by `name` (user, host, port and parameters kept).
pub fn url_with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{name}{query}")
}

/// The database name in the path of `url`.
pub fn database_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i + 1..]);
    path.split('?').next().unwrap_or("").to_string()
}

/// The prefix of the suite's database names: `rw_t_<unix seconds>_<uuid>`.
const TEST_DATABASE_PREFIX: &str = "rw_t_";

/// How old a test database must be before a later run drops it (see [`sweep_old_databases`]).
const TEST_DATABASE_MAX_AGE_SECS: u64 = 2 * 3600;

/// Creates a fresh database `rw_t_<unix seconds>_<uuid>` on the suite's PostgreSQL server;
/// returns its URL. The first call of a run drops the test databases over two hours old.
pub fn create_pg_database() -> String {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    let admin = pg_admin_url().expect("RUNWARDEN_TEST_DATABASE_URL is set");
    let mut client = pg_connect(&admin);
    SWEEP.call_once(|| sweep_old_databases(&mut client));
    let name = format!(
        "{TEST_DATABASE_PREFIX}{}_{}",
        now_secs() as u64,
        uuid::Uuid::new_v4().simple()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("create the database {name} on {admin}: {e}"));
    url_with_database(&admin, &name)
}

/// Drops the test databases older than [`TEST_DATABASE_MAX_AGE_SECS`]: those of tests that
/// restart a server in their own directory (nothing tells when they are done with it) and
/// those kept after a failure. Younger ones may belong to a run going on right now.
fn sweep_old_databases(client: &mut postgres::Client) {
    let now = now_secs() as u64;
    let names: Vec<String> = match client.query(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname::text, $1)",
        &[&TEST_DATABASE_PREFIX],
    ) {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => {
            eprintln!("could not list the old test databases: {e}");
            return;
        }
    };
    for name in names {
        let created = name[TEST_DATABASE_PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|t| t + TEST_DATABASE_MAX_AGE_SECS < now) {
            let dropped =
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            if let Err(e) = dropped {
                eprintln!("could not drop the old test database {name}: {e}");
            }
        }
    }
}

/// Drops the database of `url` (ending its sessions); reports failures on stderr only, since
/// it runs while a test ends.
fn drop_pg_database(url: &str) {
    let Some(admin) = pg_admin_url() else { return };
    let name = database_of(url);
    if !name.starts_with(TEST_DATABASE_PREFIX) {
        return;
    }
    let dropped = postgres::Client::connect(&admin, postgres::NoTls)
        .and_then(|mut c| c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")));
    if let Err(e) = dropped {
        eprintln!("could not drop the test database {name}: {e}");
    }
}

/// Where a test's data lives: the SQLite file, or the PostgreSQL database, of a server or CLI
/// command. `args()` points `runwarden` at it; `query*` read it back with the same SQL on
/// either backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A SQLite file (the default backend).
    File(PathBuf),
    /// A PostgreSQL database: its URL.
    Postgres(String),
}

impl Storage {
    /// The database `name` of the test directory `dir`: the file `dir/NAME.db` on SQLite; on
    /// PostgreSQL a fresh database, created on first use and found again through the file
    /// `dir/NAME.pg-url`, so that a server restarted in `dir` uses the same database.
    pub fn in_dir(dir: &Path, name: &str) -> Storage {
        if !on_postgres() {
            return Storage::File(dir.join(format!("{name}.db")));
        }
        let record = dir.join(format!("{name}.pg-url"));
        if let Ok(url) = std::fs::read_to_string(&record) {
            return Storage::Postgres(url.trim().to_string());
        }
        let url = create_pg_database();
        std::fs::write(&record, &url).expect("record the database URL");
        Storage::Postgres(url)
    }

    /// The flag and value that point `runwarden` at it: `--db FILE` or `--database-url URL`.
    pub fn args(&self) -> [String; 2] {
        match self {
            Storage::File(path) => [
                "--db".to_string(),
                path.to_str().expect("a UTF-8 path").to_string(),
            ],
            Storage::Postgres(url) => ["--database-url".to_string(), url.clone()],
        }
    }

    /// The SQLite file (panics on PostgreSQL: a test that needs the file must be skipped there).
    #[track_caller]
    pub fn file(&self) -> &Path {
        match self {
            Storage::File(path) => path,
            Storage::Postgres(url) => panic!("the SQLite file asked for on PostgreSQL ({url})"),
        }
    }

    /// The rows of `sql`. Parameters are written `?1`, `?2`, ... and are text; the SQL must be
    /// standard enough for both SQLite and PostgreSQL. Every value comes back as text (`None`:
    /// NULL), read with [`DbRow`]'s typed getters; a BLOB or BYTEA as the UTF-8 text it holds
    /// (the PostgreSQL schema keeps free text that may hold NUL, such as the system prompt, as
    /// BYTEA).
    pub fn query(&self, sql: &str, params: &[&str]) -> Vec<DbRow> {
        match self {
            Storage::File(path) => sqlite_query(path, sql, params),
            Storage::Postgres(url) => pg_query(url, sql, params),
        }
    }

    /// The first row of `sql`, if any.
    pub fn query_opt(&self, sql: &str, params: &[&str]) -> Option<DbRow> {
        self.query(sql, params).into_iter().next()
    }

    /// The first row of `sql` (panics when there is none).
    #[track_caller]
    pub fn query_row(&self, sql: &str, params: &[&str]) -> DbRow {
        self.query_opt(sql, params)
            .unwrap_or_else(|| panic!("no row for {sql:?} with {params:?}"))
    }

    /// The integer in the first column of the first row of `sql`.
    #[track_caller]
    pub fn query_i64(&self, sql: &str, params: &[&str]) -> i64 {
        self.query_row(sql, params).i64(0)
    }

    /// The text in the first column of the first row of `sql`.
    #[track_caller]
    pub fn query_text(&self, sql: &str, params: &[&str]) -> String {
        self.query_row(sql, params).text(0)
    }

    /// Runs `sql` (one or more statements) for its effect, e.g. to damage the database.
    pub fn execute(&self, sql: &str) {
        match self {
            Storage::File(path) => {
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
                )
                .expect("open the database for writing");
                conn.busy_timeout(Duration::from_secs(10))
                    .expect("set a busy timeout");
                conn.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("execute {sql:?}: {e}"));
            }
            Storage::Postgres(url) => pg_connect(url)
                .batch_execute(&format!("SET lock_timeout = '10s'; {sql}"))
                .unwrap_or_else(|e| panic!("execute {sql:?}: {e}")),
        }
    }

    /// How many rows `table` holds (`table` is a test constant, never input).
    pub fn count_rows(&self, table: &str) -> i64 {
        self.query_i64(&format!("SELECT count(*) FROM {table}"), &[])
    }
}

/// One row read back from the database, every value as text (`None`: NULL).
#[derive(Debug, Clone, PartialEq)]
pub struct DbRow(pub Vec<Option<String>>);

impl DbRow {
    /// Column `i`, `None` for NULL.
    #[track_caller]
    pub fn opt_text(&self, i: usize) -> Option<String> {
        self.0
            .get(i)
            .unwrap_or_else(|| panic!("no column {i} in {self:?}"))
            .clone()
    }

    /// Column `i` as text (panics on NULL).
    #[track_caller]
    pub fn text(&self, i: usize) -> String {
        self.opt_text(i)
            .unwrap_or_else(|| panic!("column {i} is NULL in {self:?}"))
    }

    /// Column `i` as an integer (a PostgreSQL boolean counts as 1 or 0).
    #[track_caller]
    pub fn i64(&self, i: usize) -> i64 {
        let text = self.text(i);
        match text.as_str() {
            "t" | "true" => 1,
            "f" | "false" => 0,
            _ => text
                .parse()
                .unwrap_or_else(|e| panic!("column {i} ({text:?}) is not an integer: {e}")),
        }
    }

    /// Column `i` as a number.
    #[track_caller]
    pub fn f64(&self, i: usize) -> f64 {
        let text = self.text(i);
        text.parse()
            .unwrap_or_else(|e| panic!("column {i} ({text:?}) is not a number: {e}"))
    }
}

/// `sql` with each `?N` replaced by the N-th parameter as a quoted SQL literal (PostgreSQL's
/// simple protocol takes no parameters; the values are test constants and ids).
fn inline_params(sql: &str, params: &[&str]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.next_if(char::is_ascii_digit) {
            digits.push(d);
        }
        let n: usize = digits
            .parse()
            .unwrap_or_else(|_| panic!("number the parameters (?1, ?2, ...) in {sql:?}"));
        let value = params
            .get(n.wrapping_sub(1))
            .unwrap_or_else(|| panic!("no parameter ?{n} for {sql:?}"));
        out.push('\'');
        out.push_str(&value.replace('\'', "''"));
        out.push('\'');
    }
    out
}

/// The rows of `sql` on the PostgreSQL database at `url`, every value as text: the simple
/// protocol's text form, with BYTEA (`\x` and hex digits) decoded to the UTF-8 text it holds.
fn pg_query(url: &str, sql: &str, params: &[&str]) -> Vec<DbRow> {
    let inlined = inline_params(sql, params);
    let mut client = pg_connect(url);
    let bytea: Vec<bool> = client
        .prepare(&inlined)
        .unwrap_or_else(|e| panic!("prepare {inlined:?}: {e}"))
        .columns()
        .iter()
        .map(|c| *c.type_() == postgres::types::Type::BYTEA)
        .collect();
    let messages = client
        .simple_query(&inlined)
        .unwrap_or_else(|e| panic!("query {inlined:?}: {e}"));
    messages
        .iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => Some(DbRow(
                (0..row.len())
                    .map(|i| {
                        let text = row.get(i)?;
                        Some(if bytea.get(i) == Some(&true) {
                            utf8_of_bytea_hex(text)
                        } else {
                            text.to_string()
                        })
                    })
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

/// The UTF-8 text (lossy) of a BYTEA in PostgreSQL's hex output form, `\x4142`.
fn utf8_of_bytea_hex(text: &str) -> String {
    let hex = text
        .strip_prefix("\\x")
        .unwrap_or_else(|| panic!("not a BYTEA in hex form: {text:?}"));
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The rows of `sql` on the SQLite file at `path`, every value as text.
fn sqlite_query(path: &Path, sql: &str, params: &[&str]) -> Vec<DbRow> {
    use rusqlite::types::ValueRef;
    let conn = rusqlite::Connection::open(path).expect("open the database");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("set a busy timeout");
    let mut stmt = conn
        .prepare(sql)
        .unwrap_or_else(|e| panic!("prepare {sql:?}: {e}"));
    let columns = stmt.column_count();
    stmt.query_map(rusqlite::params_from_iter(params), |r| {
        (0..columns)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => None,
                    ValueRef::Integer(n) => Some(n.to_string()),
                    ValueRef::Real(x) => Some(x.to_string()),
                    ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
                })
            })
            .collect::<Result<Vec<_>, rusqlite::Error>>()
            .map(DbRow)
    })
    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
    .unwrap_or_else(|e| panic!("query {sql:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A running server process.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The test's directory (holds the SQLite database, and the server's stderr).
    pub dir: PathBuf,
    /// Its database.
    pub storage: Storage,
    /// The server process.
    child: Child,
    /// Whether the PostgreSQL database is this server's alone, to drop when it is dropped.
    owns_database: bool,
}

impl TestApp {
    /// A server on a fresh database with default settings.
    pub fn spawn() -> TestApp {
        Self::spawn_with(&[])
    }

    /// A server on a fresh database with extra `serve` flags.
    pub fn spawn_with(extra: &[&str]) -> TestApp {
        let dir = fresh_dir("app");
        let mut app = Self::spawn_in(&dir, extra);
        app.owns_database = true;
        app
    }

    /// A server on the database of `dir` (created if absent; see [`Storage::in_dir`]), e.g. to
    /// restart on the same database, or to start a second server beside the first (PostgreSQL).
    pub fn spawn_in(dir: &Path, extra: &[&str]) -> TestApp {
        Self::spawn_on(dir, Storage::in_dir(dir, "rw"), extra)
    }

    /// A server on `storage`, its stderr appended to a file in `dir`.
    pub fn spawn_on(dir: &Path, storage: Storage, extra: &[&str]) -> TestApp {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--addr", "127.0.0.1:0"])
            .args(storage.args())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RUNWARDEN_") {
                cmd.env_remove(name);
            }
        }
        let stderr_file = dir.join("serve.stderr");
        if std::env::var_os("TEST_LOG").is_some() {
            cmd.stderr(Stdio::inherit());
        } else {
            let file = File::options()
                .create(true)
                .append(true)
                .open(&stderr_file)
                .expect("open the server's stderr file");
            cmd.env("RUST_LOG", "error").stderr(file);
        }
        let mut child = cmd.spawn().expect("start runwarden");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the start-up line");
        let Some(addr) = parse_startup_line(&line) else {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
            panic!("no address in the start-up line {line:?}; stderr: {stderr}");
        };
        TestApp {
            addr,
            dir: dir.to_path_buf(),
            storage,
            child,
            owns_database: false,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Kills the process abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most 10 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.wait_exit(Duration::from_secs(10))
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The SQLite database file (SQLite only; see [`skip_on_postgres`]).
    #[track_caller]
    pub fn db_file(&self) -> &Path {
        self.storage.file()
    }

    /// A connection to the SQLite database file (SQLite only; reads go through `query*`).
    #[track_caller]
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.db_file()).expect("open the database")
    }

    /// The rows of `sql` on this server's database (see [`Storage::query`]).
    pub fn query(&self, sql: &str, params: &[&str]) -> Vec<DbRow> {
        self.storage.query(sql, params)
    }

    /// The first row of `sql`, if any.
    pub fn query_opt(&self, sql: &str, params: &[&str]) -> Option<DbRow> {
        self.storage.query_opt(sql, params)
    }

    /// The first row of `sql` (panics when there is none).
    #[track_caller]
    pub fn query_row(&self, sql: &str, params: &[&str]) -> DbRow {
        self.storage.query_row(sql, params)
    }

    /// The integer in the first column of the first row of `sql`.
    #[track_caller]
    pub fn query_i64(&self, sql: &str, params: &[&str]) -> i64 {
        self.storage.query_i64(sql, params)
    }

    /// The text in the first column of the first row of `sql`.
    #[track_caller]
    pub fn query_text(&self, sql: &str, params: &[&str]) -> String {
        self.storage.query_text(sql, params)
    }

    /// POST a JSON value.
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.post_raw(path, Some("application/json"), body.to_string().as_bytes())
    }

    /// POST raw bytes with an optional Content-Type.
    pub fn post_raw(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Resp {
        let mut headers = vec![("Content-Length".to_string(), body.len().to_string())];
        if let Some(ct) = content_type {
            headers.push(("Content-Type".to_string(), ct.to_string()));
        }
        self.request("POST", path, &headers, body)
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    /// Any request: method, path, headers, body (sent as given; add Content-Length yourself).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Resp {
        http(self.addr, method, path, headers, body)
    }

    /// POST /v1/register-agent-run.
    pub fn register(&self, body: &Value) -> Resp {
        self.post("/v1/register-agent-run", body)
    }

    /// Registers a run with a fixed prompt and returns its trace_id.
    pub fn new_run(&self) -> String {
        self.new_run_with_prompt("You are a helpful assistant.")
    }

    /// Registers a run with `prompt` and returns its trace_id.
    pub fn new_run_with_prompt(&self, prompt: &str) -> String {
        let r = self.register(&json!({"agent_id": "test-agent",
            "timestamp": "2024-01-15T14:30:45.123Z", "system_prompt": prompt}));
        assert_eq!(r.status, 200, "register: {}", r.text());
        r.json()["trace_id"].as_str().expect("trace_id").to_string()
    }

    /// POST /v1/event.
    pub fn event(&self, body: &Value) -> Resp {
        self.post("/v1/event", body)
    }

    /// POST /v1/check.
    pub fn check(&self, body: &Value) -> Resp {
        self.post("/v1/check", body)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let (true, Storage::Postgres(url)) = (self.owns_database, &self.storage) {
            if std::thread::panicking()
                || std::env::var_os("RUNWARDEN_TEST_KEEP_DATABASES").is_some()
            {
                eprintln!("kept the test database {url}");
            } else {
                drop_pg_database(url);
            }
        }
    }
}

/// The binary with `args`, `RUST_LOG=error`, no standard input, and none of the environment's
/// `RUNWARDEN_*` variables (so a developer's settings cannot change a test).
pub fn runwarden_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "error").stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RUNWARDEN_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs the binary with `args` to completion in a fresh directory (at most 10 s; it is killed
/// and the test fails after that).
pub fn run_to_exit(args: &[&str]) -> std::process::Output {
    let mut cmd = runwarden_command(args);
    cmd.current_dir(fresh_dir("run"));
    output_within(cmd, &format!("runwarden {args:?}"))
}

/// Runs `cmd` to completion with its output captured and no input (at most 10 s; it is killed
/// and the test fails after that, naming `what`).
pub fn output_within(mut cmd: Command, what: &str) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start runwarden");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(output) => output.expect("collect the output"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("{what} did not exit within 10 s");
        }
    }
}

/// Asserts exit code 1 and exactly one stderr line, starting `error:`, without panic text;
/// returns that line.
#[track_caller]
pub fn assert_one_error_line(output: &std::process::Output, case: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{case}: exit code; stderr {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{case}: one stderr line; stderr {stderr:?}");
    assert!(lines[0].starts_with("error:"), "{case}: {stderr:?}");
    assert!(
        !stderr.contains("panicked"),
        "{case}: panic text: {stderr:?}"
    );
    lines[0].to_string()
}

/// Sends a signal by name (`TERM`, `INT`, `KILL`) to a process.
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{name} {pid} failed");
}

/// Reads `http://IP:PORT` out of the start-up line.
pub fn parse_startup_line(line: &str) -> Option<SocketAddr> {
    let rest = line.split("http://").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A user event body for `trace_id`.
pub fn user_event(trace_id: &str) -> Value {
    json!({"event_type": "user", "trace_id": trace_id, "timestamp": 1678886405.123,
           "content": "{\"message\":\"Book a flight to Paris\"}",
           "schema": "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\"}},\"required\":[\"message\"]}"})
}

/// The transfer_funds function definition used by check tests.
pub fn transfer_schema() -> Value {
    json!({"type": "function", "name": "transfer_funds",
           "description": "Send money",
           "parameters": {"type": "object",
                          "properties": {"amount": {"type": "number"}, "recipient": {"type": "string"}},
                          "required": ["amount", "recipient"]}})
}

/// A check body for transfer_funds with `args`.
pub fn transfer_check(trace_id: &str, args: &Value) -> Value {
    json!({"event_type": "action_check", "trace_id": trace_id, "timestamp": 1678886415.0,
           "content": args.to_string(), "schema": transfer_schema().to_string()})
}

/// A canonical, lowercase, hyphenated UUID whose version is 4 and variant RFC 4122.
pub fn is_lowercase_v4_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// The current time in Unix seconds, with the fraction.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// `body` (a JSON object) with `field` set to `value` (`None`: removed).
pub fn with_field(mut body: Value, field: &str, value: Option<Value>) -> Value {
    let obj = body.as_object_mut().expect("object");
    match value {
        Some(v) => obj.insert(field.to_string(), v),
        None => obj.remove(field),
    };
    body
}

/// The MISSING_FIELD cases of a table: for each of `fields`, the bodies `make(field, None)`
/// (absent) and `make(field, Some(null))`, each with the field and a label (`"{field} absent"`,
/// `"{field} null"`).
pub fn absent_and_null_cases<'f>(
    fields: &[&'f str],
    make: impl Fn(&str, Option<Value>) -> Value,
) -> Vec<(Value, &'f str, String)> {
    fields
        .iter()
        .flat_map(|&field| {
            [
                (make(field, None), field, format!("{field} absent")),
                (
                    make(field, Some(Value::Null)),
                    field,
                    format!("{field} null"),
                ),
            ]
        })
        .collect()
}

/// How many rows `table` of `app`'s database holds (`table` is a test constant, never input).
pub fn count_rows(app: &TestApp, table: &str) -> i64 {
    app.storage.count_rows(table)
}

/// The number of stored runs with `trace_id` and the system prompt stored for it (the
/// greatest, were there several).
pub fn run_count_and_prompt(app: &TestApp, trace_id: &str) -> (i64, String) {
    let prompts: Vec<String> = app
        .query(
            "SELECT system_prompt FROM runs WHERE trace_id = ?1",
            &[trace_id],
        )
        .iter()
        .map(|r| r.text(0))
        .collect();
    let count = i64::try_from(prompts.len()).expect("a count");
    (count, prompts.into_iter().max().unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// API keys (the real `runwarden keys` CLI) and keyed requests
// ---------------------------------------------------------------------------------------------

/// The rate-limit headers every keyed `/v1` response of a limited key carries.
pub const RATE_HEADERS: [&str; 3] = [
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
];

/// Runs `runwarden keys ARGS` on `storage` (`--db FILE` or `--database-url URL`) to completion.
pub fn keys_cmd(storage: &Storage, args: &[&str]) -> Output {
    runwarden_command(&["keys"])
        .args(args)
        .args(storage.args())
        .output()
        .expect("run runwarden keys")
}

/// Creates a key on `storage` (a server may be running on it); returns (secret, id).
pub fn create_key_on(
    storage: &Storage,
    project: &str,
    kind: &str,
    extra: &[&str],
) -> (String, String) {
    let args = [&["create", "--project", project, "--type", kind], extra].concat();
    let out = keys_cmd(storage, &args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "keys create {args:?}: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "keys create {args:?} prints the secret alone: {stdout:?}"
    );
    let id = stderr
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap_or_else(|| panic!("keys create {args:?}: no key id on stderr: {stderr:?}"));
    (lines[0].to_string(), id.to_string())
}

/// Creates a key on the database of `app` (the server may be running); returns (secret, id).
pub fn create_key(app: &TestApp, project: &str, kind: &str, extra: &[&str]) -> (String, String) {
    create_key_on(&app.storage, project, kind, extra)
}

/// Headers of a JSON POST of `body`, with `x-api-key` when `key` is given, and `extra`.
pub fn headers_for(
    body: &[u8],
    key: Option<&str>,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Content-Length".to_string(), body.len().to_string()),
    ];
    if let Some(k) = key {
        headers.push(("x-api-key".to_string(), k.to_string()));
    }
    headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    headers
}

/// POSTs `body` to `path` on `addr` with key `key` (none when `None`) and `extra` headers.
pub fn post_to(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    extra: &[(&str, &str)],
    body: &Value,
) -> Resp {
    let bytes = body.to_string().into_bytes();
    http(addr, "POST", path, &headers_for(&bytes, key, extra), &bytes)
}

/// POSTs `body` to `path` of `app` with key `key` and `extra` headers.
pub fn post_as(
    app: &TestApp,
    path: &str,
    key: Option<&str>,
    extra: &[(&str, &str)],
    body: &Value,
) -> Resp {
    post_to(app.addr, path, key, extra, body)
}

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` as numbers; panics naming `case` if one is
/// missing or not a number.
#[track_caller]
pub fn rate(r: &Resp, case: &str) -> (u64, u64, u64) {
    let get = |name: &str| -> u64 {
        let v = r
            .header(name)
            .unwrap_or_else(|| panic!("{case}: no {name} header; headers {:?}", r.headers));
        v.parse()
            .unwrap_or_else(|e| panic!("{case}: {name} {v:?} is not a number: {e}"))
    };
    (
        get(RATE_HEADERS[0]),
        get(RATE_HEADERS[1]),
        get(RATE_HEADERS[2]),
    )
}

/// `Retry-After` as a number.
#[track_caller]
pub fn retry_after(r: &Resp, case: &str) -> u64 {
    r.header("Retry-After")
        .unwrap_or_else(|| panic!("{case}: no Retry-After; headers {:?}", r.headers))
        .parse()
        .unwrap_or_else(|e| panic!("{case}: Retry-After is not a number: {e}"))
}

/// Seconds left in the current window of `len` seconds by the local clock (which the server
/// shares), computed as the server computes `X-RateLimit-Reset`.
pub fn secs_left_in_window(len: u64) -> u64 {
    len - (now_secs() as u64 % len)
}

/// Sleeps into the next window of `len` seconds when fewer than `margin` seconds remain in the
/// current one, so that a short test cannot straddle a window boundary.
pub fn avoid_window_end(len: u64, margin: u64) {
    let left = len as f64 - now_secs() % len as f64;
    if left < margin as f64 {
        std::thread::sleep(Duration::from_secs_f64(left + 0.1));
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error envelope's `code`.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Asserts an error response: status, code and (when given) param; returns the error object.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, param: Option<&str>, case: &str) -> Value {
        assert_eq!(self.status, status, "{case}: status; body {}", self.text());
        let v = self.json();
        let err = &v["error"];
        assert_eq!(err["code"], code, "{case}: code; body {v}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: message; body {v}"
        );
        assert!(err["type"].is_string(), "{case}: type; body {v}");
        if let Some(p) = param {
            assert_eq!(err["param"], p, "{case}: param; body {v}");
        }
        err.clone()
    }
}

/// One JSON POST that may fail at any point (the server may be killed, or a request may hang):
/// the whole response, or `None` when the connection fails, no answer comes within 10 s, or the
/// response is incomplete (head or body cut short).
pub fn try_request(addr: SocketAddr, path: &str, body: &Value) -> Option<Resp> {
    let body = body.to_string();
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let body_start = head_end(&raw)? + 4;
    let resp = parse_response(&raw);
    let announced = resp
        .header("Content-Length")
        .and_then(|v| v.parse::<usize>().ok());
    match announced {
        Some(len) if raw.len() - body_start < len => None,
        _ => Some(resp),
    }
}

/// One HTTP/1.1 exchange on a new connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Resp {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    // The server may answer (413, 415) and close before reading a body; ignore send errors.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

/// Where the response head in `raw` ends: the index of the `\r\n\r\n` that closes it (`None`
/// while the head is incomplete).
pub fn head_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The payload of a `Transfer-Encoding: chunked` body (chunk extensions and trailers ignored).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).expect("chunk size");
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}

/// Parses a complete HTTP/1.1 response (Content-Length, chunked, or to EOF).
pub fn parse_response(raw: &[u8]) -> Resp {
    let split = head_end(raw).unwrap_or_else(|| {
        panic!(
            "no complete response head in {:?}",
            String::from_utf8_lossy(raw)
        )
    });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        // tiny_http chunks responses over 32 KiB.
        body = dechunk(&body);
    } else if let Some(len) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// Asserts that the events stored for `trace_id` have sequence numbers 1..=`n` without gaps or
/// repeats, and are exactly the acknowledged ones (`answers`: status and event id).
pub fn assert_gap_free_and_acknowledged(
    app: &TestApp,
    trace_id: &str,
    answers: &[(u16, String)],
    n: usize,
) {
    let rows: Vec<(i64, String)> = app
        .query(
            "SELECT seq, event_id FROM events WHERE trace_id = ?1 ORDER BY seq",
            &[trace_id],
        )
        .iter()
        .map(|r| (r.i64(0), r.text(1)))
        .collect();
    let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
    let expected: Vec<i64> = (1..=n as i64).collect();
    assert_eq!(
        seqs, expected,
        "sequence numbers 1..=N without gaps or repeats"
    );
    let stored: std::collections::HashSet<&str> = rows.iter().map(|(_, id)| id.as_str()).collect();
    let answered: std::collections::HashSet<&str> =
        answers.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(
        stored, answered,
        "the stored events are the acknowledged ones"
    );
}
