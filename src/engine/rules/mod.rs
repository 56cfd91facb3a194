//! One rule per file. Each has a stable id and its own table tests. [`all`] is the built-in
//! set, in no particular order (the engine sorts findings).

pub mod schema_mismatch;

use super::Rule;

/// Every built-in rule.
pub fn all() -> Vec<Box<dyn Rule>> {
    vec![Box::new(schema_mismatch::SchemaMismatch)]
}
