//! `POST /v1/check`: judges a proposed action in the context of its run and stores the verdict
//! in the run's history.

use serde::Serialize;
use time::OffsetDateTime;

use super::{App, Call, compile_schema, parse_json};
use crate::domain::event::EventWire;
use crate::domain::time::unix_seconds_millis;
use crate::engine::{Action, CheckContext, Finding};
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
    let project = &call.principal.project;
    let trace_id = check.trace_id;
    let tool_name = schema.tool_name().unwrap_or(UNNAMED_TOOL).to_string();
    let entry = app
        .states
        .get(app.store.as_ref(), &app.policy, project, trace_id)
        .map_err(not_found)?;
    let action_check_id = check.check_id.to_string();
    let timestamp = unix_seconds_millis(check.received_at);
    // Under the run's lock: catch up with what was stored since (through this instance or
    // another one), judge, and store the check only if nothing was added meanwhile; if
    // something was (another instance, or an event of this one arriving between the
    // catch-up and the write), judge again. So a verdict sees every item stored before it, and
    // an approval is used once, however many instances serve the run.
    let mut e = entry.lock().unwrap_or_else(|p| p.into_inner());
    let e = &mut *e;
    let mut recorded = RecordedCheck {
        check,
        tool_name,
        verdict: Default::default(),
        after_seq: 0,
    };
    for _ in 0..MAX_ATTEMPTS {
        e.catch_up(app.store.as_ref(), trace_id)
            .map_err(not_found)?;
        recorded.verdict = app.engine.check(&CheckContext {
            run: &e.run,
            state: &e.state,
            policy: &e.policy,
            action: &Action {
                tool_name: &recorded.tool_name,
                arguments: &recorded.check.content.value,
                schema: &schema,
            },
        });
        recorded.after_seq = e.applied_seq;
        let body = serde_json::to_vec(&Judged {
            is_safe: recorded.verdict.is_safe,
            reasoning: &recorded.verdict.reasoning,
            action_check_id: action_check_id.clone(),
            timestamp,
            findings: &recorded.verdict.findings,
        })
        .map_err(ApiError::internal)?;
        let replay = call.replay(200, &body);
        match app.store.record_check(project, recorded.clone(), replay) {
            Ok(seq) => {
                let v = &recorded.verdict;
                e.state.on_check(
                    &recorded.tool_name,
                    &recorded.check.content.value,
                    v.consumed_approval,
                );
                e.applied_seq = seq;
                app.metrics.check(v);
                return Ok(Reply {
                    status: 200,
                    body,
                    headers: Vec::new(),
                    content_type: crate::http::response::JSON,
                });
            }
            Err(StoreError::Stale) => continue,
            Err(other) => return Err(not_found(other)),
        }
    }
    // The run kept changing: 503, the client retries.
    Err(StoreError::Stale.into())
}

/// How many times a check is judged again because its run changed before it was stored.
const MAX_ATTEMPTS: usize = 8;

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::trace_not_found(),
        other => other.into(),
    }
}
