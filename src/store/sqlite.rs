//! The SQLite backend: one file, WAL journal, `synchronous=FULL`.
//!
//! Writes go to one writer thread that owns the write connection (a rusqlite `Connection` is
//! `Send` but not `Sync`). A request thread hands it a [`WriteOp`] over a channel and waits for
//! the answer. The writer takes every operation that queued up meanwhile (at most
//! `batch_max`), runs each inside its own SAVEPOINT within one `BEGIN IMMEDIATE` transaction,
//! commits once, and only then answers each request: every answer is durable, but a batch of N
//! writes pays for one fsync instead of N ("group commit"). An operation that fails rolls back
//! to its own savepoint, so it fails alone and its neighbours still commit.
//!
//! Reads use their own connections from a small pool; under WAL they never wait for the writer.
//!
//! The schema comes from `schema.sql` (embedded), applied by [`migrate`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use super::{
    CheckRecord, EventRecord, History, ImportOutcome, ImportedItem, ImportedRun, Page,
    RecordedCheck, Replay, RunRecord, Scope, Store, StoreError, StoredJson, StoredReplay,
    history_item, migrations, scope_params, take_rows, unix_millis,
};
use crate::auth::{ApiKey, KeyType, Limits};
use crate::domain::event::{NewCheck, NewEvent, NewRun};
use crate::domain::ids::TraceId;
use crate::domain::time::format_millis_utc;
use crate::engine::RunContext;
use crate::ratelimit::{Decision, RateLimiter};

/// The embedded database definition.
pub const SCHEMA_SQL: &str = include_str!("../../schema.sql");

/// How to open the store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file; created with its tables when absent.
    pub path: PathBuf,
    /// How long a connection waits for a lock held by another process before giving up
    /// (then: 503 STORAGE_UNAVAILABLE).
    pub busy_timeout: Duration,
    /// The most writes committed in one transaction. 1 gives one transaction per write.
    pub batch_max: usize,
    /// How long answers for `Idempotency-Key` retries are kept.
    pub idempotency_ttl: Duration,
}

impl SqliteOptions {
    /// Defaults for `path`: 5 s busy timeout, batches of up to 64 writes.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            busy_timeout: Duration::from_secs(5),
            batch_max: 64,
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// One write, as sent to the writer thread.
enum WriteOp {
    Run(String, NewRun, Option<Replay>),
    Event(String, NewEvent, Option<Replay>),
    Check(String, RecordedCheck, Option<Replay>),
    Import(Box<ImportedRun>),
    InsertKey(ApiKey, [u8; 32]),
    RevokeKey(String, String),
    TouchKey(String, String),
}

/// A write and where to send its outcome (the run's sequence number for events and checks, the
/// number of changed rows for key updates); `None` when nobody waits for it.
struct Job {
    op: WriteOp,
    reply: Option<SyncSender<Result<u64, StoreError>>>,
}

/// The SQLite store. Dropping it stops the writer after the writes already queued and closes
/// the database.
pub struct SqliteStore {
    path: PathBuf,
    busy_timeout: Duration,
    writer: Option<Sender<Job>>,
    writer_thread: Option<JoinHandle<()>>,
    checkpointer: Option<Checkpointer>,
    readers: Mutex<Vec<Connection>>,
    limiter: RateLimiter,
}

/// The background checkpointer: its stop signal and its thread.
struct Checkpointer {
    stop: SyncSender<()>,
    thread: JoinHandle<()>,
}

/// The writer's page cache, in KiB as SQLite's negative `cache_size` takes it: large enough
/// that the index pages random ids land in stay in memory (SQLite's default is 2 MiB).
const WRITER_CACHE_KIB: i64 = -16 * 1024;

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// WAL pages after which the writer checkpoints by itself: a backstop in case the
/// checkpointer falls behind (SQLite's default is 1000).
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 20_000;

/// WAL pages (4 KiB each) after which the WAL is started over: 16 MiB.
const WAL_RESTART_PAGES: i64 = 4096;

/// How long a WAL restart waits for a reader on an old snapshot before it is left for later.
const RESTART_WAIT: Duration = Duration::from_millis(20);

/// Readers kept open for reuse; more may exist briefly under load.
const MAX_IDLE_READERS: usize = 8;

/// Each reader's page cache, in KiB (negative, as SQLite's `cache_size` takes it).
const READER_CACHE_KIB: i64 = -512;

impl SqliteStore {
    /// Opens (or creates) the database, applies the schema and starts the writer. Errors are
    /// one clear line for the operator.
    pub fn open(options: &SqliteOptions) -> Result<Self, String> {
        let path = &options.path;
        // SQLite says "unable to open database file" whatever the cause; the operator needs the
        // cause (a read-only filesystem, a directory, a missing one).
        let cannot_open = |e: rusqlite::Error| match open_problem(path) {
            Some(why) => format!("cannot open database {} for writing: {why}", path.display()),
            None => format!("cannot open database {}: {e}", path.display()),
        };
        let conn = open_connection(path, options.busy_timeout, false).map_err(cannot_open)?;
        // SQLite falls back to read-only when the file cannot be written (a read-only mount);
        // every write would then fail. Refuse to start instead.
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(format!(
                "cannot open database {} for writing: {}",
                path.display(),
                open_problem(path).unwrap_or_else(|| "it is read-only".into())
            ));
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(cannot_open)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!(
                "cannot open database {}: it refuses WAL journal mode (got {mode})",
                path.display()
            ));
        }
        migrate(&conn).map_err(|e| format!("database {}: {e}", path.display()))?;
        // Checkpoints copy the WAL into the database file and fsync it, which takes
        // milliseconds; done by the writer (SQLite's default, every 1000 pages) they stall
        // every write queued behind it. A checkpointer thread does them instead, beside the
        // writer (a PASSIVE checkpoint never blocks it).
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            .and_then(|()| conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB))
            .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
        let wal_full = Arc::new(AtomicBool::new(false));
        let checkpointer = start_checkpointer(
            path,
            options.busy_timeout,
            options.idempotency_ttl,
            Arc::clone(&wal_full),
        )
        .map_err(|e| format!("cannot start the checkpointer for {}: {e}", path.display()))?;

        let (tx, rx) = mpsc::channel();
        let batch_max = options.batch_max.max(1);
        let writer_thread = std::thread::Builder::new()
            .name("rw-writer".into())
            .spawn({
                let busy_timeout = options.busy_timeout;
                move || writer_loop(conn, rx, batch_max, &wal_full, busy_timeout)
            })
            .map_err(|e| format!("cannot start the database writer: {e}"))?;
        Ok(SqliteStore {
            path: path.clone(),
            busy_timeout: options.busy_timeout,
            writer: Some(tx),
            writer_thread: Some(writer_thread),
            checkpointer: Some(checkpointer),
            readers: Mutex::new(Vec::new()),
            limiter: RateLimiter::default(),
        })
    }

    /// Sends `op` to the writer and waits until it is committed (or failed).
    fn write(&self, op: WriteOp) -> Result<u64, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let gone = || StoreError::Unavailable("the database writer has stopped".into());
        self.writer
            .as_ref()
            .ok_or_else(gone)?
            .send(Job {
                op,
                reply: Some(reply),
            })
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    /// `NotFound` unless the run exists in `scope` (without counting its events, as `get_run`
    /// does).
    fn run_visible(&self, scope: Scope<'_>, trace_id: TraceId) -> Result<(), StoreError> {
        let (project, all) = scope_params(scope);
        self.read(|conn| {
            conn.prepare_cached("SELECT 1 FROM runs WHERE trace_id = ?1 AND (?2 OR project = ?3)")?
                .query_row(params![trace_id.to_string(), all, project], |_| Ok(()))
        })
    }

    /// Runs `f` on a pooled read connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().map(|mut v| v.pop()).unwrap_or(None);
        let conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path, self.busy_timeout, true)?,
        };
        let result = f(&conn).map_err(StoreError::from);
        if let Ok(mut idle) = self.readers.lock()
            && idle.len() < MAX_IDLE_READERS
        {
            idle.push(conn);
        }
        result
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The writer's connection must close last: the last connection to close checkpoints
        // the WAL into the database file and removes it, so a cleanly stopped database is one
        // file. Readers and the checkpointer go first.
        if let Ok(mut readers) = self.readers.lock() {
            readers.clear();
        }
        if let Some(c) = self.checkpointer.take() {
            let _ = c.stop.send(());
            let _ = c.thread.join();
        }
        // Closing the channel ends the writer loop once the queued writes are done.
        self.writer.take();
        if let Some(t) = self.writer_thread.take()
            && t.join().is_err()
        {
            log::error!("the database writer panicked");
        }
    }
}

