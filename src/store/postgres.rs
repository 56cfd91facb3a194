//! The PostgreSQL backend: the same [`Store`] as SQLite, for several runwarden instances that
//! share one database. Selected by `serve --database-url postgres://…`.
//!
//! How it differs from the SQLite backend, and why:
//! - No writer thread and no group commit of its own: each request takes a pooled connection
//!   and commits its own transaction; PostgreSQL serialises what must be serialised (row locks)
//!   and flushes concurrent commits together itself. Every commit is durable before the answer
//!   (`synchronous_commit` stays on), except the rate-limit counters' (see [`PgStore::rate_limit`]).
//! - Per-run sequence numbers come from `UPDATE runs SET last_seq = last_seq + 1 … RETURNING`
//!   in the transaction that inserts the event or check: the row lock orders two instances
//!   appending to one run, and a rollback gives the number back, so numbers stay gap-free.
//! - State that one SQLite process may keep in memory is shared here: rate-limit counters live
//!   in the `rate_limits` table; `Idempotency-Key` answers were already in the database.
//! - A lost connection or a database that refuses work is [`StoreError::Unavailable`] (503
//!   with `Retry-After`); the pool drops broken connections and opens new ones, so an instance
//!   recovers by itself when the database is back.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use super::{
    CheckRecord, EventRecord, History, ImportOutcome, ImportedItem, ImportedRun, Page,
    RecordedCheck, Replay, RunRecord, Scope, Store, StoreError, StoredJson, StoredReplay,
    TextBytes, history_item, migrations, scope_params, take_rows, unix_millis,
};
use crate::auth::{ApiKey, KeyType, Limits};
use crate::domain::event::{NewCheck, NewEvent, NewRun};
use crate::domain::ids::TraceId;
use crate::domain::time::format_millis_utc;
use crate::engine::RunContext;
use crate::ratelimit::{Decision, KeyWindows, Window};

/// The embedded database definition for PostgreSQL.
pub const SCHEMA_SQL: &str = include_str!("../../schema.postgres.sql");

/// How long a request waits for a pooled connection (all busy, or the database unreachable)
/// before it gets 503.
const POOL_WAIT: Duration = Duration::from_secs(2);

/// The most connections an instance opens for rate-limit counters (besides `pool_size`).
const COUNTER_CONNECTIONS: u32 = 4;

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often expired `Idempotency-Key` answers and idle rate-limit rows are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The advisory lock that serialises migrations of instances starting together.
const MIGRATION_LOCK: i64 = 0x7277_6172_6465_6e31; // "rwarden1"

/// How to open the store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database` (or a key=value connection string).
    pub url: String,
    /// The most connections this instance opens.
    pub pool_size: u32,
    /// How long `Idempotency-Key` answers are kept.
    pub idempotency_ttl: Duration,
    /// How long a statement waits for a lock another transaction holds (PostgreSQL's
    /// `lock_timeout`) before the request gets 503; `serve --busy-timeout-ms`.
    pub lock_timeout: Duration,
}

impl PgOptions {
    /// Options with defaults for a one-off command (a small pool; answers kept a day).
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            pool_size: 2,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// One pooled connection with the statements it has prepared (statements are per
/// connection; preparing each once saves a round trip per query).
pub struct PgConn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl PgConn {
    /// `sql` prepared on this connection.
    fn stmt(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

/// Opens connections for the pool.
struct Manager {
    config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.config.connect(NoTls)?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

/// Logs the pool's failures to connect once per failure at warn level (r2d2's default handler
/// logs at error level, on every attempt of every waiting request).
#[derive(Debug)]
struct PoolErrors;

impl r2d2::HandleError<postgres::Error> for PoolErrors {
    fn handle_error(&self, error: postgres::Error) {
        log::warn!("cannot connect to the database: {error}");
    }
}

/// The PostgreSQL store. Dropping it stops its purger and closes its connections.
pub struct PgStore {
    pool: r2d2::Pool<Manager>,
    /// Connections for the rate-limit counters only, whose sessions commit without waiting
    /// for the WAL flush (see [`PgStore::rate_limit`]).
    counters: r2d2::Pool<Manager>,
    purger: Option<(Sender<()>, JoinHandle<()>)>,
}

impl PgStore {
    /// Connects, applies the schema (under an advisory lock: instances starting together
    /// migrate once) and starts the pool. Errors are one clear line for the operator; they
    /// never show the password.
    pub fn open(options: &PgOptions) -> Result<Self, String> {
        let shown = redact_url(&options.url);
        let mut config = postgres::Config::from_str(&options.url)
            .map_err(|e| format!("bad database URL {shown}: {e}"))?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .application_name("runwarden");
        let mut client = config
            .connect(NoTls)
            .map_err(|e| format!("cannot connect to the database {shown}: {}", describe(&e)))?;
        migrate(&mut client).map_err(|e| format!("database {shown}: {e}"))?;
        drop(client);
        let pool_of = |config: postgres::Config, size: u32| {
            r2d2::Pool::builder()
                .max_size(size.max(1))
                .min_idle(Some(0))
                .connection_timeout(POOL_WAIT)
                .error_handler(Box::new(PoolErrors))
                .build_unchecked(Manager { config })
        };
        // A request stuck behind another instance's row lock answers 503 in time, as a SQLite
        // write does behind another process's lock. Added to the URL's own `options`, if any.
        let own = config
            .get_options()
            .map(|o| format!("{o} "))
            .unwrap_or_default();
        let lock = format!(
            "-c lock_timeout={}",
            options.lock_timeout.as_millis().max(1)
        );
        let mut counter_config = config.clone();
        config.options(&format!("{own}{lock}"));
        counter_config.options(&format!("{own}{lock} -c synchronous_commit=off"));
        let pool = pool_of(config, options.pool_size);
        // The counting statement takes microseconds: a few connections serve every worker.
        let counters = pool_of(counter_config, options.pool_size.min(COUNTER_CONNECTIONS));
        let purger = start_purger(pool.clone(), options.idempotency_ttl)
            .map_err(|e| format!("cannot start the purger: {e}"))?;
        Ok(PgStore {
            pool,
            counters,
            purger: Some(purger),
        })
    }

    /// A pooled connection; `Unavailable` when none can be had in time.
    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))
    }

