//! Storage behind a narrow interface. Handlers talk to a `dyn Store` only, so a second backend
//! (PostgreSQL) can be added without touching them. [`sqlite::SqliteStore`] is the one backend
//! today.
//!
//! Every write method returns only after the write is durable. How the backend gets there
//! (the SQLite backend commits groups of writes in one transaction) is invisible here.

pub mod sqlite;

use std::fmt;

use crate::domain::event::{NewCheck, NewEvent, NewRun};
use crate::domain::ids::TraceId;
use crate::engine::{RunContext, Verdict};

/// A check together with the verdict it got, as stored.
#[derive(Debug, Clone)]
pub struct RecordedCheck {
    /// The validated request.
    pub check: NewCheck,
    /// The tool's name.
    pub tool_name: String,
    /// The engine's verdict.
    pub verdict: Verdict,
}

/// What a storage operation can fail with. Built at the storage edge from the backend's own
/// errors; the general HTTP mapping is in `error.rs`, the specific one (which conflict) in the
/// handler.
#[derive(Debug)]
pub enum StoreError {
    /// A uniqueness constraint rejected the write (e.g. a reused trace_id).
    Conflict,
    /// The row the operation needs does not exist (e.g. an unknown trace_id).
    NotFound,
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
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Unavailable(why) => write!(f, "storage unavailable: {why}"),
            StoreError::Other(why) => write!(f, "storage error: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The storage interface of the handlers.
pub trait Store: Send + Sync {
    /// Stores a new run. `Conflict` if its trace_id exists (the existing run is untouched).
    fn insert_run(&self, run: NewRun) -> Result<(), StoreError>;

    /// Appends an event to its run and returns its per-run sequence number. `NotFound` if the
    /// run does not exist.
    fn append_event(&self, event: NewEvent) -> Result<u64, StoreError>;

    /// Stores a judged check in its run's history and returns its per-run sequence number.
    /// `NotFound` if the run does not exist.
    fn record_check(&self, check: RecordedCheck) -> Result<u64, StoreError>;

    /// What the check engine needs to know of a run. `NotFound` if it does not exist.
    fn run_context(&self, trace_id: TraceId) -> Result<RunContext, StoreError>;

    /// Succeeds when the database answers a query.
    fn ping(&self) -> Result<(), StoreError>;
}
