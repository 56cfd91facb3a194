//! The read API: `GET /v1/runs`, `GET /v1/runs/{trace_id}`, `GET /v1/events`,
//! `GET /v1/checks`. Every read is scoped like the writes: a key sees its project's runs (an
//! admin key sees every project's), and another project's trace is 404 as if it did not exist.
//!
//! Lists answer `{"data": […], "next_cursor": "…" | null}`. `limit` is 1 to 100 (default 20);
//! `cursor` is the previous page's `next_cursor` (keyset pagination: a page never repeats or
//! skips an item while new ones are written); `offset` skips items instead. Runs are listed
//! newest first; events and checks in arrival order.

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::App;
use crate::auth::{KeyType, Principal};
use crate::domain::event::EventType;
use crate::domain::ids::TraceId;
use crate::error::ApiError;
use crate::http::request::query_params;
use crate::http::response::Reply;
use crate::http::router::run_id;
use crate::store::{
    CheckRecord, EventRecord, Page, RunRecord, Scope, StoreError, StoredJson, TextBytes, shown_rows,
};

/// The text (contents, schemas, prompts, reasoning) a page of a list holds at most, beyond
/// its first item: a page ends early, with a `next_cursor`, rather than hold 100 items of 1 MiB.
const MAX_PAGE_BYTES: u64 = 4 << 20;

/// The default and the largest `limit`.
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

fn scope(principal: &Principal) -> Scope<'_> {
    match principal.key_type {
        Some(KeyType::Admin) => Scope::All,
        _ => Scope::Project(&principal.project),
    }
}

/// The query parameters of a list, parsed; unknown parameters are ignored.
struct Query {
    params: Vec<(String, String)>,
}

impl Query {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The page asked for, starting after `after` (the decoded `cursor`, if any).
    fn page(&self, after: Option<i64>) -> Result<Page, ApiError> {
        let limit = match self.get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "limit",
                        format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                    )
                })?,
        };
        let offset = match self.get("offset") {
            None => 0,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= i64::MAX as u64)
                .ok_or_else(|| {
                    ApiError::invalid_field("offset", "offset must be a whole number, 0 or more")
                })?,
        };
        if after.is_some() && offset > 0 {
            return Err(ApiError::invalid_field(
                "offset",
                "use either cursor or offset, not both",
            ));
        }
        Ok(Page {
            after,
            offset,
            limit: limit + 1,
            max_bytes: MAX_PAGE_BYTES,
        })
    }

    fn trace_id(&self, required: bool) -> Result<Option<TraceId>, ApiError> {
        match self.get("trace_id") {
            None if required => Err(ApiError::missing_field("trace_id")),
            None => Ok(None),
            Some(v) => TraceId::parse(v)
                .map(Some)
                .map_err(|m| ApiError::invalid_field("trace_id", m)),
        }
    }
}

/// Cursors are opaque to clients. Within a run (events) a cursor is `c` and the last sequence
/// number in hex: those numbers are the run's own. Runs and checks are listed by keys that
/// every project's writes advance, so their cursors name the last item instead (`r` and its
/// trace id, `k` and its check id, hyphens dropped), and the key is looked up within the
/// caller's scope: a key's cursors never tell how many runs or checks other projects stored.
fn encode_cursor(key: i64) -> String {
    format!("c{key:x}")
}

fn decode_cursor(s: &str) -> Result<i64, ApiError> {
    s.strip_prefix('c')
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|h| i64::from_str_radix(h, 16).ok())
        .ok_or_else(bad_cursor)
}

/// A cursor naming the item with id `uuid` (canonical form) behind `prefix`.
fn encode_id_cursor(prefix: char, uuid: &str) -> String {
    format!("{prefix}{}", uuid.replace('-', ""))
}

/// The UUID a cursor made by [`encode_id_cursor`] names (a run's or a check's id); not yet
/// looked up.
fn decode_id_cursor(prefix: char, s: &str) -> Result<TraceId, ApiError> {
    s.strip_prefix(prefix)
        .filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|h| {
            let dashed = format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            );
            TraceId::parse(&dashed).ok()
        })
        .ok_or_else(bad_cursor)
}

