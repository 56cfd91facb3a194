//! Reading a request: its id, its Content-Type, and its body with a hard cap.

use std::io::Read;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tiny_http::Request;

use crate::error::ApiError;

/// The longest client-sent `X-Request-Id` that is echoed.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The value of a header, if present (first occurrence).
pub fn header<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// What is wrong with how a request delimits its body, judged from its headers (name, value),
/// before anything reads the body. tiny_http 0.12 is lenient here: it takes the first of
/// several `Content-Length` headers, prefers chunked when both framings are given, reads an
/// unparsable length as "no body", and ignores encodings it does not know. A client (or a proxy
/// in front) that meant something else would have its body cut or misread, so such requests are
/// refused instead: 413 for a length too large to parse (over `max_body`, whatever the path),
/// 415 for a compressed body, 400 INVALID_JSON for the rest.
pub fn framing_problem<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    max_body: u64,
) -> Option<ApiError> {
    let (mut lengths, mut encodings, mut compressed) = (Vec::new(), Vec::new(), false);
    for (name, value) in headers {
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            lengths.push(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            encodings.push(value);
        } else if name.eq_ignore_ascii_case("content-encoding") {
            compressed |= !value.eq_ignore_ascii_case("identity");
        }
    }
    let invalid = |m: &str| Some(ApiError::invalid_json(m));
    if compressed {
        let mut err = ApiError::unsupported_media_type();
        err.message = "Content-Encoding is not supported; send the body uncompressed".into();
        return Some(err);
    }
    if !encodings.is_empty() {
        return if encodings.len() > 1 || !encodings[0].eq_ignore_ascii_case("chunked") {
            invalid("Transfer-Encoding must be chunked, given once; or send a Content-Length")
        } else if !lengths.is_empty() {
            invalid(
                "the request has both a Content-Length and a Transfer-Encoding header; send one",
            )
        } else {
            None
        };
    }
    match lengths.as_slice() {
        [] => None,
        [length] if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) => {
            invalid("Content-Length must be a decimal number of bytes")
        }
        // Over the limit but readable: the usual 413 (or 404 on a wrong path) comes later.
        [length] => match length.parse::<u64>() {
            Ok(_) => None,
            Err(_) => Some(ApiError::payload_too_large(max_body)),
        },
        _ => invalid("the request has more than one Content-Length header; send one"),
    }
}

/// The client's `X-Request-Id` when it is sane (1 to 128 characters of `A-Za-z0-9._:-`),
/// otherwise a new one.
pub fn request_id(req: &Request) -> String {
    match header(req, "x-request-id") {
        Some(id) if is_sane_request_id(id) => id.to_string(),
        _ => new_request_id(),
    }
}

/// A new request id: 16 hex digits drawn once per process from the OS random source, then a
/// counter. Unique within the process and practically unique across restarts, and far
/// cheaper than a random UUID per request (no system call). Request ids only correlate log
/// lines; nothing relies on them being unguessable.
fn new_request_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}{n:016x}")
}

fn is_sane_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The query parameters of a URL, percent-decoded (`+` is a space), in order. Malformed
/// escapes are kept as written.
pub fn query_params(url: &str) -> Vec<(String, String)> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when a `Content-Type` value is JSON: `application/json`, any case, parameters allowed.
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Checks the Content-Type (415; a missing one is tolerated) and reads at most `max` bytes of
/// body (413 beyond, decided from `Content-Length` before reading when the client sends one).
pub fn read_body(req: &mut Request, max: u64) -> Result<Vec<u8>, ApiError> {
    if let Some(ct) = header(req, "content-type")
        && !is_json_content_type(ct)
    {
        return Err(ApiError::unsupported_media_type());
    }
    if let Some(len) = req.body_length()
        && len as u64 > max
    {
        return Err(ApiError::payload_too_large(max));
    }
    let mut body = Vec::with_capacity(req.body_length().unwrap_or(0).min(max as usize));
    req.as_reader()
        .take(max + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::invalid_json(format!("could not read the request body: {e}")))?;
    if body.len() as u64 > max {
        return Err(ApiError::payload_too_large(max));
    }
    // The body ended early: the client closed its side, or it was too slow and the
    // connection guard stopped the read (`http::guard`). The contract has no timeout code;
    // a body cut short is not JSON, and the message says what happened.
    if let Some(len) = req.body_length()
        && body.len() < len
    {
        return Err(ApiError::invalid_json(format!(
            "the request body ended after {} of its {len} bytes (the client stopped sending, \
             or took longer than the server's client timeout)",
            body.len()
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn only_one_plain_framing_is_accepted() {
        let max = 1000;
        // (headers, the error code expected, or None)
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Headers, Option<ErrorCode>); 14] = [
            (&[], None),
            (&[("Content-Length", "12")], None),
            (&[("content-length", " 1000 ")], None),
            (&[("Transfer-Encoding", "chunked")], None),
            (
                &[("Content-Encoding", "identity"), ("Content-Length", "3")],
                None,
            ),
            (&[("Content-Length", "1001")], None),
            (
                &[("Content-Length", "99999999999999999999")],
                Some(ErrorCode::PayloadTooLarge),
            ),
            (&[("Content-Length", "-1")], Some(ErrorCode::InvalidJson)),
            (&[("Content-Length", "")], Some(ErrorCode::InvalidJson)),
            (
                &[("Content-Length", "5"), ("Content-Length", "7")],
                Some(ErrorCode::InvalidJson),
            ),
            (
                &[("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
                Some(ErrorCode::InvalidJson),
            ),
            (
                &[("Transfer-Encoding", "gzip, chunked")],
                Some(ErrorCode::InvalidJson),
            ),
            (
                &[
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked"),
                ],
                Some(ErrorCode::InvalidJson),
            ),
            (
                &[("Content-Encoding", "gzip"), ("Content-Length", "3")],
                Some(ErrorCode::UnsupportedMediaType),
            ),
        ];
        for (headers, want) in cases {
            let got = framing_problem(headers.iter().copied(), max).map(|e| e.code);
            assert_eq!(got, want, "{headers:?}");
        }
    }

    #[test]
    fn json_content_types_with_parameters_and_any_case_are_json() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            " application/json ",
        ] {
            assert!(is_json_content_type(ct), "{ct}");
        }
        for ct in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "",
        ] {
            assert!(!is_json_content_type(ct), "{ct}");
        }
    }

    #[test]
    fn generated_request_ids_are_distinct_and_sane() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert!(is_sane_request_id(&a), "{a}");
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn query_parameters_are_split_and_percent_decoded() {
        let got = query_params("/v1/runs?agent_id=cs%2Dagent+1&limit=5&&empty=&bad=%zz&flag");
        let want: Vec<(String, String)> = [
            ("agent_id", "cs-agent 1"),
            ("limit", "5"),
            ("empty", ""),
            ("bad", "%zz"),
            ("flag", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
        assert!(query_params("/v1/runs").is_empty());
    }

    #[test]
    fn sane_request_ids_are_short_and_plain() {
        assert!(is_sane_request_id("abc-123_x.y:z"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id(&"a".repeat(129)));
        assert!(!is_sane_request_id("a b"));
        assert!(!is_sane_request_id("a\nb"));
        assert!(!is_sane_request_id("<script>"));
    }
}
