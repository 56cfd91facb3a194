//! The web UI: one page (`/`) and its two assets (`/ui/app.js`, `/ui/style.css`), embedded in
//! the binary. The page reads the API from the browser like any client; the server's only job
//! is to hand out these files with headers that keep agent-controlled text inert: a strict
//! Content-Security-Policy (no inline script, no other origins, no framing), `nosniff`, and no
//! referrer.

use crate::error::ApiError;
use crate::http::response::Reply;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// The Content-Security-Policy of the page: only this server's own script, styles and API.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The file at `path` (`/`, `/ui/app.js`, `/ui/style.css`).
pub fn asset(path: &str) -> Result<Reply, ApiError> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let (body, content_type) = match path {
        "/" => (INDEX, "text/html; charset=utf-8"),
        "/ui/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/ui/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        other => return Err(ApiError::route_not_found("GET", other)),
    };
    Ok(Reply {
        status: 200,
        body: body.as_bytes().to_vec(),
        headers: vec![
            ("Content-Security-Policy", CSP.to_string()),
            ("Referrer-Policy", "no-referrer".to_string()),
            ("X-Frame-Options", "DENY".to_string()),
        ],
        content_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_served_with_the_csp() {
        for (path, kind) in [
            ("/", "text/html"),
            ("/ui/app.js", "javascript"),
            ("/ui/style.css", "text/css"),
        ] {
            let r = asset(path).expect(path);
            assert!(r.content_type.contains(kind), "{path}");
            assert!(
                r.headers
                    .iter()
                    .any(|(n, v)| *n == "Content-Security-Policy" && v == CSP)
            );
        }
        assert!(asset("/ui/other.js").is_err());
    }

    #[test]
    fn the_script_never_writes_html() {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(forbidden), "app.js uses {forbidden}");
        }
        assert!(!INDEX.contains("<script>"), "no inline script in the page");
    }
}
