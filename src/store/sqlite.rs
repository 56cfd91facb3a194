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
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use super::{RecordedCheck, Store, StoreError};
use crate::domain::event::{NewEvent, NewRun};
use crate::domain::ids::TraceId;
use crate::domain::time::format_millis_utc;
use crate::engine::RunContext;

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
}

impl SqliteOptions {
    /// Defaults for `path`: 5 s busy timeout, batches of up to 64 writes.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            busy_timeout: Duration::from_secs(5),
            batch_max: 64,
        }
    }
}

/// One write, as sent to the writer thread.
enum WriteOp {
    Run(NewRun),
    Event(NewEvent),
    Check(RecordedCheck),
}

/// A write and where to send its outcome (the run's sequence number for events and checks).
struct Job {
    op: WriteOp,
    reply: SyncSender<Result<u64, StoreError>>,
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

/// Readers kept open for reuse; more may exist briefly under load.
const MAX_IDLE_READERS: usize = 16;

impl SqliteStore {
    /// Opens (or creates) the database, applies the schema and starts the writer. Errors are
    /// one clear line for the operator.
    pub fn open(options: &SqliteOptions) -> Result<Self, String> {
        let path = &options.path;
        let conn = open_connection(path, options.busy_timeout, false)
            .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
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
        let checkpointer = start_checkpointer(path, options.busy_timeout)
            .map_err(|e| format!("cannot start the checkpointer for {}: {e}", path.display()))?;

        let (tx, rx) = mpsc::channel();
        let batch_max = options.batch_max.max(1);
        let writer_thread = std::thread::Builder::new()
            .name("rw-writer".into())
            .spawn(move || writer_loop(conn, rx, batch_max))
            .map_err(|e| format!("cannot start the database writer: {e}"))?;
        Ok(SqliteStore {
            path: path.clone(),
            busy_timeout: options.busy_timeout,
            writer: Some(tx),
            writer_thread: Some(writer_thread),
            checkpointer: Some(checkpointer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Sends `op` to the writer and waits until it is committed (or failed).
    fn write(&self, op: WriteOp) -> Result<u64, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let gone = || StoreError::Unavailable("the database writer has stopped".into());
        self.writer
            .as_ref()
            .ok_or_else(gone)?
            .send(Job { op, reply })
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
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
    fn insert_run(&self, run: NewRun) -> Result<(), StoreError> {
        self.write(WriteOp::Run(run)).map(|_| ())
    }

    fn append_event(&self, event: NewEvent) -> Result<u64, StoreError> {
        self.write(WriteOp::Event(event))
    }

    fn record_check(&self, check: RecordedCheck) -> Result<u64, StoreError> {
        self.write(WriteOp::Check(check))
    }

    fn run_context(&self, trace_id: TraceId) -> Result<RunContext, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT agent_id, system_prompt FROM runs WHERE trace_id = ?1")?
                .query_row([trace_id.to_string()], |r| {
                    Ok(RunContext {
                        agent_id: r.get(0)?,
                        system_prompt: r.get(1)?,
                    })
                })
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())))
    }
}

/// Starts the thread that checkpoints the WAL every [`CHECKPOINT_INTERVAL`] on a connection
/// of its own, until told to stop.
fn start_checkpointer(path: &Path, busy_timeout: Duration) -> std::io::Result<Checkpointer> {
    let conn = open_connection(path, busy_timeout, false).map_err(std::io::Error::other)?;
    let (stop, stopped) = mpsc::sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("rw-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_INTERVAL)
            {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    log::warn!("WAL checkpoint failed (will retry): {e}");
                }
            }
        })?;
    Ok(Checkpointer { stop, thread })
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
    Ok(conn)
}

/// The `-- @version N` sections of `sql`, in file order.
fn migrations(sql: &str) -> Result<Vec<(u32, String)>, String> {
    let mut out: Vec<(u32, String)> = Vec::new();
    for line in sql.lines() {
        if let Some(rest) = line.strip_prefix("-- @version ") {
            let version: u32 = rest
                .trim()
                .parse()
                .map_err(|_| format!("schema.sql: bad version line {line:?}"))?;
            let expected = out.len() as u32 + 1;
            if version != expected {
                return Err(format!(
                    "schema.sql: version {version} found where {expected} was expected"
                ));
            }
            out.push((version, String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    Ok(out)
}

/// The schema version this binary writes.
pub fn schema_version() -> u32 {
    migrations(SCHEMA_SQL).map(|m| m.len() as u32).unwrap_or(0)
}

/// Brings the database to the newest version of `schema.sql`, forward only. A database from a
/// newer runwarden is refused.
pub fn migrate(conn: &Connection) -> Result<(), String> {
    let steps = migrations(SCHEMA_SQL)?;
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
                _ => StoreError::Other(err.to_string()),
            },
            _ => StoreError::Other(err.to_string()),
        }
    }
}

/// The writer thread: group commit until the channel closes.
fn writer_loop(conn: Connection, jobs: Receiver<Job>, batch_max: usize) {
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
            // The requester may have gone (its thread panicked); nothing to do then.
            let _ = job.reply.send(result);
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
    let all_fail = |e: &rusqlite::Error| -> Vec<Result<u64, StoreError>> {
        batch
            .iter()
            .map(|_| Err(StoreError::from(clone_error(e))))
            .collect()
    };
    let abort = |e: &rusqlite::Error| {
        if !conn.is_autocommit() {
            let _ = control(conn, "ROLLBACK");
        }
        all_fail(e)
    };
    if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
        return all_fail(&e);
    }
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(e) = control(conn, "SAVEPOINT w") {
            return abort(&e);
        }
        match apply(conn, &job.op) {
            Ok(seq) => {
                if let Err(e) = control(conn, "RELEASE w") {
                    return abort(&e);
                }
                results.push(Ok(seq));
            }
            Err(e) => {
                if conn.is_autocommit() {
                    // SQLite rolled the whole transaction back by itself (it may on a full
                    // disk or an I/O error): the writes before this one are gone too.
                    return all_fail(&e);
                }
                if let Err(e2) =
                    control(conn, "ROLLBACK TO w").and_then(|()| control(conn, "RELEASE w"))
                {
                    return abort(&e2);
                }
                results.push(Err(StoreError::from(e)));
            }
        }
    }
    match control(conn, "COMMIT") {
        Ok(()) => results,
        Err(e) => abort(&e),
    }
}

