//! `POST /v1/check`: judges a proposed action in the context of its run and stores the verdict
//! in the run's history.

use serde::Serialize;
use time::OffsetDateTime;

use super::{App, Call, compile_schema, parse_json};
use crate::domain::event::EventWire;
use crate::domain::time::unix_seconds_millis;
use crate::engine::{Action, Finding};
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
    let run = app
        .store
        .run_context(project, check.trace_id)
        .map_err(not_found)?;
    let tool_name = schema.tool_name().unwrap_or(UNNAMED_TOOL).to_string();
    let verdict = app.engine.check(
        &run,
        &Action {
            tool_name: &tool_name,
            arguments: &check.content.value,
            schema: &schema,
        },
    );
    let action_check_id = check.check_id.to_string();
    let timestamp = unix_seconds_millis(check.received_at);
    let recorded = RecordedCheck {
        check,
        tool_name,
        verdict,
    };
    let body = serde_json::to_vec(&Judged {
        is_safe: recorded.verdict.is_safe,
        reasoning: &recorded.verdict.reasoning,
        action_check_id,
        timestamp,
        findings: &recorded.verdict.findings,
    })
    .map_err(ApiError::internal)?;
    let replay = call.replay(200, &body);
    app.store
        .record_check(project, recorded, replay)
        .map_err(not_found)?;
    Ok(Reply {
        status: 200,
        body,
        headers: Vec::new(),
    })
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::trace_not_found(),
        other => other.into(),
    }
}
