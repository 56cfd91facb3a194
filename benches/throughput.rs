//! The throughput benchmark (issue 3): one run measures the HTTP ceiling of this stack and
//! runwarden's endpoints under the same closed-loop, keep-alive load generator, and prints a
//! table with each throughput as a ratio of the ceiling measured in that same run.
//!
//! ```sh
//! cargo bench --bench throughput                      # defaults: 16 connections, 5 s each
//! cargo bench --bench throughput -- --connections 16 --duration 10 --only register
//! RUNWARDEN_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench --bench throughput                  # PostgreSQL scenarios too
//! ```
//!
//! Every server runs as its own process with its default settings (access log at info level
//! included, written to /dev/null), as in production: the ceiling is this binary
//! re-executed with `--ceiling-server` (tiny_http answering fixed bytes from one worker
//! thread), the rest is the release `runwarden` binary on a fresh database. The load generator
//! runs `--connections` client threads in this process; each holds one keep-alive connection
//! and sends its next request as soon as the previous answer has arrived.
//!
//! With `RUNWARDEN_BENCH_DATABASE_URL` (a URL of a PostgreSQL role that may `CREATE DATABASE`)
//! the PostgreSQL scenarios run as well: each on a database of its own (`rw_bench_…`, created
//! for it and dropped after it), with one `serve --database-url` process, or two sharing the
//! database with half of the connections each. The PostgreSQL server's own CPU time (its
//! postmaster and every process under it) is reported in a second table when the server runs
//! on this machine.
//!
//! The keyed scenarios create a production key with limits that are never reached before the
//! server starts and send it on every request, so each request also passes the key lookup and
//! the rate-limit decision (in memory with SQLite, a locked row per key with PostgreSQL).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The environment variable that enables the PostgreSQL scenarios.
const DATABASE_URL_VAR: &str = "RUNWARDEN_BENCH_DATABASE_URL";

/// Settings from the command line (and `RUNWARDEN_BENCH_DATABASE_URL`).
struct Options {
    /// Client threads, one keep-alive connection each.
    connections: usize,
    /// Measured seconds per scenario (after a warm-up of a fifth of it, at least 1 s).
    duration: Duration,
    /// Run only scenarios whose name contains this.
    only: Option<String>,
    /// The PostgreSQL server for the PostgreSQL scenarios; `None` skips them.
    postgres: Option<PgServer>,
}

/// The PostgreSQL server of the PostgreSQL scenarios.
struct PgServer {
    /// A URL of a role that may create and drop databases.
    admin_url: String,
    /// Its postmaster's process id, when it runs on this machine (for its CPU time).
    postmaster: Option<u32>,
}

fn options() -> Options {
    let mut o = Options {
        connections: 16,
        duration: Duration::from_secs(5),
        only: None,
        postgres: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--connections" => {
                o.connections = args.next().and_then(|v| v.parse().ok()).unwrap_or(16)
            }
            "--duration" => {
                o.duration =
                    Duration::from_secs_f64(args.next().and_then(|v| v.parse().ok()).unwrap_or(5.0))
            }
            "--only" => o.only = args.next(),
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    o.postgres = std::env::var(DATABASE_URL_VAR)
        .ok()
        .filter(|url| !url.is_empty())
        .map(|admin_url| {
            let postmaster = postmaster_pid(&admin_url);
            PgServer {
                admin_url,
                postmaster,
            }
        });
    o
}

