//! Access control at the HTTP edge: who is calling (`x-api-key`), what they may do, how fast,
//! and `Idempotency-Key` replays. Called by [`super::dispatch`] for every `/v1` route, after
//! routing and before the body is read.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tiny_http::Request;

use super::App;
use crate::auth::{Principal, hash_key};
use crate::error::{ApiError, ErrorCode};
use crate::http::request::header;
use crate::http::response::Reply;
use crate::http::router::Route;
use crate::ratelimit::Decision;
use crate::store::{Replay, StoredReplay};

/// The longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Who is calling: the key's principal, or the open-mode principal while no active key exists
/// and open mode is allowed (loopback address or `--allow-open`).
pub fn authenticate(app: &App, req: &Request) -> Result<Principal, ApiError> {
    match header(req, "x-api-key") {
        Some(secret) => {
            let key = app
                .store
                .key_by_hash(&hash_key(secret))?
                .filter(|k| k.revoked_at.is_none())
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidApiKey,
                        "the x-api-key is unknown or revoked",
                    )
                })?;
            app.last_used.record(app, &key.id);
            Ok(Principal::from_key(&key))
        }
        None if app.open_allowed && !app.store.has_active_keys()? => {
            if app.open_local_only {
                local_request(header(req, "host"), header(req, "origin"))?;
            }
            Ok(Principal::open())
        }
        None => Err(ApiError::new(
            ErrorCode::MissingApiKey,
            "this server requires an API key in the x-api-key header",
        )),
    }
}

/// In open mode on a loopback address, anything that can make the operator's browser send a
/// request could otherwise use the server: a web page posting to `http://127.0.0.1:8787`
/// (browsers send such a POST without asking when it has no Content-Type), or one whose own
/// host name is made to resolve to 127.0.0.1 (DNS rebinding), which then reads every run as
/// its own origin. Browsers say where a request comes from and whom it is for, and an agent
/// or SDK sends neither an `Origin` nor a foreign `Host`; so a request is answered only when
/// its `Host` (if any) is a loopback name and its `Origin` (if any) is a loopback origin.
/// 403 otherwise. `--allow-open` (or an API key) turns this off, e.g. behind a proxy that
/// forwards its own host name.
pub fn local_request(host: Option<&str>, origin: Option<&str>) -> Result<(), ApiError> {
    let refuse = |what: &str, value: &str| {
        let shown: String = value.chars().take(100).collect();
        Err(ApiError::new(
            ErrorCode::InsufficientPermissions,
            format!(
                "open mode serves only local requests, and the {what} {shown:?} is not a \
                 loopback name; create an API key to serve other hosts or web pages"
            ),
        ))
    };
    if let Some(h) = host
        && !is_loopback_authority(h)
    {
        return refuse("Host", h);
    }
    if let Some(o) = origin {
        let authority = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"));
        if !authority.is_some_and(|a| !a.contains('/') && is_loopback_authority(a)) {
            return refuse("Origin", o);
        }
    }
    Ok(())
}

/// Whether `host[:port]` names this machine: `localhost` or a name under it, an address in
/// 127.0.0.0/8, or `[::1]`.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, after)) if after.is_empty() || after.starts_with(':') => inside,
            _ => return false,
        },
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// 403 unless `principal` may use `route`: restricted keys only log events and check actions.
pub fn authorize(principal: &Principal, route: Route) -> Result<(), ApiError> {
    match route {
        Route::Event | Route::Check => Ok(()),
        _ if principal.may_use_every_route() => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::InsufficientPermissions,
            "a restricted key may only POST /v1/event and /v1/check",
        )),
    }
}

/// Counts the request against the key's limits. `None` for callers without limits (open
/// mode, admin keys); a decision that is not `allowed` is answered with [`rate_limited`].
pub fn rate_limit(app: &App, principal: &Principal) -> Result<Option<Decision>, ApiError> {
    let Some(key_id) = principal.key_id.as_deref() else {
        return Ok(None);
    };
    let now = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    Ok(app.store.rate_limit(key_id, principal.limits, now)?)
}

/// 429 RATE_LIMITED with `Retry-After` for a refusing decision.
pub fn rate_limited(d: &Decision) -> ApiError {
    let mut err = ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "rate limit of {} requests reached for this key; retry in {} s",
            d.limit, d.reset_secs
        ),
    );
    err.retry_after = Some(d.reset_secs.clamp(1, u64::from(u32::MAX)) as u32);
    err
}

