//! Validated domain values. Everything here is pure: no HTTP, no SQL. A value of these types is
//! valid by construction; the only way to build one from client input is a `parse`/`TryFrom`
//! that returns the contract's error for the offending field.

pub mod event;
pub mod ids;
pub mod schema;
pub mod schema_cache;
pub mod schema_cost;
pub mod time;
