//! Per-run derived state, so a check never re-reads the run's history: the constraints read
//! from the system prompt, pending approvals, and how often each (tool, arguments) pair was
//! checked. Updated as events and checks arrive; rebuilt from the stored history after a
//! restart by feeding the same updates in sequence order ([`RunState::rebuild`]).

use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::prompt::{self, PromptConstraint};
use crate::domain::event::EventType;

/// The derived state of one run.
#[derive(Debug, Clone, Default)]
pub struct RunState {
    constraints: Vec<PromptConstraint>,
    /// Per tool: the sequence number of its latest approval, and that of the latest approval
    /// a check consumed. An approval is pending when the first is larger. Keeping sequence
    /// numbers (not a flag) makes applying the same update twice harmless.
    approvals: HashMap<String, (u64, u64)>,
    /// Checks per (tool, canonical arguments) digest.
    repeats: HashMap<[u8; 32], u32>,
}

/// One stored item of a run's history, as the rebuild needs it.
#[derive(Debug, Clone)]
pub enum HistoryItem {
    /// An event: its sequence number, type and content.
    Event {
        /// Per-run sequence number.
        seq: u64,
        /// The event type.
        event_type: EventType,
        /// The content, parsed.
        content: Value,
    },
    /// A check: its tool, arguments and whether it consumed an approval.
    Check {
        /// The tool's name.
        tool: String,
        /// The arguments, parsed.
        arguments: Value,
        /// Whether the check passed thanks to an approval.
        consumed_approval: bool,
    },
}

impl RunState {
    /// The state of a new run with this system prompt.
    pub fn new(system_prompt: &str) -> Self {
        RunState {
            constraints: prompt::derive(system_prompt),
            ..RunState::default()
        }
    }

    /// The state of a run from its system prompt and stored history (in sequence order).
    pub fn rebuild(system_prompt: &str, history: impl IntoIterator<Item = HistoryItem>) -> Self {
        let mut state = RunState::new(system_prompt);
        for item in history {
            match item {
                HistoryItem::Event {
                    seq,
                    event_type,
                    content,
                } => state.on_event(seq, event_type, &content),
                HistoryItem::Check {
                    tool,
                    arguments,
                    consumed_approval,
                } => state.on_check(&tool, &arguments, consumed_approval),
            }
        }
        state
    }

    /// The constraints read from the system prompt.
    pub fn constraints(&self) -> &[PromptConstraint] {
        &self.constraints
    }

    /// Applies a logged event: a `system` event whose content is
    /// `{"approval": {"tool": "<name>"}}` approves the next check of that tool.
    pub fn on_event(&mut self, seq: u64, event_type: EventType, content: &Value) {
        if event_type != EventType::System {
            return;
        }
        if let Some(tool) = content
            .get("approval")
            .and_then(|a| a.get("tool"))
            .and_then(Value::as_str)
        {
            let entry = self.approvals.entry(tool.to_string()).or_insert((0, 0));
            entry.0 = entry.0.max(seq);
        }
    }

    /// Whether an approval for `tool` is pending.
    pub fn approved(&self, tool: &str) -> bool {
        self.approvals
            .get(tool)
            .is_some_and(|(approved, consumed)| approved > consumed)
    }

    /// How many checks of `tool` with exactly these arguments the run has seen.
    pub fn repeats(&self, tool: &str, arguments: &Value) -> u32 {
        self.repeats
            .get(&digest(tool, arguments))
            .copied()
            .unwrap_or(0)
    }

    /// Applies a check: one more repetition, and the pending approval used up if it consumed
    /// one.
    pub fn on_check(&mut self, tool: &str, arguments: &Value, consumed_approval: bool) {
        *self.repeats.entry(digest(tool, arguments)).or_insert(0) += 1;
        if consumed_approval && let Some(entry) = self.approvals.get_mut(tool) {
            entry.1 = entry.0;
        }
    }

    /// The same state with every pending approval withdrawn (to tell whether a passing
    /// check needed one).
    pub fn without_approvals(&self) -> RunState {
        RunState {
            approvals: HashMap::new(),
            ..self.clone()
        }
    }
}

/// A digest of a tool and its arguments; serde_json writes object keys sorted, so equal
/// arguments give equal digests whatever their order on the wire.
fn digest(tool: &str, arguments: &Value) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(tool.as_bytes());
    h.update([0]);
    h.update(arguments.to_string().as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_approval_is_pending_until_a_check_consumes_it() {
        let mut s = RunState::new("");
        assert!(!s.approved("refund"));
        s.on_event(
            3,
            EventType::System,
            &json!({"approval": {"tool": "refund"}}),
        );
        assert!(s.approved("refund"));
        assert!(!s.approved("other"));
        s.on_check("refund", &json!({}), true);
        assert!(!s.approved("refund"));
        // Applying the same approval again (a replayed update) does not revive it.
        s.on_event(
            3,
            EventType::System,
            &json!({"approval": {"tool": "refund"}}),
        );
        assert!(!s.approved("refund"));
        s.on_event(
            5,
            EventType::System,
            &json!({"approval": {"tool": "refund"}}),
        );
        assert!(s.approved("refund"));
    }

    #[test]
    fn approvals_come_only_from_system_events() {
        let mut s = RunState::new("");
        s.on_event(1, EventType::Tool, &json!({"approval": {"tool": "refund"}}));
        s.on_event(2, EventType::User, &json!({"approval": {"tool": "refund"}}));
        assert!(!s.approved("refund"));
    }

    #[test]
    fn repeats_count_identical_arguments_in_any_key_order() {
        let mut s = RunState::new("");
        s.on_check("t", &json!({"a": 1, "b": 2}), false);
        s.on_check("t", &json!({"b": 2, "a": 1}), false);
        s.on_check("t", &json!({"a": 2, "b": 2}), false);
        assert_eq!(s.repeats("t", &json!({"a": 1, "b": 2})), 2);
        assert_eq!(s.repeats("u", &json!({"a": 1, "b": 2})), 0);
    }

    #[test]
    fn a_rebuild_gives_the_state_the_updates_gave() {
        let history = vec![
            HistoryItem::Event {
                seq: 1,
                event_type: EventType::System,
                content: json!({"approval": {"tool": "refund"}}),
            },
            HistoryItem::Check {
                tool: "refund".into(),
                arguments: json!({"amount": 750}),
                consumed_approval: true,
            },
            HistoryItem::Check {
                tool: "refund".into(),
                arguments: json!({"amount": 750}),
                consumed_approval: false,
            },
        ];
        let s = RunState::rebuild("", history);
        assert!(!s.approved("refund"));
        assert_eq!(s.repeats("refund", &json!({"amount": 750})), 2);
    }
}