/// The `X-RateLimit-*` headers of a decision.
pub fn rate_headers(d: &Decision) -> [(&'static str, String); 3] {
    [
        ("X-RateLimit-Limit", d.limit.to_string()),
        ("X-RateLimit-Remaining", d.remaining.to_string()),
        ("X-RateLimit-Reset", d.reset_secs.to_string()),
    ]
}

/// An `Idempotency-Key` in force for one request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    project: String,
    key: String,
    request_hash: [u8; 32],
    at_ms: i64,
    expired_before_ms: i64,
}

impl Idempotency {
    /// Reads the header; `None` without one, 400 for a malformed one.
    pub fn from_request(
        app: &App,
        req: &Request,
        principal: &Principal,
        route: Route,
        body: &[u8],
    ) -> Result<Option<Self>, ApiError> {
        let Some(key) = header(req, "idempotency-key") else {
            return Ok(None);
        };
        let sane = (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_graphic());
        if !sane {
            return Err(ApiError::invalid_field(
                "Idempotency-Key",
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                ),
            ));
        }
        let mut hash = Sha256::new();
        hash.update(route.label().as_bytes());
        hash.update([0]);
        hash.update(body);
        let at_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        Ok(Some(Idempotency {
            project: principal.project.clone(),
            key: key.to_string(),
            request_hash: hash.finalize().into(),
            at_ms,
            expired_before_ms: at_ms - app.idempotency_ttl.as_millis() as i64,
        }))
    }

    /// The remembered answer for this key: `Some(reply)` to replay it, `None` if there is none,
    /// 409 if it answered a different request.
    pub fn replay(&self, app: &App) -> Result<Option<Reply>, ApiError> {
        match app
            .store
            .replay(&self.project, &self.key, self.expired_before_ms)?
        {
            None => Ok(None),
            Some(stored) => self.replay_of(stored).map(Some),
        }
    }

    fn replay_of(&self, stored: StoredReplay) -> Result<Reply, ApiError> {
        if stored.request_hash != self.request_hash {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used for a different request; use a new key for a new request",
            ));
        }
        Ok(Reply {
            status: stored.status,
            body: stored.body,
            headers: vec![("Idempotent-Replayed", "true".to_string())],
            content_type: crate::http::response::JSON,
        })
    }

    /// The record to store with the write whose answer is `status` and `body`.
    pub fn answer(&self, status: u16, body: &[u8]) -> Replay {
        Replay {
            key: self.key.clone(),
            request_hash: self.request_hash,
            status,
            body: body.to_vec(),
            at_ms: self.at_ms,
            expired_before_ms: self.expired_before_ms,
        }
    }
}

/// When each key was last recorded as used: the database is written at most once a minute per
/// key (with the time of that minute's first use, so never before the key's creation), off
/// the request path.
#[derive(Debug, Default)]
pub struct LastUsed {
    minutes: Mutex<HashMap<String, i64>>,
}

impl LastUsed {
    fn record(&self, app: &App, key_id: &str) {
        let now = OffsetDateTime::now_utc();
        let minute = now.unix_timestamp() / 60;
        let mut seen = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(key_id) == Some(&minute) {
            return;
        }
        seen.insert(key_id.to_string(), minute);
        drop(seen);
        app.store
            .touch_key(key_id, &crate::domain::time::format_millis_utc(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_mode_answers_local_hosts_and_local_pages_only() {
        let local = [
            (None, None),
            (Some("127.0.0.1:8787"), None),
            (Some("localhost"), Some("http://localhost:8787")),
            (Some("LOCALHOST:1"), Some("https://app.localhost")),
            (Some("[::1]:8787"), Some("http://[::1]:8787")),
            (Some("127.9.9.9"), Some("http://127.0.0.1")),
        ];
        for (host, origin) in local {
            assert!(local_request(host, origin).is_ok(), "{host:?} {origin:?}");
        }
        let foreign = [
            (Some("rebind.attacker.test:8787"), None),
            (Some("127.0.0.1.attacker.test"), None),
            (Some("localhost.attacker.test"), None),
            (Some("::1"), None),
            (Some("[::1]x"), None),
            (Some("127.0.0.1:8787"), Some("http://attacker.example")),
            (Some("127.0.0.1:8787"), Some("null")),
            (Some("127.0.0.1:8787"), Some("file://")),
            (Some("127.0.0.1:8787"), Some("http://127.0.0.1/evil")),
        ];
        for (host, origin) in foreign {
            let err = local_request(host, origin).expect_err(&format!("{host:?} {origin:?}"));
            assert_eq!(err.code, ErrorCode::InsufficientPermissions);
        }
    }
}