fn main() {
    if std::env::args().any(|a| a == "--ceiling-server") {
        ceiling_server();
        return;
    }
    if let Some(db) = std::env::args()
        .skip_while(|a| a != STRAIGHTFORWARD[0])
        .nth(1)
    {
        straightforward_server(&db);
        return;
    }
    let o = options();
    println!(
        "runwarden throughput benchmark: {} connections, {:.0} s per scenario, {} cores",
        o.connections,
        o.duration.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut rows: Vec<Row> = Vec::new();
    for scenario in SCENARIOS {
        if o.only
            .as_deref()
            .is_some_and(|f| !scenario.name.contains(f))
            && scenario.name != CEILING
        {
            continue;
        }
        if matches!(scenario.backend, Backend::Postgres) && o.postgres.is_none() {
            continue;
        }
        eprintln!("running: {}", scenario.name);
        rows.push(run_scenario(scenario, &o));
    }
    print_table(&rows, &o);
}

const CEILING: &str = "http ceiling (tiny_http, fixed bytes, 1 thread)";

/// One line of the benchmark.
struct Scenario {
    name: &'static str,
    /// Extra `serve` flags; `None` = the ceiling server.
    server: Option<&'static [&'static str]>,
    /// Where the servers keep their data (ignored by the ceiling).
    backend: Backend,
    /// `serve` processes on the one database; the connections are spread over them evenly.
    instances: usize,
    /// A production key with limits exists before the server starts and every request
    /// carries it (the server then requires keys); otherwise the server runs in open mode.
    keyed: bool,
    /// Events logged in each connection's run before measuring (check scenarios).
    history: usize,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Backend {
    /// A fresh SQLite file (`serve --db`).
    Sqlite,
    /// A fresh PostgreSQL database (`serve --database-url`); needs `RUNWARDEN_BENCH_DATABASE_URL`.
    Postgres,
}

#[derive(Clone, Copy)]
enum Kind {
    Ceiling,
    Register,
    EventSmall,
    EventLarge,
    Check,
}

/// A scenario on one server in open mode.
const fn scenario(
    name: &'static str,
    backend: Backend,
    flags: &'static [&'static str],
    history: usize,
    kind: Kind,
) -> Scenario {
    Scenario {
        name,
        server: Some(flags),
        backend,
        instances: 1,
        keyed: false,
        history,
        kind,
    }
}

/// The "flags" of the straightforward-shape server (`straightforward_server`), which this
/// binary runs itself; `start_server` appends the database file.
const STRAIGHTFORWARD: &[&str] = &["--straightforward-server"];

/// Names the summary lines refer to.
const SQLITE_REGISTER: &str = "register-agent-run (group commit)";
const STRAIGHTFORWARD_REGISTER: &str =
    "register-agent-run, straightforward shape (parse + 1 transaction behind a mutex)";
const SQLITE_REGISTER_KEYED: &str = "register-agent-run, production key with limits";
const PG_REGISTER: &str = "postgres: register-agent-run (1 instance)";
const PG_REGISTER_2: &str = "postgres: register-agent-run (2 instances, one database)";
const PG_REGISTER_KEYED: &str =
    "postgres: register-agent-run, production key with limits (1 instance)";
const PG_EVENT: &str = "postgres: event, small schema (1 instance)";
const PG_EVENT_2: &str = "postgres: event, small schema (2 instances)";

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: CEILING,
        server: None,
        backend: Backend::Sqlite,
        instances: 1,
        keyed: false,
        history: 0,
        kind: Kind::Ceiling,
    },
    scenario(SQLITE_REGISTER, Backend::Sqlite, &[], 0, Kind::Register),
    scenario(
        "register-agent-run (1 write per transaction)",
        Backend::Sqlite,
        &["--write-batch", "1"],
        0,
        Kind::Register,
    ),
    scenario(
        STRAIGHTFORWARD_REGISTER,
        Backend::Sqlite,
        STRAIGHTFORWARD,
        0,
        Kind::Register,
    ),
    scenario(
        "event, small schema",
        Backend::Sqlite,
        &[],
        0,
        Kind::EventSmall,
    ),
    scenario(
        "event, 10 KB content, nested schema",
        Backend::Sqlite,
        &[],
        0,
        Kind::EventLarge,
    ),
    scenario(
        "check, run of 10 events",
        Backend::Sqlite,
        &[],
        10,
        Kind::Check,
    ),
    scenario(
        "check, run of 10,000 events",
        Backend::Sqlite,
        &[],
        10_000,
        Kind::Check,
    ),
    Scenario {
        keyed: true,
        ..scenario(
            SQLITE_REGISTER_KEYED,
            Backend::Sqlite,
            &[],
            0,
            Kind::Register,
        )
    },
    scenario(PG_REGISTER, Backend::Postgres, &[], 0, Kind::Register),
    Scenario {
        instances: 2,
        ..scenario(PG_REGISTER_2, Backend::Postgres, &[], 0, Kind::Register)
    },
    Scenario {
        keyed: true,
        ..scenario(PG_REGISTER_KEYED, Backend::Postgres, &[], 0, Kind::Register)
    },
    scenario(PG_EVENT, Backend::Postgres, &[], 0, Kind::EventSmall),
    Scenario {
        instances: 2,
        ..scenario(PG_EVENT_2, Backend::Postgres, &[], 0, Kind::EventSmall)
    },
    scenario(
        "postgres: check, run of 10 events (1 instance)",
        Backend::Postgres,
        &[],
        10,
        Kind::Check,
    ),
];

