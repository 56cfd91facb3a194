//! `POST /v1/event`: appends one step of the agent's loop to a run.

use serde::Serialize;
use time::OffsetDateTime;

use super::{App, Call, compile_schema, parse_json};
use crate::domain::event::EventWire;
use crate::domain::time::unix_seconds_millis;
use crate::error::{ApiError, MAX_DETAILS};
use crate::http::response::Reply;
use crate::store::StoreError;

#[derive(Serialize)]
struct Logged {
    event_id: String,
    timestamp: f64,
}

/// Validates the event and its content against its schema (nothing is stored on a violation),
/// appends it durably, answers `{event_id, timestamp}`.
pub fn log_event(app: &App, call: &Call<'_>) -> Result<Reply, ApiError> {
    let event = parse_json::<EventWire>(call.body)?.parse_event(OffsetDateTime::now_utc())?;
    let schema = compile_schema(app, &event.schema)?;
    schema
        .affordable(&event.content.value)
        .map_err(ApiError::invalid_schema)?;
    let (violations, total) = schema.violations(&event.content.value, MAX_DETAILS);
    if total > 0 {
        return Err(ApiError::schema_validation_failed(violations, total));
    }
    let answer = Reply::json(
        200,
        &Logged {
            event_id: event.event_id.to_string(),
            timestamp: unix_seconds_millis(event.received_at),
        },
    )?;
    let replay = call.replay(answer.status, &answer.body);
    // The run's derived state reads the event from the store at its next check.
    let trace_id = event.trace_id;
    match app
        .store
        .append_event(&call.principal.project, event, replay)
    {
        Ok(_) => {
            if !app.store.shared() {
                app.states.note_event(trace_id);
            }
            Ok(answer)
        }
        Err(StoreError::NotFound) => Err(ApiError::trace_not_found()),
        Err(e) => Err(e.into()),
    }
}
