//! Handlers: one file per resource. Each takes the shared [`App`] and a [`Call`] (who is
//! calling, the body, the idempotency key) and returns a [`Reply`] or an [`ApiError`]; storage
//! is reached only through [`Store`]. [`dispatch`] runs access control first (`access.rs`).

pub mod access;
pub mod checks;
pub mod events;
pub mod ops;
pub mod reads;
pub mod run_states;
pub mod runs;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tiny_http::Request;

use crate::auth::Principal;
use crate::domain::event::JsonField;
use crate::domain::schema::CompiledSchema;
use crate::domain::schema_cache::SchemaCache;
use crate::engine::Engine;
use crate::error::{ApiError, ErrorCode};
use crate::http::request::read_body;
use crate::http::response::Reply;
use crate::http::router::Route;
use crate::policy::Policy;
use crate::ratelimit::Decision;
use crate::store::{Replay, Store};
use access::{Idempotency, LastUsed};
use run_states::RunStates;

/// What every handler shares.
pub struct App {
    /// Where runs, events and checks live.
    pub store: Arc<dyn Store>,
    /// The rules that judge actions.
    pub engine: Engine,
    /// The policy file in force (or the built-in default).
    pub policy: Policy,
    /// The derived state of recently used runs.
    pub states: RunStates,
    /// The largest accepted request body, in bytes.
    pub max_body_bytes: u64,
    /// Compiled schemas, so a schema seen before is not compiled again.
    pub schemas: SchemaCache,
    /// Whether requests without a key are served while no active key exists (loopback address
    /// or `--allow-open`).
    pub open_allowed: bool,
    /// Whether open mode answers only requests addressed to a loopback name from a local page
    /// (a loopback address without `--allow-open`): see [`access::local_request`].
    pub open_local_only: bool,
    /// When keys were last recorded as used.
    pub last_used: LastUsed,
    /// How long `Idempotency-Key` answers are remembered.
    pub idempotency_ttl: Duration,
    /// Request and verdict counters for `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
}

/// One authorised call of a write endpoint.
pub struct Call<'a> {
    /// Who is calling.
    pub principal: &'a Principal,
    /// The request body.
    pub body: &'a [u8],
    /// The `Idempotency-Key` in force, if the client sent one.
    pub idempotency: Option<&'a Idempotency>,
}

impl Call<'_> {
    /// The record to store with a write answered by `status` and `body`.
    pub fn replay(&self, status: u16, body: &[u8]) -> Option<Replay> {
        self.idempotency.map(|i| i.answer(status, body))
    }
}

/// Calls the handler of `route`. For `/v1` routes: authenticate (401), count against the rate
/// limit (429), authorize (403), then read the body (415/413) and honour `Idempotency-Key`.
/// Bodies are read only after all that, so a 404, 405, 401 or 429 never reads one; `body_read`
/// is set once the body has been read to its end. Returns the rate-limit decision (for the
/// headers of the response, error or not) with the outcome.
pub fn dispatch(
    app: &App,
    route: Route,
    req: &mut Request,
    body_read: &mut bool,
) -> (Option<Decision>, Result<Reply, ApiError>) {
    type Write = fn(&App, &Call<'_>) -> Result<Reply, ApiError>;
    type Read = fn(&App, &Principal, &str) -> Result<Reply, ApiError>;
    let handler: Result<Write, Read> = match route {
        Route::Healthz => return (None, ops::healthz(app)),
        // The page needs no key: it asks for one, and the API it calls checks it.
        Route::Ui => return (None, crate::ui::asset(req.url())),
        Route::Metrics => return (None, ops::metrics(app)),
        Route::OpenApi => return (None, ops::openapi()),
        Route::RegisterRun => Ok(runs::register),
        Route::Event => Ok(events::log_event),
        Route::Check => Ok(checks::check),
        Route::Runs => Err(reads::runs),
        Route::Run => Err(reads::run),
        Route::Events => Err(reads::events),
        Route::Checks => Err(reads::checks),
    };
    let principal = match access::authenticate(app, req) {
        Ok(p) => p,
        Err(e) => return (None, Err(e)),
    };
    // Every authenticated request counts, a refused one (403) too.
    let decision = match access::rate_limit(app, &principal) {
        Ok(d) => d,
        Err(e) => return (None, Err(e)),
    };
    if let Some(d) = decision.filter(|d| !d.allowed) {
        return (decision, Err(access::rate_limited(&d)));
    }
    if let Err(e) = access::authorize(&principal, route) {
        return (decision, Err(e));
    }
    let handler = match handler {
        Ok(write) => write,
        // Reads take no body: one that was sent stays unread (and is drained off the worker).
        Err(read) => return (decision, read(app, &principal, req.url())),
    };
    let outcome = (|| {
        let body = read_body(req, app.max_body_bytes)?;
        *body_read = true;
        let idempotency = Idempotency::from_request(app, req, &principal, route, &body)?;
        if let Some(i) = &idempotency
            && let Some(replayed) = i.replay(app)?
        {
            return Ok(replayed);
        }
        let call = Call {
            principal: &principal,
            body: &body,
            idempotency: idempotency.as_ref(),
        };
        match (handler(app, &call), &idempotency) {
            // A concurrent request with the same key recorded it first: answer as it did.
            (Err(e), Some(i)) if e.code == ErrorCode::IdempotencyKeyReused => {
                i.replay(app)?.ok_or(e)
            }
            (outcome, _) => outcome,
        }
    })();
    (decision, outcome)
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
            Category::Data => match repeated_field(&e) {
                Some(field) => ApiError::invalid_json(format!(
                    "request body has the field {field} more than once; send each field once"
                ))
                .with_param(field),
                None => ApiError::invalid_json("request body must be a JSON object"),
            },
            Category::Io | Category::Syntax | Category::Eof => {
                ApiError::invalid_json(format!("request body is not valid JSON: {e}"))
            }
        }
    })
}

/// Every field of the request bodies parsed by [`parse_json`].
const BODY_FIELDS: &[&str] = &[
    "agent_id",
    "timestamp",
    "system_prompt",
    "trace_id",
    "event_type",
    "content",
    "schema",
];

/// The field serde reports as given twice ("duplicate field `timestamp`"). serde names only
/// fields of the wire structs, never the client's other keys.
fn repeated_field(e: &serde_json::Error) -> Option<&'static str> {
    let message = e.to_string();
    let name = message
        .strip_prefix("duplicate field `")?
        .split('`')
        .next()?;
    BODY_FIELDS.iter().copied().find(|f| *f == name)
}

/// Compiles the `schema` field, or takes it from the cache (INVALID_SCHEMA when it is not a
/// usable schema).
pub fn compile_schema(app: &App, schema: &JsonField) -> Result<Arc<CompiledSchema>, ApiError> {
    app.schemas
        .get_or_compile(&schema.text, &schema.value)
        .map_err(ApiError::invalid_schema)
}
