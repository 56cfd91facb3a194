//! The replay format and offline replay (`runwarden replay`): recorded sessions run through the
//! same validation and the same engine as the server, with no server and no database.
//!
//! The format is JSON Lines, one record per line, each an object with a `kind` and the API's
//! own fields:
//!
//! ```text
//! {"kind":"run","trace_id":"…","agent_id":"…","timestamp":"2024-01-15T14:30:45Z","system_prompt":"…"}
//! {"kind":"event","trace_id":"…","event_type":"user","timestamp":1705329046.2,"content":"{…}","schema":"{…}"}
//! {"kind":"check","trace_id":"…","timestamp":1705329048.1,"content":"{…}","schema":"{…}",
//!  "expect":{"is_safe":false,"rule":"prompt.amount_limit"}}
//! ```
//!
//! `runwarden export` writes the same format from the database, with `project`, `event_id`,
//! `action_check_id`, the server's `received_at` and the stored `verdict` added and each check's `expect` set to its stored
//! verdict, so an exported run replays as a CI fixture as it is (replay ignores fields it does
//! not use).
//!
//! `trace_id` may be left out of events and checks: they then belong to the latest run of the
//! file. A check's `event_type` defaults to `action_check`. `expect` is optional; `is_safe`
//! and `rule` (a rule id that must be among the findings) may each be given alone. Blank lines
//! and lines starting with `//` are skipped.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::domain::event::{EventWire, FieldError, RunWire};
use crate::domain::ids::TraceId;
use crate::domain::schema::CompiledSchema;
use crate::engine::state::{RunState, trust_of};
use crate::engine::{Action, CheckContext, Engine, RunContext, Verdict};
use crate::error::MAX_DETAILS;
use crate::handlers::checks::UNNAMED_TOOL;
use crate::policy::{AgentPolicy, Policy};
use crate::store::{
    ImportedCheck, ImportedItem, ImportedRun, Page, Scope, Store, StoreError, StoredJson,
};

/// What a check record expects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The expected `is_safe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_safe: Option<bool>,
    /// A rule id that must be among the findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// The outcome of one check record.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// 1-based line number.
    pub line: usize,
    /// The tool's name.
    pub tool: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What was expected, if anything.
    pub expect: Option<Expect>,
    /// Why the expectation was not met; `None` when met or absent.
    pub unmet: Option<String>,
}

/// A line that could not be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

struct ReplayRun {
    run: RunContext,
    policy: AgentPolicy,
    state: RunState,
    next_seq: u64,
}

/// Replays records one line at a time.
pub struct Replayer<'p> {
    engine: Engine,
    policy: &'p Policy,
    runs: HashMap<TraceId, ReplayRun>,
    latest: Option<TraceId>,
}

fn field_error(e: FieldError) -> String {
    match e {
        FieldError::Missing(f) => format!("{f} is required"),
        FieldError::Invalid(_, m) | FieldError::InvalidSchema(m) => m,
    }
}

impl<'p> Replayer<'p> {
    /// A replayer with the built-in rules and `policy`.
    pub fn new(policy: &'p Policy) -> Self {
        Replayer {
            engine: Engine::default(),
            policy,
            runs: HashMap::new(),
            latest: None,
        }
    }

