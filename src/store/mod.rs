//! Storage behind a narrow interface. Handlers talk to a `dyn Store` only, so a second backend
//! (PostgreSQL) can be added without touching them. [`sqlite::SqliteStore`] is the one backend
//! today.
//!
//! Every write method returns only after the write is durable. How the backend gets there
//! (the SQLite backend commits groups of writes in one transaction) is invisible here.

pub mod postgres;
pub mod sqlite;

use std::fmt;

use crate::auth::{ApiKey, Limits};
use crate::domain::event::{EventType, NewCheck, NewEvent, NewRun};
use crate::domain::ids::TraceId;
use crate::engine::state::HistoryItem;
use crate::engine::{RunContext, Verdict};
use crate::ratelimit::Decision;

/// A check together with the verdict it got, as stored.
#[derive(Debug, Clone)]
pub struct RecordedCheck {
    /// The validated request.
    pub check: NewCheck,
    /// The tool's name.
    pub tool_name: String,
    /// The engine's verdict.
    pub verdict: Verdict,
    /// With a shared database (see [`Store::shared`]): the run's latest sequence number when
    /// the verdict was judged. The check is stored only if nothing was added to the run since
    /// (otherwise `Stale`), so that a verdict never misses an event or check another instance
    /// stored meanwhile, and an approval is used once. `None`: no such condition (one process
    /// sees every write and orders checks of a run itself).
    pub after_seq: Option<u64>,
}

/// A run and the part of its history its derived state is built from.
#[derive(Debug, Clone)]
pub struct History {
    /// What the check engine needs to know of the run.
    pub run: RunContext,
    /// The items after the requested sequence number, up to `last_seq`, in order.
    pub items: Vec<HistoryItem>,
    /// The run's latest sequence number when read: `items` is its whole history up to it.
    pub last_seq: u64,
}

/// The answer to remember for an `Idempotency-Key`, stored in the same transaction as the
/// write it answers, so that a retry finds either both or neither.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The client's key.
    pub key: String,
    /// SHA-256 of the route and the body.
    pub request_hash: [u8; 32],
    /// The status answered.
    pub status: u16,
    /// The body answered.
    pub body: Vec<u8>,
    /// When (Unix milliseconds).
    pub at_ms: i64,
    /// A remembered answer older than this (Unix milliseconds) is expired and may be replaced.
    pub expired_before_ms: i64,
}

/// A remembered answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReplay {
    /// SHA-256 of the route and the body of the request it answered.
    pub request_hash: [u8; 32],
    /// The status answered.
    pub status: u16,
    /// The body answered.
    pub body: Vec<u8>,
}

/// Which projects a read may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One project's runs.
    Project(&'a str),
    /// Every project's runs (admin keys).
    All,
}

/// Where a page of a list starts and how long it is. Lists are keyset-paginated: `after` is
/// the key of the last item of the previous page, so a page never repeats or skips an item
/// while new ones are written. `offset` skips items instead (accepted for compatibility).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// The key after which the page starts.
    pub after: Option<i64>,
    /// Items to skip (only without `after`).
    pub offset: u64,
    /// The most items returned.
    pub limit: u32,
    /// Items are taken until their text (contents, schemas, prompts, reasoning) reaches this
    /// many bytes, then one more, so that the caller knows whether more follow (see
    /// [`take_rows`]); `u64::MAX` for no bound. A page of 100 events of 1 MiB each would
    /// otherwise hold 100 MB in memory, once per request.
    pub max_bytes: u64,
}

/// What a listed item weighs for [`Page::max_bytes`]: the bytes of its text fields.
pub trait TextBytes {
    /// The bytes of its text fields.
    fn text_bytes(&self) -> u64;
}

impl TextBytes for RunRecord {
    fn text_bytes(&self) -> u64 {
        (self.system_prompt.len() + self.agent_id.len()) as u64
    }
}

impl TextBytes for EventRecord {
    fn text_bytes(&self) -> u64 {
        (self.content.text.len() + self.schema.text.len()) as u64
    }
}

impl TextBytes for CheckRecord {
    fn text_bytes(&self) -> u64 {
        (self.content.text.len()
            + self.schema.text.len()
            + self.reasoning.len()
            + self.findings.len()) as u64
    }
}

/// The rows of `rows` a page takes: all of them (the query already stops at `page.limit`), or
/// those up to the one that brings their text to `page.max_bytes`, and one more. Rows are
/// read one at a time, so the rest are never loaded.
pub fn take_rows<R: TextBytes, E>(
    rows: impl IntoIterator<Item = Result<R, E>>,
    page: &Page,
) -> Result<Vec<R>, E> {
    let (mut out, mut bytes) = (Vec::new(), 0u64);
    for row in rows {
        let row = row?;
        let full = bytes >= page.max_bytes;
        bytes = bytes.saturating_add(row.text_bytes());
        out.push(row);
        if full {
            break;
        }
    }
    Ok(out)
}

