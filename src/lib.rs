//! runwarden: a self-hosted security service for AI agents.
//!
//! Module map:
//! - [`cli`]: the command line (`serve`); [`config`]: validated settings and env var names.
//! - [`server`]: binds, runs worker threads, stops cleanly; the one place errors become bytes.
//! - [`nudge`]: keeps tiny_http's connection pool from stranding a connection.
//! - [`heap`]: glibc's allocator set to return large freed blocks.
//! - [`http`]: routing, request reading (Content-Type, capped body), responses.
//! - [`handlers`]: one module per resource, thin: wire → domain → engine/store → reply.
//! - [`domain`]: validated values (ids, time, events, schemas); pure.
//! - [`replay`]: the replay format (JSON Lines) and offline replay through the engine.
//! - [`policy`]: policy files (TOML) and the policy in force for an agent.
//! - [`engine`]: the check engine, one rule per file; pure and deterministic.
//! - [`store`]: the `Store` interface and its SQLite backend (group commit).
//! - [`auth`]: API keys, projects, permissions; [`ratelimit`]: per-key limits in memory.
//! - [`metrics`]: `GET /metrics`, Prometheus counters and histograms.
//! - [`ui`]: the embedded web UI (one page, two assets) and its Content-Security-Policy.
//! - [`error`]: `ApiError`, the contract's error envelope.

pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod handlers;
pub mod heap;
pub mod http;
pub mod metrics;
pub mod nudge;
pub mod policy;
pub mod ratelimit;
pub mod replay;
pub mod server;
pub mod store;
pub mod ui;