impl Store for SqliteStore {
    fn insert_run(
        &self,
        project: &str,
        run: NewRun,
        replay: Option<Replay>,
    ) -> Result<(), StoreError> {
        self.write(WriteOp::Run(project.to_string(), run, replay))
            .map(|_| ())
    }

    fn append_event(
        &self,
        project: &str,
        event: NewEvent,
        replay: Option<Replay>,
    ) -> Result<u64, StoreError> {
        self.write(WriteOp::Event(project.to_string(), event, replay))
    }

    fn record_check(
        &self,
        project: &str,
        check: RecordedCheck,
        replay: Option<Replay>,
    ) -> Result<u64, StoreError> {
        self.write(WriteOp::Check(project.to_string(), check, replay))
    }

    fn run_history(
        &self,
        project: &str,
        trace_id: TraceId,
        after_seq: u64,
    ) -> Result<History, StoreError> {
        self.read(|conn| {
            let id = trace_id.to_string();
            // The run's latest sequence number first: every item up to it is committed (an
            // item and the number are written in one transaction), later ones are left out.
            let (run, last_seq) = conn
                .prepare_cached(
                    "SELECT agent_id, system_prompt, last_seq FROM runs
                      WHERE trace_id = ?1 AND project = ?2",
                )?
                .query_row(params![id, project], |r| {
                    let run = RunContext {
                        agent_id: r.get(0)?,
                        system_prompt: r.get(1)?,
                    };
                    Ok((run, r.get::<_, i64>(2)?))
                })?;
            // What the derived state is made of: events (approvals, where values were seen;
            // model input and output neither add nor launder trust) and checks.
            let mut stmt = conn.prepare_cached(
                "SELECT seq, 0, content, event_type, schema, 0, event_id FROM events
                  WHERE trace_id = ?1 AND seq > ?2 AND seq <= ?3
                    AND event_type NOT IN ('model_input', 'model_output')
                 UNION ALL
                 SELECT seq, 1, content, tool_name, NULL, consumed_approval, check_id FROM checks
                  WHERE trace_id = ?1 AND seq > ?2 AND seq <= ?3
                 ORDER BY 1",
            )?;
            let items = stmt
                .query_map(params![id, after_seq as i64, last_seq], |r| {
                    let content: String = r.get(2)?;
                    Ok(history_item(
                        r.get(0)?,
                        r.get(6)?,
                        r.get(1)?,
                        &content,
                        r.get(3)?,
                        r.get::<_, Option<String>>(4)?.as_deref(),
                        r.get(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(History {
                run,
                items,
                last_seq: last_seq.max(0) as u64,
            })
        })
    }

    fn rate_limit(
        &self,
        key_id: &str,
        limits: Limits,
        now_secs: u64,
    ) -> Result<Option<Decision>, StoreError> {
        // One process serves a SQLite file (see `server.rs`), so its memory is where every
        // request of the database is counted.
        Ok(self.limiter.check(key_id, limits, now_secs))
    }

    fn replay(
        &self,
        project: &str,
        key: &str,
        not_before_ms: i64,
    ) -> Result<Option<StoredReplay>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT request_hash, status, body FROM idempotency
                 WHERE project = ?1 AND idem_key = ?2 AND created_at_ms >= ?3",
            )?
            .query_row(params![project, key, not_before_ms], |r| {
                let hash: Vec<u8> = r.get(0)?;
                Ok(StoredReplay {
                    request_hash: hash.try_into().unwrap_or([0; 32]),
                    status: r.get(1)?,
                    body: r.get(2)?,
                })
            })
            .optional()
        })
    }

    fn insert_key(&self, key: ApiKey, secret_hash: [u8; 32]) -> Result<(), StoreError> {
        self.write(WriteOp::InsertKey(key, secret_hash)).map(|_| ())
    }

    fn key_by_hash(&self, secret_hash: &[u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?1"
            ))?
            .query_row([&secret_hash[..]], key_from_row)
            .optional()
        })
    }

    fn has_active_keys(&self) -> Result<bool, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)")?
                .query_row([], |r| r.get(0))
        })
    }

    fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY rowid"
            ))?
            .query_map([], key_from_row)?
            .collect()
        })
    }

    fn revoke_key(&self, id: &str, at: &str) -> Result<bool, StoreError> {
        self.write(WriteOp::RevokeKey(id.to_string(), at.to_string()))
            .map(|changed| changed > 0)
    }

    fn touch_key(&self, id: &str, at: &str) {
        if let Some(writer) = &self.writer {
            let _ = writer.send(Job {
                op: WriteOp::TouchKey(id.to_string(), at.to_string()),
                reply: None,
            });
        }
    }

    fn list_runs(
        &self,
        scope: Scope<'_>,
        agent_id: Option<&str>,
        page: Page,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let (project, all) = scope_params(scope);
        self.read(|conn| {
            take_rows(
                conn.prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs r
                  WHERE (?1 OR r.project = ?2) AND (?3 IS NULL OR r.agent_id = ?3)
                    AND (?4 IS NULL OR r.rowid < ?4)
                  ORDER BY r.rowid DESC LIMIT ?5 OFFSET ?6"
                ))?
                .query_map(
                    params![
                        all,
                        project,
                        agent_id,
                        page.after,
                        page.limit,
                        page.offset as i64
                    ],
                    run_from_row,
                )?,
                &page,
            )
        })
    }

    fn get_run(&self, scope: Scope<'_>, trace_id: TraceId) -> Result<RunRecord, StoreError> {
        let (project, all) = scope_params(scope);
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs r WHERE r.trace_id = ?1 AND (?2 OR r.project = ?3)"
            ))?
            .query_row(params![trace_id.to_string(), all, project], run_from_row)
        })
    }

    fn list_events(
        &self,
        scope: Scope<'_>,
        trace_id: TraceId,
        event_type: Option<&str>,
        page: Page,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.run_visible(scope, trace_id)?;
        self.read(|conn| {
            take_rows(
                conn.prepare_cached(
                    "SELECT event_id, trace_id, seq, event_type, occurred_at, received_at_ms,
                        content, content_form, schema, schema_form
                   FROM events
                  WHERE trace_id = ?1 AND (?2 IS NULL OR event_type = ?2)
                    AND (?3 IS NULL OR seq > ?3)
                  ORDER BY seq LIMIT ?4 OFFSET ?5",
                )?
                .query_map(
                    params![
                        trace_id.to_string(),
                        event_type,
                        page.after,
                        page.limit,
                        page.offset as i64
                    ],
                    |r| {
                        Ok(EventRecord {
                            event_id: r.get(0)?,
                            trace_id: r.get(1)?,
                            seq: r.get(2)?,
                            event_type: r.get(3)?,
                            occurred_at: r.get(4)?,
                            received_at_ms: r.get(5)?,
                            content: StoredJson {
                                text: r.get(6)?,
                                form: r.get(7)?,
                            },
                            schema: StoredJson {
                                text: r.get(8)?,
                                form: r.get(9)?,
                            },
                        })
                    },
                )?,
                &page,
            )
        })
    }

    fn run_key(&self, scope: Scope<'_>, trace_id: TraceId) -> Result<i64, StoreError> {
        let (project, all) = scope_params(scope);
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT rowid FROM runs WHERE trace_id = ?1 AND (?2 OR project = ?3)",
            )?
            .query_row(params![trace_id.to_string(), all, project], |r| r.get(0))
        })
    }

    fn check_key(&self, scope: Scope<'_>, check_id: &str) -> Result<i64, StoreError> {
        let (project, all) = scope_params(scope);
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT c.rowid FROM checks c JOIN runs r ON r.trace_id = c.trace_id
                  WHERE c.check_id = ?1 AND (?2 OR r.project = ?3)",
            )?
            .query_row(params![check_id, all, project], |r| r.get(0))
        })
    }

    fn list_checks(
        &self,
        scope: Scope<'_>,
        trace_id: Option<TraceId>,
        is_safe: Option<bool>,
        page: Page,
    ) -> Result<Vec<CheckRecord>, StoreError> {
        if let Some(id) = trace_id {
            self.run_visible(scope, id)?;
        }
        let (project, all) = scope_params(scope);
        self.read(|conn| {
            take_rows(
                conn.prepare_cached(
                    "SELECT c.rowid, c.check_id, c.trace_id, c.seq, c.tool_name, c.occurred_at,
                        c.received_at_ms, c.content, c.content_form, c.schema, c.schema_form,
                        c.is_safe, c.reasoning, c.findings
                   FROM checks c JOIN runs r ON r.trace_id = c.trace_id
                  WHERE (?1 OR r.project = ?2) AND (?3 IS NULL OR c.trace_id = ?3)
                    AND (?4 IS NULL OR c.is_safe = ?4) AND (?5 IS NULL OR c.rowid > ?5)
                  ORDER BY c.rowid LIMIT ?6 OFFSET ?7",
                )?
                .query_map(
                    params![
                        all,
                        project,
                        trace_id.map(|t| t.to_string()),
                        is_safe,
                        page.after,
                        page.limit,
                        page.offset as i64
                    ],
                    |r| {
                        Ok(CheckRecord {
                            key: r.get(0)?,
                            check_id: r.get(1)?,
                            trace_id: r.get(2)?,
                            seq: r.get(3)?,
                            tool_name: r.get(4)?,
                            occurred_at: r.get(5)?,
                            received_at_ms: r.get(6)?,
                            content: StoredJson {
                                text: r.get(7)?,
                                form: r.get(8)?,
                            },
                            schema: StoredJson {
                                text: r.get(9)?,
                                form: r.get(10)?,
                            },
                            is_safe: r.get(11)?,
                            reasoning: r.get(12)?,
                            findings: r.get(13)?,
                        })
                    },
                )?,
                &page,
            )
        })
    }

    fn import_run(&self, run: ImportedRun) -> Result<ImportOutcome, StoreError> {
        self.write(WriteOp::Import(Box::new(run)))
            .map(|code| match code {
                0 => ImportOutcome::Inserted,
                1 => ImportOutcome::AlreadyPresent,
                _ => ImportOutcome::Conflict,
            })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())))
    }

    /// One `serve` per file (`server.rs` locks it): this process sees every write.
    fn shared(&self) -> bool {
        false
    }
}

