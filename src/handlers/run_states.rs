//! The derived state of recently used runs, in memory, so a check costs the same whatever the
//! length of its run's history. A run not in memory is loaded once from the store
//! (`Store::run_history`: its events and checks); before each check, whatever was stored
//! since (by this instance or another one sharing the database) is read and applied
//! ([`RunEntry::catch_up`]). The store is the truth, the memory a cache of it. With a shared
//! database a check's write succeeds only if nothing was added to its run since the state it
//! was judged on (`RecordedCheck::after_seq`); with one process per database, a check is
//! applied to the state before its write (so that checks of one run share a group commit) and
//! skipped when a catch-up meets it (`pending`). At most [`RunStates::CAPACITY`] runs are kept,
//! and states of at most [`RunStates::BUDGET`] bytes in all (as estimated by [`weight`]: a run's
//! state grows with the text of its history, and 3,000 runs with 100 KB of tool output each
//! held 2.3 GB); runs not in use go first, the heaviest first when the bytes are over.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::domain::ids::TraceId;
use crate::engine::RunContext;
use crate::engine::state::{HistoryItem, RunState};
use crate::policy::{AgentPolicy, Policy};
use crate::store::{History, Store, StoreError};

/// One run in memory.
pub struct RunEntry {
    /// The run's project (a run of another project is not found).
    pub project: String,
    /// The run.
    pub run: RunContext,
    /// The policy in force for its agent.
    pub policy: AgentPolicy,
    /// Its derived state.
    pub state: RunState,
    /// The run's latest sequence number reflected in `state` (besides `pending`).
    pub applied_seq: u64,
    /// Checks already applied to `state` whose write may not be stored yet (one process per
    /// database only, see `checks.rs`): a catch-up that meets one skips it.
    pub pending: HashSet<String>,
    /// One process per database only: whether something this state has not seen may have been
    /// stored (an event, or anything before the entry was in memory), so that the next check
    /// must catch up. With a shared database every check catches up.
    pub dirty: bool,
    /// What its state holds, as estimated by [`weight`] (counted in `held` too).
    bytes: u64,
    /// The estimated bytes of every entry of its [`RunStates`].
    held: Arc<AtomicU64>,
}

impl Drop for RunEntry {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// An estimate of what applying `items` adds to a run's state: the text of their strings
/// (kept, lowercased, as words and values), 64 bytes per word (a set entry; the state keeps
/// at most 50,000 words and 50,000 values) and 64 bytes per check (its repetition count).
fn weight<'a>(items: impl IntoIterator<Item = &'a HistoryItem>) -> u64 {
    /// Bytes and words of strings.
    #[derive(Default)]
    struct Text {
        bytes: u64,
        words: u64,
    }
    impl Text {
        fn add(&mut self, s: &str) {
            self.bytes += s.len() as u64;
            self.words += s
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .count() as u64;
        }
        /// The strings in `v`, member names too.
        fn walk(&mut self, v: &Value) {
            match v {
                Value::String(s) => self.add(s),
                Value::Array(a) => a.iter().for_each(|item| self.walk(item)),
                Value::Object(o) => {
                    for (name, item) in o {
                        self.add(name);
                        self.walk(item);
                    }
                }
                _ => {}
            }
        }
    }
    let mut text = Text::default();
    let mut checks = 0u64;
    for item in items {
        match item {
            HistoryItem::Event { content, .. } => text.walk(content),
            HistoryItem::Check { .. } => checks += 1,
        }
    }
    text.bytes + 64 * text.words.min(100_000) + 64 * checks
}

impl RunEntry {
    /// Applies the stored items after `applied_seq` (read from `store`).
    pub fn catch_up(&mut self, store: &dyn Store, trace_id: TraceId) -> Result<(), StoreError> {
        let history = store.run_history(&self.project, trace_id, self.applied_seq)?;
        self.apply(history);
        Ok(())
    }

    fn apply(&mut self, history: History) {
        if history.last_seq <= self.applied_seq {
            return;
        }
        let added =
            weight(&history.items).min(RunStates::MAX_ENTRY_BYTES.saturating_sub(self.bytes));
        self.bytes += added;
        self.held.fetch_add(added, Ordering::Relaxed);
        let pending = &mut self.pending;
        let items = history.items.into_iter().filter(|item| match item {
            HistoryItem::Check { id, .. } => !pending.remove(id),
            HistoryItem::Event { .. } => true,
        });
        self.state.apply(&self.policy, items);
        self.applied_seq = history.last_seq;
    }
}

