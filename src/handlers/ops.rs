//! Operations: `GET /healthz`.

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
