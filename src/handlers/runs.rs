//! `POST /v1/register-agent-run`: starts a run and hands back its trace_id.

use serde::Serialize;
use time::OffsetDateTime;

use super::{App, Call, parse_json};
use crate::domain::event::RunWire;
use crate::domain::time::format_millis_utc;
use crate::error::{ApiError, ErrorCode};
use crate::http::response::Reply;
use crate::store::StoreError;

#[derive(Serialize)]
struct Registered {
    trace_id: String,
    timestamp: String,
}

/// Validates, stores durably, answers `{trace_id, timestamp}`. A client-chosen trace_id that
/// exists already is 409 TRACE_ID_CONFLICT, decided by the database's primary key.
pub fn register(app: &App, call: &Call<'_>) -> Result<Reply, ApiError> {
    let run = parse_json::<RunWire>(call.body)?.parse(OffsetDateTime::now_utc())?;
    let answer = Reply::json(
        200,
        &Registered {
            trace_id: run.trace_id.to_string(),
            timestamp: format_millis_utc(run.received_at),
        },
    )?;
    // What the policy engine reads from this prompt (debug only: it quotes the prompt), logged
    // once the run is stored.
    let constraints = log::log_enabled!(log::Level::Debug).then(|| {
        format!(
            "run {}: constraints from the system prompt: {:?}",
            run.trace_id,
            crate::engine::prompt::derive(&run.system_prompt)
        )
    });
    let replay = call.replay(answer.status, &answer.body);
    match app.store.insert_run(&call.principal.project, run, replay) {
        Ok(()) => {
            if let Some(line) = constraints {
                log::debug!("{line}");
            }
            Ok(answer)
        }
        Err(StoreError::Conflict) => Err(ApiError::new(
            ErrorCode::TraceIdConflict,
            "a run with this trace_id already exists; trace ids are never reused",
        )
        .with_param("trace_id")),
        Err(e) => Err(e.into()),
    }
}