/// The key of the item a runs or checks cursor names, looked up by `key_of` within the
/// caller's scope. An item the caller cannot see (another project's, or none) makes the cursor
/// as invalid as garbage does: the answer does not tell which.
fn id_cursor_key(
    cursor: Option<&str>,
    prefix: char,
    key_of: impl FnOnce(TraceId) -> Result<i64, StoreError>,
) -> Result<Option<i64>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    match key_of(decode_id_cursor(prefix, cursor)?) {
        Ok(key) => Ok(Some(key)),
        Err(StoreError::NotFound) => Err(bad_cursor()),
        Err(other) => Err(other.into()),
    }
}

fn bad_cursor() -> ApiError {
    ApiError::invalid_field(
        "cursor",
        "cursor must be a next_cursor from a previous page",
    )
}

#[derive(Serialize)]
struct List<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
}

/// A page from `limit + 1` rows (fewer when their text reached [`MAX_PAGE_BYTES`], see
/// [`take_rows`](crate::store::take_rows)): the ones [`shown_rows`] keeps, and a cursor when
/// there are more.
fn list<R: TextBytes, T: Serialize>(
    mut rows: Vec<R>,
    page: Page,
    cursor: impl Fn(&R) -> String,
    view: impl Fn(R) -> T,
) -> Result<Reply, ApiError> {
    let shown = shown_rows(&rows, (page.limit - 1) as usize, page.max_bytes);
    let more = rows.len() > shown;
    rows.truncate(shown);
    let next_cursor = if more { rows.last().map(cursor) } else { None };
    Reply::json(
        200,
        &List {
            data: rows.into_iter().map(view).collect::<Vec<T>>(),
            next_cursor,
        },
    )
}

#[derive(Serialize)]
struct RunView {
    trace_id: String,
    project: String,
    agent_id: String,
    timestamp: String,
    received_at: String,
    system_prompt: String,
    event_count: u64,
    check_count: u64,
    blocked_check_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    constraints: Option<Vec<crate::engine::prompt::PromptConstraint>>,
}

fn run_view(r: RunRecord, with_constraints: bool) -> RunView {
    RunView {
        constraints: with_constraints.then(|| crate::engine::prompt::derive(&r.system_prompt)),
        trace_id: r.trace_id,
        project: r.project,
        agent_id: r.agent_id,
        timestamp: r.started_at,
        received_at: r.received_at,
        system_prompt: r.system_prompt,
        event_count: r.event_count,
        check_count: r.check_count,
        blocked_check_count: r.blocked_check_count,
    }
}

/// A stored JSON field back in the form it was sent: a JSON string, or the raw JSON.
fn as_sent(j: StoredJson) -> Box<RawValue> {
    let raw = if j.form == "json" {
        RawValue::from_string(j.text)
    } else {
        RawValue::from_string(Value::String(j.text).to_string())
    };
    raw.unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
}

#[derive(Serialize)]
struct EventView {
    event_id: String,
    trace_id: String,
    seq: i64,
    event_type: String,
    timestamp: f64,
    received_at: f64,
    content: Box<RawValue>,
    schema: Box<RawValue>,
}

fn event_view(e: EventRecord) -> EventView {
    EventView {
        event_id: e.event_id,
        trace_id: e.trace_id,
        seq: e.seq,
        event_type: e.event_type,
        timestamp: e.occurred_at,
        received_at: e.received_at_ms as f64 / 1000.0,
        content: as_sent(e.content),
        schema: as_sent(e.schema),
    }
}

#[derive(Serialize)]
struct CheckView {
    action_check_id: String,
    trace_id: String,
    seq: i64,
    tool_name: String,
    timestamp: f64,
    received_at: f64,
    content: Box<RawValue>,
    schema: Box<RawValue>,
    is_safe: bool,
    reasoning: String,
    findings: Box<RawValue>,
}

fn check_view(c: CheckRecord) -> CheckView {
    CheckView {
        findings: RawValue::from_string(c.findings)
            .unwrap_or_else(|_| RawValue::from_string("[]".into()).unwrap_or_default()),
        action_check_id: c.check_id,
        trace_id: c.trace_id,
        seq: c.seq,
        tool_name: c.tool_name,
        timestamp: c.occurred_at,
        received_at: c.received_at_ms as f64 / 1000.0,
        content: as_sent(c.content),
        schema: as_sent(c.schema),
        is_safe: c.is_safe,
        reasoning: c.reasoning,
    }
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::trace_not_found(),
        other => other.into(),
    }
}

