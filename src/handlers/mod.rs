//! Handlers: one file per resource. Each takes the shared [`App`] and the request body and
//! returns a [`Reply`] or an [`ApiError`]; storage is reached only through [`Store`].

pub mod checks;
pub mod events;
pub mod ops;
pub mod runs;

use std::sync::Arc;

use serde::Deserialize;
use tiny_http::Request;

use crate::domain::event::JsonField;
use crate::domain::schema::CompiledSchema;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::request::read_body;
use crate::http::response::Reply;
use crate::http::router::Route;
use crate::store::Store;

/// What every handler shares.
pub struct App {
    /// Where runs, events and checks live.
    pub store: Arc<dyn Store>,
    /// The rules that judge actions.
    pub engine: Engine,
    /// The largest accepted request body, in bytes.
    pub max_body_bytes: u64,
}

/// Calls the handler of `route`. POST bodies are read here, after routing, so a 404 or 405
/// never reads a body.
pub fn dispatch(app: &App, route: Route, req: &mut Request) -> Result<Reply, ApiError> {
    match route {
        Route::RegisterRun => runs::register(app, &read_body(req, app.max_body_bytes)?),
        Route::Event => events::log_event(app, &read_body(req, app.max_body_bytes)?),
        Route::Check => checks::check(app, &read_body(req, app.max_body_bytes)?),
        Route::Healthz => ops::healthz(app),
    }
}

/// Decodes a JSON object body into a wire struct. Syntax errors and non-objects are
/// INVALID_JSON; field rules are checked later, by the domain.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_json("request body is empty; send a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::invalid_json("request body must be a JSON object"),
            Category::Io | Category::Syntax | Category::Eof => {
                ApiError::invalid_json(format!("request body is not valid JSON: {e}"))
            }
        }
    })
}

/// Compiles the `schema` field (INVALID_SCHEMA when it is not a usable schema).
pub fn compile_schema(schema: &JsonField) -> Result<CompiledSchema, ApiError> {
    CompiledSchema::compile(&schema.value).map_err(ApiError::invalid_schema)
}