/// What one scenario measured.
struct Row {
    name: &'static str,
    requests: u64,
    seconds: f64,
    warmup_seconds: f64,
    latencies_us: Vec<u32>,
    errors: u64,
    unanswered: usize,
    /// Summed over the instances.
    peak_rss_kib: Option<u64>,
    /// Server CPU time over warm-up and measurement, in 1/100 s (summed over the instances).
    cpu_ticks_used: Option<u64>,
    /// The load generator's CPU time over the same period, in 1/100 s.
    client_ticks: Option<u64>,
    /// `serve` processes the load was spread over.
    instances: usize,
    /// PostgreSQL scenarios: the PostgreSQL server's CPU time over the same period, in 1/100 s.
    db_ticks: Option<u64>,
    postgres: bool,
}

impl Row {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// CPU ticks over warm-up and measurement as a percentage of one core.
    fn percent(&self, ticks: u64) -> f64 {
        ticks as f64 / (self.seconds + self.warmup_seconds)
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[idx]) / 1000.0
    }
}

/// A server process under test.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A database of its own for one PostgreSQL scenario, dropped with this value.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    fn create(admin_url: &str) -> PgDatabase {
        let name = format!("rw_bench_{}_{}", std::process::id(), unique());
        let mut admin = pg_connect(admin_url);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        PgDatabase {
            admin_url: admin_url.to_string(),
            url: with_database(admin_url, &name),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // FORCE ends the backends of servers that were just killed and are still closing.
        let dropped =
            postgres::Client::connect(&self.admin_url, postgres::NoTls).and_then(|mut c| {
                c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
            });
        if let Err(e) = dropped {
            eprintln!("warning: could not drop database {}: {e}", self.name);
        }
    }
}

fn pg_connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR}: cannot connect to {url}: {e}"))
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    assert!(
        url.starts_with("postgres://") || url.starts_with("postgresql://"),
        "{DATABASE_URL_VAR} must be a postgres://USER@HOST:PORT/DB URL, got {url:?}"
    );
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let query = query.map_or(String::new(), |q| format!("?{q}"));
    format!("{}/{database}{query}", &base[..authority_end])
}

/// The postmaster of the PostgreSQL server at `admin_url` if it runs on this machine: the
/// parent of this connection's backend, both named `postgres`.
fn postmaster_pid(admin_url: &str) -> Option<u32> {
    let mut admin = pg_connect(admin_url);
    let backend: i32 = admin.query_one("SELECT pg_backend_pid()", &[]).ok()?.get(0);
    let backend = u32::try_from(backend).ok()?;
    let (comm, fields) = proc_stat(backend)?;
    let parent: u32 = fields.get(1)?.parse().ok()?;
    let (parent_comm, _) = proc_stat(parent)?;
    (comm == "postgres" && parent_comm == "postgres").then_some(parent)
}

/// Where the servers of one scenario keep their data; dropped after them.
enum Storage {
    Sqlite(TempDir),
    Postgres(PgDatabase),
}