const RUN_COLUMNS: &str = "r.rowid, r.trace_id, r.project, r.agent_id, r.started_at,
    r.received_at, r.system_prompt,
    (SELECT count(*) FROM events e WHERE e.trace_id = r.trace_id),
    (SELECT count(*) FROM checks c WHERE c.trace_id = r.trace_id),
    (SELECT count(*) FROM checks c WHERE c.trace_id = r.trace_id AND c.is_safe = 0)";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        key: r.get(0)?,
        trace_id: r.get(1)?,
        project: r.get(2)?,
        agent_id: r.get(3)?,
        started_at: r.get(4)?,
        received_at: r.get(5)?,
        system_prompt: r.get(6)?,
        event_count: r.get::<_, i64>(7)?.max(0) as u64,
        check_count: r.get::<_, i64>(8)?.max(0) as u64,
        blocked_check_count: r.get::<_, i64>(9)?.max(0) as u64,
    })
}

/// (project, every project?) as query parameters.
const KEY_COLUMNS: &str =
    "id, project, key_type, name, rpm, rph, created_at, last_used_at, revoked_at";

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    let key_type: String = r.get(2)?;
    Ok(ApiKey {
        id: r.get(0)?,
        project: r.get(1)?,
        key_type: KeyType::parse(&key_type).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                "unknown key type".into(),
            )
        })?,
        name: r.get(3)?,
        rpm: r.get(4)?,
        rph: r.get(5)?,
        created_at: r.get(6)?,
        last_used_at: r.get(7)?,
        revoked_at: r.get(8)?,
    })
}

/// Starts the thread that checkpoints the WAL every [`CHECKPOINT_INTERVAL`] on a connection
/// of its own, and once a minute deletes idempotency answers older than `idempotency_ttl`,
/// until told to stop.
fn start_checkpointer(
    path: &Path,
    busy_timeout: Duration,
    idempotency_ttl: Duration,
    wal_full: Arc<AtomicBool>,
) -> std::io::Result<Checkpointer> {
    let conn = open_connection(path, busy_timeout, false).map_err(std::io::Error::other)?;
    let mut wal_path = path.as_os_str().to_owned();
    wal_path.push("-wal");
    let wal_path = PathBuf::from(wal_path);
    let (stop, stopped) = mpsc::sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("rw-checkpoint".into())
        .spawn(move || {
            let mut last_purge = std::time::Instant::now();
            let mut wal = WalWatch {
                path: wal_path,
                last_frames: -1,
            };
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_INTERVAL)
            {
                if let Err(e) = checkpoint(&conn, &mut wal, &wal_full, busy_timeout) {
                    log::warn!("WAL checkpoint failed (will retry): {e}");
                }
                if last_purge.elapsed() >= Duration::from_secs(60) {
                    last_purge = std::time::Instant::now();
                    let cutoff = unix_millis(time::OffsetDateTime::now_utc())
                        - idempotency_ttl.as_millis() as i64;
                    if let Err(e) =
                        conn.execute("DELETE FROM idempotency WHERE created_at_ms < ?1", [cutoff])
                    {
                        log::warn!("purging expired idempotency keys failed (will retry): {e}");
                    }
                }
            }
        })?;
    Ok(Checkpointer { stop, thread })
}