    /// Runs `f` on a pooled connection, mapping its errors.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut PgConn) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        f(&mut conn).map_err(StoreError::from)
    }

    /// `NotFound` unless the run exists in `scope`.
    fn run_visible(
        conn: &mut PgConn,
        scope: Scope<'_>,
        trace_id: TraceId,
    ) -> Result<(), StoreError> {
        let (project, all) = scope_params(scope);
        let s = conn.stmt("SELECT 1 FROM runs WHERE trace_id = $1 AND ($2 OR project = $3)")?;
        let found = conn
            .client
            .query_opt(&s, &[&trace_id.to_string(), &all, &project])?;
        found.map(|_| ()).ok_or(StoreError::NotFound)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.purger.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

const REMEMBER: &str = "INSERT INTO idempotency
        (project, idem_key, request_hash, status, body, created_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (project, idem_key) DO UPDATE SET
        request_hash = excluded.request_hash, status = excluded.status,
        body = excluded.body, created_at_ms = excluded.created_at_ms
    WHERE idempotency.created_at_ms < $7";

const NEXT_SEQ: &str = "UPDATE runs SET last_seq = last_seq + 1
    WHERE trace_id = $1 AND project = $2 AND ($3::BIGINT IS NULL OR last_seq = $3)
    RETURNING last_seq";

/// Decides and counts one request of a key ($1) in the minute ($2) and hour ($3) windows under
/// the limits $4 and $5 (NULL: none); returns the counters after it and whether it was allowed.
const COUNT_REQUEST: &str = "INSERT INTO rate_limits AS r
        (key_id, minute_index, minute_count, hour_index, hour_count, last_allowed)
    VALUES ($1, $2, CASE WHEN $4::INT IS NULL THEN 0 ELSE 1 END,
            $3, CASE WHEN $5::INT IS NULL THEN 0 ELSE 1 END, true)
    ON CONFLICT (key_id) DO UPDATE SET
        minute_index = CASE WHEN $4::INT IS NULL THEN r.minute_index ELSE $2 END,
        hour_index = CASE WHEN $5::INT IS NULL THEN r.hour_index ELSE $3 END,
        minute_count = CASE WHEN $4::INT IS NULL THEN r.minute_count
            ELSE (CASE WHEN r.minute_index = $2 THEN r.minute_count ELSE 0 END)
               + (CASE WHEN ($4::INT IS NULL
                             OR (CASE WHEN r.minute_index = $2 THEN r.minute_count ELSE 0 END) < $4)
                        AND ($5::INT IS NULL
                             OR (CASE WHEN r.hour_index = $3 THEN r.hour_count ELSE 0 END) < $5)
                       THEN 1 ELSE 0 END) END,
        hour_count = CASE WHEN $5::INT IS NULL THEN r.hour_count
            ELSE (CASE WHEN r.hour_index = $3 THEN r.hour_count ELSE 0 END)
               + (CASE WHEN ($4::INT IS NULL
                             OR (CASE WHEN r.minute_index = $2 THEN r.minute_count ELSE 0 END) < $4)
                        AND ($5::INT IS NULL
                             OR (CASE WHEN r.hour_index = $3 THEN r.hour_count ELSE 0 END) < $5)
                       THEN 1 ELSE 0 END) END,
        last_allowed = ($4::INT IS NULL
                        OR (CASE WHEN r.minute_index = $2 THEN r.minute_count ELSE 0 END) < $4)
                   AND ($5::INT IS NULL
                        OR (CASE WHEN r.hour_index = $3 THEN r.hour_count ELSE 0 END) < $5)
    RETURNING minute_index, minute_count, hour_index, hour_count, last_allowed";

const RUN_EXISTS: &str = "SELECT 1 FROM runs WHERE trace_id = $1 AND project = $2";

const INSERT_RUN: &str = "INSERT INTO runs
        (trace_id, project, agent_id, started_at, system_prompt, received_at, last_seq)
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

const INSERT_EVENT: &str = "INSERT INTO events
        (event_id, trace_id, seq, event_type, occurred_at, received_at_ms,
         content, content_form, schema, schema_form)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

const INSERT_CHECK: &str = "INSERT INTO checks
        (check_id, trace_id, seq, tool_name, occurred_at, received_at_ms, content, content_form,
         schema, schema_form, is_safe, reasoning, findings, consumed_approval)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// The columns [`key_from_row`] reads (a macro, so that `concat!` builds `&'static str`s).
macro_rules! key_columns {
    () => {
        "id, project, key_type, name, rpm, rph, created_at, last_used_at, revoked_at"
    };
}

/// The columns [`run_from_row`] reads.
macro_rules! run_columns {
    () => {
        "r.key, r.trace_id, r.project, r.agent_id, r.started_at, r.received_at, r.system_prompt,
         (SELECT count(*) FROM events e WHERE e.trace_id = r.trace_id),
         (SELECT count(*) FROM checks c WHERE c.trace_id = r.trace_id),
         (SELECT count(*) FROM checks c WHERE c.trace_id = r.trace_id AND NOT c.is_safe)"
    };
}

/// The statements a write transaction uses, prepared before it starts.
struct WriteStatements {
    remember: Statement,
    next_seq: Statement,
    run_exists: Statement,
}

impl WriteStatements {
    fn prepare(conn: &mut PgConn) -> Result<Self, postgres::Error> {
        Ok(WriteStatements {
            remember: conn.stmt(REMEMBER)?,
            next_seq: conn.stmt(NEXT_SEQ)?,
            run_exists: conn.stmt(RUN_EXISTS)?,
        })
    }

    /// Records the answer for an `Idempotency-Key` in the write's transaction: `KeyTaken` if a
    /// live answer is there (the transaction is then rolled back with nothing written).
    fn remember(
        &self,
        tx: &mut postgres::Transaction<'_>,
        project: &str,
        replay: Option<&Replay>,
    ) -> Result<(), StoreError> {
        let Some(r) = replay else { return Ok(()) };
        let changed = tx.execute(
            &self.remember,
            &[
                &project,
                &r.key,
                &&r.request_hash[..],
                &i32::from(r.status),
                &r.body,
                &r.at_ms,
                &r.expired_before_ms,
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::KeyTaken);
        }
        Ok(())
    }

    /// Takes the run's next sequence number (only if its latest is `after`, when given):
    /// `NotFound` without such a run, `Stale` if it moved on.
    fn next_seq(
        &self,
        tx: &mut postgres::Transaction<'_>,
        project: &str,
        trace_id: TraceId,
        after: Option<u64>,
    ) -> Result<i64, StoreError> {
        let id = trace_id.to_string();
        let after = after.map(|a| a as i64);
        if let Some(row) = tx.query_opt(&self.next_seq, &[&id, &project, &after])? {
            return Ok(row.get(0));
        }
        let exists = tx.query_opt(&self.run_exists, &[&id, &project])?.is_some();
        Err(if exists && after.is_some() {
            StoreError::Stale
        } else {
            StoreError::NotFound
        })
    }
}

/// Runs `s` and takes its rows one at a time, as a page does (see [`take_rows`]): rows past
/// the page's byte bound are never loaded.
fn page_rows<R: TextBytes>(
    client: &mut Client,
    s: &Statement,
    params: &[&(dyn ToSql + Sync)],
    page: &Page,
    row: impl Fn(&Row) -> R,
) -> Result<Vec<R>, postgres::Error> {
    use postgres::fallible_iterator::FallibleIterator;
    let rows = client.query_raw(s, params.iter().copied())?;
    take_rows(rows.iterator().map(|r| r.map(|r| row(&r))), page)
}

impl Store for PgStore {
    fn insert_run(
        &self,
        project: &str,
        run: NewRun,
        replay: Option<Replay>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let w = WriteStatements::prepare(&mut conn)?;
        let insert = conn.stmt(INSERT_RUN)?;
        let mut tx = conn.client.transaction()?;
        w.remember(&mut tx, project, replay.as_ref())?;
        tx.execute(
            &insert,
            &[
                &run.trace_id.to_string(),
                &project,
                &run.agent_id.as_ref(),
                &run.started_at,
                &run.system_prompt.as_bytes(),
                &format_millis_utc(run.received_at),
                &0i64,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn append_event(
        &self,
        project: &str,
        event: NewEvent,
        replay: Option<Replay>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let w = WriteStatements::prepare(&mut conn)?;
        let insert = conn.stmt(INSERT_EVENT)?;
        let mut tx = conn.client.transaction()?;
        w.remember(&mut tx, project, replay.as_ref())?;
        let seq = w.next_seq(&mut tx, project, event.trace_id, None)?;
        insert_event(&mut tx, &insert, &event, seq)?;
        tx.commit()?;
        Ok(seq.max(0) as u64)
    }

    fn record_check(
        &self,
        project: &str,
        check: RecordedCheck,
        replay: Option<Replay>,
    ) -> Result<u64, StoreError> {
        let findings = serde_json::to_string(&check.verdict.findings)
            .map_err(|e| StoreError::Other(format!("cannot serialise findings: {e}")))?;
        let mut conn = self.conn()?;
        let w = WriteStatements::prepare(&mut conn)?;
        let insert = conn.stmt(INSERT_CHECK)?;
        let mut tx = conn.client.transaction()?;
        w.remember(&mut tx, project, replay.as_ref())?;
        let seq = w.next_seq(&mut tx, project, check.check.trace_id, check.after_seq)?;
        let v = &check.verdict;
        insert_check(
            &mut tx,
            &insert,
            &check.check,
            seq,
            CheckOutcome {
                tool_name: &check.tool_name,
                is_safe: v.is_safe,
                reasoning: &v.reasoning,
                findings: &findings,
                consumed_approval: v.consumed_approval,
            },
        )?;
        tx.commit()?;
        Ok(seq.max(0) as u64)
    }

    fn run_history(
        &self,
        project: &str,
        trace_id: TraceId,
        after_seq: u64,
    ) -> Result<History, StoreError> {
        self.with(|conn| {
            let id = trace_id.to_string();
            let run = conn.stmt(
                "SELECT agent_id, system_prompt, last_seq FROM runs
                  WHERE trace_id = $1 AND project = $2",
            )?;
            let items = conn.stmt(
                "SELECT seq, false, content, event_type, schema, false, event_id FROM events
                  WHERE trace_id = $1 AND seq > $2 AND seq <= $3
                    AND event_type NOT IN ('model_input', 'model_output')
                 UNION ALL
                 SELECT seq, true, content, convert_from(tool_name, 'UTF8'), NULL,
                        consumed_approval, check_id FROM checks
                  WHERE trace_id = $1 AND seq > $2 AND seq <= $3
                 ORDER BY 1",
            )?;
            // The latest sequence number first: every item up to it is committed (an item
            // and the number are written in one transaction), later ones are left out.
            let Some(row) = conn.client.query_opt(&run, &[&id, &project])? else {
                return Ok(None);
            };
            let context = RunContext {
                agent_id: row.get(0),
                system_prompt: text(row.get(1)),
            };
            let last_seq: i64 = row.get(2);
            let items = conn
                .client
                .query(&items, &[&id, &(after_seq as i64), &last_seq])?
                .iter()
                .map(|r| {
                    let schema: Option<&str> = r.get(4);
                    history_item(
                        r.get(0),
                        r.get(6),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        schema,
                        r.get(5),
                    )
                })
                .collect();
            Ok(Some(History {
                run: context,
                items,
                last_seq: last_seq.max(0) as u64,
            }))
        })?
        .ok_or(StoreError::NotFound)
    }

    /// Counters shared by every instance, in the `rate_limits` row of the key. One statement
    /// decides and counts (the row is locked only while it runs, so one key's requests queue
    /// for microseconds, not for a transaction's round trips): a window's count is reset when
    /// a new window began, and both counts go up only if every limited window has room, as
    /// [`KeyWindows::decide`] does in memory; the headers are then computed by that same
    /// function. The statement runs on connections whose sessions commit without waiting for
    /// the WAL flush (`synchronous_commit = off`): a database crash may forget the last
    /// fraction of a second of counts, which costs nothing a client could exploit, and each
    /// request is spared a disk flush.
    fn rate_limit(
        &self,
        key_id: &str,
        limits: Limits,
        now_secs: u64,
    ) -> Result<Option<Decision>, StoreError> {
        if limits.per_minute.is_none() && limits.per_hour.is_none() {
            return Ok(None);
        }
        let mut conn = self
            .counters
            .get()
            .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))?;
        let count = conn.stmt(COUNT_REQUEST)?;
        let (minute, hour) = ((now_secs / 60) as i64, (now_secs / 3600) as i64);
        let limit = |l: Option<u32>| l.map(|n| n.min(i32::MAX as u32) as i32);
        let row = conn.client.query_one(
            &count,
            &[
                &key_id,
                &minute,
                &hour,
                &limit(limits.per_minute),
                &limit(limits.per_hour),
            ],
        )?;
        let allowed: bool = row.get(4);
        // The counters before this request, for the pure decision (which counts it again).
        let before = |index: i64, count: i32, limited: bool| Window {
            index: index.max(0) as u64,
            count: (count - i32::from(allowed && limited)).max(0) as u32,
        };
        let mut windows = KeyWindows {
            minute: before(row.get(0), row.get(1), limits.per_minute.is_some()),
            hour: before(row.get(2), row.get(3), limits.per_hour.is_some()),
        };
        Ok(windows.decide(limits, now_secs))
    }

    fn replay(
        &self,
        project: &str,
        key: &str,
        not_before_ms: i64,
    ) -> Result<Option<StoredReplay>, StoreError> {
        self.with(|conn| {
            let s = conn.stmt(
                "SELECT request_hash, status, body FROM idempotency
                  WHERE project = $1 AND idem_key = $2 AND created_at_ms >= $3",
            )?;
            let row = conn
                .client
                .query_opt(&s, &[&project, &key, &not_before_ms])?;
            Ok(row.map(|r| {
                let hash: Vec<u8> = r.get(0);
                let status: i32 = r.get(1);
                StoredReplay {
                    request_hash: hash.try_into().unwrap_or([0; 32]),
                    status: u16::try_from(status).unwrap_or(500),
                    body: r.get(2),
                }
            }))
        })
    }

    fn insert_key(&self, key: ApiKey, secret_hash: [u8; 32]) -> Result<(), StoreError> {
        self.with(|conn| {
            let s = conn.stmt(
                "INSERT INTO api_keys
                     (id, project, key_type, name, secret_hash, rpm, rph, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )?;
            conn.client.execute(
                &s,
                &[
                    &key.id,
                    &key.project,
                    &key.key_type.as_str(),
                    &key.name,
                    &&secret_hash[..],
                    &key.rpm.map(|n| n.min(i32::MAX as u32) as i32),
                    &key.rph.map(|n| n.min(i32::MAX as u32) as i32),
                    &key.created_at,
                ],
            )?;
            Ok(())
        })
    }

    fn key_by_hash(&self, secret_hash: &[u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        let row = self.with(|conn| {
            let s = conn.stmt(concat!(
                "SELECT ",
                key_columns!(),
                " FROM api_keys WHERE secret_hash = $1"
            ))?;
            conn.client.query_opt(&s, &[&&secret_hash[..]])
        })?;
        row.as_ref().map(key_from_row).transpose()
    }

    fn has_active_keys(&self) -> Result<bool, StoreError> {
        self.with(|conn| {
            let s = conn.stmt("SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)")?;
            Ok(conn.client.query_one(&s, &[])?.get(0))
        })
    }

    fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = self.with(|conn| {
            let s = conn.stmt(concat!(
                "SELECT ",
                key_columns!(),
                " FROM api_keys ORDER BY created_at, id"
            ))?;
            conn.client.query(&s, &[])
        })?;
        rows.iter().map(key_from_row).collect()
    }

    fn revoke_key(&self, id: &str, at: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            let s = conn
                .stmt("UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1")?;
            Ok(conn.client.execute(&s, &[&id, &at])? > 0)
        })
    }

    fn touch_key(&self, id: &str, at: &str) {
        let outcome = self.with(|conn| {
            let s = conn.stmt("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")?;
            conn.client.execute(&s, &[&id, &at])
        });
        if let Err(e) = outcome {
            log::debug!("recording the use of key {id} failed: {e}");
        }
    }

    fn list_runs(
        &self,
        scope: Scope<'_>,
        agent_id: Option<&str>,
        page: Page,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let (project, all) = scope_params(scope);
        self.with(|conn| {
            let s = conn.stmt(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs r
                  WHERE ($1 OR r.project = $2) AND ($3::TEXT IS NULL OR r.agent_id = $3)
                    AND ($4::BIGINT IS NULL OR r.key < $4)
                  ORDER BY r.key DESC LIMIT $5 OFFSET $6"
            ))?;
            page_rows(
                &mut conn.client,
                &s,
                &[
                    &all,
                    &project,
                    &agent_id,
                    &page.after,
                    &i64::from(page.limit),
                    &(page.offset.min(i64::MAX as u64) as i64),
                ],
                &page,
                run_from_row,
            )
        })
    }

    fn get_run(&self, scope: Scope<'_>, trace_id: TraceId) -> Result<RunRecord, StoreError> {
        let (project, all) = scope_params(scope);
        self.with(|conn| {
            let s = conn.stmt(concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs r WHERE r.trace_id = $1 AND ($2 OR r.project = $3)"
            ))?;
            let row = conn
                .client
                .query_opt(&s, &[&trace_id.to_string(), &all, &project])?;
            Ok(row.as_ref().map(run_from_row))
        })?
        .ok_or(StoreError::NotFound)
    }

    fn list_events(
        &self,
        scope: Scope<'_>,
        trace_id: TraceId,
        event_type: Option<&str>,
        page: Page,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut conn = self.conn()?;
        Self::run_visible(&mut conn, scope, trace_id)?;
        let s = conn.stmt(
            "SELECT event_id, trace_id, seq, event_type, occurred_at, received_at_ms,
                    content, content_form, schema, schema_form
               FROM events
              WHERE trace_id = $1 AND ($2::TEXT IS NULL OR event_type = $2)
                AND ($3::BIGINT IS NULL OR seq > $3)
              ORDER BY seq LIMIT $4 OFFSET $5",
        )?;
        Ok(page_rows(
            &mut conn.client,
            &s,
            &[
                &trace_id.to_string(),
                &event_type,
                &page.after,
                &i64::from(page.limit),
                &(page.offset.min(i64::MAX as u64) as i64),
            ],
            &page,
            |r| EventRecord {
                event_id: r.get(0),
                trace_id: r.get(1),
                seq: r.get(2),
                event_type: r.get(3),
                occurred_at: r.get(4),
                received_at_ms: r.get(5),
                content: StoredJson {
                    text: r.get(6),
                    form: r.get(7),
                },
                schema: StoredJson {
                    text: r.get(8),
                    form: r.get(9),
                },
            },
        )?)
    }

    fn run_key(&self, scope: Scope<'_>, trace_id: TraceId) -> Result<i64, StoreError> {
        let (project, all) = scope_params(scope);
        self.with(|conn| {
            let s =
                conn.stmt("SELECT key FROM runs WHERE trace_id = $1 AND ($2 OR project = $3)")?;
            let row = conn
                .client
                .query_opt(&s, &[&trace_id.to_string(), &all, &project])?;
            Ok(row.map(|r| r.get::<_, i64>(0)))
        })?
        .ok_or(StoreError::NotFound)
    }

    fn check_key(&self, scope: Scope<'_>, check_id: &str) -> Result<i64, StoreError> {
        let (project, all) = scope_params(scope);
        self.with(|conn| {
            let s = conn.stmt(
                "SELECT c.key FROM checks c JOIN runs r ON r.trace_id = c.trace_id
                  WHERE c.check_id = $1 AND ($2 OR r.project = $3)",
            )?;
            let row = conn.client.query_opt(&s, &[&check_id, &all, &project])?;
            Ok(row.map(|r| r.get::<_, i64>(0)))
        })?
        .ok_or(StoreError::NotFound)
    }

    fn list_checks(
        &self,
        scope: Scope<'_>,
        trace_id: Option<TraceId>,
        is_safe: Option<bool>,
        page: Page,
    ) -> Result<Vec<CheckRecord>, StoreError> {
        let mut conn = self.conn()?;
        if let Some(id) = trace_id {
            Self::run_visible(&mut conn, scope, id)?;
        }
        let (project, all) = scope_params(scope);
        let s = conn.stmt(
            "SELECT c.key, c.check_id, c.trace_id, c.seq, c.tool_name, c.occurred_at,
                    c.received_at_ms, c.content, c.content_form, c.schema, c.schema_form,
                    c.is_safe, c.reasoning, c.findings
               FROM checks c JOIN runs r ON r.trace_id = c.trace_id
              WHERE ($1 OR r.project = $2) AND ($3::TEXT IS NULL OR c.trace_id = $3)
                AND ($4::BOOLEAN IS NULL OR c.is_safe = $4)
                AND ($5::BIGINT IS NULL OR c.key > $5)
              ORDER BY c.key LIMIT $6 OFFSET $7",
        )?;
        Ok(page_rows(
            &mut conn.client,
            &s,
            &[
                &all,
                &project,
                &trace_id.map(|t| t.to_string()),
                &is_safe,
                &page.after,
                &i64::from(page.limit),
                &(page.offset.min(i64::MAX as u64) as i64),
            ],
            &page,
            |r| CheckRecord {
                key: r.get(0),
                check_id: r.get(1),
                trace_id: r.get(2),
                seq: r.get(3),
                tool_name: text(r.get(4)),
                occurred_at: r.get(5),
                received_at_ms: r.get(6),
                content: StoredJson {
                    text: r.get(7),
                    form: r.get(8),
                },
                schema: StoredJson {
                    text: r.get(9),
                    form: r.get(10),
                },
                is_safe: r.get(11),
                reasoning: text(r.get(12)),
                findings: r.get(13),
            },
        )?)
    }

    fn import_run(&self, run: ImportedRun) -> Result<ImportOutcome, StoreError> {
        // Two imports of one run racing: the loser's insert hits the primary key; the second
        // attempt then finds the winner's run and compares.
        match self.import_once(&run) {
            Err(StoreError::Conflict) => self.import_once(&run),
            other => other,
        }
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| conn.client.simple_query("SELECT 1").map(|_| ()))
    }