    /// Replays one line; `Ok(Some(outcome))` for a check.
    pub fn line(&mut self, line: usize, text: &str) -> Result<Option<CheckOutcome>, LineError> {
        let err = |message: String| LineError { line, message };
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with("//") {
            return Ok(None);
        }
        let mut record: Map<String, Value> =
            serde_json::from_str(trimmed).map_err(|e| err(format!("not a JSON object: {e}")))?;
        let kind = match record.remove("kind") {
            Some(Value::String(k)) => k,
            _ => {
                return Err(err(
                    "a record needs \"kind\": \"run\", \"event\" or \"check\"".into(),
                ));
            }
        };
        let now = OffsetDateTime::now_utc();
        match kind.as_str() {
            "run" => {
                let wire: RunWire = serde_json::from_value(Value::Object(record))
                    .map_err(|e| err(format!("bad run: {e}")))?;
                let run = wire.parse(now).map_err(|e| err(field_error(e)))?;
                if self.runs.contains_key(&run.trace_id) {
                    return Err(err(format!(
                        "trace_id {} is registered twice",
                        run.trace_id
                    )));
                }
                let context = RunContext {
                    agent_id: run.agent_id.as_ref().to_string(),
                    system_prompt: run.system_prompt.clone(),
                };
                self.runs.insert(
                    run.trace_id,
                    ReplayRun {
                        policy: self.policy.for_agent(&context.agent_id),
                        state: RunState::new(&context.system_prompt),
                        run: context,
                        next_seq: 1,
                    },
                );
                self.latest = Some(run.trace_id);
                Ok(None)
            }
            "event" | "check" => {
                let expect = match record.remove("expect") {
                    None => None,
                    Some(v) => Some(
                        serde_json::from_value::<Expect>(v)
                            .map_err(|e| err(format!("bad expect: {e}")))?,
                    ),
                };
                let trace_id = match record.get("trace_id") {
                    Some(_) => None,
                    None => Some(
                        self.latest
                            .ok_or_else(|| err("no run before this record".into()))?,
                    ),
                };
                if let Some(id) = trace_id {
                    record.insert("trace_id".into(), Value::String(id.to_string()));
                }
                if kind == "check" {
                    record
                        .entry("event_type")
                        .or_insert_with(|| Value::String("action_check".into()));
                }
                let text =
                    wire_text(&record, trimmed).map_err(|e| err(format!("bad {kind}: {e}")))?;
                let wire: EventWire =
                    serde_json::from_str(&text).map_err(|e| err(format!("bad {kind}: {e}")))?;
                if kind == "event" {
                    let event = wire.parse_event(now).map_err(|e| err(field_error(e)))?;
                    let schema = CompiledSchema::compile(&event.schema.value).map_err(err)?;
                    schema.affordable(&event.content.value).map_err(err)?;
                    let (violations, total) = schema.violations(&event.content.value, MAX_DETAILS);
                    if total > 0 {
                        let first = violations
                            .first()
                            .map(|v| format!("{}: {}", v.path, v.message));
                        return Err(err(format!(
                            "content does not match schema ({total} violations; first {})",
                            first.unwrap_or_default()
                        )));
                    }
                    let run = self.run(event.trace_id).map_err(err)?;
                    let seq = run.next_seq;
                    run.next_seq += 1;
                    let trust = trust_of(event.event_type, schema.tool_name(), &run.policy);
                    run.state
                        .on_event(seq, event.event_type, trust, &event.content.value);
                    if expect.is_some() {
                        return Err(err("only checks can carry \"expect\"".into()));
                    }
                    return Ok(None);
                }
                let check = wire.parse_check(now).map_err(|e| err(field_error(e)))?;
                let schema = CompiledSchema::compile(&check.schema.value).map_err(err)?;
                schema.affordable(&check.content.value).map_err(err)?;
                let tool = schema.tool_name().unwrap_or(UNNAMED_TOOL).to_string();
                let engine = &self.engine;
                let run = self
                    .runs
                    .get_mut(&check.trace_id)
                    .ok_or_else(|| err(format!("no run with trace_id {}", check.trace_id)))?;
                let verdict = engine.check(&CheckContext {
                    run: &run.run,
                    state: &run.state,
                    policy: &run.policy,
                    action: &Action {
                        tool_name: &tool,
                        arguments: &check.content.value,
                        arguments_text: &check.content.text,
                        schema: &schema,
                        schema_text: &check.schema.text,
                    },
                });
                run.next_seq += 1;
                run.state
                    .on_check(&tool, &check.content.value, verdict.consumed_approval);
                let unmet = expect.as_ref().and_then(|e| unmet(e, &verdict));
                Ok(Some(CheckOutcome {
                    line,
                    tool,
                    verdict,
                    expect,
                    unmet,
                }))
            }
            other => Err(err(format!(
                "unknown kind {other:?}; expected \"run\", \"event\" or \"check\""
            ))),
        }
    }

