//! Limits read from a run's system prompt (`prompt.*` rules). A small grammar; see the README
//! ("Writing a policy") for what is and is not understood.

/// One constraint derived from the system prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptConstraint {
    /// "Do not process refunds over $500 without manager approval": tools whose name contains
    /// `noun` may not move an amount above `limit` (unless approved, when `approval_allows`).
    AmountLimit {
        /// The noun the tool name must contain (`refund`).
        noun: String,
        /// The limit.
        limit: f64,
        /// Whether a logged approval lifts the limit once.
        approval_allows: bool,
        /// The sentence it was read from.
        sentence: String,
    },
    /// "Never share customer personal information": no personal data in the arguments of
    /// outbound tools.
    NoPersonalData {
        /// The sentence it was read from.
        sentence: String,
    },
    /// "Only use the tools a, b and c": any other tool blocks.
    ToolAllowlist {
        /// The tools named.
        tools: Vec<String>,
        /// The sentence it was read from.
        sentence: String,
    },
}

/// The constraints a system prompt states.
pub fn derive(_system_prompt: &str) -> Vec<PromptConstraint> {
    Vec::new()
}