    /// Any number of instances may serve one database.
    fn shared(&self) -> bool {
        true
    }
}

impl PgStore {
    fn import_once(&self, imported: &ImportedRun) -> Result<ImportOutcome, StoreError> {
        let mut conn = self.conn()?;
        let existing = conn.stmt(
            "SELECT project, agent_id, started_at, system_prompt FROM runs WHERE trace_id = $1",
        )?;
        let stored_ids = conn.stmt(
            "SELECT event_id, seq FROM events WHERE trace_id = $1
             UNION ALL SELECT check_id, seq FROM checks WHERE trace_id = $1 ORDER BY 2",
        )?;
        let insert_run = conn.stmt(INSERT_RUN)?;
        let insert_ev = conn.stmt(INSERT_EVENT)?;
        let insert_ck = conn.stmt(INSERT_CHECK)?;
        let run = &imported.run;
        let id = run.trace_id.to_string();
        let mut tx = conn.client.transaction()?;
        if let Some(row) = tx.query_opt(&existing, &[&id])? {
            let ids: Vec<String> = tx
                .query(&stored_ids, &[&id])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let wanted: Vec<String> = imported.items.iter().map(item_id).collect();
            let same = row.get::<_, &str>(0) == imported.project
                && row.get::<_, &str>(1) == run.agent_id.as_ref()
                && row.get::<_, &str>(2) == run.started_at
                && row.get::<_, &[u8]>(3) == run.system_prompt.as_bytes()
                && ids == wanted;
            return Ok(if same {
                ImportOutcome::AlreadyPresent
            } else {
                ImportOutcome::Conflict
            });
        }
        tx.execute(
            &insert_run,
            &[
                &id,
                &imported.project,
                &run.agent_id.as_ref(),
                &run.started_at,
                &run.system_prompt.as_bytes(),
                &format_millis_utc(run.received_at),
                &(imported.items.len() as i64),
            ],
        )?;
        for (i, item) in imported.items.iter().enumerate() {
            let seq = i as i64 + 1;
            match item {
                ImportedItem::Event(ev) => insert_event(&mut tx, &insert_ev, ev, seq)?,
                ImportedItem::Check(c) => insert_check(
                    &mut tx,
                    &insert_ck,
                    &c.check,
                    seq,
                    CheckOutcome {
                        tool_name: &c.tool_name,
                        is_safe: c.is_safe,
                        reasoning: &c.reasoning,
                        findings: &c.findings,
                        consumed_approval: c.consumed_approval,
                    },
                )?,
            }
        }
        tx.commit()?;
        Ok(ImportOutcome::Inserted)
    }
}