/// What the checkpointer knows of the WAL between its rounds.
struct WalWatch {
    /// The WAL file.
    path: PathBuf,
    /// The frames the WAL held at the previous round (-1: none yet).
    last_frames: i64,
}

/// One round of the checkpointer. A PASSIVE checkpoint copies what it can of the WAL into the
/// database without waiting for anyone. Under steady writes that never lets the WAL start over
/// (the writer appends while the copy runs), so the file would grow to the writer's backstop
/// (80 MiB) and keep that size: measured, 78 MiB under 16 connections registering runs.
/// - Once the WAL holds [`WAL_RESTART_PAGES`], `wal_full` asks the writer to start it over
///   between two batches (see [`restart_wal`]): the checkpointer itself would hardly ever get
///   the write lock, which the writer takes again right after each commit.
/// - Once nothing has been written for a round and everything is copied, a WAL file larger
///   than that is emptied (the idle server's disk use is the database's).
fn checkpoint(
    conn: &Connection,
    wal: &mut WalWatch,
    wal_full: &AtomicBool,
    busy_timeout: Duration,
) -> rusqlite::Result<()> {
    let (frames, copied): (i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })?;
    let idle = frames == copied && frames == wal.last_frames;
    wal.last_frames = frames;
    if !idle {
        if frames >= WAL_RESTART_PAGES {
            wal_full.store(true, Ordering::Relaxed);
        }
        return Ok(());
    }
    let file_bytes = std::fs::metadata(&wal.path).map_or(0, |m| m.len());
    if file_bytes > (WAL_RESTART_PAGES * 4096) as u64 {
        restart_wal(conn, busy_timeout, "TRUNCATE");
        wal_full.store(false, Ordering::Relaxed);
    }
    Ok(())
}

/// Copies the rest of the WAL into the database (the checkpointer has copied most of it
/// already) and starts the WAL over: `RESTART` keeps the file's size, so the writes that
/// follow overwrite it in place (the writer, under load: growing the file again costs each
/// commit's fsync a quarter of the throughput, measured); `TRUNCATE` also empties it (the
/// checkpointer, once the writer is idle). Waits at most [`RESTART_WAIT`] for a reader still
/// on an old snapshot, then leaves it for later.
fn restart_wal(conn: &Connection, busy_timeout: Duration, mode: &str) {
    let restarted = conn.busy_timeout(RESTART_WAIT).and_then(|()| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            r.get::<_, i64>(0)
        })
    });
    match restarted {
        Ok(0) => {}
        Ok(_) => log::debug!("WAL restart deferred: a reader is on an old snapshot"),
        Err(e) => log::warn!("WAL restart failed (will retry): {e}"),
    }
    if let Err(e) = conn.busy_timeout(busy_timeout) {
        log::warn!("cannot restore a busy timeout after a WAL restart: {e}");
    }
}

/// Opens one connection with the settings every connection needs.
fn open_connection(
    path: &Path,
    busy_timeout: Duration,
    read_only: bool,
) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    // FULL: a commit returns only once the WAL is fsynced, so an answer is never ahead of the
    // disk. foreign_keys is per connection and off by default in SQLite.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    if read_only {
        // Readers do point lookups; a small page cache each keeps a pool of them cheap
        // (SQLite's default is 2 MiB per connection).
        conn.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
    }
    Ok(conn)
}

/// Why `path` cannot be opened for writing, when the filesystem says: it is a directory, its
/// parent is missing or not a directory, or the OS refuses to open (or create) it for writing,
/// e.g. "Read-only file system (os error 30)". `None` when nothing is wrong with the path
/// itself. Called only after SQLite failed; the probe creates no file that SQLite would not
/// have created (and removes it again).
fn open_problem(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Some("it is a directory".into()),
        Ok(_) => {
            return std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .err()
                .map(|e| e.to_string());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            return Some(match parent.map(std::fs::metadata) {
                Some(Ok(m)) if !m.is_dir() => {
                    format!("{} is not a directory", parent.unwrap_or(path).display())
                }
                _ => e.to_string(),
            });
        }
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(parent) {
        Ok(m) if !m.is_dir() => Some(format!("{} is not a directory", parent.display())),
        Err(e) => Some(format!("{}: {e}", parent.display())),
        Ok(_) => match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(path);
                None
            }
            Err(e) => Some(e.to_string()),
        },
    }
}

/// The schema version this binary writes.
pub fn schema_version() -> u32 {
    migrations("schema.sql", SCHEMA_SQL)
        .map(|m| m.len() as u32)
        .unwrap_or(0)
}

/// Brings the database to the newest version of `schema.sql`, forward only. A database from a
/// newer runwarden is refused.
pub fn migrate(conn: &Connection) -> Result<(), String> {
    let steps = migrations("schema.sql", SCHEMA_SQL)?;
    let known = steps.len() as u32;
    let current: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("cannot read the schema version: {e}"))?;
    if current > known {
        return Err(format!(
            "its schema version {current} is newer than this runwarden knows ({known}); \
             upgrade runwarden or use another database file"
        ));
    }
    for (version, sql) in steps.into_iter().filter(|(v, _)| *v > current) {
        let apply = || -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            conn.execute_batch(&sql)?;
            conn.execute_batch(&format!("PRAGMA user_version = {version}"))?;
            conn.execute_batch("COMMIT")
        };
        if let Err(e) = apply() {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(format!("cannot apply schema version {version}: {e}"));
        }
    }
    Ok(())
}

/// What [`backup`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupReport {
    /// Pages copied (the source's page count at the snapshot).
    pub pages: u64,
    /// The size of the copy in bytes.
    pub bytes: u64,
    /// How long the whole backup took, the integrity check included.
    pub elapsed: Duration,
    /// How long `PRAGMA integrity_check` on the copy took.
    pub check_time: Duration,
}

/// Pages copied per backup step (4 MiB with the default 4 KiB pages).
const BACKUP_PAGES_PER_STEP: i32 = 1024;

/// The pause between two backup steps, so that a large copy leaves the disk to the server's
/// writes now and then.
const BACKUP_PAUSE: Duration = Duration::from_millis(5);

