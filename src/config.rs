//! Settings of `runwarden serve`, and the names of the environment variables that set them.
//! The CLI (`cli.rs`) reads flags and these variables with clap; this module owns the
//! validated result.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Environment variables, one per `serve` flag. `RUST_LOG` sets the log level.
pub mod vars {
    /// `--addr`: IP and port to listen on.
    pub const ADDR: &str = "RUNWARDEN_ADDR";
    /// `--db`: the SQLite database file.
    pub const DB: &str = "RUNWARDEN_DB";
    /// `--database-url`: a PostgreSQL database instead of the SQLite file.
    pub const DATABASE_URL: &str = "RUNWARDEN_DATABASE_URL";
    /// `--threads`: request worker threads.
    pub const THREADS: &str = "RUNWARDEN_THREADS";
    /// `--max-body-bytes`: the request body cap.
    pub const MAX_BODY_BYTES: &str = "RUNWARDEN_MAX_BODY_BYTES";
    /// `--busy-timeout-ms`: how long a write waits for a database lock held by another process.
    pub const BUSY_TIMEOUT_MS: &str = "RUNWARDEN_BUSY_TIMEOUT_MS";
    /// `--write-batch`: the most writes committed in one transaction.
    pub const WRITE_BATCH: &str = "RUNWARDEN_WRITE_BATCH";
    /// `--allow-open`: serve without API keys on a non-loopback address.
    pub const ALLOW_OPEN: &str = "RUNWARDEN_ALLOW_OPEN";
    /// `--idempotency-ttl-secs`: how long `Idempotency-Key` answers are kept.
    pub const IDEMPOTENCY_TTL_SECS: &str = "RUNWARDEN_IDEMPOTENCY_TTL_SECS";
    /// `--policy`: the policy file.
    pub const POLICY: &str = "RUNWARDEN_POLICY";
    /// `--client-timeout-secs`: how long a client may take to send a request or take a reply.
    pub const CLIENT_TIMEOUT_SECS: &str = "RUNWARDEN_CLIENT_TIMEOUT_SECS";
    /// `--max-connections`: the most client connections kept open.
    pub const MAX_CONNECTIONS: &str = "RUNWARDEN_MAX_CONNECTIONS";
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, created with its tables on first start; one `serve` at a time.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL; the database must exist, its tables are created on first
    /// start; any number of `serve` instances may share it.
    Postgres(String),
}

impl std::fmt::Display for Database {
    /// The file's path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => {
                let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                write!(f, "{}", shown.display())
            }
            Database::Postgres(url) => f.write_str(&crate::store::postgres::redact_url(url)),
        }
    }
}

/// Validated settings of the server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen. Port 0 picks a free port; the start-up line shows it.
    pub addr: SocketAddr,
    /// The database.
    pub db: Database,
    /// Request worker threads.
    pub threads: usize,
    /// The largest accepted request body.
    pub max_body_bytes: u64,
    /// How long a write waits for a lock held by another process before answering 503.
    pub busy_timeout: Duration,
    /// The most writes committed in one transaction (1: one transaction per write).
    pub write_batch: usize,
    /// Serve without API keys even off loopback.
    pub allow_open: bool,
    /// How long `Idempotency-Key` answers are kept.
    pub idempotency_ttl: Duration,
    /// The policy file; `None` for the built-in default.
    pub policy: Option<PathBuf>,
    /// How long a client may take to send a request head (after connecting or after its
    /// previous response, so also how long an idle keep-alive connection stays open), to send
    /// a body (plus a second per 64 KiB), and to take a response (plus a second per 64 KiB
    /// taken).
    pub client_timeout: Duration,
    /// The most client connections kept open (see `http::guard`).
    pub max_connections: usize,
}

/// The default number of worker threads: 8 per core, between 8 and 64. Workers spend most of
/// their time waiting for the group commit (an fsync), not computing, and more of them in
/// flight means larger batches per fsync.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * 8).clamp(8, 64)
}