impl Storage {
    fn new(backend: Backend, o: &Options) -> Storage {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!(
                    "rw-bench-{}-{}",
                    std::process::id(),
                    unique()
                ));
                std::fs::create_dir_all(&dir).expect("bench dir");
                Storage::Sqlite(TempDir(dir))
            }
            Backend::Postgres => {
                let pg = o
                    .postgres
                    .as_ref()
                    .expect("PostgreSQL scenarios need a server");
                Storage::Postgres(PgDatabase::create(&pg.admin_url))
            }
        }
    }

    /// A `runwarden` command (`serve`, `keys create`) with this storage's flag appended.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runwarden"));
        cmd.args(args)
            .env_remove("RUNWARDEN_DB")
            .env_remove("RUNWARDEN_DATABASE_URL");
        match self {
            Storage::Sqlite(dir) => cmd.arg("--db").arg(dir.0.join("rw.db")),
            Storage::Postgres(db) => cmd.args(["--database-url", &db.url]),
        };
        cmd
    }

    /// Creates a production key whose limits are never reached; returns its secret.
    fn create_key(&self) -> String {
        let limit = "1000000000";
        let out = self
            .command(&[
                "keys",
                "create",
                "--project",
                "bench",
                "--type",
                "production",
                "--rpm",
                limit,
                "--rph",
                limit,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run runwarden keys create");
        assert!(
            out.status.success(),
            "keys create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Starts the ceiling server (`storage` = `None`) or `runwarden serve` with `flags`.
fn start_server(flags: &[&str], storage: Option<&Storage>) -> ServerProcess {
    let mut cmd = match storage {
        None => {
            let mut cmd = Command::new(std::env::current_exe().expect("own path"));
            cmd.arg("--ceiling-server");
            cmd
        }
        Some(Storage::Sqlite(dir)) if flags == STRAIGHTFORWARD => {
            let mut cmd = Command::new(std::env::current_exe().expect("own path"));
            cmd.args(flags).arg(dir.0.join("rw.db"));
            cmd
        }
        Some(storage) => {
            let mut cmd = storage.command(&["serve", "--addr", "127.0.0.1:0"]);
            cmd.args(flags);
            cmd
        }
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // The server logs as configured by default (one access line per request at info);
        // the lines go nowhere, as they would to a log file.
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("start-up line");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    ServerProcess { child, addr }
}

fn unique() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// The ceiling: tiny_http answering a fixed JSON body to every request, one worker thread,
/// with the same nudger runwarden uses so that no connection is stranded.
fn ceiling_server() {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind");
    let addr = server.server_addr().to_ip().expect("ip");
    let _nudger = runwarden::nudge::Nudger::start(addr).expect("nudger");
    println!("ceiling listening on http://{addr}");
    let _ = std::io::stdout().flush();
    let body: &[u8] = br#"{"trace_id":"f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4","timestamp":"2024-01-15T14:30:45Z"}"#;
    let header = tiny_http::Header::from_bytes("Content-Type", "application/json").expect("header");
    while let Ok(mut req) = server.recv() {
        let mut sink = Vec::new();
        let _ = req.as_reader().read_to_end(&mut sink);
        let _ = req.respond(tiny_http::Response::from_data(body).with_header(header.clone()));
    }
}

/// The shape issue 3 measured as "a straightforward service", as the baseline of group commit:
/// 16 worker threads, each parses the JSON body and inserts the run in its own transaction on
/// one shared connection behind a mutex (WAL, `synchronous=FULL`, SQLite's default
/// checkpoints), then answers. No runwarden code: only the shape.
fn straightforward_server(db: &str) {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE runs (trace_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL,
             started_at TEXT NOT NULL, system_prompt TEXT NOT NULL, received_at TEXT NOT NULL);",
    )
    .expect("schema");
    let conn = Arc::new(std::sync::Mutex::new(conn));
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind"));
    let addr = server.server_addr().to_ip().expect("ip");
    let _nudger = runwarden::nudge::Nudger::start(addr).expect("nudger");
    println!("straightforward listening on http://{addr}");
    let _ = std::io::stdout().flush();
    let header = tiny_http::Header::from_bytes("Content-Type", "application/json").expect("header");
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (server, conn, header) = (Arc::clone(&server), Arc::clone(&conn), header.clone());
            std::thread::spawn(move || {
                while let Ok(mut req) = server.recv() {
                    let mut body = Vec::new();
                    let _ = req.as_reader().read_to_end(&mut body);
                    let (status, answer) = match serde_json::from_slice::<Value>(&body) {
                        Ok(v) => {
                            let id = uuid::Uuid::new_v4().to_string();
                            let now = runwarden::domain::time::format_millis_utc(
                                time::OffsetDateTime::now_utc(),
                            );
                            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                            let c = conn.lock().unwrap_or_else(|e| e.into_inner());
                            let stored = c
                                .execute_batch("BEGIN IMMEDIATE")
                                .and_then(|()| {
                                    c.execute(
                                        "INSERT INTO runs VALUES (?1, ?2, ?3, ?4, ?5)",
                                        (
                                            &id,
                                            field("agent_id"),
                                            field("timestamp"),
                                            field("system_prompt"),
                                            &now,
                                        ),
                                    )
                                })
                                .and_then(|_| c.execute_batch("COMMIT"));
                            drop(c);
                            match stored {
                                Ok(()) => (200, json!({"trace_id": id, "timestamp": now})),
                                Err(e) => (503, json!({"error": e.to_string()})),
                            }
                        }
                        Err(e) => (400, json!({"error": e.to_string()})),
                    };
                    let _ = req.respond(
                        tiny_http::Response::from_data(answer.to_string())
                            .with_status_code(status)
                            .with_header(header.clone()),
                    );
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

fn register_body() -> Value {
    json!({"agent_id": "cs-agent-prod-v1", "timestamp": "2024-01-15T14:30:45.123Z",
           "system_prompt": "You are a helpful customer service assistant. You should be polite and professional. Never share customer personal information."})
}

fn small_event(trace_id: &str) -> Value {
    json!({"event_type": "user", "trace_id": trace_id, "timestamp": 1678886405.123,
           "content": "{\"message\":\"Book a flight to Paris\"}",
           "schema": "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\"}},\"required\":[\"message\"]}"})
}

fn large_event(trace_id: &str) -> Value {
    let items: Vec<Value> = (0..40)
        .map(|i| {
            json!({"id": i, "name": format!("item-{i:04}"), "tags": ["a", "b", "c"],
                        "price": {"amount": 12.5 + f64::from(i), "currency": "EUR"},
                        "note": "x".repeat(150)})
        })
        .collect();
    let content = json!({"order": {"id": "ord-1234", "customer": {"email": "user@example.com", "name": "Ada"},
                                   "items": items}});
    let schema = json!({"type": "object", "required": ["order"], "properties": {"order": {
        "type": "object", "required": ["id", "customer", "items"], "properties": {
            "id": {"type": "string"},
            "customer": {"type": "object", "required": ["email"], "properties": {
                "email": {"type": "string"}, "name": {"type": "string"}}},
            "items": {"type": "array", "items": {"type": "object", "required": ["id", "name", "price"],
                "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                               "tags": {"type": "array", "items": {"type": "string"}},
                               "price": {"type": "object", "required": ["amount", "currency"], "properties": {
                                   "amount": {"type": "number"}, "currency": {"type": "string", "enum": ["EUR", "USD"]}}},
                               "note": {"type": "string"}}}}}}}});
    json!({"event_type": "tool", "trace_id": trace_id, "timestamp": 1678886405.5,
           "content": content.to_string(), "schema": schema.to_string()})
}

fn check_body(trace_id: &str) -> Value {
    json!({"event_type": "action_check", "trace_id": trace_id, "timestamp": 1678886415.0,
           "content": "{\"amount\":500,\"recipient\":\"user@example.com\"}",
           "schema": "{\"type\":\"function\",\"name\":\"transfer_funds\",\"parameters\":{\"type\":\"object\",\"properties\":{\"amount\":{\"type\":\"number\"},\"recipient\":{\"type\":\"string\"}},\"required\":[\"amount\",\"recipient\"]}}"})
}

/// A request; `key` adds the `x-api-key` header (where runwarden reads keys; it does not read
/// `Authorization`).
fn request_bytes(path: &str, body: &Value, key: Option<&str>) -> Vec<u8> {
    let body = body.to_string();
    let auth = key.map_or(String::new(), |k| format!("x-api-key: {k}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One connection's client: sends `request` in a closed loop until `stop`.
struct ClientResult {
    latencies_us: Vec<u32>,
    requests: u64,
    errors: u64,
    answered: bool,
}

fn client(
    addr: SocketAddr,
    request: Vec<u8>,
    measure_from: Instant,
    stop: Arc<AtomicBool>,
) -> ClientResult {
    let mut r = ClientResult {
        latencies_us: Vec::with_capacity(1 << 16),
        requests: 0,
        errors: 0,
        answered: false,
    };
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let reader = match conn.as_mut() {
            Some(c) => c,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    conn.insert(BufReader::with_capacity(64 * 1024, s))
                }
                Err(_) => {
                    r.errors += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let outcome = reader
            .get_mut()
            .write_all(&request)
            .and_then(|()| read_status(reader));
        let took = sent.elapsed();
        let counted = sent >= measure_from;
        match outcome {
            Ok(status) => {
                r.answered = true;
                if counted {
                    r.requests += 1;
                    r.latencies_us
                        .push(took.as_micros().min(u128::from(u32::MAX)) as u32);
                    if status != 200 {
                        r.errors += 1;
                    }
                }
            }
            Err(_) => {
                if counted {
                    r.errors += 1;
                }
                conn = None;
            }
        }
    }
    r
}

/// Reads one response; returns its status.
fn read_status(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':')
            && n.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut left = length;
    while left > 0 {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let n = buf.len().min(left);
        reader.consume(n);
        left -= n;
    }
    Ok(status)
}

/// Sends one request on a fresh connection and returns the JSON answer (setup only).
fn setup_post(addr: SocketAddr, path: &str, body: &Value, key: Option<&str>) -> Value {
    let mut s = BufReader::new(TcpStream::connect(addr).expect("connect"));
    s.get_mut()
        .write_all(&request_bytes(path, body, key))
        .expect("send");
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        s.read_line(&mut line).expect("read");
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    s.read_exact(&mut body).expect("body");
    serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("setup {path}: {head} {}", String::from_utf8_lossy(&body)))
}

/// Logs `n` small events into `trace_id` over `parallel` keep-alive connections (setup only).
fn fill_history(addr: SocketAddr, trace_id: &str, n: usize, parallel: usize, key: Option<&str>) {
    let req = request_bytes("/v1/event", &small_event(trace_id), key);
    let fillers: Vec<_> = (0..parallel)
        .map(|i| {
            let req = req.clone();
            let count = n / parallel + usize::from(i < n % parallel);
            std::thread::spawn(move || {
                let mut s = BufReader::new(TcpStream::connect(addr).expect("connect"));
                for _ in 0..count {
                    s.get_mut().write_all(&req).expect("send");
                    assert_eq!(read_status(&mut s).expect("answer"), 200, "history event");
                }
            })
        })
        .collect();
    for f in fillers {
        f.join().expect("filler");
    }
}

/// A process's command name and the fields of /proc/PID/stat after it (index 0 = state,
/// 1 = parent, 11 = utime, 12 = stime, 13 = cutime, 14 = cstime).
fn proc_stat(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    Some((comm, rest.split_whitespace().map(str::to_string).collect()))
}

fn tick_field(fields: &[String], i: usize) -> Option<u64> {
    fields.get(i)?.parse().ok()
}

/// User plus system CPU time of a process, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let (_, fields) = proc_stat(pid)?;
    Some(tick_field(&fields, 11)? + tick_field(&fields, 12)?)
}

/// CPU time of a PostgreSQL server in clock ticks: its postmaster, the processes under it now
/// and those it has reaped (so backends that ended in between still count).
fn postgres_ticks(postmaster: u32) -> Option<u64> {
    let (_, fields) = proc_stat(postmaster)?;
    let mut total = (11..=14)
        .map(|i| tick_field(&fields, i))
        .sum::<Option<u64>>()?;
    let parent = postmaster.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((_, f)) = proc_stat(pid)
            && f.get(1) == Some(&parent)
        {
            total += tick_field(&f, 11).unwrap_or(0) + tick_field(&f, 12).unwrap_or(0);
        }
    }
    Some(total)
}

/// The sum of `f` over the servers; `None` if any is unknown.
fn summed(servers: &[ServerProcess], f: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    servers.iter().map(|s| f(s.child.id())).sum()
}

fn run_scenario(scenario: &Scenario, o: &Options) -> Row {
    // Declared before the servers so that it is dropped (the database too) after them.
    let storage = scenario
        .server
        .is_some()
        .then(|| Storage::new(scenario.backend, o));
    let key = storage
        .as_ref()
        .filter(|_| scenario.keyed)
        .map(Storage::create_key);
    let key = key.as_deref();
    let servers: Vec<ServerProcess> = (0..scenario.instances.max(1))
        .map(|_| start_server(scenario.server.unwrap_or(&[]), storage.as_ref()))
        .collect();
    if key.is_some() {
        // A key the server refuses would make every measured request an error: fail instead.
        for server in &servers {
            let run = setup_post(server.addr, "/v1/register-agent-run", &register_body(), key);
            assert!(run["trace_id"].is_string(), "keyed register: {run}");
        }
    }
    // Connection i talks to server i modulo the number of servers.
    let addrs: Vec<SocketAddr> = (0..o.connections)
        .map(|i| servers[i % servers.len()].addr)
        .collect();
    // One request per connection, built after any setup it needs. Check scenarios share one
    // run whose history is filled first.
    let check_run = matches!(scenario.kind, Kind::Check).then(|| {
        let addr = servers[0].addr;
        let run = setup_post(addr, "/v1/register-agent-run", &register_body(), key);
        let trace_id = run["trace_id"].as_str().expect("trace_id").to_string();
        fill_history(addr, &trace_id, scenario.history, o.connections, key);
        trace_id
    });
    let requests: Vec<Vec<u8>> = addrs
        .iter()
        .map(|&addr| match (scenario.kind, &check_run) {
            (Kind::Check, Some(trace_id)) => request_bytes("/v1/check", &check_body(trace_id), key),
            (Kind::EventSmall | Kind::EventLarge, _) => {
                let run = setup_post(addr, "/v1/register-agent-run", &register_body(), key);
                let trace_id = run["trace_id"].as_str().expect("trace_id");
                if let Kind::EventSmall = scenario.kind {
                    request_bytes("/v1/event", &small_event(trace_id), key)
                } else {
                    request_bytes("/v1/event", &large_event(trace_id), key)
                }
            }
            _ => request_bytes("/v1/register-agent-run", &register_body(), key),
        })
        .collect();
    let postmaster = match storage {
        Some(Storage::Postgres(_)) => o.postgres.as_ref().and_then(|pg| pg.postmaster),
        _ => None,
    };
    let cpu_before = summed(&servers, cpu_ticks);
    let db_before = postmaster.and_then(postgres_ticks);
    let client_cpu_before = cpu_ticks(std::process::id());
    let warmup = (o.duration / 5).max(Duration::from_secs(1));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let measure_from = start + warmup;
    let clients: Vec<_> = requests
        .into_iter()
        .zip(addrs)
        .map(|(req, addr)| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || client(addr, req, measure_from, stop))
        })
        .collect();
    std::thread::sleep(warmup + o.duration);
    stop.store(true, Ordering::Relaxed);
    let measured = measure_from.elapsed().as_secs_f64();
    let results: Vec<ClientResult> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let peak_rss_kib = summed(&servers, peak_rss);
    let client_ticks = cpu_ticks(std::process::id())
        .zip(client_cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let cpu_ticks_used = summed(&servers, cpu_ticks)
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let db_ticks = postmaster
        .and_then(postgres_ticks)
        .zip(db_before)
        .map(|(after, before)| after.saturating_sub(before));
    let mut latencies_us: Vec<u32> = results
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    latencies_us.sort_unstable();
    Row {
        name: scenario.name,
        requests: results.iter().map(|r| r.requests).sum(),
        seconds: measured,
        warmup_seconds: warmup.as_secs_f64(),
        latencies_us,
        errors: results.iter().map(|r| r.errors).sum(),
        unanswered: results.iter().filter(|r| !r.answered).count(),
        peak_rss_kib,
        cpu_ticks_used,
        client_ticks,
        instances: servers.len(),
        db_ticks,
        postgres: matches!(storage, Some(Storage::Postgres(_))),
    }
}

/// The server's peak resident set (VmHWM), from /proc.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn print_table(rows: &[Row], o: &Options) {
    let ceiling = rows.iter().find(|r| r.name == CEILING).map(Row::throughput);
    println!();
    println!(
        "| scenario | req/s | of ceiling | p50 ms | p99 ms | p99.9 ms | errors | unanswered conns | server peak RSS | server CPU | client CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let ratio = ceiling.map_or("-".to_string(), |c| format!("{:.2}", r.throughput() / c));
        // Rows of several instances show sums over them, and say so.
        let sum_of = if r.instances > 1 {
            format!(" (sum of {})", r.instances)
        } else {
            String::new()
        };
        let rss = r.peak_rss_kib.map_or("-".to_string(), |k| {
            format!("{:.1} MiB{sum_of}", k as f64 / 1024.0)
        });
        let cpu = r
            .cpu_ticks_used
            .map_or("-".to_string(), |t| format!("{:.0}%{sum_of}", r.percent(t)));
        let client_cpu = r
            .client_ticks
            .map_or("-".to_string(), |t| format!("{:.0}%", r.percent(t)));
        println!(
            "| {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
            r.name,
            r.throughput(),
            ratio,
            r.percentile_ms(0.50),
            r.percentile_ms(0.99),
            r.percentile_ms(0.999),
            r.errors,
            r.unanswered,
            rss,
            cpu,
            client_cpu
        );
    }
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    println!();
    if let (Some(g), Some(one)) = (
        find(SQLITE_REGISTER),
        find("register-agent-run (1 write per transaction)"),
    ) {
        println!(
            "register-agent-run: group commit / one transaction per write = {:.1}x",
            g.throughput() / one.throughput()
        );
        if let Some(plain) = find(STRAIGHTFORWARD_REGISTER) {
            println!(
                "register-agent-run: group commit / straightforward shape = {:.1}x",
                g.throughput() / plain.throughput()
            );
        }
    }
    if let (Some(small), Some(big)) = (
        find("check, run of 10 events"),
        find("check, run of 10,000 events"),
    ) {
        println!(
            "check p99: run of 10,000 events / run of 10 events = {:.2}",
            big.percentile_ms(0.99) / small.percentile_ms(0.99)
        );
    }
    let ratio = |a: &str, b: &str| {
        find(a)
            .zip(find(b))
            .map(|(a, b)| a.throughput() / b.throughput())
    };
    let costs: Vec<String> = [
        ("sqlite", ratio(SQLITE_REGISTER_KEYED, SQLITE_REGISTER)),
        ("postgres", ratio(PG_REGISTER_KEYED, PG_REGISTER)),
    ]
    .into_iter()
    .filter_map(|(backend, r)| r.map(|r| format!("{backend} keyed/open = {r:.2}")))
    .collect();
    if !costs.is_empty() {
        println!("rate limit cost: {}", costs.join(", "));
    }
    for (what, two, one) in [
        ("register-agent-run", PG_REGISTER_2, PG_REGISTER),
        ("event, small schema", PG_EVENT_2, PG_EVENT),
    ] {
        if let Some(r) = ratio(two, one) {
            println!("{what}: postgres 2 instances / 1 instance = {r:.2}");
        }
    }
    if rows.iter().any(|r| r.instances > 1) {
        println!(
            "Rows of 2 instances: req/s is combined, latencies are over the connections to both \
             (half of them on each), server peak RSS and server CPU are sums over both."
        );
    }
    if rows.iter().any(|r| r.postgres) {
        println!(
            "Server CPU counts runwarden only; the PostgreSQL server, on the same machine, is \
             below. CPU is in percent of one core ({} cores here).",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    match &o.postgres {
        None => println!(
            "PostgreSQL scenarios skipped: set {DATABASE_URL_VAR}=postgres://USER@HOST:PORT/DB \
             (a role that may CREATE DATABASE) to run them."
        ),
        Some(pg) if pg.postmaster.is_none() => println!(
            "PostgreSQL server CPU not measured: its postmaster is not a process on this machine."
        ),
        Some(_) => {
            let pg_rows: Vec<&Row> = rows.iter().filter(|r| r.postgres).collect();
            if !pg_rows.is_empty() {
                println!();
                println!(
                    "| PostgreSQL scenario | postgres CPU (postmaster and all its processes) | runwarden + postgres + client CPU |"
                );
                println!("|---|---:|---:|");
                for r in pg_rows {
                    let total = r
                        .cpu_ticks_used
                        .zip(r.db_ticks)
                        .zip(r.client_ticks)
                        .map(|((s, d), c)| s + d + c);
                    let pct = |t: Option<u64>| {
                        t.map_or("-".to_string(), |t| format!("{:.0}%", r.percent(t)))
                    };
                    println!("| {} | {} | {} |", r.name, pct(r.db_ticks), pct(total));
                }
            }
        }
    }
}
