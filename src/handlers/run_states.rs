//! The derived state of recently used runs, in memory, so a check costs the same whatever the
//! length of its run's history. A run not in memory is loaded once from the store
//! (`Store::run_history`: its system events and checks) and kept up to date by the event and
//! check handlers. At most [`RunStates::CAPACITY`] runs are kept; runs not in use go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::domain::event::EventType;
use crate::domain::ids::TraceId;
use crate::engine::RunContext;
use crate::engine::state::{RunState, trust_of};
use crate::policy::{AgentPolicy, Policy};
use crate::store::{Store, StoreError};

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
}

/// See the module doc.
#[derive(Default)]
pub struct RunStates {
    runs: Mutex<HashMap<TraceId, Arc<Mutex<RunEntry>>>>,
    /// Held while a run is loaded from the store, so that requests arriving together for a run
    /// not in memory load it once, not once each (a run's history may be large). Loads of
    /// different runs wait for each other too; they are rare (once per run after a restart or
    /// an eviction), and one lock is simpler than one per run.
    loading: Mutex<()>,
}

impl RunStates {
    /// The most runs kept in memory.
    pub const CAPACITY: usize = 10_000;

    /// The run's entry, loaded from `store` if it is not in memory. `NotFound` if the run does
    /// not exist in `project`. Holding the returned `Arc` keeps the entry from being evicted.
    pub fn get(
        &self,
        store: &dyn Store,
        policy: &Policy,
        project: &str,
        trace_id: TraceId,
    ) -> Result<Arc<Mutex<RunEntry>>, StoreError> {
        if let Some(found) = self.cached(project, trace_id) {
            return found;
        }
        let _loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        // Another request may have loaded it while this one waited.
        if let Some(found) = self.cached(project, trace_id) {
            return found;
        }
        let (run, history) = store.run_history(project, trace_id)?;
        let agent_policy = policy.for_agent(&run.agent_id);
        let state = RunState::rebuild(&run.system_prompt, &agent_policy, history);
        // What the grammar read from the system prompt, for whoever wonders why a check
        // blocked (debug only: the constraints quote the prompt).
        log::debug!(
            "run {trace_id}: constraints from the system prompt: {:?}",
            state.constraints()
        );
        let entry = RunEntry {
            project: project.to_string(),
            policy: agent_policy,
            state,
            run,
        };
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

    /// Applies a stored event to the run's state, if the run is in memory (otherwise the event
    /// is part of the history it will be loaded from). `tool` is the tool named by the event's
    /// schema, for the policy's `trusted_tools`.
    pub fn on_event(
        &self,
        trace_id: TraceId,
        seq: u64,
        event_type: EventType,
        tool: Option<&str>,
        content: &Value,
    ) {
        let entry = self.lock().get(&trace_id).cloned();
        if let Some(entry) = entry
            && let Ok(mut e) = entry.lock()
        {
            let trust = trust_of(event_type, tool, &e.policy);
            e.state.on_event(seq, event_type, trust, content);
        }
    }

    /// Forgets a run, so that it is loaded afresh from the store next time (after a write
    /// whose effect on the state could not be confirmed).
    pub fn forget(&self, trace_id: TraceId) {
        self.lock().remove(&trace_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TraceId, Arc<Mutex<RunEntry>>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
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