fn item_id(item: &ImportedItem) -> String {
    match item {
        ImportedItem::Event(e) => e.event_id.to_string(),
        ImportedItem::Check(c) => c.check.check_id.to_string(),
    }
}

fn insert_event(
    tx: &mut postgres::Transaction<'_>,
    insert: &Statement,
    ev: &NewEvent,
    seq: i64,
) -> Result<(), postgres::Error> {
    let params: [&(dyn ToSql + Sync); 10] = [
        &ev.event_id.to_string(),
        &ev.trace_id.to_string(),
        &seq,
        &ev.event_type.as_str(),
        &ev.occurred_at,
        &unix_millis(ev.received_at),
        &ev.content.text,
        &ev.content.form.as_str(),
        &ev.schema.text,
        &ev.schema.form.as_str(),
    ];
    tx.execute(insert, &params).map(|_| ())
}

/// A check's verdict as stored.
struct CheckOutcome<'a> {
    tool_name: &'a str,
    is_safe: bool,
    reasoning: &'a str,
    findings: &'a str,
    consumed_approval: bool,
}

fn insert_check(
    tx: &mut postgres::Transaction<'_>,
    insert: &Statement,
    c: &NewCheck,
    seq: i64,
    o: CheckOutcome<'_>,
) -> Result<(), postgres::Error> {
    let params: [&(dyn ToSql + Sync); 14] = [
        &c.check_id.to_string(),
        &c.trace_id.to_string(),
        &seq,
        &o.tool_name.as_bytes(),
        &c.occurred_at,
        &unix_millis(c.received_at),
        &c.content.text,
        &c.content.form.as_str(),
        &c.schema.text,
        &c.schema.form.as_str(),
        &o.is_safe,
        &o.reasoning.as_bytes(),
        &o.findings,
        &o.consumed_approval,
    ];
    tx.execute(insert, &params).map(|_| ())
}