/// See the module doc.
pub struct RunStates {
    runs: Mutex<HashMap<TraceId, Arc<Mutex<RunEntry>>>>,
    /// The estimated bytes of the entries (each entry takes its own off when dropped).
    held: Arc<AtomicU64>,
    /// The most estimated bytes kept ([`RunStates::BUDGET`] but in tests).
    budget: u64,
    /// Per run being loaded from the store, a lock held while it is, so that requests arriving
    /// together for a run not in memory load it once, not once each (a run's history may be
    /// large). Loads of different runs do not wait for each other: one that took seconds
    /// (measured: 3 s for a system prompt of 60,000 e-mail addresses) held up the first check
    /// of every other run when one lock served them all. A lock goes once nobody holds it.
    loading: Mutex<HashMap<TraceId, Arc<Mutex<()>>>>,
}

impl Default for RunStates {
    fn default() -> Self {
        RunStates::with_budget(RunStates::BUDGET)
    }
}

impl RunStates {
    /// The most runs kept in memory.
    pub const CAPACITY: usize = 10_000;

    /// The most bytes of run states kept in memory, as estimated by [`weight`].
    pub const BUDGET: u64 = 256 * 1024 * 1024;

    /// The most one run counts against [`RunStates::BUDGET`]: the state's caps keep it about
    /// that small (but for words and values of megabytes each), however long its history.
    pub const MAX_ENTRY_BYTES: u64 = 16 * 1024 * 1024;

    /// Run states kept up to `budget` estimated bytes.
    pub fn with_budget(budget: u64) -> Self {
        RunStates {
            runs: Mutex::default(),
            held: Arc::default(),
            budget,
            loading: Mutex::default(),
        }
    }

    /// The estimated bytes of the run states in memory.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The run's entry, loaded from `store` if it is not in memory. `NotFound` if the run does
    /// not exist in `project`. Holding the returned `Arc` keeps the entry from being evicted.
    /// The entry may lag behind the store: call [`RunEntry::catch_up`] under its lock.
    pub fn get(
        &self,
        store: &dyn Store,
        policy: &Policy,
        project: &str,
        trace_id: TraceId,
    ) -> Result<Arc<Mutex<RunEntry>>, StoreError> {
        if self.held() > self.budget {
            shed(&mut self.lock(), &self.held, self.budget);
        }
        if let Some(found) = self.cached(project, trace_id) {
            return found;
        }
        let lock = Arc::clone(
            self.loading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(trace_id)
                .or_default(),
        );
        let found = {
            let _loading = lock.lock().unwrap_or_else(|e| e.into_inner());
            // Another request may have loaded it while this one waited.
            match self.cached(project, trace_id) {
                Some(found) => found,
                None => self.load(store, policy, project, trace_id),
            }
        };
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        // Nobody else holds or waits for the lock (the map and this request have it).
        if Arc::strong_count(&lock) == 2 {
            loading.remove(&trace_id);
        }
        found
    }

    /// Loads the run from `store` and keeps it (under its loading lock).
    fn load(
        &self,
        store: &dyn Store,
        policy: &Policy,
        project: &str,
        trace_id: TraceId,
    ) -> Result<Arc<Mutex<RunEntry>>, StoreError> {
        let history = store.run_history(project, trace_id, 0)?;
        let agent_policy = policy.for_agent(&history.run.agent_id);
        let prompt = history.run.system_prompt.len() as u64;
        self.held.fetch_add(prompt, Ordering::Relaxed);
        let mut entry = RunEntry {
            project: project.to_string(),
            policy: agent_policy,
            state: RunState::new(&history.run.system_prompt),
            run: history.run.clone(),
            applied_seq: 0,
            pending: HashSet::new(),
            // An event stored between the history's read and the entry's insertion below
            // found no entry to mark: the first check catches up.
            dirty: true,
            bytes: prompt,
            held: Arc::clone(&self.held),
        };
        entry.apply(history);
        // What the grammar read from the system prompt, for whoever wonders why a check
        // blocked (debug only: the constraints quote the prompt).
        log::debug!(
            "run {trace_id}: constraints from the system prompt: {:?}",
            entry.state.constraints()
        );
        let mut runs = self.lock();
        if runs.len() >= Self::CAPACITY {
            evict(&mut runs);
        }
        Ok(Arc::clone(
            runs.entry(trace_id)
                .or_insert_with(|| Arc::new(Mutex::new(entry))),
        ))
    }