/// How long a backup waits for a lock on the database before it gives up.
const BACKUP_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Copies the database at `source` to `out` with SQLite's online backup API, while a server
/// may be writing to it. Errors are one line for the operator.
///
/// - The copy is one snapshot: the source connection holds a single read transaction for the
///   whole copy, so it holds every write committed before the backup started and none that
///   was still in flight. Under WAL a reader never blocks the writer; the price is that the
///   WAL cannot be checkpointed past the snapshot until the copy ends (it grows meanwhile).
///   Without that transaction SQLite would restart the copy after every commit of the server,
///   which under steady load may never finish.
/// - It is copied [`BACKUP_PAGES_PER_STEP`] pages at a time, with a short pause between steps.
/// - It is written to a temporary file beside `out` and moved to `out` only after it passed
///   `PRAGMA integrity_check`, so a failed backup never leaves a partial file under `out`.
/// - An existing `out` is replaced only with `force`, never when it is the source itself or
///   has a `-wal` or `-journal` file beside it (SQLite would apply that to the new copy).
/// - The copy is in rollback-journal mode: one self-contained file (`serve` switches it to WAL
///   when it opens it).
pub fn backup(source: &Path, out: &Path, force: bool) -> Result<BackupReport, String> {
    let started = std::time::Instant::now();
    match std::fs::metadata(source) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(format!("{} is not a database file", source.display())),
        Err(e) => return Err(format!("cannot read database {}: {e}", source.display())),
    }
    check_backup_target(source, out, force)?;
    let name = out
        .file_name()
        .ok_or_else(|| format!("{} does not name a file", out.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".partial-{}", std::process::id()));
    let tmp = out.with_file_name(tmp_name);
    // From here on, every way out but success removes the temporary file.
    let mut partial = PartialFile(Some(tmp.clone()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;

    let source_err = |e: rusqlite::Error| format!("cannot read database {}: {e}", source.display());
    let copy_err = |e: rusqlite::Error| format!("cannot write the copy {}: {e}", tmp.display());
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(source_err)?;
    src.busy_timeout(BACKUP_BUSY_TIMEOUT)
        .and_then(|()| src.execute_batch("BEGIN"))
        .and_then(|()| src.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())))
        .map_err(source_err)?;
    let mut dst = Connection::open_with_flags(
        &tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(copy_err)?;
    let pages = {
        let copy = rusqlite::backup::Backup::new(&src, &mut dst).map_err(copy_err)?;
        let mut waiting_since = None;
        loop {
            match copy.step(BACKUP_PAGES_PER_STEP).map_err(copy_err)? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => waiting_since = None,
                // Busy or Locked should not happen while this connection holds its read
                // transaction; should they, the step is tried again for a while.
                _ => {
                    let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > BACKUP_BUSY_TIMEOUT {
                        return Err(format!(
                            "database {} stayed locked for {} s; nothing was written to {}",
                            source.display(),
                            BACKUP_BUSY_TIMEOUT.as_secs(),
                            out.display()
                        ));
                    }
                }
            }
            std::thread::sleep(BACKUP_PAUSE);
        }
        copy.progress().pagecount.max(0) as u64
    };
    let _ = src.execute_batch("COMMIT");
    drop(src);

    let checking = std::time::Instant::now();
    // The copy's header says WAL, as the source's does: back to a rollback journal, so that
    // the backup is one file without -wal and -shm companions.
    dst.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .map_err(copy_err)?;
    let problems: Vec<String> = dst
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(copy_err)?;
    if problems != ["ok"] {
        return Err(format!(
            "the copy failed PRAGMA integrity_check ({}); {} was not written",
            problems
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
            out.display()
        ));
    }
    let check_time = checking.elapsed();
    dst.close().map_err(|(_, e)| copy_err(e))?;
    let file =
        std::fs::File::open(&tmp).map_err(|e| format!("cannot reopen {}: {e}", tmp.display()))?;
    file.sync_all()
        .map_err(|e| format!("cannot flush {} to disk: {e}", tmp.display()))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    drop(file);

    place_backup(&tmp, out, force)?;
    partial.0 = None;
    // The rename is durable once the directory is.
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(BackupReport {
        pages,
        bytes,
        elapsed: started.elapsed(),
        check_time,
    })
}

/// Refuses a backup target that must not be replaced.
fn check_backup_target(source: &Path, out: &Path, force: bool) -> Result<(), String> {
    // The database or one of its companions, also through a link (shared with `export -o`).
    match crate::config::Database::Sqlite(source.to_path_buf()).file_named(out) {
        None => {}
        Some("") => {
            return Err(format!(
                "{} is the database being backed up; choose another file",
                out.display()
            ));
        }
        Some(companion) => {
            return Err(format!(
                "{} is the {companion} file of the database being backed up; choose another file",
                out.display()
            ));
        }
    }
    let Ok(meta) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    if !force {
        return Err(format!(
            "{} exists; pass --force to replace it",
            out.display()
        ));
    }
    if meta.is_dir() {
        return Err(format!("{} is a directory", out.display()));
    }
    for suffix in ["-wal", "-journal"] {
        let mut companion = out.as_os_str().to_os_string();
        companion.push(suffix);
        if Path::new(&companion).exists() {
            return Err(format!(
                "{} exists beside {}: a process may be using it, or it was not closed cleanly; \
                 not replacing it (stop that process, or remove both files yourself)",
                Path::new(&companion).display(),
                out.display()
            ));
        }
    }
    Ok(())
}

/// Moves the finished copy to `out`. Without `force` a hard link places it, which fails rather
/// than replace a file that appeared at `out` during the copy; where hard links are not
/// supported, `out` is checked once more and the copy renamed.
fn place_backup(tmp: &Path, out: &Path, force: bool) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("cannot move the copy to {}: {e}", out.display());
    if force {
        return std::fs::rename(tmp, out).map_err(failed);
    }
    match std::fs::hard_link(tmp, out) {
        Ok(()) => std::fs::remove_file(tmp).map_err(failed),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(format!(
            "{} exists (it appeared during the copy); pass --force to replace it",
            out.display()
        )),
        Err(_) if std::fs::symlink_metadata(out).is_ok() => Err(format!(
            "{} exists (it appeared during the copy); pass --force to replace it",
            out.display()
        )),
        Err(_) => std::fs::rename(tmp, out).map_err(failed),
    }
}

/// A temporary backup file (and SQLite's companions of it), removed when dropped unless taken.
struct PartialFile(Option<PathBuf>);

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let mut p = path.as_os_str().to_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match &err {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(e, _) => match e.code {
                ErrorCode::ConstraintViolation
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                        || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                {
                    StoreError::Conflict
                }
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull => {
                    StoreError::Unavailable(err.to_string())
                }
                // A full disk does not always say SQLITE_FULL. Each time the WAL grows past
                // another 4096 frames, SQLite grows the WAL index (`-shm`) by 32 KiB, writing
                // one byte per page so that the mapping cannot fault later; on a full disk that
                // write fails and the commit reports SQLITE_IOERR_SHMSIZE ("disk I/O error"),
                // which answered 500. Nothing was committed, and the next commit succeeds once
                // there is room (the test `faults::a_full_disk_while_the_wal_index_grows_…`
                // reproduces it): the same passing condition as SQLITE_FULL, so 503.
                ErrorCode::SystemIoFailure
                    if e.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE =>
                {
                    StoreError::Unavailable(format!(
                        "{err}: cannot grow the WAL index (-shm file); is the disk full?"
                    ))
                }
                _ => StoreError::Other(err.to_string()),
            },
            _ => StoreError::Other(err.to_string()),
        }
    }
}