/// UTF-8 text stored as BYTEA (see schema.postgres.sql); it was a Rust string when stored.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_from_row(r: &Row) -> RunRecord {
    let count = |i: usize| r.get::<_, i64>(i).max(0) as u64;
    RunRecord {
        key: r.get(0),
        trace_id: r.get(1),
        project: r.get(2),
        agent_id: r.get(3),
        started_at: r.get(4),
        received_at: r.get(5),
        system_prompt: text(r.get(6)),
        event_count: count(7),
        check_count: count(8),
        blocked_check_count: count(9),
    }
}

fn key_from_row(r: &Row) -> Result<ApiKey, StoreError> {
    let key_type: &str = r.get(2);
    let limit = |i: usize| r.get::<_, Option<i32>>(i).map(|n| n.max(1) as u32);
    Ok(ApiKey {
        id: r.get(0),
        project: r.get(1),
        key_type: KeyType::parse(key_type)
            .ok_or_else(|| StoreError::Other(format!("unknown key type {key_type:?}")))?,
        name: r.get(3),
        rpm: limit(4),
        rph: limit(5),
        created_at: r.get(6),
        last_used_at: r.get(7),
        revoked_at: r.get(8),
    })
}

/// Brings the database to the newest version of `schema.postgres.sql`, forward only, in one
/// transaction under an advisory lock. A database from a newer runwarden is refused.
pub fn migrate(client: &mut Client) -> Result<(), String> {
    let steps = migrations("schema.postgres.sql", SCHEMA_SQL)?;
    let known = steps.len() as i32;
    let fail = |e: postgres::Error| format!("cannot apply the schema: {}", describe(&e));
    let mut tx = client.transaction().map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(fail)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS runwarden_schema (
             version    INTEGER NOT NULL PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .map_err(fail)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM runwarden_schema",
            &[],
        )
        .map_err(fail)?
        .get(0);
    if current > known {
        return Err(format!(
            "its schema version {current} is newer than this runwarden knows ({known}); \
             upgrade runwarden or use another database"
        ));
    }
    for (version, sql) in steps.into_iter().filter(|(v, _)| *v as i32 > current) {
        tx.batch_execute(&sql)
            .map_err(|e| format!("cannot apply schema version {version}: {e}"))?;
        tx.execute(
            "INSERT INTO runwarden_schema (version) VALUES ($1)",
            &[&(version as i32)],
        )
        .map_err(fail)?;
    }
    tx.commit().map_err(fail)
}