/// How many of `rows` (as [`take_rows`] returned them) a page shows: at most `limit`, and no
/// more than up to the one that brings their text to `max_bytes`. The rest only tell that more
/// follow.
pub fn shown_rows<R: TextBytes>(rows: &[R], limit: usize, max_bytes: u64) -> usize {
    let mut bytes = 0u64;
    for (i, row) in rows.iter().enumerate().take(limit) {
        bytes = bytes.saturating_add(row.text_bytes());
        if bytes >= max_bytes {
            return i + 1;
        }
    }
    rows.len().min(limit)
}

/// A stored run with its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The list key (newest first).
    pub key: i64,
    /// The run's id.
    pub trace_id: String,
    /// Its project.
    pub project: String,
    /// The agent's id.
    pub agent_id: String,
    /// When the run started, as the client sent it.
    pub started_at: String,
    /// Server receipt time.
    pub received_at: String,
    /// The system prompt.
    pub system_prompt: String,
    /// How many events it has.
    pub event_count: u64,
    /// How many checks it has.
    pub check_count: u64,
    /// How many of them were blocked.
    pub blocked_check_count: u64,
}

/// A JSON-carrying field as stored: its text and how it was sent (`string` or `json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJson {
    /// The text exactly as sent.
    pub text: String,
    /// `string` or `json`.
    pub form: String,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// The event's id.
    pub event_id: String,
    /// Its run.
    pub trace_id: String,
    /// Arrival order within the run (the list key).
    pub seq: i64,
    /// Its type.
    pub event_type: String,
    /// Its own time, Unix seconds.
    pub occurred_at: f64,
    /// Server receipt time, Unix milliseconds.
    pub received_at_ms: i64,
    /// The content as sent.
    pub content: StoredJson,
    /// The schema as sent.
    pub schema: StoredJson,
}

/// A stored check with its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRecord {
    /// The list key (arrival order).
    pub key: i64,
    /// The check's id.
    pub check_id: String,
    /// Its run.
    pub trace_id: String,
    /// Arrival order within the run.
    pub seq: i64,
    /// The tool's name.
    pub tool_name: String,
    /// The action's own time, Unix seconds.
    pub occurred_at: f64,
    /// Server receipt time, Unix milliseconds.
    pub received_at_ms: i64,
    /// The arguments as sent.
    pub content: StoredJson,
    /// The function definition as sent.
    pub schema: StoredJson,
    /// The verdict.
    pub is_safe: bool,
    /// Its reasoning.
    pub reasoning: String,
    /// Its findings, as a JSON array.
    pub findings: String,
}

/// A run read from an export, to be stored as it was.
#[derive(Debug, Clone)]
pub struct ImportedRun {
    /// Its project.
    pub project: String,
    /// The run, with its original trace id.
    pub run: NewRun,
    /// Its events and checks, in arrival order.
    pub items: Vec<ImportedItem>,
}

/// One event or check of an imported run.
#[derive(Debug, Clone)]
pub enum ImportedItem {
    /// An event, with its original id.
    Event(NewEvent),
    /// A check, with its original id and stored verdict.
    Check(ImportedCheck),
}

/// A check of an imported run with the verdict it was given.
#[derive(Debug, Clone)]
pub struct ImportedCheck {
    /// The check, with its original id.
    pub check: NewCheck,
    /// The tool's name.
    pub tool_name: String,
    /// The verdict.
    pub is_safe: bool,
    /// Its reasoning.
    pub reasoning: String,
    /// Its findings, as a JSON array.
    pub findings: String,
    /// Whether it used up an approval.
    pub consumed_approval: bool,
}

/// What importing a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Stored.
    Inserted,
    /// The same run (same fields, same event and check ids) was there already; nothing changed.
    AlreadyPresent,
    /// A different run has this trace id; nothing changed.
    Conflict,
}