/// The writer thread: group commit until the channel closes.
fn writer_loop(
    conn: Connection,
    jobs: Receiver<Job>,
    batch_max: usize,
    wal_full: &AtomicBool,
    busy_timeout: Duration,
) {
    let (mut writes, mut transactions) = (0u64, 0u64);
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = commit_batch(&conn, &batch);
        writes += batch.len() as u64;
        transactions += 1;
        for (job, result) in batch.into_iter().zip(results) {
            // The requester may have gone (its thread panicked), or not wait at all.
            if let Some(reply) = job.reply {
                let _ = reply.send(result);
            }
        }
        if wal_full.swap(false, Ordering::Relaxed) {
            restart_wal(&conn, busy_timeout, "RESTART");
        }
    }
    if transactions > 0 {
        log::info!(
            "database writer: {writes} writes in {transactions} transactions ({:.1} per commit)",
            writes as f64 / transactions as f64
        );
    }
}

/// Runs one of the fixed transaction-control statements, prepared once per connection.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Applies `batch` in one transaction, each write in its own savepoint, and commits. Returns
/// one result per job, valid only after the commit: if the commit fails, every job fails.
fn commit_batch(conn: &Connection, batch: &[Job]) -> Vec<Result<u64, StoreError>> {
    let all_fail = |e: StoreError| -> Vec<Result<u64, StoreError>> {
        batch.iter().map(|_| Err(e.clone())).collect()
    };
    let abort = |e: rusqlite::Error| {
        if !conn.is_autocommit() {
            let _ = control(conn, "ROLLBACK");
        }
        all_fail(e.into())
    };
    if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
        return all_fail(e.into());
    }
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(e) = control(conn, "SAVEPOINT w") {
            return abort(e);
        }
        match apply(conn, &job.op) {
            Ok(n) => {
                if let Err(e) = control(conn, "RELEASE w") {
                    return abort(e);
                }
                results.push(Ok(n));
            }
            Err(e) => {
                if conn.is_autocommit() {
                    // SQLite rolled the whole transaction back by itself (it may on a full
                    // disk or an I/O error): the writes before this one are gone too.
                    return all_fail(e);
                }
                if let Err(e2) =
                    control(conn, "ROLLBACK TO w").and_then(|()| control(conn, "RELEASE w"))
                {
                    return abort(e2);
                }
                results.push(Err(e));
            }
        }
    }
    match control(conn, "COMMIT") {
        Ok(()) => results,
        Err(e) => abort(e),
    }
}

/// Applies one write inside the current savepoint.
fn apply(conn: &Connection, op: &WriteOp) -> Result<u64, StoreError> {
    let seq_or_changes = match op {
        WriteOp::Run(project, run, replay) => {
            remember(conn, project, replay.as_ref())?;
            conn.prepare_cached(
                "INSERT INTO runs (trace_id, project, agent_id, started_at, system_prompt, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                run.trace_id.to_string(),
                project,
                run.agent_id.as_ref(),
                run.started_at,
                run.system_prompt,
                format_millis_utc(run.received_at),
            ])?;
            0
        }
        WriteOp::Event(project, ev, replay) => {
            remember(conn, project, replay.as_ref())?;
            let seq = next_seq(conn, project, ev.trace_id)?;
            insert_event(conn, ev, seq)?;
            seq
        }
        WriteOp::Check(project, rc, replay) => {
            remember(conn, project, replay.as_ref())?;
            let seq = match rc.after_seq {
                Some(after) => next_seq_after(conn, project, rc.check.trace_id, after)?,
                None => next_seq(conn, project, rc.check.trace_id)?,
            };
            let findings = serde_json::to_string(&rc.verdict.findings)
                .map_err(|e| StoreError::Other(format!("cannot serialise findings: {e}")))?;
            insert_check(
                conn,
                &rc.check,
                seq,
                &rc.tool_name,
                rc.verdict.is_safe,
                &rc.verdict.reasoning,
                &findings,
                rc.verdict.consumed_approval,
            )?;
            seq
        }
        WriteOp::InsertKey(key, hash) => {
            conn.prepare_cached(
                "INSERT INTO api_keys (id, project, key_type, name, secret_hash, rpm, rph, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                key.id,
                key.project,
                key.key_type.as_str(),
                key.name,
                &hash[..],
                key.rpm,
                key.rph,
                key.created_at,
            ])? as i64
        }
        WriteOp::RevokeKey(id, at) => conn
            .prepare_cached("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1")?
            .execute(params![id, at])? as i64,
        WriteOp::TouchKey(id, at) => conn
            .prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")?
            .execute(params![id, at])? as i64,
        WriteOp::Import(imported) => import(conn, imported)?,
    };
    Ok(seq_or_changes.max(0) as u64)
}

/// Stores an imported run unless its trace id exists: 0 inserted, 1 the same run is there,
/// 2 a different one is.
fn import(conn: &Connection, imported: &ImportedRun) -> Result<i64, StoreError> {
    let run = &imported.run;
    let id = run.trace_id.to_string();
    let existing: Option<(String, String, String, String)> = conn
        .prepare_cached(
            "SELECT project, agent_id, started_at, system_prompt FROM runs WHERE trace_id = ?1",
        )?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let item_ids: Vec<String> = imported
        .items
        .iter()
        .map(|i| match i {
            ImportedItem::Event(e) => e.event_id.to_string(),
            ImportedItem::Check(c) => c.check.check_id.to_string(),
        })
        .collect();
    if let Some((project, agent_id, started_at, system_prompt)) = existing {
        let stored_ids: Vec<String> = conn
            .prepare_cached(
                "SELECT event_id, seq FROM events WHERE trace_id = ?1
                 UNION ALL SELECT check_id, seq FROM checks WHERE trace_id = ?1 ORDER BY 2",
            )?
            .query_map([&id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let same = project == imported.project
            && agent_id == run.agent_id.as_ref()
            && started_at == run.started_at
            && system_prompt == run.system_prompt
            && stored_ids == item_ids;
        return Ok(if same { 1 } else { 2 });
    }
    conn.prepare_cached(
        "INSERT INTO runs (trace_id, project, agent_id, started_at, system_prompt, received_at, last_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        imported.project,
        run.agent_id.as_ref(),
        run.started_at,
        run.system_prompt,
        format_millis_utc(run.received_at),
        imported.items.len() as i64,
    ])?;
    for (i, item) in imported.items.iter().enumerate() {
        let seq = i as i64 + 1;
        match item {
            ImportedItem::Event(ev) => insert_event(conn, ev, seq)?,
            ImportedItem::Check(c) => insert_check(
                conn,
                &c.check,
                seq,
                &c.tool_name,
                c.is_safe,
                &c.reasoning,
                &c.findings,
                c.consumed_approval,
            )?,
        }
    }
    Ok(0)
}

/// Records the answer for an `Idempotency-Key` in the write's own savepoint. An expired answer
/// under the same key is replaced; a live one means another request recorded the key first:
/// `KeyTaken`, and the savepoint (with nothing else in it yet) is rolled back.
fn remember(conn: &Connection, project: &str, replay: Option<&Replay>) -> Result<(), StoreError> {
    let Some(r) = replay else { return Ok(()) };
    let changed = conn
        .prepare_cached(
            "INSERT INTO idempotency (project, idem_key, request_hash, status, body, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (project, idem_key) DO UPDATE SET
                 request_hash = excluded.request_hash, status = excluded.status,
                 body = excluded.body, created_at_ms = excluded.created_at_ms
             WHERE idempotency.created_at_ms < ?7",
        )?
        .execute(params![
            project,
            r.key,
            &r.request_hash[..],
            r.status,
            r.body,
            r.at_ms,
            r.expired_before_ms
        ])?;
    if changed == 0 {
        return Err(StoreError::KeyTaken);
    }
    Ok(())
}

fn insert_event(conn: &Connection, ev: &NewEvent, seq: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (event_id, trace_id, seq, event_type, occurred_at,
                             received_at_ms, content, content_form, schema, schema_form)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        ev.event_id.to_string(),
        ev.trace_id.to_string(),
        seq,
        ev.event_type.as_str(),
        ev.occurred_at,
        unix_millis(ev.received_at),
        ev.content.text,
        ev.content.form.as_str(),
        ev.schema.text,
        ev.schema.form.as_str(),
    ])
    .map(|_| ())
}

