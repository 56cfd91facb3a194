//! The HTTP edge: routing, reading requests, writing responses. Nothing here knows the
//! domain; handlers get bytes and return a [`response::Reply`] or an `ApiError`.

pub mod guard;
pub mod request;
pub mod response;
pub mod router;
#[cfg(target_os = "linux")]
pub mod sockets;

/// The OpenAPI 3.1 document of the whole HTTP surface, served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");
