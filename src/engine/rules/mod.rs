//! One rule per file. Each has a stable id and its own table tests.

pub mod schema_mismatch;