#[allow(clippy::too_many_arguments)]
fn insert_check(
    conn: &Connection,
    c: &NewCheck,
    seq: i64,
    tool_name: &str,
    is_safe: bool,
    reasoning: &str,
    findings: &str,
    consumed_approval: bool,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO checks (check_id, trace_id, seq, tool_name, occurred_at,
                             received_at_ms, content, content_form, schema, schema_form,
                             is_safe, reasoning, findings, consumed_approval)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        c.check_id.to_string(),
        c.trace_id.to_string(),
        seq,
        tool_name,
        c.occurred_at,
        unix_millis(c.received_at),
        c.content.text,
        c.content.form.as_str(),
        c.schema.text,
        c.schema.form.as_str(),
        is_safe,
        reasoning,
        findings,
        consumed_approval,
    ])
    .map(|_| ())
}

/// Takes the next sequence number of a run of `project`; `NotFound` if there is none.
fn next_seq(conn: &Connection, project: &str, trace_id: TraceId) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "UPDATE runs SET last_seq = last_seq + 1 WHERE trace_id = ?1 AND project = ?2
         RETURNING last_seq",
    )?
    .query_row(params![trace_id.to_string(), project], |r| {
        r.get::<_, i64>(0)
    })
    .optional()?
    .ok_or(StoreError::NotFound)
}