/// rusqlite errors are not `Clone`; keep what the mapping to [`StoreError`] needs.
fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// Applies one write inside the current savepoint.
fn apply(conn: &Connection, op: &WriteOp) -> rusqlite::Result<u64> {
    apply_op(conn, op).map(|seq| seq.max(0) as u64)
}

fn apply_op(conn: &Connection, op: &WriteOp) -> rusqlite::Result<i64> {
    match op {
        WriteOp::Run(run) => {
            conn.prepare_cached(
                "INSERT INTO runs (trace_id, agent_id, started_at, system_prompt, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                run.trace_id.to_string(),
                run.agent_id.as_ref(),
                run.started_at,
                run.system_prompt,
                format_millis_utc(run.received_at),
            ])?;
            Ok(0)
        }
        WriteOp::Event(ev) => {
            let seq = next_seq(conn, ev.trace_id)?;
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
            ])?;
            Ok(seq)
        }
        WriteOp::Check(rc) => {
            let c = &rc.check;
            let seq = next_seq(conn, c.trace_id)?;
            let findings = serde_json::to_string(&rc.verdict.findings)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            conn.prepare_cached(
                "INSERT INTO checks (check_id, trace_id, seq, tool_name, occurred_at,
                                     received_at_ms, content, content_form, schema, schema_form,
                                     is_safe, reasoning, findings)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                c.check_id.to_string(),
                c.trace_id.to_string(),
                seq,
                rc.tool_name,
                c.occurred_at,
                unix_millis(c.received_at),
                c.content.text,
                c.content.form.as_str(),
                c.schema.text,
                c.schema.form.as_str(),
                rc.verdict.is_safe,
                rc.verdict.reasoning,
                findings,
            ])?;
            Ok(seq)
        }
    }
}

/// Takes the run's next sequence number; `QueryReturnedNoRows` (NotFound) if there is no run.
fn next_seq(conn: &Connection, trace_id: TraceId) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "UPDATE runs SET last_seq = last_seq + 1 WHERE trace_id = ?1 RETURNING last_seq",
    )?
    .query_row([trace_id.to_string()], |r| r.get::<_, i64>(0))
    .optional()?
    .ok_or(rusqlite::Error::QueryReturnedNoRows)
}

fn unix_millis(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let m = migrations(SCHEMA_SQL)?;
        assert!(!m.is_empty());
        assert_eq!(schema_version() as usize, m.len());
        assert!(migrations("-- @version 2\nSELECT 1;").is_err());
        Ok(())
    }

    #[test]
    fn a_reused_trace_id_is_a_conflict_and_the_run_is_untouched() -> Result<(), StoreError> {
        let store = SqliteStore::open(&SqliteOptions::new(temp_db("conflict")))
            .map_err(StoreError::Other)?;
        let id = TraceId::new_random();
        store.insert_run(run(id))?;
        let mut again = run(id);
        again.system_prompt = "evil".into();
        assert!(matches!(store.insert_run(again), Err(StoreError::Conflict)));
        assert_eq!(store.run_context(id)?.system_prompt, "be nice");
        Ok(())
    }

    #[test]
    fn events_get_consecutive_sequence_numbers_per_run() -> Result<(), StoreError> {
        let store =
            SqliteStore::open(&SqliteOptions::new(temp_db("seq"))).map_err(StoreError::Other)?;
        let (a, b) = (TraceId::new_random(), TraceId::new_random());
        store.insert_run(run(a))?;
        store.insert_run(run(b))?;
        assert_eq!(store.append_event(event(a))?, 1);
        assert_eq!(store.append_event(event(a))?, 2);
        assert_eq!(store.append_event(event(b))?, 1);
        Ok(())
    }

    #[test]
    fn an_event_for_an_unknown_run_is_not_found() -> Result<(), StoreError> {
        let store = SqliteStore::open(&SqliteOptions::new(temp_db("notfound")))
            .map_err(StoreError::Other)?;
        assert!(matches!(
            store.append_event(event(TraceId::new_random())),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.run_context(TraceId::new_random()),
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
                    store.insert_run(run(id)).map(|_| id)
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
            store.run_context(*id)?;
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
            store.insert_run(run(id))?;
        }
        let store = SqliteStore::open(&SqliteOptions::new(&path)).map_err(StoreError::Other)?;
        assert!(matches!(
            store.insert_run(run(id)),
            Err(StoreError::Conflict)
        ));
        Ok(())
    }
}
