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
use crate::domain::schema_cache::SchemaCache;
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
    /// Compiled schemas, so a schema seen before is not compiled again.
    pub schemas: SchemaCache,
}

/// Calls the handler of `route`. POST bodies are read here, after routing, so a 404 or 405
/// never reads a body; `body_read` is set once the body has been read to its end.
pub fn dispatch(
    app: &App,
    route: Route,
    req: &mut Request,
    body_read: &mut bool,
) -> Result<Reply, ApiError> {
    let handler = match route {
        Route::Healthz => return ops::healthz(app),
        Route::RegisterRun => runs::register,
        Route::Event => events::log_event,
        Route::Check => checks::check,
    };
    let body = read_body(req, app.max_body_bytes)?;
    *body_read = true;
    handler(app, &body)
}

/// Decodes a JSON object body into a wire struct. Syntax errors and non-objects are
/// INVALID_JSON; field rules are checked later, by the domain.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_json(
            "request body is empty; send a JSON object",
        ));
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

/// Compiles the `schema` field, or takes it from the cache (INVALID_SCHEMA when it is not a
/// usable schema).
pub fn compile_schema(app: &App, schema: &JsonField) -> Result<Arc<CompiledSchema>, ApiError> {
    app.schemas
        .get_or_compile(&schema.text, &schema.value)
        .map_err(ApiError::invalid_schema)
}
