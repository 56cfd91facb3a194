//! The black-box suite: every test starts the real `runwarden` binary on port 0 with a fresh
//! temporary database and speaks HTTP to it (see `helpers.rs`).
//!
//! Where new tests go: one module per endpoint or concern. A test of a new route or error
//! code goes into the module of its endpoint; cross-cutting behaviour (envelope, headers,
//! limits) into `errors`; anything that restarts or kills the server into `durability`.
//! Set `TEST_LOG=1` to see the server's log.

mod helpers;

mod access;
mod check;
mod cli;
mod concurrency;
mod connections;
mod deploy;
mod durability;
mod errors;
mod event;
mod faults;
mod fixtures;
mod ops;
mod ops_backup;
mod policy;
mod reads;
mod register;
