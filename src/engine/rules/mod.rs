//! One rule per file. Each has a stable id and its own table tests. [`all`] is the built-in
//! set, in no particular order (the engine sorts findings).

pub mod args_rules;
pub mod context;
pub mod detectors;
pub mod duplicate_keys;
pub mod loop_repeat;
pub mod prompt_rules;
pub mod schema_mismatch;
pub mod tools;

use super::Rule;

/// Every built-in rule.
pub fn all() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(schema_mismatch::SchemaMismatch),
        Box::new(duplicate_keys::DuplicateKeys),
        Box::new(tools::ToolLists),
        Box::new(args_rules::ArgConstraints),
        Box::new(loop_repeat::LoopRepeat),
        Box::new(context::Provenance),
        Box::new(detectors::Shell),
        Box::new(detectors::Sql),
        Box::new(detectors::SensitivePath),
        Box::new(detectors::Secret),
        Box::new(detectors::Network),
        Box::new(prompt_rules::AmountLimit),
        Box::new(prompt_rules::PersonalData),
        Box::new(prompt_rules::ToolAllowlist),
    ]
}
