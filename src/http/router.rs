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
    /// `GET /v1/runs`
    Runs,
    /// `GET /v1/runs/{trace_id}`
    Run,
    /// `GET /v1/events`
    Events,
    /// `GET /v1/checks`
    Checks,
    /// The web UI: `GET /` and `GET /ui/…`
    Ui,
    /// `GET /metrics`
    Metrics,
    /// `GET /openapi.json`
    OpenApi,
}

impl Route {
    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::RegisterRun => "register-agent-run",
            Route::Event => "event",
            Route::Check => "check",
            Route::Healthz => "healthz",
            Route::Runs => "runs",
            Route::Run => "run",
            Route::Events => "events",
            Route::Checks => "checks",
            Route::Ui => "ui",
            Route::Metrics => "metrics",
            Route::OpenApi => "openapi",
        }
    }
}

/// (path, allowed methods, route). HEAD is answered like GET without a body.
const TABLE: &[(&str, &[&str], Route)] = &[
    ("/v1/register-agent-run", &["POST"], Route::RegisterRun),
    ("/v1/event", &["POST"], Route::Event),
    ("/v1/check", &["POST"], Route::Check),
    ("/healthz", &["GET", "HEAD"], Route::Healthz),
    ("/metrics", &["GET", "HEAD"], Route::Metrics),
    ("/openapi.json", &["GET", "HEAD"], Route::OpenApi),
    ("/v1/runs", &["GET", "HEAD"], Route::Runs),
    ("/v1/events", &["GET", "HEAD"], Route::Events),
    ("/v1/checks", &["GET", "HEAD"], Route::Checks),
    ("/", &["GET", "HEAD"], Route::Ui),
    ("/ui/app.js", &["GET", "HEAD"], Route::Ui),
    ("/ui/style.css", &["GET", "HEAD"], Route::Ui),
];

/// `/v1/runs/{trace_id}`: the one route with a parameter in its path.
const RUN_PREFIX: &str = "/v1/runs/";

/// The value of the `Allow` header for each entry of the table.
fn allow_header(methods: &[&str]) -> &'static str {
    match methods {
        ["POST"] => "POST",
        _ => "GET, HEAD",
    }
}

/// Every path the server answers, with its methods (`/v1/runs/{trace_id}` in OpenAPI's
/// notation), for checking the OpenAPI document against the router.
pub fn routes() -> Vec<(&'static str, &'static [&'static str])> {
    let mut all: Vec<(&'static str, &'static [&'static str])> =
        TABLE.iter().map(|(p, m, _)| (*p, *m)).collect();
    all.push(("/v1/runs/{trace_id}", &["GET", "HEAD"]));
    all
}

/// The `{trace_id}` of a `/v1/runs/{trace_id}` URL, as written.
pub fn run_id(url: &str) -> &str {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    path.strip_prefix(RUN_PREFIX).unwrap_or("")
}

/// Finds the route for `method` and `url` (the query string is ignored).
pub fn route(method: &str, url: &str) -> Result<Route, ApiError> {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    if let Some(id) = path.strip_prefix(RUN_PREFIX)
        && !id.is_empty()
        && !id.contains('/')
    {
        return match method {
            "GET" | "HEAD" => Ok(Route::Run),
            _ => Err(ApiError::method_not_allowed(method, "GET, HEAD")),
        };
    }
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

    #[test]
    fn the_openapi_document_has_every_route_and_nothing_else() {
        let doc: serde_json::Value =
            serde_json::from_str(crate::http::OPENAPI).expect("openapi.json is JSON");
        let paths = doc["paths"].as_object().expect("paths");
        let routes = routes();
        for (path, methods) in &routes {
            let item = paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} is not in openapi.json"));
            for m in methods.iter().filter(|m| **m != "HEAD") {
                assert!(
                    item.get(m.to_ascii_lowercase()).is_some(),
                    "{m} {path} is not in openapi.json"
                );
            }
            let documented: Vec<&String> = item.as_object().expect("path item").keys().collect();
            for op in documented {
                assert!(
                    methods.iter().any(|m| m.eq_ignore_ascii_case(op)),
                    "openapi.json documents {op} {path}, which the router does not answer"
                );
            }
        }
        for path in paths.keys() {
            assert!(
                routes.iter().any(|(p, _)| p == path),
                "openapi.json documents {path}, which the router does not know"
            );
        }
    }

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
            ("GET", "/metrics", Ok(Route::Metrics)),
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
            (
                "POST",
                "/v1/events",
                Err((ErrorCode::MethodNotAllowed, Some("GET, HEAD"))),
            ),
            ("GET", "/v1/runs", Ok(Route::Runs)),
            ("GET", "/v1/runs?agent_id=a", Ok(Route::Runs)),
            (
                "GET",
                "/v1/runs/f4f4f4f4-f4f4-f4f4-f4f4-f4f4f4f4f4f4",
                Ok(Route::Run),
            ),
            ("HEAD", "/v1/runs/x?y=1", Ok(Route::Run)),
            (
                "DELETE",
                "/v1/runs/x",
                Err((ErrorCode::MethodNotAllowed, Some("GET, HEAD"))),
            ),
            ("GET", "/v1/runs/", Err((ErrorCode::RouteNotFound, None))),
            ("GET", "/v1/runs/a/b", Err((ErrorCode::RouteNotFound, None))),
            ("GET", "/v1/events?trace_id=x", Ok(Route::Events)),
            ("GET", "/v1/checks", Ok(Route::Checks)),
            (
                "POST",
                "/v1/checks",
                Err((ErrorCode::MethodNotAllowed, Some("GET, HEAD"))),
            ),
            ("GET", "/", Ok(Route::Ui)),
            ("GET", "/ui/app.js", Ok(Route::Ui)),
            (
                "POST",
                "/",
                Err((ErrorCode::MethodNotAllowed, Some("GET, HEAD"))),
            ),
            ("GET", "/ui/nope.js", Err((ErrorCode::RouteNotFound, None))),
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