/// What a storage operation can fail with. Built at the storage edge from the backend's own
/// errors; the general HTTP mapping is in `error.rs`, the specific one (which conflict) in the
/// handler.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// A uniqueness constraint rejected the write (e.g. a reused trace_id).
    Conflict,
    /// The write carried an `Idempotency-Key` that another request recorded first; nothing
    /// was written.
    KeyTaken,
    /// The row the operation needs does not exist (e.g. an unknown trace_id).
    NotFound,
    /// The run changed since the history the write was based on (see
    /// [`RecordedCheck::after_seq`]); nothing was written.
    Stale,
    /// The database cannot take the operation now: busy past its timeout, disk full, or the
    /// writer is gone. Worth a retry.
    Unavailable(String),
    /// Anything else: a bug, a broken database.
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict => f.write_str("uniqueness constraint violated"),
            StoreError::KeyTaken => f.write_str("idempotency key already recorded"),
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Stale => f.write_str("the run changed meanwhile"),
            StoreError::Unavailable(why) => write!(f, "storage unavailable: {why}"),
            StoreError::Other(why) => write!(f, "storage error: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The storage interface of the handlers and the CLI. Runs are scoped by project: a run of
/// another project is `NotFound`, exactly like one that does not exist.
pub trait Store: Send + Sync {
    /// Stores a new run of `project`. `Conflict` if its trace_id exists (in any project; the
    /// existing run is untouched); `KeyTaken` if `replay`'s key was recorded first.
    fn insert_run(
        &self,
        project: &str,
        run: NewRun,
        replay: Option<Replay>,
    ) -> Result<(), StoreError>;

    /// Appends an event to its run and returns its per-run sequence number. `NotFound` if the
    /// run does not exist in `project`.
    fn append_event(
        &self,
        project: &str,
        event: NewEvent,
        replay: Option<Replay>,
    ) -> Result<u64, StoreError>;

    /// Stores a judged check in its run's history and returns its per-run sequence number.
    /// `NotFound` if the run does not exist in `project`; `Stale` if the run has items after
    /// `check.after_seq` (when given).
    fn record_check(
        &self,
        project: &str,
        check: RecordedCheck,
        replay: Option<Replay>,
    ) -> Result<u64, StoreError>;

    /// A run of `project` and the part of its history after sequence number `after_seq` that
    /// its derived state is built from (events other than model input and output, and
    /// checks), in sequence order. `after_seq` 0 is the whole history.
    fn run_history(
        &self,
        project: &str,
        trace_id: TraceId,
        after_seq: u64,
    ) -> Result<History, StoreError>;

    /// Counts one request of key `key_id` against `limits` at Unix time `now_secs` (see
    /// [`KeyWindows::decide`](crate::ratelimit::KeyWindows::decide)), in
    /// counters every instance serving this database shares.
    fn rate_limit(
        &self,
        key_id: &str,
        limits: Limits,
        now_secs: u64,
    ) -> Result<Option<Decision>, StoreError>;

    /// The answer remembered for `key` in `project`, unless older than `not_before_ms`.
    fn replay(
        &self,
        project: &str,
        key: &str,
        not_before_ms: i64,
    ) -> Result<Option<StoredReplay>, StoreError>;

    /// Stores a new API key (only its hash).
    fn insert_key(&self, key: ApiKey, secret_hash: [u8; 32]) -> Result<(), StoreError>;

    /// The key with this hash, revoked or not.
    fn key_by_hash(&self, secret_hash: &[u8; 32]) -> Result<Option<ApiKey>, StoreError>;

    /// Whether any key is not revoked.
    fn has_active_keys(&self) -> Result<bool, StoreError>;

    /// Every key, oldest first.
    fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes a key at `at`; false if there is no key with this id. Revoking twice keeps the
    /// first time.
    fn revoke_key(&self, id: &str, at: &str) -> Result<bool, StoreError>;

    /// Records that a key was used at `at` (best effort: does not wait for the write).
    fn touch_key(&self, id: &str, at: &str);

    /// Runs in `scope`, newest first, optionally of one agent.
    fn list_runs(
        &self,
        scope: Scope<'_>,
        agent_id: Option<&str>,
        page: Page,
    ) -> Result<Vec<RunRecord>, StoreError>;

    /// One run in `scope`; `NotFound` otherwise.
    fn get_run(&self, scope: Scope<'_>, trace_id: TraceId) -> Result<RunRecord, StoreError>;

    /// A run's events in arrival order, optionally of one type; `NotFound` if the run is not in
    /// `scope`.
    fn list_events(
        &self,
        scope: Scope<'_>,
        trace_id: TraceId,
        event_type: Option<&str>,
        page: Page,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// The list key of run `trace_id` when it is in `scope` (`NotFound` otherwise): where the
    /// page of runs after it starts. Unlike `get_run`, it counts nothing.
    fn run_key(&self, scope: Scope<'_>, trace_id: TraceId) -> Result<i64, StoreError>;

    /// The list key of check `check_id` when its run is in `scope` (`NotFound` otherwise):
    /// where the page of checks after it starts.
    fn check_key(&self, scope: Scope<'_>, check_id: &str) -> Result<i64, StoreError>;

    /// Checks in arrival order, of one run (`NotFound` if it is not in `scope`) or of every run
    /// in `scope`, optionally only safe or only blocked ones.
    fn list_checks(
        &self,
        scope: Scope<'_>,
        trace_id: Option<TraceId>,
        is_safe: Option<bool>,
        page: Page,
    ) -> Result<Vec<CheckRecord>, StoreError>;

    /// Stores an exported run as it was, in one transaction; an existing run is never
    /// touched.
    fn import_run(&self, run: ImportedRun) -> Result<ImportOutcome, StoreError>;

    /// Succeeds when the database answers a query.
    fn ping(&self) -> Result<(), StoreError>;

    /// Whether other processes may write to this database while this one runs (several
    /// instances on one PostgreSQL database). When false, this process sees every write, so
    /// what it keeps in memory of a run may run ahead of the store.
    fn shared(&self) -> bool;
}

/// One history item from its stored columns, the same for every backend: `name` is the event
/// type of an event, the tool of a check; `schema` is an event's schema text; `id` the event's
/// or check's id.
#[allow(clippy::too_many_arguments)]
pub(crate) fn history_item(
    seq: i64,
    id: String,
    is_check: bool,
    content: &str,
    name: String,
    schema: Option<&str>,
    consumed_approval: bool,
) -> HistoryItem {
    // Stored content is JSON text (validated on the way in).
    let value = serde_json::from_str(content).unwrap_or(serde_json::Value::Null);
    let seq = seq.max(0) as u64;
    if is_check {
        return HistoryItem::Check {
            seq,
            id,
            tool: name,
            arguments: value,
            consumed_approval,
        };
    }
    let tool = schema
        .and_then(|s| serde_json::from_str(s).ok())
        .and_then(|s| {
            crate::domain::schema::detect(&s)
                .ok()
                .and_then(|d| d.tool_name)
        });
    HistoryItem::Event {
        seq,
        event_type: EventType::parse(&name).unwrap_or(EventType::System),
        tool,
        content: value,
    }
}

/// The `-- @version N` sections of a schema file (`file` names it in errors), in file order.
pub(crate) fn migrations(file: &str, sql: &str) -> Result<Vec<(u32, String)>, String> {
    let mut out: Vec<(u32, String)> = Vec::new();
    for line in sql.lines() {
        if let Some(rest) = line.strip_prefix("-- @version ") {
            let version: u32 = rest
                .trim()
                .parse()
                .map_err(|_| format!("{file}: bad version line {line:?}"))?;
            let expected = out.len() as u32 + 1;
            if version != expected {
                return Err(format!(
                    "{file}: version {version} found where {expected} was expected"
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

/// A scope as query parameters: the project, and whether every project is visible.
pub(crate) fn scope_params<'a>(scope: Scope<'a>) -> (&'a str, bool) {
    match scope {
        Scope::Project(p) => (p, false),
        Scope::All => ("", true),
    }
}

/// Unix milliseconds of `t`, as stored.
pub(crate) fn unix_millis(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listed item of `n` bytes of text.
    struct Item(u64);

    impl TextBytes for Item {
        fn text_bytes(&self) -> u64 {
            self.0
        }
    }

    fn page(limit: u32, max_bytes: u64) -> Page {
        Page {
            after: None,
            offset: 0,
            limit,
            max_bytes,
        }
    }

    #[test]
    fn a_page_stops_one_row_after_its_text_reaches_the_bound() {
        // (sizes of the rows the query yields, limit + 1, bound, rows taken, rows shown)
        let cases: [(&[u64], u32, u64, usize, usize); 6] = [
            (&[1, 1, 1], 3, 10, 3, 2),
            (&[1, 1], 3, 10, 2, 2),
            (&[6, 6, 6, 6], 5, 10, 3, 2),
            (&[20, 1, 1], 4, 10, 2, 1),
            (&[5, 5], 11, 10, 2, 2),
            (&[5, 5, 5], 11, 10, 3, 2),
        ];
        for (sizes, limit, bound, taken, shown) in cases {
            let p = page(limit, bound);
            let rows: Vec<Result<Item, ()>> = sizes.iter().map(|&n| Ok(Item(n))).collect();
            let got = take_rows(rows, &p).expect("rows");
            assert_eq!(got.len(), taken, "{sizes:?} taken");
            let visible = shown_rows(&got, (limit - 1) as usize, bound);
            assert_eq!(visible, shown, "{sizes:?} shown");
        }
        // Without a bound, every row the query gives.
        let rows: Vec<Result<Item, ()>> = (0..1000).map(|_| Ok(Item(1 << 20))).collect();
        assert_eq!(
            take_rows(rows, &page(u32::MAX, u64::MAX))
                .expect("rows")
                .len(),
            1000
        );
    }
}
