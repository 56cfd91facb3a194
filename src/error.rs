//! The one error type of the HTTP surface, and the only place that maps an error to the
//! contract's error envelope (`../shared/API.md`, "Errors").
//!
//! Handlers, the request parser and the router return [`ApiError`]; the worker loop in
//! [`crate::server`] turns it into bytes with [`ApiError::to_body`]. Adding an [`ErrorCode`]
//! without deciding its status and type does not compile, because [`ErrorCode::status`] and
//! [`ErrorCode::kind`] are exhaustive matches.

use std::fmt;

use serde::Serialize;

use crate::domain::event::FieldError;
use crate::store::StoreError;

/// Every error code of the contract, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is not JSON, or not a JSON object.
    InvalidJson,
    /// A required field is absent (or `null`).
    MissingField,
    /// A field is present but breaks its rule.
    InvalidField,
    /// `schema` is not a usable JSON Schema.
    InvalidSchema,
    /// `content` does not validate against `schema`.
    SchemaValidationFailed,
    /// No `x-api-key` header although keys are required.
    MissingApiKey,
    /// An `x-api-key` that is unknown or revoked.
    InvalidApiKey,
    /// The key's type does not allow this route.
    InsufficientPermissions,
    /// The trace does not exist (or is not visible to the caller).
    TraceNotFound,
    /// No such path.
    RouteNotFound,
    /// The path exists, the method does not.
    MethodNotAllowed,
    /// A client-chosen trace_id that is already registered.
    TraceIdConflict,
    /// An `Idempotency-Key` reused with a different body.
    IdempotencyKeyReused,
    /// The body is larger than the configured cap.
    PayloadTooLarge,
    /// A `Content-Type` other than `application/json`.
    UnsupportedMediaType,
    /// Over the key's rate limit.
    RateLimited,
    /// A bug or an unexpected failure; details are logged, never sent.
    InternalError,
    /// The database cannot take the write now (busy past its timeout, disk full).
    StorageUnavailable,
}

impl ErrorCode {
    /// The HTTP status of this code: the only table from code to status.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidJson | MissingField | InvalidField | InvalidSchema | SchemaValidationFailed => {
                400
            }
            MissingApiKey | InvalidApiKey => 401,
            InsufficientPermissions => 403,
            TraceNotFound | RouteNotFound => 404,
            MethodNotAllowed => 405,
            TraceIdConflict | IdempotencyKeyReused => 409,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            RateLimited => 429,
            InternalError => 500,
            StorageUnavailable => 503,
        }
    }

    /// The envelope's `type`.
    pub fn kind(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidJson
            | MissingField
            | InvalidField
            | InvalidSchema
            | SchemaValidationFailed
            | MethodNotAllowed
            | PayloadTooLarge
            | UnsupportedMediaType => "invalid_request_error",
            MissingApiKey | InvalidApiKey => "authentication_error",
            InsufficientPermissions => "permission_error",
            TraceNotFound | RouteNotFound => "not_found_error",
            TraceIdConflict | IdempotencyKeyReused => "conflict_error",
            RateLimited => "rate_limit_error",
            InternalError | StorageUnavailable => "api_error",
        }
    }

    /// The envelope's `code`.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidJson => "INVALID_JSON",
            MissingField => "MISSING_FIELD",
            InvalidField => "INVALID_FIELD",
            InvalidSchema => "INVALID_SCHEMA",
            SchemaValidationFailed => "SCHEMA_VALIDATION_FAILED",
            MissingApiKey => "MISSING_API_KEY",
            InvalidApiKey => "INVALID_API_KEY",
            InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
            TraceNotFound => "TRACE_NOT_FOUND",
            RouteNotFound => "ROUTE_NOT_FOUND",
            MethodNotAllowed => "METHOD_NOT_ALLOWED",
            TraceIdConflict => "TRACE_ID_CONFLICT",
            IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            RateLimited => "RATE_LIMITED",
            InternalError => "INTERNAL_ERROR",
            StorageUnavailable => "STORAGE_UNAVAILABLE",
        }
    }
}

/// One entry of `details` in a SCHEMA_VALIDATION_FAILED error.
pub use crate::domain::schema::Violation as Detail;

/// The contract allows at most this many entries in `details`.
pub const MAX_DETAILS: usize = 20;