/// `GET /v1/runs?agent_id=&limit=&cursor=&offset=`
pub fn runs(app: &App, principal: &Principal, url: &str) -> Result<Reply, ApiError> {
    let q = Query {
        params: query_params(url),
    };
    let after = id_cursor_key(q.get("cursor"), 'r', |id| {
        app.store.run_key(scope(principal), id)
    })?;
    let page = q.page(after)?;
    let rows = app
        .store
        .list_runs(scope(principal), q.get("agent_id"), page)?;
    list(
        rows,
        page,
        |r| encode_id_cursor('r', &r.trace_id),
        |r| run_view(r, false),
    )
}

/// `GET /v1/runs/{trace_id}`: the run, its counts, and the constraints read from its prompt.
pub fn run(app: &App, principal: &Principal, url: &str) -> Result<Reply, ApiError> {
    let id = TraceId::parse(run_id(url)).map_err(|m| ApiError::invalid_field("trace_id", m))?;
    let record = app.store.get_run(scope(principal), id).map_err(not_found)?;
    Reply::json(200, &run_view(record, true))
}

/// `GET /v1/events?trace_id=&event_type=&limit=&cursor=&offset=`
pub fn events(app: &App, principal: &Principal, url: &str) -> Result<Reply, ApiError> {
    let q = Query {
        params: query_params(url),
    };
    let trace_id = q
        .trace_id(true)?
        .ok_or_else(|| ApiError::missing_field("trace_id"))?;
    let event_type = match q.get("event_type") {
        None => None,
        Some(t) => Some(
            EventType::parse(t)
                .ok_or_else(|| ApiError::invalid_field("event_type", "unknown event_type"))?
                .as_str(),
        ),
    };
    let page = q.page(q.get("cursor").map(decode_cursor).transpose()?)?;
    let rows = app
        .store
        .list_events(scope(principal), trace_id, event_type, page)
        .map_err(not_found)?;
    list(rows, page, |e| encode_cursor(e.seq), event_view)
}

/// `GET /v1/checks?trace_id=&is_safe=&limit=&cursor=&offset=`
pub fn checks(app: &App, principal: &Principal, url: &str) -> Result<Reply, ApiError> {
    let q = Query {
        params: query_params(url),
    };
    let trace_id = q.trace_id(false)?;
    let is_safe = match q.get("is_safe") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "is_safe",
                "is_safe must be true or false",
            ));
        }
    };
    let after = id_cursor_key(q.get("cursor"), 'k', |id| {
        app.store.check_key(scope(principal), &id.to_string())
    })?;
    let page = q.page(after)?;
    let rows = app
        .store
        .list_checks(scope(principal), trace_id, is_safe, page)
        .map_err(not_found)?;
    list(
        rows,
        page,
        |c| encode_id_cursor('k', &c.check_id),
        check_view,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        for key in [0, 1, 255, i64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(key)).expect("valid"), key);
        }
        for bad in ["", "c", "x10", "czz", "c-", "c-1", "c+a"] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn id_cursors_name_an_id_and_nothing_else() {
        let id = "f4f4f4f4-0000-4000-8000-00000000000a";
        let cursor = encode_id_cursor('k', id);
        assert_eq!(cursor, "kf4f4f4f400004000800000000000000a");
        assert_eq!(
            decode_id_cursor('k', &cursor).expect("valid").to_string(),
            id
        );
        let upper = format!("k{}", cursor[1..].to_uppercase());
        assert_eq!(
            decode_id_cursor('k', &upper).expect("any case").to_string(),
            id
        );
        let longer = format!("{cursor}0");
        let not_hex = cursor.replace('a', "g");
        for bad in [
            "",
            "k",
            "c1d",
            "kf4f4",
            &longer,
            &not_hex,
            &cursor.replacen('k', "r", 1),
        ] {
            assert!(decode_id_cursor('k', bad).is_err(), "{bad:?}");
        }
    }
}
