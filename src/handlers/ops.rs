//! Operations: `GET /healthz`, `GET /metrics`.

use serde_json::json;

use super::App;
use crate::error::ApiError;
use crate::http::response::Reply;

/// `{"status":"ok","version":…}` when the database answers a query; 503 otherwise.
pub fn healthz(app: &App) -> Result<Reply, ApiError> {
    app.store.ping().map_err(ApiError::storage_unavailable)?;
    Reply::json(
        200,
        &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
    )
}

/// The Prometheus exposition text (no key needed, like `/healthz`: it holds counts, not data).
pub fn metrics(app: &App) -> Result<Reply, ApiError> {
    Ok(Reply {
        status: 200,
        body: app.metrics.render().into_bytes(),
        headers: Vec::new(),
        content_type: "text/plain; version=0.0.4; charset=utf-8",
    })
}

/// The OpenAPI document (`src/openapi.json`).
pub fn openapi() -> Result<Reply, ApiError> {
    Ok(Reply {
        status: 200,
        body: crate::http::OPENAPI.as_bytes().to_vec(),
        headers: Vec::new(),
        content_type: crate::http::response::JSON,
    })
}