    /// How many sessions (valid `run` records) the lines so far held. `runwarden replay`
    /// fails a file with none: it checked nothing.
    pub fn sessions(&self) -> usize {
        self.runs.len()
    }

    fn run(&mut self, trace_id: TraceId) -> Result<&mut ReplayRun, String> {
        self.runs
            .get_mut(&trace_id)
            .ok_or_else(|| format!("no run with trace_id {trace_id}"))
    }
}

/// Why `verdict` does not meet `expect`, if it does not.
fn unmet(expect: &Expect, verdict: &Verdict) -> Option<String> {
    let mut why = Vec::new();
    if let Some(safe) = expect.is_safe
        && safe != verdict.is_safe
    {
        why.push(format!("expected is_safe {safe}, got {}", verdict.is_safe));
    }
    if let Some(rule) = &expect.rule
        && !verdict.findings.iter().any(|f| f.rule == rule)
    {
        let fired: Vec<&str> = verdict.findings.iter().map(|f| f.rule).collect();
        why.push(format!(
            "expected rule {rule} to fire, fired: {}",
            if fired.is_empty() {
                "none".to_string()
            } else {
                fired.join(", ")
            }
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// A run read from a replay-format file for `runwarden import`, or why it cannot be.
pub struct ImportCandidate {
    /// The line of its `run` record.
    pub line: usize,
    /// The run's id as written.
    pub trace_id: String,
    /// The run, or the first bad line of it (then nothing of it is imported).
    pub run: Result<ImportedRun, LineError>,
}

/// Reads a replay-format file into runs to import, keeping ids (`trace_id`, `event_id`,
/// `action_check_id`) and stored verdicts (`verdict`). A check without a stored verdict gets
/// the one the engine gives it now, with `policy`, exactly as `replay` would. Lines that do
/// not belong to any run are returned as errors of their own.
pub fn read_export(text: &str, policy: &Policy) -> (Vec<ImportCandidate>, Vec<LineError>) {
    let mut replayer = Replayer::new(policy);
    let mut runs: Vec<ImportCandidate> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut orphans = Vec::new();
    let now = OffsetDateTime::now_utc();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with("//") {
            continue;
        }
        let judged = replayer.line(line, raw);
        let record: Map<String, Value> = match serde_json::from_str(trimmed) {
            Ok(r) => r,
            Err(e) => {
                orphans.push(LineError {
                    line,
                    message: format!("not a JSON object: {e}"),
                });
                continue;
            }
        };
        let kind = record
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if kind == "run" {
            let trace_id = record
                .get("trace_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let project = record
                .get("project")
                .and_then(Value::as_str)
                .unwrap_or(crate::auth::OPEN_PROJECT)
                .to_string();
            let parsed =
                judged.and_then(|_| {
                    if trace_id.is_empty() {
                        return Err(LineError {
                            line,
                            message: "an imported run needs its trace_id".into(),
                        });
                    }
                    crate::auth::parse_project(&project)
                        .map_err(|message| LineError { line, message })?;
                    let wire: RunWire = serde_json::from_value(Value::Object(record.clone()))
                        .map_err(|e| LineError {
                            line,
                            message: format!("bad run: {e}"),
                        })?;
                    let received = received_at(&record, line)?.unwrap_or(now);
                    let run = wire.parse(received).map_err(|e| LineError {
                        line,
                        message: field_error(e),
                    })?;
                    Ok(ImportedRun {
                        project,
                        run,
                        items: Vec::new(),
                    })
                });
            index.insert(trace_id.clone(), runs.len());
            runs.push(ImportCandidate {
                line,
                trace_id,
                run: parsed,
            });
            continue;
        }
        // An event or a check: it belongs to its trace_id's run, or to the latest run.
        let owner = match record.get("trace_id").and_then(Value::as_str) {
            Some(t) => index.get(t).copied(),
            None => runs.len().checked_sub(1),
        };
        let Some(owner) = owner else {
            orphans.push(LineError {
                line,
                message: "no run in this file before this record".into(),
            });
            continue;
        };
        let candidate = &mut runs[owner];
        let Ok(run) = &mut candidate.run else {
            continue;
        };
        let item = judged
            .and_then(|outcome| import_item(line, trimmed, &record, &kind, run, outcome, now));
        match item {
            Ok(item) => run.items.push(item),
            Err(e) => candidate.run = Err(e),
        }
    }
    (runs, orphans)
}

/// The JSON text of an event or check record for the wire parser: the fields of `record`,
/// with `content` and `schema` exactly as they are written on `line`. Through a `Value` a
/// `content` sent as JSON would come back with its keys sorted, a repeated key dropped and its
/// numbers rewritten (`1.10` as `1.1`), so the engine would judge, and an import would store,
/// something other than what the server received.
fn wire_text(record: &Map<String, Value>, line: &str) -> Result<String, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct AsWritten<'a> {
        #[serde(borrow)]
        content: Option<&'a RawValue>,
        #[serde(borrow)]
        schema: Option<&'a RawValue>,
    }
    let written: AsWritten<'_> = serde_json::from_str(line.trim())?;
    let mut out = String::from("{");
    for (name, value) in record {
        let raw = match name.as_str() {
            "content" => written.content.map(RawValue::get),
            "schema" => written.schema.map(RawValue::get),
            _ => None,
        };
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&Value::String(name.clone()).to_string());
        out.push(':');
        match raw {
            Some(raw) => out.push_str(raw),
            None => out.push_str(&value.to_string()),
        }
    }
    out.push('}');
    Ok(out)
}

/// When the server first received a record, as an export writes it (`received_at`, RFC 3339),
/// so that an import keeps it; `None` when the line has none (a fixture written by hand).
fn received_at(
    record: &Map<String, Value>,
    line: usize,
) -> Result<Option<OffsetDateTime>, LineError> {
    let Some(v) = record.get("received_at") else {
        return Ok(None);
    };
    v.as_str()
        .and_then(|s| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
        // Stored times are written as UTC `YYYY-…`: a zone must not carry them past that.
        .filter(|t| {
            t.checked_to_offset(time::UtcOffset::UTC)
                .is_some_and(|u| (0..=9999).contains(&u.year()))
        })
        .map(Some)
        .ok_or_else(|| LineError {
            line,
            message: "received_at must be an RFC 3339 date-time in UTC years 0000 to 9999".into(),
        })
}

/// The event or check of one line, with its original id and (for checks) stored verdict.
fn import_item(
    line: usize,
    text: &str,
    record: &Map<String, Value>,
    kind: &str,
    run: &ImportedRun,
    outcome: Option<CheckOutcome>,
    now: OffsetDateTime,
) -> Result<ImportedItem, LineError> {
    let err = |message: String| LineError { line, message };
    let id_of = |field: &str| -> Result<Option<uuid::Uuid>, LineError> {
        match record.get(field).and_then(Value::as_str) {
            None => Ok(None),
            Some(s) => TraceId::parse(s)
                .map(|_| uuid::Uuid::try_parse(s).ok())
                .map_err(|_| err(format!("{field} must be a UUID"))),
        }
    };
    let mut record = record.clone();
    record.remove("kind");
    record
        .entry("trace_id")
        .or_insert_with(|| Value::String(run.run.trace_id.to_string()));
    if kind == "check" {
        record
            .entry("event_type")
            .or_insert_with(|| Value::String("action_check".into()));
    }
    let now = received_at(&record, line)?.unwrap_or(now);
    let text = wire_text(&record, text).map_err(|e| err(format!("bad {kind}: {e}")))?;
    let wire: EventWire =
        serde_json::from_str(&text).map_err(|e| err(format!("bad {kind}: {e}")))?;
    match kind {
        "event" => {
            let mut event = wire.parse_event(now).map_err(|e| err(field_error(e)))?;
            if let Some(id) = id_of("event_id")? {
                event.event_id = id;
            }
            Ok(ImportedItem::Event(event))
        }
        _ => {
            let mut check = wire.parse_check(now).map_err(|e| err(field_error(e)))?;
            if let Some(id) = id_of("action_check_id")? {
                check.check_id = id;
            }
            let outcome = outcome.ok_or_else(|| err("not a check".into()))?;
            let stored = record.get("verdict");
            let (is_safe, reasoning, findings) = match stored {
                Some(v) => (
                    v.get("is_safe")
                        .and_then(Value::as_bool)
                        .ok_or_else(|| err("verdict.is_safe must be true or false".into()))?,
                    v.get("reasoning")
                        .and_then(Value::as_str)
                        .filter(|r| !r.is_empty())
                        .ok_or_else(|| err("verdict.reasoning must be a non-empty string".into()))?
                        .to_string(),
                    v.get("findings")
                        .filter(|f| f.is_array())
                        .ok_or_else(|| err("verdict.findings must be an array".into()))?
                        .to_string(),
                ),
                None => (
                    outcome.verdict.is_safe,
                    outcome.verdict.reasoning.clone(),
                    serde_json::to_string(&outcome.verdict.findings)
                        .map_err(|e| err(e.to_string()))?,
                ),
            };
            Ok(ImportedItem::Check(ImportedCheck {
                check,
                tool_name: outcome.tool,
                is_safe,
                reasoning,
                findings,
                consumed_approval: outcome.verdict.consumed_approval,
            }))
        }
    }
}

/// The lines of the replay format for one stored run: the run, then its events and checks in
/// arrival order, each check expecting its stored verdict.
pub fn export_run(store: &dyn Store, trace_id: TraceId) -> Result<Vec<String>, StoreError> {
    let all = Page {
        after: None,
        offset: 0,
        limit: u32::MAX,
        max_bytes: u64::MAX,
    };
    let run = store.get_run(Scope::All, trace_id)?;
    let events = store.list_events(Scope::All, trace_id, None, all)?;
    let checks = store.list_checks(Scope::All, Some(trace_id), None, all)?;
    let mut lines = Vec::with_capacity(1 + events.len() + checks.len());
    lines.push(line(&RunLine {
        kind: "run",
        trace_id: &run.trace_id,
        project: &run.project,
        agent_id: &run.agent_id,
        timestamp: &run.started_at,
        received_at: run.received_at.clone(),
        system_prompt: &run.system_prompt,
    })?);
    let mut items: Vec<(i64, String)> = Vec::new();
    for e in events {
        items.push((
            e.seq,
            line(&EventLine {
                kind: "event",
                trace_id: &e.trace_id,
                event_id: &e.event_id,
                event_type: &e.event_type,
                timestamp: e.occurred_at,
                received_at: millis_utc(e.received_at_ms),
                content: as_sent(&e.content)?,
                schema: as_sent(&e.schema)?,
            })?,
        ));
    }
    for c in checks {
        let findings: Vec<Value> = serde_json::from_str(&c.findings).unwrap_or_default();
        let deciding = findings
            .iter()
            .find(|f| f["severity"] == "block")
            .and_then(|f| f["rule"].as_str())
            .map(str::to_string);
        items.push((
            c.seq,
            line(&CheckLine {
                kind: "check",
                trace_id: &c.trace_id,
                action_check_id: &c.check_id,
                event_type: "action_check",
                timestamp: c.occurred_at,
                received_at: millis_utc(c.received_at_ms),
                content: as_sent(&c.content)?,
                schema: as_sent(&c.schema)?,
                expect: Expect {
                    is_safe: Some(c.is_safe),
                    rule: if c.is_safe { None } else { deciding },
                },
                verdict: StoredVerdict {
                    is_safe: c.is_safe,
                    reasoning: &c.reasoning,
                    findings: &findings,
                },
            })?,
        ));
    }
    items.sort_by_key(|(seq, _)| *seq);
    lines.extend(items.into_iter().map(|(_, l)| l));
    Ok(lines)
}

/// Unix milliseconds as the API writes server times (`YYYY-MM-DDTHH:mm:ss.sssZ`).
fn millis_utc(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    crate::domain::time::format_millis_utc(t)
}

/// A stored JSON field as it was sent: a JSON string, or the JSON itself.
fn as_sent(j: &StoredJson) -> Result<Box<RawValue>, StoreError> {
    let text = if j.form == "json" {
        j.text.clone()
    } else {
        Value::String(j.text.clone()).to_string()
    };
    RawValue::from_string(text)
        .map_err(|e| StoreError::Other(format!("stored JSON is not JSON: {e}")))
}

#[derive(Serialize)]
struct RunLine<'a> {
    kind: &'static str,
    trace_id: &'a str,
    project: &'a str,
    agent_id: &'a str,
    timestamp: &'a str,
    received_at: String,
    system_prompt: &'a str,
}

#[derive(Serialize)]
struct EventLine<'a> {
    kind: &'static str,
    trace_id: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    timestamp: f64,
    received_at: String,
    content: Box<RawValue>,
    schema: Box<RawValue>,
}