/// Purges expired `Idempotency-Key` answers and rate-limit rows idle for over an hour, every
/// [`PURGE_INTERVAL`], until told to stop.
fn start_purger(
    pool: r2d2::Pool<Manager>,
    ttl: Duration,
) -> std::io::Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("rw-purger".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(PURGE_INTERVAL) {
                let now = time::OffsetDateTime::now_utc();
                let cutoff = unix_millis(now) - ttl.as_millis() as i64;
                let hour = now.unix_timestamp() / 3600;
                let purge = pool.get().map_err(|e| e.to_string()).and_then(|mut c| {
                    c.client
                        .execute(
                            "DELETE FROM idempotency WHERE created_at_ms < $1",
                            &[&cutoff],
                        )
                        .and_then(|_| {
                            c.client.execute(
                                "DELETE FROM rate_limits WHERE hour_index < $1",
                                &[&(hour - 1)],
                            )
                        })
                        .map_err(|e| e.to_string())
                });
                if let Err(e) = purge {
                    log::warn!("purging expired idempotency keys failed (will retry): {e}");
                }
            }
        })?;
    Ok((stop, thread))
}

/// `url` with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // A key=value connection string: hide the password value.
        return url
            .split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let tail = redact_query_password(tail);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => format!("{scheme}://{userinfo}@{host}{tail}"),
        },
        None => format!("{scheme}://{authority}{tail}"),
    }
}

fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let query = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{path}?{query}")
}

/// An error with its causes ("db error" alone says nothing; the server's message, or the I/O
/// error under "error connecting to server", does).
fn describe(err: &postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl From<postgres::Error> for StoreError {
    fn from(err: postgres::Error) -> Self {
        let Some(code) = err.code() else {
            // No SQLSTATE: the connection failed or closed (I/O, timeout, protocol).
            return StoreError::Unavailable(describe(&err));
        };
        if *code == SqlState::UNIQUE_VIOLATION {
            return StoreError::Conflict;
        }
        let class = &code.code()[..2];
        let retryable = matches!(class, "08" | "53" | "57" | "40")
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
            || *code == SqlState::LOCK_NOT_AVAILABLE
            || err.is_closed();
        if retryable {
            StoreError::Unavailable(describe(&err))
        } else {
            StoreError::Other(describe(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            (
                "postgres://rw:s3cret@db.example:5432/runwarden",
                "postgres://rw:***@db.example:5432/runwarden",
            ),
            (
                "postgresql://rw@db/runwarden?password=s3cret&sslmode=disable",
                "postgresql://rw@db/runwarden?password=***&sslmode=disable",
            ),
            ("postgres://db/runwarden", "postgres://db/runwarden"),
            (
                "host=db user=rw password=s3cret dbname=runwarden",
                "host=db user=rw password=*** dbname=runwarden",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
            assert!(!redact_url(url).contains("s3cret"));
        }
    }

    #[test]
    fn schema_sections_are_numbered_from_one() -> Result<(), String> {
        assert!(!migrations("schema.postgres.sql", SCHEMA_SQL)?.is_empty());
        Ok(())
    }

    /// A fresh database on the server named by `RUNWARDEN_TEST_DATABASE_URL` (an admin URL),
    /// or `None` (with a line saying so) when the variable is unset.
    fn fresh_database() -> Option<String> {
        let Ok(admin) = std::env::var("RUNWARDEN_TEST_DATABASE_URL") else {
            eprintln!("PostgreSQL store tests skipped: set RUNWARDEN_TEST_DATABASE_URL");
            return None;
        };
        let name = format!("rw_unit_{}", uuid::Uuid::new_v4().simple());
        let mut client = Client::connect(&admin, NoTls).expect("connect to the admin database");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a database");
        let mut config = postgres::Config::from_str(&admin).expect("admin URL");
        config.dbname(&name);
        // Back to a URL the store parses: key=value form.
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres").to_string();
        Some(format!("host={host} port={port} user={user} dbname={name}"))
    }

    fn new_run(trace_id: TraceId) -> NewRun {
        NewRun {
            trace_id,
            client_chose_id: true,
            agent_id: crate::domain::ids::AgentId::parse("a".into()).expect("agent id"),
            started_at: "2024-01-15T14:30:45Z".into(),
            system_prompt: "nul \u{0} inside".into(),
            received_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn new_event(trace_id: TraceId) -> NewEvent {
        let field = crate::domain::event::JsonField {
            text: "{}".into(),
            form: crate::domain::event::JsonForm::Json,
            value: serde_json::json!({}),
        };
        NewEvent {
            event_id: uuid::Uuid::new_v4(),
            trace_id,
            event_type: crate::domain::event::EventType::Tool,
            occurred_at: 1.0,
            received_at: time::OffsetDateTime::UNIX_EPOCH,
            content: field.clone(),
            schema: field,
        }
    }

    #[test]
    fn two_instances_appending_to_one_run_get_gap_free_ordered_numbers() -> Result<(), StoreError> {
        let Some(url) = fresh_database() else {
            return Ok(());
        };
        let open = || {
            PgStore::open(&PgOptions {
                pool_size: 4,
                ..PgOptions::new(url.clone())
            })
            .map_err(StoreError::Other)
        };
        let (a, b) = (std::sync::Arc::new(open()?), std::sync::Arc::new(open()?));
        let id = TraceId::new_random();
        a.insert_run("p", new_run(id), None)?;
        assert!(matches!(
            b.insert_run("p", new_run(id), None),
            Err(StoreError::Conflict)
        ));
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| store.append_event("p", new_event(id), None))
                        .collect::<Result<Vec<u64>, StoreError>>()
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for w in writers {
            let mine = w.join().expect("writer thread")?;
            // Each writer's own appends come back in increasing order.
            assert!(mine.windows(2).all(|p| p[0] < p[1]));
            seqs.extend(mine);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());
        let history = b.run_history("p", id, 390)?;
        assert_eq!(history.last_seq, 400);
        assert_eq!(history.items.len(), 10);
        assert_eq!(history.run.system_prompt, "nul \u{0} inside");
        assert!(matches!(
            a.run_history("other", id, 0),
            Err(StoreError::NotFound)
        ));
        Ok(())
    }

    #[test]
    fn two_instances_count_one_key_together() -> Result<(), StoreError> {
        let Some(url) = fresh_database() else {
            return Ok(());
        };
        let a = PgStore::open(&PgOptions::new(url.clone())).map_err(StoreError::Other)?;
        let b = PgStore::open(&PgOptions::new(url)).map_err(StoreError::Other)?;
        let limits = Limits::new(Some(3), None);
        let now = 1_700_000_040; // the start of a minute window
        let allowed: Vec<bool> = (0..5)
            .map(|i| {
                let store = if i % 2 == 0 { &a } else { &b };
                store
                    .rate_limit("key_x", limits, now + i)
                    .map(|d| d.is_some_and(|d| d.allowed))
            })
            .collect::<Result<_, _>>()?;
        assert_eq!(allowed, [true, true, true, false, false]);
        // The next window starts afresh, whichever instance sees it first.
        assert!(
            b.rate_limit("key_x", limits, now + 60)?
                .is_some_and(|d| d.allowed)
        );
        assert_eq!(a.rate_limit("key_y", Limits::new(None, None), now)?, None);
        Ok(())
    }

    #[test]
    fn the_counting_statement_decides_as_the_memory_limiter_does() -> Result<(), StoreError> {
        let Some(url) = fresh_database() else {
            return Ok(());
        };
        let store = PgStore::open(&PgOptions::new(url)).map_err(StoreError::Other)?;
        let memory = crate::ratelimit::RateLimiter::default();
        // Minute and hour limits together; refused requests have no effect; windows roll.
        let limits = Limits::new(Some(2), Some(3));
        let start = 1_700_000_040; // a minute boundary, 40 s into an hour window
        for t in [0, 1, 2, 3, 61, 62, 63, 121, 3_560, 3_561, 3_562, 3_563] {
            let shared = store.rate_limit("k", limits, start + t)?;
            assert_eq!(shared, memory.check("k", limits, start + t), "at +{t} s");
        }
        Ok(())
    }
}
