//! `POST /v1/check`: judges a proposed action in the context of its run and stores the verdict
//! in the run's history.

use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;

use super::run_states::RunEntry;
use super::{App, Call, compile_schema, parse_json};
use crate::domain::event::EventWire;
use crate::domain::schema::CompiledSchema;
use crate::domain::time::unix_seconds_millis;
use crate::engine::{Action, CheckContext, Finding, Verdict};
use crate::error::ApiError;
use crate::http::response::Reply;
use crate::store::{RecordedCheck, StoreError};

/// The tool name used when the schema names none (a plain schema without `title`).
pub const UNNAMED_TOOL: &str = "unnamed_action";

#[derive(Serialize)]
struct Judged<'a> {
    is_safe: bool,
    reasoning: &'a str,
    action_check_id: String,
    timestamp: f64,
    findings: &'a [Finding],
}

/// Validates the request, judges the action, stores the check with its verdict, answers the
/// verdict. Arguments that break the declared parameters are a verdict (`schema.mismatch`),
/// not a 400; an unusable schema is still INVALID_SCHEMA.
pub fn check(app: &App, call: &Call<'_>) -> Result<Reply, ApiError> {
    let check = parse_json::<EventWire>(call.body)?.parse_check(OffsetDateTime::now_utc())?;
    let schema = compile_schema(app, &check.schema)?;
    schema
        .affordable(&check.content.value)
        .map_err(ApiError::invalid_schema)?;
    let tool_name = schema.tool_name().unwrap_or(UNNAMED_TOOL).to_string();
    let entry = app
        .states
        .get(
            app.store.as_ref(),
            &app.policy,
            &call.principal.project,
            check.trace_id,
        )
        .map_err(not_found)?;
    let recorded = RecordedCheck {
        check,
        tool_name,
        verdict: Default::default(),
        after_seq: None,
    };
    let body = if app.store.shared() {
        judge_and_store_shared(app, call, &entry, &schema, recorded)?
    } else {
        judge_and_store_alone(app, call, &entry, &schema, recorded)?
    };
    Ok(Reply {
        status: 200,
        body,
        headers: Vec::new(),
        content_type: crate::http::response::JSON,
    })
}

/// One process sees every write (SQLite). Under the run's lock: catch up with what was stored
/// since (only when an event may be new), judge, and count the check in the state (two checks
/// of one run see each other: an approval is used once, repetitions count); write after
/// releasing it, so that checks of one run still share a group commit. Returns the answer.
fn judge_and_store_alone(
    app: &App,
    call: &Call<'_>,
    entry: &Mutex<RunEntry>,
    schema: &CompiledSchema,
    mut recorded: RecordedCheck,
) -> Result<Vec<u8>, ApiError> {
    let trace_id = recorded.check.trace_id;
    let check_id = recorded.check.check_id.to_string();
    {
        let mut e = entry.lock().unwrap_or_else(|p| p.into_inner());
        if e.dirty || e.pending.len() >= MAX_PENDING {
            e.catch_up(app.store.as_ref(), trace_id)
                .map_err(not_found)?;
            e.dirty = false;
        }
        recorded.verdict = judge(app, &e, schema, &recorded);
        e.state.on_check(
            &recorded.tool_name,
            &recorded.check.content.value,
            recorded.verdict.consumed_approval,
        );
        e.pending.insert(check_id.clone());
    }
    let body = answer(&recorded)?;
    let replay = call.replay(200, &body);
    app.metrics.check(&recorded.verdict);
    match app
        .store
        .record_check(&call.principal.project, recorded, replay)
    {
        Ok(seq) => {
            // The number right after what the state has seen: the state is up to date with
            // it, no catch-up needs to meet it.
            let mut e = entry.lock().unwrap_or_else(|p| p.into_inner());
            if seq == e.applied_seq + 1 && e.pending.remove(&check_id) {
                e.applied_seq = seq;
            }
            Ok(body)
        }
        Err(e) => {
            // The state counted a check that is not stored: load it afresh next time.
            app.states.forget(trace_id);
            Err(not_found(e))
        }
    }
}

/// Several instances share the database (PostgreSQL). Under the run's lock: catch up with what
/// was stored since (through any instance), judge, and store the check only if nothing was
/// added meanwhile; if something was, judge again. So a verdict sees every item stored before
/// it, and an approval is used once, however many instances serve the run. Returns the answer.
fn judge_and_store_shared(
    app: &App,
    call: &Call<'_>,
    entry: &Mutex<RunEntry>,
    schema: &CompiledSchema,
    mut recorded: RecordedCheck,
) -> Result<Vec<u8>, ApiError> {
    let trace_id = recorded.check.trace_id;
    let mut e = entry.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..MAX_ATTEMPTS {
        e.catch_up(app.store.as_ref(), trace_id)
            .map_err(not_found)?;
        recorded.verdict = judge(app, &e, schema, &recorded);
        recorded.after_seq = Some(e.applied_seq);
        let body = answer(&recorded)?;
        let replay = call.replay(200, &body);
        match app
            .store
            .record_check(&call.principal.project, recorded.clone(), replay)
        {
            Ok(seq) => {
                let v = &recorded.verdict;
                e.state.on_check(
                    &recorded.tool_name,
                    &recorded.check.content.value,
                    v.consumed_approval,
                );
                e.applied_seq = seq;
                app.metrics.check(v);
                return Ok(body);
            }
            Err(StoreError::Stale) => continue,
            Err(other) => return Err(not_found(other)),
        }
    }
    // The run kept changing: 503, the client retries.
    Err(StoreError::Stale.into())
}

/// The engine's verdict on the check in the run's current state.
fn judge(app: &App, e: &RunEntry, schema: &CompiledSchema, r: &RecordedCheck) -> Verdict {
    app.engine.check(&CheckContext {
        run: &e.run,
        state: &e.state,
        policy: &e.policy,
        action: &Action {
            tool_name: &r.tool_name,
            arguments: &r.check.content.value,
            arguments_text: &r.check.content.text,
            schema,
            schema_text: &r.check.schema.text,
        },
    })
}

/// The response body for a judged check.
fn answer(r: &RecordedCheck) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(&Judged {
        is_safe: r.verdict.is_safe,
        reasoning: &r.verdict.reasoning,
        action_check_id: r.check.check_id.to_string(),
        timestamp: unix_seconds_millis(r.check.received_at),
        findings: &r.verdict.findings,
    })
    .map_err(ApiError::internal)
}

/// Pending checks (applied to a run's state, not yet met by a catch-up) after which a check
/// catches up to forget them (one process per database).
const MAX_PENDING: usize = 256;

/// How many times a check is judged again because its run changed before it was stored.
const MAX_ATTEMPTS: usize = 8;

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::trace_not_found(),
        other => other.into(),
    }
}