/// An error answered to a client. Build it with the named constructors so handlers read like
/// the contract; the `cause` is for the log only and is never serialised.
#[derive(Debug)]
pub struct ApiError {
    /// Which contract code this is.
    pub code: ErrorCode,
    /// A message for the human who has to fix their client. Never internals.
    pub message: String,
    /// The offending request field, where there is one.
    pub param: Option<&'static str>,
    /// Schema violations (SCHEMA_VALIDATION_FAILED only), at most [`MAX_DETAILS`].
    pub details: Vec<Detail>,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u32>,
    /// Methods for an `Allow` header (405).
    pub allow: Option<&'static str>,
    /// The underlying failure, logged at error level with the request id.
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    /// A bare error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            param: None,
            details: Vec::new(),
            retry_after: None,
            allow: None,
            cause: None,
        }
    }

    /// Names the offending field.
    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// 400 INVALID_JSON.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidJson, message)
    }

    /// 400 MISSING_FIELD for `field`.
    pub fn missing_field(field: &'static str) -> Self {
        Self::new(ErrorCode::MissingField, format!("{field} is required")).with_param(field)
    }

    /// 400 INVALID_FIELD for `field`; `message` should name the field and the rule.
    pub fn invalid_field(field: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidField, message).with_param(field)
    }

    /// 400 INVALID_SCHEMA (always about the `schema` field).
    pub fn invalid_schema(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidSchema, message).with_param("schema")
    }

    /// 400 SCHEMA_VALIDATION_FAILED with the first violations (truncated to [`MAX_DETAILS`])
    /// and the total count.
    pub fn schema_validation_failed(mut details: Vec<Detail>, total: usize) -> Self {
        details.truncate(MAX_DETAILS);
        let mut message = format!(
            "content does not match schema: {total} violation{}",
            if total == 1 { "" } else { "s" }
        );
        if total > MAX_DETAILS {
            message.push_str(&format!(" (first {MAX_DETAILS} listed)"));
        }
        let mut err = Self::new(ErrorCode::SchemaValidationFailed, message).with_param("content");
        err.details = details;
        err
    }

    /// 404 TRACE_NOT_FOUND.
    pub fn trace_not_found() -> Self {
        Self::new(
            ErrorCode::TraceNotFound,
            "no run with this trace_id; register it first with POST /v1/register-agent-run",
        )
        .with_param("trace_id")
    }

    /// 404 ROUTE_NOT_FOUND.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        // The path is echoed, so cap it: it comes from the client.
        let shown: String = path.chars().take(200).collect();
        Self::new(
            ErrorCode::RouteNotFound,
            format!("no route for {method} {shown}"),
        )
    }

    /// 405 METHOD_NOT_ALLOWED with the `Allow` header.
    pub fn method_not_allowed(method: &str, allow: &'static str) -> Self {
        let mut err = Self::new(
            ErrorCode::MethodNotAllowed,
            format!("method {method} is not allowed here; allowed: {allow}"),
        );
        err.allow = Some(allow);
        err
    }

    /// 413 PAYLOAD_TOO_LARGE.
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 415 UNSUPPORTED_MEDIA_TYPE.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            ErrorCode::UnsupportedMediaType,
            "Content-Type must be application/json",
        )
    }

    /// 500 INTERNAL_ERROR; `cause` goes to the log, the client sees only "internal error".
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let mut err = Self::new(ErrorCode::InternalError, "internal error");
        err.cause = Some(cause.into());
        err
    }

    /// 503 STORAGE_UNAVAILABLE with `Retry-After`.
    pub fn storage_unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let mut err = Self::new(
            ErrorCode::StorageUnavailable,
            "storage is temporarily unavailable; retry later",
        );
        err.retry_after = Some(1);
        err.cause = Some(cause.into());
        err
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The JSON envelope, as bytes.
    pub fn to_body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
            code: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            param: Option<&'a str>,
            #[serde(skip_serializing_if = "<[Detail]>::is_empty")]
            details: &'a [Detail],
        }
        let envelope = Envelope {
            error: Inner {
                message: &self.message,
                kind: self.code.kind(),
                code: self.code.as_str(),
                param: self.param,
                details: &self.details,
            },
        };
        // Serialising plain strings into a Vec cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, " (cause: {cause})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// The general mapping of storage failures. Only a handler knows *which* conflict it hit, so
