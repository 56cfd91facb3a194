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
    // Judge and update the run's state under its lock, so two checks of one run see each
    // other (an approval is used once; repetitions count); write after releasing it, so that
    // checks of one run still share a group commit.
    let verdict = {
        let mut e = entry.lock().unwrap_or_else(|p| p.into_inner());
        let e = &mut *e;
        let verdict = app.engine.check(&CheckContext {
            run: &e.run,
            state: &e.state,
            policy: &e.policy,
            action: &Action {
                tool_name: &tool_name,
                arguments: &check.content.value,
                schema: &schema,
            },
        });
        e.state
            .on_check(&tool_name, &check.content.value, verdict.consumed_approval);
        app.metrics.check(&verdict);
        verdict
    };
    let action_check_id = check.check_id.to_string();
    let timestamp = unix_seconds_millis(check.received_at);
    let body = serde_json::to_vec(&Judged {
        is_safe: verdict.is_safe,
        reasoning: &verdict.reasoning,
        action_check_id,
        timestamp,
        findings: &verdict.findings,
    })
    .map_err(ApiError::internal)?;
    let replay = call.replay(200, &body);
    let recorded = RecordedCheck {
        check,
        tool_name,
        verdict,
    };
    if let Err(e) = app.store.record_check(project, recorded, replay) {
        // The state counted a check that is not stored: load it afresh next time.
        app.states.forget(trace_id);
        return Err(not_found(e));
    }
    drop(entry);
    Ok(Reply {
        status: 200,
        body,
        headers: Vec::new(),
        content_type: crate::http::response::JSON,
    })
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::trace_not_found(),
        other => other.into(),
    }
}
