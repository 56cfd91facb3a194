//! The black-box suite: every test starts the real `runwarden` binary on port 0 with a fresh
//! temporary database and speaks HTTP to it (see `helpers.rs`). The database is a SQLite file,
//! or with `RUNWARDEN_TEST_DATABASE_URL` (an admin URL, see `.ci/pg-start`) a fresh PostgreSQL
//! database on that server; `backend` says which.
//!
//! Where new tests go: one module per endpoint or concern. A test of a new route or error
//! code goes into the module of its endpoint; cross-cutting behaviour (envelope, headers,
//! limits) into `errors`; anything that restarts or kills the server into `durability`;
//! several servers on one PostgreSQL database into `instances`. Slow, idle and oversized clients
//! and the connection bound are tested in `guard`.
//! Set `TEST_LOG=1` to see the server's log (otherwise its errors go to `serve.stderr` in the
//! test's directory, and into the failure message when it does not start).

mod helpers;

mod access;
mod backend;
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
mod guard;
mod instances;
mod ops;
mod ops_backup;
mod policy;
mod reads;
mod register;