/// Takes the next sequence number of a run of `project` if its latest is still `after`:
/// `Stale` if something was added since, `NotFound` if there is no such run.
fn next_seq_after(
    conn: &Connection,
    project: &str,
    trace_id: TraceId,
    after: u64,
) -> Result<i64, StoreError> {
    let id = trace_id.to_string();
    let taken = conn
        .prepare_cached(
            "UPDATE runs SET last_seq = last_seq + 1
              WHERE trace_id = ?1 AND project = ?2 AND last_seq = ?3
             RETURNING last_seq",
        )?
        .query_row(params![id, project, after as i64], |r| r.get::<_, i64>(0))
        .optional()?;
    if let Some(seq) = taken {
        return Ok(seq);
    }
    let exists = conn
        .prepare_cached("SELECT 1 FROM runs WHERE trace_id = ?1 AND project = ?2")?
        .query_row(params![id, project], |_| Ok(()))
        .optional()?;
    Err(if exists.is_some() {
        StoreError::Stale
    } else {
        StoreError::NotFound
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "p";
    use crate::domain::event::{EventType, JsonField, JsonForm};
    use crate::domain::ids::AgentId;
    use std::sync::Arc;
    use time::OffsetDateTime;

    fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rw-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("rw.db")
    }

    fn run(trace_id: TraceId) -> NewRun {
        NewRun {
            trace_id,
            client_chose_id: true,
            agent_id: AgentId::parse("a".into()).expect("agent"),
            started_at: "2024-01-15T14:30:45.123Z".into(),
            system_prompt: "be nice".into(),
            received_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn event(trace_id: TraceId) -> NewEvent {
        let field = JsonField {
            text: "{}".into(),
            form: JsonForm::String,
            value: serde_json::json!({}),
        };
        NewEvent {
            event_id: uuid::Uuid::new_v4(),
            trace_id,
            event_type: EventType::User,
            occurred_at: 1.0,
            received_at: OffsetDateTime::UNIX_EPOCH,
            content: field.clone(),
            schema: field,
        }
    }

    #[test]
    fn schema_sections_are_numbered_from_one() -> Result<(), String> {
        let m = migrations("schema.sql", SCHEMA_SQL)?;
        assert!(!m.is_empty());
        assert_eq!(schema_version() as usize, m.len());
        assert!(migrations("schema.sql", "-- @version 2\nSELECT 1;").is_err());
        Ok(())
    }

    #[test]
    fn a_reused_trace_id_is_a_conflict_and_the_run_is_untouched() -> Result<(), StoreError> {
        let store = SqliteStore::open(&SqliteOptions::new(temp_db("conflict")))
            .map_err(StoreError::Other)?;
        let id = TraceId::new_random();
        store.insert_run(P, run(id), None)?;
        let mut again = run(id);
        again.system_prompt = "evil".into();
        assert!(matches!(
            store.insert_run(P, again, None),
            Err(StoreError::Conflict)
        ));
        assert_eq!(store.run_history(P, id, 0)?.run.system_prompt, "be nice");
        Ok(())
    }

    #[test]
    fn events_get_consecutive_sequence_numbers_per_run() -> Result<(), StoreError> {
        let store =
            SqliteStore::open(&SqliteOptions::new(temp_db("seq"))).map_err(StoreError::Other)?;
        let (a, b) = (TraceId::new_random(), TraceId::new_random());
        store.insert_run(P, run(a), None)?;
        store.insert_run(P, run(b), None)?;
        assert_eq!(store.append_event(P, event(a), None)?, 1);
        assert_eq!(store.append_event(P, event(a), None)?, 2);
        assert_eq!(store.append_event(P, event(b), None)?, 1);
        Ok(())
    }

    fn check_after(trace_id: TraceId, after_seq: u64) -> RecordedCheck {
        let e = event(trace_id);
        RecordedCheck {
            check: NewCheck {
                check_id: uuid::Uuid::new_v4(),
                trace_id,
                occurred_at: 1.0,
                received_at: OffsetDateTime::UNIX_EPOCH,
                content: e.content,
                schema: e.schema,
            },
            tool_name: "t".into(),
            verdict: crate::engine::Verdict {
                is_safe: true,
                reasoning: "ok".into(),
                ..Default::default()
            },
            after_seq: Some(after_seq),
        }
    }

    #[test]
    fn a_check_judged_on_an_old_history_is_stale_and_not_stored() -> Result<(), StoreError> {
        let store =
            SqliteStore::open(&SqliteOptions::new(temp_db("stale"))).map_err(StoreError::Other)?;
        let id = TraceId::new_random();
        store.insert_run(P, run(id), None)?;
        assert_eq!(store.append_event(P, event(id), None)?, 1);
        // Judged before the event: stale, nothing stored, the sequence unchanged.
        assert!(matches!(
            store.record_check(P, check_after(id, 0), None),
            Err(StoreError::Stale)
        ));
        assert_eq!(store.run_history(P, id, 0)?.last_seq, 1);
        assert_eq!(store.record_check(P, check_after(id, 1), None)?, 2);
        let h = store.run_history(P, id, 1)?;
        assert_eq!((h.last_seq, h.items.len()), (2, 1));
        assert!(matches!(
            store.record_check(P, check_after(TraceId::new_random(), 0), None),
            Err(StoreError::NotFound)
        ));
        Ok(())
    }

    #[test]
    fn the_wal_starts_over_under_steady_writes_and_is_emptied_when_idle() -> Result<(), StoreError>
    {
        let path = temp_db("wal");
        let store = SqliteStore::open(&SqliteOptions::new(&path)).map_err(StoreError::Other)?;
        let wal_bytes =
            || std::fs::metadata(path.with_file_name("rw.db-wal")).map_or(0, |m| m.len());
        let limit = (WAL_RESTART_PAGES * 4096) as u64;
        let trace = TraceId::new_random();
        store.insert_run(P, run(trace), None)?;
        // About 80 MiB of WAL frames (each 8 KiB content takes three pages), written as fast as
        // one client can: without restarts the WAL file grows to the writer's 80 MiB backstop.
        let text = format!("\"{}\"", "x".repeat(8 * 1024));
        let (mut largest, mut written) = (0, 0u64);
        while written < 80 << 20 {
            let mut ev = event(trace);
            ev.content = JsonField {
                text: text.clone(),
                form: JsonForm::Json,
                value: serde_json::Value::String("x".repeat(8 * 1024)),
            };
            store.append_event(P, ev, None)?;
            written += 3 * 4096;
            largest = largest.max(wal_bytes());
        }
        assert!(largest < 3 * limit, "the WAL grew to {largest} bytes");
        // Idle: everything copied, the file emptied within a few checkpointer rounds.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while wal_bytes() > limit && std::time::Instant::now() < deadline {
            std::thread::sleep(CHECKPOINT_INTERVAL);
        }
        assert!(wal_bytes() <= limit, "idle WAL: {} bytes", wal_bytes());
        Ok(())
    }

    #[test]
    fn an_event_for_an_unknown_run_is_not_found() -> Result<(), StoreError> {
        let store = SqliteStore::open(&SqliteOptions::new(temp_db("notfound")))
            .map_err(StoreError::Other)?;
        assert!(matches!(
            store.append_event(P, event(TraceId::new_random()), None),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.run_history(P, TraceId::new_random(), 0),
            Err(StoreError::NotFound)
        ));
        Ok(())
    }

    #[test]
    fn a_failing_write_in_a_batch_fails_alone() -> Result<(), StoreError> {
        // Many threads write at once so that the writer batches them; every other thread reuses
        // one trace id. Exactly one of those succeeds and every other write is stored.
        let path = temp_db("batch");
        let store =
            Arc::new(SqliteStore::open(&SqliteOptions::new(&path)).map_err(StoreError::Other)?);
        let shared = TraceId::new_random();
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let id = if i % 2 == 0 {
                        shared
                    } else {
                        TraceId::new_random()
                    };
                    store.insert_run(P, run(id), None).map(|_| id)
                })
            })
            .collect();
        let results: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Conflict)))
            .count();
        assert_eq!(ok.len(), 17);
        assert_eq!(conflicts, 15);
        for id in ok {
            store.run_history(P, *id, 0)?;
        }
        Ok(())
    }

    #[test]
    fn a_database_from_a_newer_runwarden_is_refused() -> Result<(), rusqlite::Error> {
        let path = temp_db("newer");
        let conn = Connection::open(&path)?;
        conn.execute_batch("PRAGMA user_version = 999")?;
        drop(conn);
        let err = SqliteStore::open(&SqliteOptions::new(&path))
            .err()
            .unwrap_or_default();
        assert!(err.contains("newer than this runwarden"), "{err}");
        Ok(())
    }

    #[test]
    fn reopening_an_existing_database_keeps_its_data() -> Result<(), StoreError> {
        let path = temp_db("reopen");
        let id = TraceId::new_random();
        {
            let store = SqliteStore::open(&SqliteOptions::new(&path)).map_err(StoreError::Other)?;
            store.insert_run(P, run(id), None)?;
        }
        let store = SqliteStore::open(&SqliteOptions::new(&path)).map_err(StoreError::Other)?;
        assert!(matches!(
            store.insert_run(P, run(id), None),
            Err(StoreError::Conflict)
        ));
        Ok(())
    }

    #[test]
    fn a_run_of_another_project_is_not_found() -> Result<(), StoreError> {
        let store = SqliteStore::open(&SqliteOptions::new(temp_db("projects")))
            .map_err(StoreError::Other)?;
        let id = TraceId::new_random();
        store.insert_run("a", run(id), None)?;
        assert!(matches!(
            store.run_history("b", id, 0),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.append_event("b", event(id), None),
            Err(StoreError::NotFound)
        ));
        assert_eq!(store.append_event("a", event(id), None)?, 1);
        // A trace id is unique across projects.
        assert!(matches!(
            store.insert_run("b", run(id), None),
            Err(StoreError::Conflict)
        ));
        Ok(())
    }

    fn replay(key: &str, hash: u8) -> Replay {
        Replay {
            key: key.into(),
            request_hash: [hash; 32],
            status: 200,
            body: b"{}".to_vec(),
            at_ms: 1_000,
            expired_before_ms: 0,
        }
    }

    #[test]
    fn an_idempotency_key_is_recorded_with_its_write_and_taken_only_once() -> Result<(), StoreError>
    {
        let store =
            SqliteStore::open(&SqliteOptions::new(temp_db("idem"))).map_err(StoreError::Other)?;
        let (first, second) = (TraceId::new_random(), TraceId::new_random());
        store.insert_run(P, run(first), Some(replay("k", 1)))?;
        assert!(matches!(
            store.insert_run(P, run(second), Some(replay("k", 2))),
            Err(StoreError::KeyTaken)
        ));
        assert!(
            matches!(store.run_history(P, second, 0), Err(StoreError::NotFound)),
            "nothing written"
        );
        let stored = store.replay(P, "k", 0)?.expect("remembered");
        assert_eq!(stored.request_hash, [1; 32]);
        // Keys are per project, and expire.
        assert!(store.replay("other", "k", 0)?.is_none());
        assert!(store.replay(P, "k", 1_001)?.is_none());
        Ok(())
    }

    #[test]
    fn an_expired_idempotency_key_may_be_used_again() -> Result<(), StoreError> {
        let store = SqliteStore::open(&SqliteOptions::new(temp_db("idem-expired")))
            .map_err(StoreError::Other)?;
        store.insert_run(P, run(TraceId::new_random()), Some(replay("k", 1)))?;
        let mut later = replay("k", 2);
        later.at_ms = 90_000;
        later.expired_before_ms = 50_000;
        store.insert_run(P, run(TraceId::new_random()), Some(later))?;
        assert_eq!(
            store.replay(P, "k", 0)?.expect("remembered").request_hash,
            [2; 32]
        );
        Ok(())
    }
}
