//! Settings of `runwarden serve`, and the names of the environment variables that set them.
//! The CLI (`cli.rs`) reads flags and these variables with clap; this module owns the
//! validated result, and knows which files make up a SQLite database ([`Database::file_named`]),
//! so that no command writes its output over them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// `--busy-timeout-ms`: how long a write waits for a lock held by another process (SQLite)
    /// or another transaction (PostgreSQL's `lock_timeout`).
    pub const BUSY_TIMEOUT_MS: &str = "RUNWARDEN_BUSY_TIMEOUT_MS";
    /// `--write-batch`: the most writes committed in one transaction.
    pub const WRITE_BATCH: &str = "RUNWARDEN_WRITE_BATCH";
    /// `--allow-open`: serve without API keys on a non-loopback address. Read as a boolean:
    /// `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`.
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

/// The files SQLite keeps beside a database while it is open or after a crash: the WAL, its
/// index, and the rollback journal. Writing over any of them damages the database.
pub const SQLITE_COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

impl Database {
    /// Which file of this SQLite database `path` names, if it names one: `""` for the database
    /// file itself, or its companion's suffix (`"-wal"`, `"-shm"`, `"-journal"`). Paths are
    /// compared canonically (symbolic links, `..`, relative paths resolved; the file need not
    /// exist), and when both files exist also by device and inode, so that a hard link is
    /// caught too. Always `None` for PostgreSQL. `backup` and `export` refuse such an output
    /// before they create or truncate anything.
    pub fn file_named(&self, path: &Path) -> Option<&'static str> {
        let Database::Sqlite(db) = self else {
            return None;
        };
        let wanted = resolved(path);
        // SQLite names the companions after the path it opened, which follows a symbolic link
        // to the database; both spellings are checked.
        let mut bases = vec![resolved(db)];
        if let Ok(target) = std::fs::canonicalize(db)
            && !bases.contains(&target)
        {
            bases.push(target);
        }
        for base in bases {
            for suffix in std::iter::once("").chain(SQLITE_COMPANIONS) {
                let mut name = base.clone().into_os_string();
                name.push(suffix);
                let candidate = PathBuf::from(name);
                if resolved(&candidate) == wanted || same_file(&candidate, path) {
                    return Some(suffix);
                }
            }
        }
        None
    }
}

/// `path` made absolute with every symbolic link resolved, also when the file itself does not
/// exist (its directory is resolved, its name kept).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(absolute.clone()),
        _ => absolute,
    }
}

/// Whether both paths exist and are one file (same device and inode).
#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Without inodes, only the canonical comparison applies.
#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    false
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
    /// How long a write waits for a lock held by another process (SQLite) or another
    /// transaction (PostgreSQL's `lock_timeout`) before answering 503.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of its own under the OS temp dir.
    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rw-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create the directory");
        d
    }

    #[test]
    fn the_database_and_its_companions_are_named_also_through_other_spellings() {
        let d = dir("named");
        let db = d.join("live.db");
        std::fs::write(&db, b"x").expect("write");
        let database = Database::Sqlite(db.clone());
        let cases: [(PathBuf, Option<&str>); 6] = [
            (db.clone(), Some("")),
            (d.join("sub/../live.db"), Some("")),
            (d.join("live.db-wal"), Some("-wal")),
            (d.join("live.db-shm"), Some("-shm")),
            (d.join("live.db-journal"), Some("-journal")),
            (d.join("live.db.jsonl"), None),
        ];
        std::fs::create_dir_all(d.join("sub")).expect("mkdir");
        for (path, expected) in cases {
            assert_eq!(database.file_named(&path), expected, "{}", path.display());
        }
    }

    #[cfg(unix)]
    #[test]
    fn links_to_the_database_are_named() {
        let d = dir("links");
        let db = d.join("live.db");
        std::fs::write(&db, b"x").expect("write");
        std::fs::hard_link(&db, d.join("hard")).expect("hard link");
        std::os::unix::fs::symlink(&db, d.join("soft")).expect("symlink");
        let database = Database::Sqlite(db);
        assert_eq!(database.file_named(&d.join("hard")), Some(""));
        assert_eq!(database.file_named(&d.join("soft")), Some(""));
        // A database opened through a symbolic link keeps its companions beside the target.
        let through_link = Database::Sqlite(d.join("soft"));
        assert_eq!(
            through_link.file_named(&d.join("live.db-wal")),
            Some("-wal")
        );
    }

    #[test]
    fn postgresql_has_no_files() {
        let database = Database::Postgres("postgres://x@h/db".into());
        assert_eq!(database.file_named(Path::new("runwarden.db")), None);
    }
}