    /// The run's entry if it is in memory: itself, or `NotFound` if it belongs to another
    /// project.
    fn cached(
        &self,
        project: &str,
        trace_id: TraceId,
    ) -> Option<Result<Arc<Mutex<RunEntry>>, StoreError>> {
        let entry = self.lock().get(&trace_id).cloned()?;
        let same_project = entry.lock().map(|e| e.project == project).unwrap_or(false);
        Some(if same_project {
            Ok(entry)
        } else {
            Err(StoreError::NotFound)
        })
    }

    /// Notes that an event of the run was stored (one process per database): its next check
    /// catches up. Nothing to do for a run not in memory: it is loaded with the event.
    pub fn note_event(&self, trace_id: TraceId) {
        let entry = self.lock().get(&trace_id).cloned();
        if let Some(entry) = entry {
            entry.lock().unwrap_or_else(|p| p.into_inner()).dirty = true;
        }
    }

    /// Forgets a run, so that it is loaded afresh from the store next time (after a write
    /// whose effect the state already counted failed).
    pub fn forget(&self, trace_id: TraceId) {
        self.lock().remove(&trace_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TraceId, Arc<Mutex<RunEntry>>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Drops the heaviest entries not in use (nobody else holds their `Arc`) until the estimated
/// bytes are at most three quarters of `budget`.
fn shed(runs: &mut HashMap<TraceId, Arc<Mutex<RunEntry>>>, held: &AtomicU64, budget: u64) {
    let mut idle: Vec<(u64, TraceId)> = runs
        .iter()
        .filter(|(_, e)| Arc::strong_count(e) == 1)
        .filter_map(|(id, e)| Some((e.try_lock().ok()?.bytes, *id)))
        .collect();
    idle.sort_unstable_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
    for (_, id) in idle {
        if held.load(Ordering::Relaxed) <= budget / 4 * 3 {
            break;
        }
        runs.remove(&id);
    }
}

/// Drops a quarter of the entries not in use (nobody else holds their `Arc`).
fn evict(runs: &mut HashMap<TraceId, Arc<Mutex<RunEntry>>>) {
    let idle: Vec<TraceId> = runs
        .iter()
        .filter(|(_, e)| Arc::strong_count(e) == 1)
        .map(|(id, _)| *id)
        .take(RunStates::CAPACITY / 4)
        .collect();
    for id in idle {
        runs.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::event::{EventType, JsonField, JsonForm, NewCheck, NewEvent, NewRun};
    use crate::domain::ids::AgentId;
    use crate::engine::Verdict;
    use crate::store::RecordedCheck;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};

    const P: &str = "p";

    fn field(value: serde_json::Value) -> JsonField {
        JsonField {
            text: value.to_string(),
            form: JsonForm::Json,
            value,
        }
    }

    fn store(name: &str) -> SqliteStore {
        let dir = std::env::temp_dir().join(format!("rw-states-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        SqliteStore::open(&SqliteOptions::new(dir.join("rw.db"))).expect("open")
    }

    fn new_run(store: &SqliteStore) -> TraceId {
        let trace_id = TraceId::new_random();
        let run = NewRun {
            trace_id,
            client_chose_id: true,
            agent_id: AgentId::parse("a".into()).expect("agent"),
            started_at: "2024-01-15T14:30:45Z".into(),
            system_prompt: "p".into(),
            received_at: OffsetDateTime::UNIX_EPOCH,
        };
        store.insert_run(P, run, None).expect("run");
        trace_id
    }

    fn check(trace_id: TraceId) -> RecordedCheck {
        RecordedCheck {
            check: NewCheck {
                check_id: uuid::Uuid::new_v4(),
                trace_id,
                occurred_at: 1.0,
                received_at: OffsetDateTime::UNIX_EPOCH,
                content: field(json!({"to": "bob"})),
                schema: field(json!({})),
            },
            tool_name: "send".into(),
            verdict: Verdict {
                is_safe: true,
                reasoning: "ok".into(),
                ..Verdict::default()
            },
            after_seq: None,
        }
    }

    /// A check counted in memory before its write (one process per database) is not counted
    /// again when a catch-up reads its row: the run's repetitions stay exact.
    #[test]
    fn a_check_counted_before_its_write_is_not_counted_again_by_a_catch_up() {
        let store = store("pending");
        let trace_id = new_run(&store);
        let states = RunStates::default();
        let entry = states
            .get(&store, &Policy::default(), P, trace_id)
            .expect("entry");
        let c = check(trace_id);
        let args = c.check.content.value.clone();
        {
            let mut e = entry.lock().expect("lock");
            e.state.on_check("send", &args, false);
            e.pending.insert(c.check.check_id.to_string());
        }
        // The write lands, and an event after it, before the check's own bookkeeping ran.
        assert_eq!(store.record_check(P, c, None).expect("check"), 1);
        let event = NewEvent {
            event_id: uuid::Uuid::new_v4(),
            trace_id,
            event_type: EventType::User,
            occurred_at: 1.0,
            received_at: OffsetDateTime::UNIX_EPOCH,
            content: field(json!({"message": "hi"})),
            schema: field(json!({})),
        };
        assert_eq!(store.append_event(P, event, None).expect("event"), 2);
        states.note_event(trace_id);
        let mut e = entry.lock().expect("lock");
        assert!(e.dirty);
        e.catch_up(&store, trace_id).expect("catch up");
        assert_eq!(e.applied_seq, 2);
        assert!(e.pending.is_empty(), "the catch-up met the pending check");
        assert_eq!(e.state.repeats("send", &args), 1, "counted once");
    }

    /// Run states are bounded by what they hold, not only by their number: 3,000 runs with
    /// 100 KB of tool output each held 2.3 GB before. The heaviest idle ones go first, and an
    /// entry's bytes are given back when it is dropped.
    #[test]
    fn states_are_shed_when_their_estimated_bytes_exceed_the_budget() {
        let store = store("budget");
        let budget = 1 << 20;
        let states = RunStates::with_budget(budget);
        let mut traces = Vec::new();
        for i in 0..10 {
            let trace_id = new_run(&store);
            let event = NewEvent {
                event_id: uuid::Uuid::new_v4(),
                trace_id,
                event_type: EventType::Tool,
                occurred_at: 1.0,
                received_at: OffsetDateTime::UNIX_EPOCH,
                content: field(json!({"output": format!("run{i} ").repeat(4_000)})),
                schema: field(json!({})),
            };
            store.append_event(P, event, None).expect("event");
            let entry = states
                .get(&store, &Policy::default(), P, trace_id)
                .expect("entry");
            let bytes = entry.lock().expect("lock").bytes;
            assert!(bytes > 200_000, "{bytes}");
            assert!(states.held() <= budget + bytes, "{}", states.held());
            traces.push(trace_id);
        }
        let kept = traces
            .iter()
            .filter(|t| states.lock().contains_key(t))
            .count();
        assert!((2..10).contains(&kept), "{kept} of 10 kept");
        for t in traces {
            states.forget(t);
        }
        assert_eq!(states.held(), 0);
    }

    /// A run being loaded holds up only requests for the same run, and its loading lock goes
    /// once the load is done.
    #[test]
    fn a_slow_load_does_not_hold_up_the_loads_of_other_runs() {
        let store = store("loading");
        let (slow, other) = (new_run(&store), new_run(&store));
        let states = RunStates::default();
        let held = Arc::clone(
            states
                .loading
                .lock()
                .expect("lock")
                .entry(slow)
                .or_default(),
        );
        let slow_load = held.lock().expect("lock");
        let (done, loaded) = std::sync::mpsc::channel();
        let ok = std::thread::scope(|scope| {
            scope.spawn(|| {
                let found = states.get(&store, &Policy::default(), P, other);
                done.send(found.is_ok()).expect("send");
            });
            // With one lock for every load, this waits until the slow load is over.
            let ok = loaded.recv_timeout(std::time::Duration::from_secs(60));
            drop(slow_load);
            ok
        });
        assert_eq!(
            ok,
            Ok(true),
            "the other run was loaded while one was loading"
        );
        let loading = states.loading.lock().expect("lock");
        assert!(!loading.contains_key(&other), "its lock is gone");
    }

    /// A run loaded from the store reflects its whole history, and an entry of another
    /// project is not found.
    #[test]
    fn a_loaded_run_has_its_history_and_stays_in_its_project() {
        let store = store("load");
        let trace_id = new_run(&store);
        store.record_check(P, check(trace_id), None).expect("check");
        let states = RunStates::default();
        let entry = states
            .get(&store, &Policy::default(), P, trace_id)
            .expect("entry");
        {
            let e = entry.lock().expect("lock");
            assert_eq!(e.applied_seq, 1);
            assert_eq!(e.state.repeats("send", &json!({"to": "bob"})), 1);
        }
        assert!(matches!(
            states.get(&store, &Policy::default(), "other", trace_id),
            Err(StoreError::NotFound)
        ));
    }
}