#[derive(Serialize)]
struct CheckLine<'a> {
    kind: &'static str,
    trace_id: &'a str,
    action_check_id: &'a str,
    event_type: &'static str,
    timestamp: f64,
    received_at: String,
    content: Box<RawValue>,
    schema: Box<RawValue>,
    expect: Expect,
    verdict: StoredVerdict<'a>,
}

#[derive(Serialize)]
struct StoredVerdict<'a> {
    is_safe: bool,
    reasoning: &'a str,
    findings: &'a [Value],
}

/// One line of the format.
fn line<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Other(format!("cannot export: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{\"type\":\"function\",\"name\":\"pay\",\"parameters\":{\"type\":\"object\",\"properties\":{\"amount\":{\"type\":\"number\"}},\"required\":[\"amount\"]}}"#;

    fn replay(lines: &[String]) -> Vec<Result<Option<CheckOutcome>, LineError>> {
        let policy = Policy::default();
        let mut r = Replayer::new(&policy);
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| r.line(i + 1, l))
            .collect()
    }

    fn run_line() -> String {
        r#"{"kind":"run","agent_id":"a","timestamp":"2024-01-15T14:30:45Z","system_prompt":"p"}"#
            .to_string()
    }

    fn check_line(args: &str, expect: &str) -> String {
        format!(
            r#"{{"kind":"check","timestamp":1,"content":"{args}","schema":"{SCHEMA}"{expect}}}"#
        )
    }

    #[test]
    fn checks_are_judged_and_expectations_compared() {
        let out = replay(&[
            run_line(),
            check_line(r#"{\"amount\":5}"#, r#","expect":{"is_safe":true}"#),
            check_line(
                r#"{\"amount\":\"x\"}"#,
                r#","expect":{"is_safe":false,"rule":"schema.mismatch"}"#,
            ),
            check_line(r#"{\"amount\":5}"#, r#","expect":{"is_safe":false}"#),
        ]);
        let unmet: Vec<Option<String>> = out
            .iter()
            .filter_map(|r| r.as_ref().expect("replayable").as_ref())
            .map(|o| o.unmet.clone())
            .collect();
        assert_eq!(unmet.len(), 3);
        assert!(unmet[0].is_none() && unmet[1].is_none(), "{unmet:?}");
        assert!(
            unmet[2]
                .as_deref()
                .is_some_and(|u| u.contains("expected is_safe false")),
            "{unmet:?}"
        );
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let out = replay(&[
            check_line(r#"{}"#, ""),
            run_line(),
            "{\"kind\":\"dance\"}".into(),
            "not json".into(),
            r#"{"kind":"event","event_type":"user","timestamp":1,"content":"{\"a\":1}","schema":"{\"required\":[\"b\"]}"}"#.into(),
        ]);
        let lines: Vec<usize> = out
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|e| e.line)
            .collect();
        assert_eq!(lines, [1, 3, 4, 5]);
    }

    #[test]
    fn blank_and_comment_lines_are_skipped() {
        let out = replay(&["".into(), "// a comment".into(), run_line()]);
        assert!(out.iter().all(|r| matches!(r, Ok(None))));
    }

    #[test]
    fn sessions_count_the_valid_run_records() {
        let policy = Policy::default();
        let mut r = Replayer::new(&policy);
        assert_eq!(r.sessions(), 0);
        let _ = r.line(1, "// only a comment");
        let _ = r.line(2, r#"{"kind":"run"}"#);
        assert_eq!(r.sessions(), 0, "an invalid run is no session");
        let _ = r.line(3, &run_line());
        assert_eq!(r.sessions(), 1);
    }

    #[test]
    fn content_sent_as_json_is_judged_and_imported_exactly_as_written() {
        let bash = r#"{"type":"function","name":"bash"}"#;
        let check = format!(
            r#"{{"kind":"check","timestamp":1,"content":{{"command":"rm -rf /","command":"ls"}},"schema":{bash},"expect":{{"is_safe":false,"rule":"json.duplicate_key"}}}}"#
        );
        let out = replay(&[run_line(), check.clone()]);
        let judged = out[1]
            .as_ref()
            .expect("replayable")
            .as_ref()
            .expect("a check");
        assert!(!judged.verdict.is_safe, "{:?}", judged.verdict);
        assert_eq!(judged.unmet, None);

        let content = r#"{"b": 1.10, "a": 1E2, "a": 100000000000000000000001}"#;
        let text = format!(
            "{}\n{}\n",
            r#"{"kind":"run","trace_id":"563e8bd2-59bc-47d9-9df2-abd5981c6c57","agent_id":"a","timestamp":"2024-01-15T14:30:45Z","system_prompt":"p"}"#,
            format_args!(
                r#"{{"kind":"event","event_type":"tool","timestamp":1,"content":{content},"schema":{{"type":"object"}}}}"#
            )
        );
        let (runs, orphans) = read_export(&text, &Policy::default());
        assert!(orphans.is_empty(), "{orphans:?}");
        let run = runs[0].run.as_ref().expect("a valid run");
        match &run.items[0] {
            ImportedItem::Event(e) => {
                assert_eq!(e.content.text, content);
                assert_eq!(e.schema.text, r#"{"type":"object"}"#);
            }
            ImportedItem::Check(_) => panic!("an event was expected"),
        }
    }

    #[test]
    fn an_import_keeps_the_receipt_times_an_export_wrote() {
        let text = format!(
            "{}\n{}\n{}\n",
            r#"{"kind":"run","trace_id":"563e8bd2-59bc-47d9-9df2-abd5981c6c57","agent_id":"a","timestamp":"2024-01-15T14:30:45Z","received_at":"2025-02-03T04:05:06.789Z","system_prompt":"p"}"#,
            r#"{"kind":"event","event_type":"user","timestamp":1,"received_at":"2025-02-03T04:05:07.000Z","content":"{}","schema":"{}"}"#,
            r#"{"kind":"event","event_type":"user","timestamp":1,"received_at":"yesterday","content":"{}","schema":"{}"}"#,
        );
        let (runs, orphans) = read_export(&text, &Policy::default());
        assert!(orphans.is_empty());
        let err = runs[0]
            .run
            .as_ref()
            .err()
            .map(|e| (e.line, e.message.clone()));
        assert_eq!(
            err,
            Some((
                3,
                "received_at must be an RFC 3339 date-time in UTC years 0000 to 9999".to_string()
            ))
        );
        let (runs, _) = read_export(
            &text.lines().take(2).collect::<Vec<_>>().join("\n"),
            &Policy::default(),
        );
        let run = runs[0].run.as_ref().expect("a valid run");
        assert_eq!(
            crate::domain::time::format_millis_utc(run.run.received_at),
            "2025-02-03T04:05:06.789Z"
        );
        match &run.items[0] {
            ImportedItem::Event(e) => assert_eq!(
                crate::domain::time::format_millis_utc(e.received_at),
                "2025-02-03T04:05:07.000Z"
            ),
            ImportedItem::Check(_) => panic!("an event was expected"),
        }
    }
}
