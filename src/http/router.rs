//! `route(method, path)`: the whole HTTP surface on one screen. A 404 or 405 is decided here,
//! before any body is read.

use crate::error::ApiError;

/// Every route the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/register-agent-run`
    RegisterRun,
    /// `POST /v1/event`
    Event,
    /// `POST /v1/check`
    Check,
    /// `GET /healthz`
    Healthz,
}

impl Route {
    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::RegisterRun => "register-agent-run",
            Route::Event => "event",
            Route::Check => "check",
            Route::Healthz => "healthz",
        }
    }
}

/// (path, allowed methods, route). HEAD is answered like GET without a body.
const TABLE: &[(&str, &[&str], Route)] = &[
    ("/v1/register-agent-run", &["POST"], Route::RegisterRun),
    ("/v1/event", &["POST"], Route::Event),
    ("/v1/check", &["POST"], Route::Check),
    ("/healthz", &["GET", "HEAD"], Route::Healthz),
];

/// The value of the `Allow` header for each entry of the table.
fn allow_header(methods: &[&str]) -> &'static str {
    match methods {
        ["POST"] => "POST",
        _ => "GET, HEAD",
    }
}

/// Finds the route for `method` and `url` (the query string is ignored).
pub fn route(method: &str, url: &str) -> Result<Route, ApiError> {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    match TABLE.iter().find(|(p, _, _)| *p == path) {
        Some((_, methods, route)) if methods.contains(&method) => Ok(*route),
        Some((_, methods, _)) => Err(ApiError::method_not_allowed(method, allow_header(methods))),
        None => Err(ApiError::route_not_found(method, path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    /// The expected outcome: a route, or an error code with its `Allow` header.
    type Expected = Result<Route, (ErrorCode, Option<&'static str>)>;

    #[test]
    fn the_route_table() {
        let cases: &[(&str, &str, Expected)] = &[
            ("POST", "/v1/register-agent-run", Ok(Route::RegisterRun)),
            ("POST", "/v1/event", Ok(Route::Event)),
            ("POST", "/v1/event?x=1", Ok(Route::Event)),
            ("POST", "/v1/check", Ok(Route::Check)),
            ("GET", "/healthz", Ok(Route::Healthz)),
            ("HEAD", "/healthz", Ok(Route::Healthz)),
            (
                "GET",
                "/v1/event",
                Err((ErrorCode::MethodNotAllowed, Some("POST"))),
            ),
            (
                "DELETE",
                "/v1/check",
                Err((ErrorCode::MethodNotAllowed, Some("POST"))),
            ),
            (
                "POST",
                "/healthz",
                Err((ErrorCode::MethodNotAllowed, Some("GET, HEAD"))),
            ),
            ("POST", "/v1/event/", Err((ErrorCode::RouteNotFound, None))),
            ("POST", "/v1/events", Err((ErrorCode::RouteNotFound, None))),
            ("GET", "/", Err((ErrorCode::RouteNotFound, None))),
            (
                "POST",
                "/register-agent-run",
                Err((ErrorCode::RouteNotFound, None)),
            ),
        ];
        for (method, path, want) in cases {
            let got = route(method, path).map_err(|e| (e.code, e.allow));
            assert_eq!(&got, want, "{method} {path}");
        }
    }
}