/// `Conflict` and `NotFound` are mapped by handlers before this is reached; if one gets here it
/// is a bug and answers 500.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            // A run that kept changing under a check (see `checks.rs`): worth a retry.
            StoreError::Unavailable(_) | StoreError::Stale => ApiError::storage_unavailable(err),
            StoreError::KeyTaken => ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used for a different request; use a new key for a new request",
            ),
            StoreError::NotFound | StoreError::Conflict | StoreError::Other(_) => {
                ApiError::internal(err)
            }
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(err: FieldError) -> Self {
        match err {
            FieldError::Missing(field) => ApiError::missing_field(field),
            FieldError::Invalid(field, message) => ApiError::invalid_field(field, message),
            FieldError::InvalidSchema(message) => ApiError::invalid_schema(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 18] = [
        ErrorCode::InvalidJson,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::InvalidSchema,
        ErrorCode::SchemaValidationFailed,
        ErrorCode::MissingApiKey,
        ErrorCode::InvalidApiKey,
        ErrorCode::InsufficientPermissions,
        ErrorCode::TraceNotFound,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::TraceIdConflict,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::InternalError,
        ErrorCode::StorageUnavailable,
    ];

    #[test]
    fn every_code_has_the_status_and_type_of_the_contract_table() {
        let table: &[(u16, &str, &[&str])] = &[
            (
                400,
                "invalid_request_error",
                &[
                    "INVALID_JSON",
                    "MISSING_FIELD",
                    "INVALID_FIELD",
                    "INVALID_SCHEMA",
                    "SCHEMA_VALIDATION_FAILED",
                ],
            ),
            (
                401,
                "authentication_error",
                &["MISSING_API_KEY", "INVALID_API_KEY"],
            ),
            (403, "permission_error", &["INSUFFICIENT_PERMISSIONS"]),
            (
                404,
                "not_found_error",
                &["TRACE_NOT_FOUND", "ROUTE_NOT_FOUND"],
            ),
            (405, "invalid_request_error", &["METHOD_NOT_ALLOWED"]),
            (
                409,
                "conflict_error",
                &["TRACE_ID_CONFLICT", "IDEMPOTENCY_KEY_REUSED"],
            ),
            (413, "invalid_request_error", &["PAYLOAD_TOO_LARGE"]),
            (415, "invalid_request_error", &["UNSUPPORTED_MEDIA_TYPE"]),
            (429, "rate_limit_error", &["RATE_LIMITED"]),
            (500, "api_error", &["INTERNAL_ERROR"]),
            (503, "api_error", &["STORAGE_UNAVAILABLE"]),
        ];
        let mut seen = 0;
        for code in ALL {
            let row = table
                .iter()
                .find(|(_, _, codes)| codes.contains(&code.as_str()))
                .unwrap_or_else(|| panic!("{} is not in the contract table", code.as_str()));
            assert_eq!(code.status(), row.0, "status of {}", code.as_str());
            assert_eq!(code.kind(), row.1, "type of {}", code.as_str());
            seen += 1;
        }
        let listed: usize = table.iter().map(|(_, _, codes)| codes.len()).sum();
        assert_eq!(seen, listed, "every code of the contract is an ErrorCode");
    }

    #[test]
    fn the_envelope_has_message_type_code_and_param() {
        let body = ApiError::invalid_field("timestamp", "bad").to_body();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "bad", "type": "invalid_request_error",
                                         "code": "INVALID_FIELD", "param": "timestamp"}})
        );
    }

    #[test]
    fn details_are_capped_at_twenty() {
        let details = (0..25)
            .map(|i| Detail {
                path: format!("/{i}"),
                message: "x".into(),
            })
            .collect();
        let err = ApiError::schema_validation_failed(details, 25);
        assert_eq!(err.details.len(), MAX_DETAILS);
        assert!(err.message.contains("25 violations"), "{}", err.message);
    }

    #[test]
    fn an_internal_error_never_shows_its_cause() {
        let err = ApiError::internal("no such table: runs at /var/lib/x.db");
        let body = String::from_utf8(err.to_body()).expect("utf8");
        assert!(!body.contains("runs"), "{body}");
        assert!(body.contains("INTERNAL_ERROR"));
    }
}
