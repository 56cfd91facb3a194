//! Writing a response: JSON bodies and the headers every response carries.

use std::io::Cursor;

use serde::Serialize;
use tiny_http::{Header, Response};

use crate::error::ApiError;

/// What a handler answers: a status, a JSON body and any extra headers.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body, JSON.
    pub body: Vec<u8>,
    /// Headers beyond the common ones.
    pub headers: Vec<(&'static str, String)>,
    /// The `Content-Type` (JSON for everything but the web UI).
    pub content_type: &'static str,
}

/// The `Content-Type` of every API response.
pub const JSON: &str = "application/json";

impl Reply {
    /// A JSON reply.
    pub fn json<T: Serialize>(status: u16, value: &T) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value).map_err(ApiError::internal)?;
        Ok(Reply {
            status,
            body,
            headers: Vec::new(),
            content_type: JSON,
        })
    }

    /// The reply for an error: the contract's envelope and its `Allow`/`Retry-After` headers.
    pub fn from_error(err: &ApiError) -> Self {
        let mut headers = Vec::new();
        if let Some(allow) = err.allow {
            headers.push(("Allow", allow.to_string()));
        }
        if let Some(secs) = err.retry_after {
            headers.push(("Retry-After", secs.to_string()));
        }
        Reply {
            status: err.status(),
            body: err.to_body(),
            headers,
            content_type: JSON,
        }
    }

    /// The tiny_http response with the common headers: Content-Type, X-Request-Id, and
    /// `nosniff`/`no-store` so that a browser never renders or caches agent data.
    pub fn into_response(self, request_id: &str) -> Response<Cursor<Vec<u8>>> {
        let mut response = Response::from_data(self.body).with_status_code(self.status);
        let common = [
            ("Content-Type", self.content_type),
            ("X-Request-Id", request_id),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-store"),
        ];
        for (name, value) in common
            .into_iter()
            .chain(self.headers.iter().map(|(n, v)| (*n, v.as_str())))
        {
            if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(h);
            }
        }
        response
    }
}
