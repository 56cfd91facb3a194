//! The command line: `runwarden serve` (and `--help`). One function per subcommand; each
//! returns a `Result` and `main` turns an error into one line and exit code 1. Usage errors are
//! clap's (exit code 2), also those that depend on two flags or on where a value came from
//! (`DbArg`, `KeySpec`: they check their flags while clap parses).
//!
//! Everything printed that did not come from runwarden itself (agent ids, prompts, content,
//! reasoning, key labels, lines of a file) goes through [`escape_for_terminal`], and so does
//! every error line (see [`run`]), so a hostile agent cannot drive or rearrange the terminal.

use std::borrow::Cow;
use std::error::Error;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::{BoolishValueParser, PossibleValue};
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{
    ArgGroup, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum,
};

use crate::auth::{ApiKey, KeyType, generate_key, parse_project};
use crate::config::{Database, ServeConfig, default_threads, vars};
use crate::domain::ids::TraceId;
use crate::policy::Policy;
use crate::replay::{Replayer, export_run, read_export};
use crate::server::{Server, load_policy};
use crate::store::ImportOutcome;
use crate::store::Store;
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{Page, Scope};

/// runwarden: a self-hosted security service for AI agents. Register each run, log every step,
/// and check actions before they execute, on one SQLite file.
#[derive(Debug, Parser)]
#[command(name = "runwarden", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API server (POST /v1/register-agent-run, /v1/event, /v1/check; GET /v1/runs,
    /// /v1/runs/{trace_id}, /v1/events, /v1/checks, /healthz, /metrics, /openapi.json, and the
    /// web UI at /).
    Serve(ServeArgs),
    /// Create, list and revoke API keys (works while the server runs).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Validate policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Look at runs in the terminal.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Load runs from a replay-format file (an export), keeping their ids and stored verdicts.
    /// Runs already present are left alone; a run whose trace id exists with different data is
    /// reported and skipped, never overwritten. Exits 1 if any line is invalid or any run
    /// conflicts.
    Import {
        /// The file to load.
        file: PathBuf,
        /// Policy for checks that carry no stored verdict (built-in default otherwise).
        #[arg(long, env = vars::POLICY, value_name = "FILE")]
        policy: Option<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
    /// Write runs in the replay format (one JSON record per line), each check expecting its
    /// stored verdict: an exported run is a CI fixture for `runwarden replay`. Say which runs
    /// with exactly one of --trace-id, --agent-id and --all.
    #[command(group(ArgGroup::new("runs").required(true).args(["trace_ids", "agent_id", "all"])))]
    Export {
        /// Runs to export (repeatable; each run is written once, in the order first named).
        #[arg(long = "trace-id", value_name = "TRACE_ID")]
        trace_ids: Vec<String>,
        /// Every run of this agent.
        #[arg(long)]
        agent_id: Option<String>,
        /// Every run.
        #[arg(long)]
        all: bool,
        /// Write to this file instead of stdout (never the database or its -wal, -shm or
        /// -journal file).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
    /// Copy the SQLite database to OUT while the server runs (SQLite's online backup API): one
    /// consistent snapshot, checked with PRAGMA integrity_check before it is moved into place.
    /// SQLite only; back up a PostgreSQL database with pg_dump.
    Backup {
        /// Where to write the copy; an existing file is replaced only with --force.
        out: PathBuf,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Replay a recorded session (JSON Lines) through the engine, offline, and print each
    /// check's verdict; exits 1 when a line is invalid, an `expect` is not met, or the file
    /// holds no session (no valid "run" record).
    Replay {
        /// The session file (replay format; see the README).
        file: PathBuf,
        /// Policy file; without one the built-in default policy applies.
        #[arg(long, env = vars::POLICY, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// One JSON object per check instead of text (line, tool, is_safe, rules, expect,
        /// unmet, micros), for measuring a corpus.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// Runs, newest first.
    List {
        /// Only this agent's runs.
        #[arg(long)]
        agent_id: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        #[command(flatten)]
        db: DbArg,
    },
    /// One run as a timeline: events and checks in order, blocked checks standing out.
    Show {
        /// The run's trace id.
        trace_id: String,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a policy file; errors name their line.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it once (stdout); only its hash is stored.
    Create {
        /// The project whose runs the key reaches.
        #[arg(long)]
        project: String,
        #[command(flatten)]
        spec: KeySpec,
        /// A label to recognise the key by.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        db: DbArg,
    },
    /// List every key (never a secret).
    List {
        #[command(flatten)]
        db: DbArg,
    },
    /// Revoke a key by id; a running server refuses it from its next request on.
    Revoke {
        /// The key's id (key_…), as `keys list` shows it.
        id: String,
        #[command(flatten)]
        db: DbArg,
    },
}

/// A usage error (exit code 2) formatted as clap formats its own, with the usage line of the
/// subcommand at `path` (e.g. `["keys", "create"]`).
fn usage_error(path: &[&str], kind: ErrorKind, message: &str) -> clap::Error {
    fn within(
        cmd: &mut clap::Command,
        path: &[&str],
        kind: ErrorKind,
        message: &str,
    ) -> clap::Error {
        match path.split_first() {
            Some((name, rest)) => match cmd.find_subcommand_mut(name) {
                Some(sub) => within(sub, rest, kind, message),
                None => cmd.error(kind, message),
            },
            None => cmd.error(kind, message),
        }
    }
    let mut cmd = Cli::command();
    cmd.build();
    within(&mut cmd, path, kind, message)
}

/// The database of a command: `--db` or `--database-url`, each also read from the
/// environment. Where each value came from decides (see [`DbArg::resolve`]), which clap's
/// `conflicts_with` cannot see, so the flags are parsed by [`DbFlags`] and checked here.
#[derive(Debug)]
struct DbArg {
    database: Database,
}

#[derive(Debug, Args)]
struct DbFlags {
    /// SQLite database file. `serve`, `keys create` and `import` create it with its tables;
    /// the other commands refuse a file that does not exist. A PostgreSQL URL
    /// (--database-url or RUNWARDEN_DATABASE_URL) takes precedence over RUNWARDEN_DB and the
    /// default; --db on the command line together with a URL is an error.
    #[arg(long, env = vars::DB, default_value = "runwarden.db", value_name = "FILE")]
    db: PathBuf,

    /// PostgreSQL database instead of the SQLite file, as postgres://USER:PASSWORD@HOST:PORT/DB
    /// (the database must exist; its tables are created on first start). Takes precedence
    /// over RUNWARDEN_DB; together with --db on the command line it is an error.
    #[arg(long, env = vars::DATABASE_URL, value_name = "URL")]
    database_url: Option<String>,
}

impl DbArg {
    /// The rule: a URL (flag or variable) wins over a `--db` that comes only from
    /// RUNWARDEN_DB or the default; `--db` typed on the command line never loses silently, so
    /// together with a URL it is a usage error that names where the URL came from. An empty
    /// RUNWARDEN_DATABASE_URL (`RUNWARDEN_DATABASE_URL=` in an env file) counts as unset.
    fn resolve(
        db: PathBuf,
        db_from: Option<ValueSource>,
        url: Option<String>,
        url_from: Option<ValueSource>,
    ) -> Result<Database, clap::Error> {
        let unset = url_from == Some(ValueSource::EnvVariable)
            && url.as_deref().is_some_and(|u| u.trim().is_empty());
        let Some(url) = url.filter(|_| !unset) else {
            return Ok(Database::Sqlite(db));
        };
        if db_from != Some(ValueSource::CommandLine) {
            return Ok(Database::Postgres(url));
        }
        let message = if url_from == Some(ValueSource::CommandLine) {
            "the argument '--db <FILE>' cannot be used with '--database-url <URL>'".to_string()
        } else {
            format!(
                "the argument '--db <FILE>' cannot be used while {} is set in the environment: \
                 drop --db, or unset {}",
                vars::DATABASE_URL,
                vars::DATABASE_URL
            )
        };
        Err(clap::Error::raw(ErrorKind::ArgumentConflict, message))
    }

    /// The database as given: `serve`, `keys create` and `import` create it if it does not
    /// exist, `backup` refuses a missing one itself.
    fn database(&self) -> Database {
        self.database.clone()
    }

    /// The database, which must exist already: a mistyped `--db` must not create an empty
    /// database and answer from it as if it were the real one.
    fn existing(&self) -> Result<Database, String> {
        if let Database::Sqlite(path) = &self.database
            && matches!(path.try_exists(), Ok(false))
        {
            let shown = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            return Err(format!(
                "no database at {} (check --db or {}); `runwarden serve` or `runwarden keys \
                 create` creates it",
                shown.display(),
                vars::DB
            ));
        }
        Ok(self.database.clone())
    }
}

impl Args for DbArg {
    fn group_id() -> Option<clap::Id> {
        DbFlags::group_id()
    }
    fn augment_args(cmd: clap::Command) -> clap::Command {
        DbFlags::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        DbFlags::augment_args_for_update(cmd)
    }
}

impl FromArgMatches for DbArg {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = DbFlags::from_arg_matches(matches)?;
        let database = DbArg::resolve(
            flags.db,
            matches.value_source("db"),
            flags.database_url,
            matches.value_source("database_url"),
        )?;
        Ok(DbArg { database })
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = DbArg::from_arg_matches(matches)?;
        Ok(())
    }
}

impl ValueEnum for KeyType {
    fn value_variants<'a>() -> &'a [Self] {
        &KeyType::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            KeyType::Development => "every /v1 route of its project; 60/min, 1,000/h",
            KeyType::Production => "every /v1 route of its project; 600/min, 10,000/h",
            KeyType::Restricted => "only event and check; limits as production",
            KeyType::Admin => "cross-project reads; no limits (no --rpm or --rph)",
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

/// The type and limits of a new key, checked together: admin keys have no limits.
#[derive(Debug)]
struct KeySpec {
    key_type: KeyType,
    rpm: Option<u32>,
    rph: Option<u32>,
}

#[derive(Debug, Args)]
struct KeySpecFlags {
    /// What the key may do, and its default limits.
    #[arg(long = "type", value_name = "TYPE")]
    key_type: KeyType,
    /// Requests per minute, instead of the type's default (not for admin keys).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rpm: Option<u32>,
    /// Requests per hour, instead of the type's default (not for admin keys).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rph: Option<u32>,
}

impl Args for KeySpec {
    fn group_id() -> Option<clap::Id> {
        KeySpecFlags::group_id()
    }
    fn augment_args(cmd: clap::Command) -> clap::Command {
        KeySpecFlags::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        KeySpecFlags::augment_args_for_update(cmd)
    }
}

impl FromArgMatches for KeySpec {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let f = KeySpecFlags::from_arg_matches(matches)?;
        if !f.key_type.may_be_limited() && (f.rpm.is_some() || f.rph.is_some()) {
            return Err(usage_error(
                &["keys", "create"],
                ErrorKind::ArgumentConflict,
                "admin keys have no limits: --rpm and --rph apply to development, production \
                 and restricted keys",
            ));
        }
        Ok(KeySpec {
            key_type: f.key_type,
            rpm: f.rpm,
            rph: f.rph,
        })
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = KeySpec::from_arg_matches(matches)?;
        Ok(())
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// IP address and port to listen on; port 0 picks a free port.
    #[arg(long, env = vars::ADDR, default_value = "127.0.0.1:8787", value_name = "IP:PORT")]
    addr: SocketAddr,

    #[command(flatten)]
    db: DbArg,

    /// Request worker threads [default: 8 per CPU core, between 8 and 64].
    #[arg(long, env = vars::THREADS, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,

    /// Largest accepted request body in bytes; larger bodies get 413.
    #[arg(long, env = vars::MAX_BODY_BYTES, default_value_t = 1_048_576, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_body_bytes: u64,

    /// Milliseconds a write waits for a database lock before 503: a lock held by another
    /// process (SQLite's busy timeout) or by another transaction (PostgreSQL's lock_timeout).
    #[arg(long, env = vars::BUSY_TIMEOUT_MS, default_value_t = 5000, value_name = "MS")]
    busy_timeout_ms: u64,

    /// Most writes committed in one transaction (group commit); 1 = one transaction per write.
    #[arg(long, env = vars::WRITE_BATCH, default_value_t = 64, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    write_batch: u16,

    /// Serve without API keys (while none exists) on a non-loopback address too. From the
    /// environment: 1/0, true/false, yes/no, on/off.
    #[arg(long, env = vars::ALLOW_OPEN, value_parser = BoolishValueParser::new())]
    allow_open: bool,

    /// Seconds an Idempotency-Key's answer is remembered for retries.
    #[arg(long, env = vars::IDEMPOTENCY_TTL_SECS, default_value_t = 86_400, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    idempotency_ttl_secs: u64,

    /// Policy file (TOML); without one the built-in default policy applies.
    #[arg(long, env = vars::POLICY, value_name = "FILE")]
    policy: Option<PathBuf>,

    /// Seconds a client may take to send a request head (after connecting or after its
    /// previous response: idle keep-alive connections close after it), to send a body (plus
    /// a second per 64 KiB) and to take a response (plus a second per 64 KiB taken).
    #[arg(long, env = vars::CLIENT_TIMEOUT_SECS, default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    client_timeout_secs: u64,

    /// Most client connections kept open; above it, connections without a request in progress
    /// are closed, idle ones first.
    #[arg(long, env = vars::MAX_CONNECTIONS, default_value_t = 1024, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
}

/// Runs the parsed command line. An error comes back as one line of text, escaped like all
/// other output (a closed pipe stays an `io::Error`, which `main` treats as success).
pub fn run(cli: Cli) -> Result<(), Box<dyn Error>> {
    dispatch(cli).map_err(|e| {
        let broken_pipe = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        if broken_pipe {
            e
        } else {
            escape_for_terminal(&e.to_string()).into_owned().into()
        }
    })
}

fn dispatch(cli: Cli) -> Result<(), Box<dyn Error>> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Keys(cmd) => keys(cmd),
        Command::Policy(PolicyCommand::Check { file }) => {
            let policy = load_policy(&file)?;
            println!(
                "{}: ok ({})",
                escape_for_terminal(&file.display().to_string()),
                count(policy.sections() as u64, "section", "sections")
            );
            Ok(())
        }
        Command::Backup { out, force, db } => backup(&out, force, &db),
        Command::Replay { file, policy, json } => replay(&file, policy.as_deref(), json),
        Command::Import { file, policy, db } => import(&file, policy.as_deref(), &db),
        Command::Runs(RunsCommand::List {
            agent_id,
            limit,
            db,
        }) => runs_list(agent_id.as_deref(), limit, &db),
        Command::Runs(RunsCommand::Show { trace_id, db }) => runs_show(&trace_id, &db),
        Command::Export {
            trace_ids,
            agent_id,
            all: _,
            output,
            db,
        } => export(&trace_ids, agent_id.as_deref(), output.as_deref(), &db),
    }
}

/// Text that did not come from runwarden, made safe for a terminal: control characters
/// (escape sequences, newlines, carriage returns) are written as `\n`, `\u{1b}`, …, and so are
/// the invisible format characters that reorder or hide text without showing themselves: the
/// bidi embeddings, overrides, isolates and marks (U+061C, U+200E, U+200F, U+202A–U+202E,
/// U+2066–U+2069), zero-width characters (U+200B–U+200D, U+2060–U+2064, U+FEFF), the line
/// and paragraph separators (U+2028, U+2029) and the tag characters (U+E0000–U+E007F). Quotes
/// and backslashes are left as they are. Every line the CLI prints goes through here.
pub fn escape_for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// Whether [`escape_for_terminal`] escapes `c`.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{E0000}'..='\u{E007F}')
}

/// Appends `c`, escaped if it must be.
fn push_escaped(out: &mut String, c: char) {
    if !needs_escape(c) {
        out.push(c);
    } else if c.is_control() {
        out.extend(c.escape_debug());
    } else {
        out.extend(c.escape_unicode());
    }
}

/// A line of JSON made safe for a terminal in the same way, without breaking the JSON: the
/// characters [`escape_for_terminal`] escapes (which can only occur inside strings) are
/// written as JSON `\uXXXX` escapes instead, so the value read back is the same.
fn json_for_terminal(json: &str) -> Cow<'_, str> {
    if !json.chars().any(needs_escape) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if needs_escape(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Agent-supplied text for one terminal line: escaped (see [`escape_for_terminal`]), at most
/// `max` characters; a longer text is cut between two characters (never inside an escape)
/// and ends in `…`.
fn one_line(text: &str, max: usize) -> String {
    let escaped = escape_for_terminal(text);
    if escaped.chars().count() <= max {
        return escaped.into_owned();
    }
    let (mut cut, mut shown) = (String::new(), 0);
    for c in text.chars() {
        let mut piece = String::new();
        push_escaped(&mut piece, c);
        let len = piece.chars().count();
        if shown + len > max.saturating_sub(1) {
            break;
        }
        cut.push_str(&piece);
        shown += len;
    }
    cut.push('…');
    cut
}

/// `n` and the noun that goes with it: "1 run", "2 runs", "0 runs".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn runs_list(agent_id: Option<&str>, limit: u32, db: &DbArg) -> Result<(), Box<dyn Error>> {
    let store = open_store(db.existing()?)?;
    let page = Page {
        after: None,
        offset: 0,
        limit,
        max_bytes: u64::MAX,
    };
    let runs = store.list_runs(Scope::All, agent_id, page)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<36}  {:<24}  {:<20}  {:>6}  {:>6}  {:>7}  PROJECT",
        "TRACE ID", "RECEIVED", "AGENT", "EVENTS", "CHECKS", "BLOCKED"
    )?;
    for r in runs {
        writeln!(
            out,
            "{:<36}  {:<24}  {:<20}  {:>6}  {:>6}  {:>7}  {}",
            escape_for_terminal(&r.trace_id),
            escape_for_terminal(&r.received_at),
            one_line(&r.agent_id, 20),
            r.event_count,
            r.check_count,
            r.blocked_check_count,
            one_line(&r.project, 30)
        )?;
    }
    Ok(())
}

fn runs_show(trace_id: &str, db: &DbArg) -> Result<(), Box<dyn Error>> {
    use std::io::IsTerminal;
    let id = TraceId::parse(trace_id)?;
    let store = open_store(db.existing()?)?;
    let run = store.get_run(Scope::All, id).map_err(|e| match e {
        crate::store::StoreError::NotFound => format!("no run with trace_id {id}"),
        other => other.to_string(),
    })?;
    let all = Page {
        after: None,
        offset: 0,
        limit: u32::MAX,
        max_bytes: u64::MAX,
    };
    let events = store.list_events(Scope::All, id, None, all)?;
    let checks = store.list_checks(Scope::All, Some(id), None, all)?;
    // Blocked checks stand out on a terminal; piped output stays plain text.
    let (red, green, dim, reset) = if std::io::stdout().is_terminal() {
        ("\x1b[1;31m", "\x1b[32m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    let time = |secs: f64| {
        time::OffsetDateTime::from_unix_timestamp_nanos((secs * 1e9) as i128)
            .map(crate::domain::time::format_millis_utc)
            .unwrap_or_else(|_| format!("{secs}"))
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "run {}  agent {}  project {}",
        escape_for_terminal(&run.trace_id),
        one_line(&run.agent_id, 80),
        one_line(&run.project, 64)
    )?;
    writeln!(
        out,
        "started {}  received {}",
        one_line(&run.started_at, 40),
        escape_for_terminal(&run.received_at)
    )?;
    writeln!(
        out,
        "{}, {}, {} blocked",
        count(run.event_count, "event", "events"),
        count(run.check_count, "check", "checks"),
        run.blocked_check_count
    )?;
    writeln!(out, "system prompt: {}", one_line(&run.system_prompt, 300))?;
    let mut lines: Vec<(i64, String)> = Vec::new();
    for e in events {
        lines.push((
            e.seq,
            format!(
                "{:>5}  {}  {:<14} {dim}{}{reset}",
                e.seq,
                time(e.occurred_at),
                escape_for_terminal(&e.event_type),
                one_line(&e.content.text, 100)
            ),
        ));
    }
    for c in checks {
        let (mark, paint) = if c.is_safe {
            ("pass ", green)
        } else {
            ("BLOCK", red)
        };
        // The whole reasoning, then each finding: its rule, severity and message.
        let mut text = format!(
            "{:>5}  {}  check {paint}{mark}{reset}  {} {dim}{}{reset}\n       {}",
            c.seq,
            time(c.occurred_at),
            one_line(&c.tool_name, 40),
            one_line(&c.content.text, 80),
            escape_for_terminal(&c.reasoning)
        );
        match serde_json::from_str::<Vec<serde_json::Value>>(&c.findings) {
            Ok(findings) => {
                for f in findings {
                    let field = |name: &str| {
                        let shown = match &f[name] {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Null => "?".to_string(),
                            other => other.to_string(),
                        };
                        escape_for_terminal(&shown).into_owned()
                    };
                    let severity = field("severity");
                    let paint = if severity == "block" { red } else { "" };
                    text.push_str(&format!(
                        "\n       - {paint}{severity}{reset} {}: {}",
                        field("rule"),
                        field("message")
                    ));
                }
            }
            Err(_) => text.push_str("\n       - (findings unreadable)"),
        }
        lines.push((c.seq, text));
    }
    lines.sort_by_key(|(seq, _)| *seq);
    for (_, l) in lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

fn import(file: &Path, policy: Option<&Path>, db: &DbArg) -> Result<(), Box<dyn Error>> {
    let policy = policy.map_or_else(|| Ok(Policy::default()), load_policy)?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (runs, orphans) = read_export(&text, &policy);
    let store = open_store(db.database())?;
    // A progress bar on a terminal (indicatif draws nothing when stderr is not one).
    let bar = indicatif::ProgressBar::new(runs.len() as u64);
    if runs.len() < 20 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut inserted, mut present, mut items) = (0u64, 0u64, 0u64);
    let mut problems: Vec<String> = orphans.iter().map(|e| e.to_string()).collect();
    for candidate in runs {
        bar.inc(1);
        match candidate.run {
            Err(e) => problems.push(format!("{e}; run {} skipped", candidate.trace_id)),
            Ok(run) => {
                let n = run.items.len() as u64;
                match store.import_run(run)? {
                    ImportOutcome::Inserted => {
                        inserted += 1;
                        items += n;
                    }
                    ImportOutcome::AlreadyPresent => present += 1,
                    ImportOutcome::Conflict => problems.push(format!(
                        "line {}: run {} exists with different data; skipped, not overwritten",
                        candidate.line, candidate.trace_id
                    )),
                }
            }
        }
    }
    bar.finish_and_clear();
    for p in &problems {
        eprintln!("{}", escape_for_terminal(p));
    }
    let mut summary = format!(
        "imported {} ({})",
        count(inserted, "run", "runs"),
        count(items, "event or check", "events and checks")
    );
    if present > 0 {
        summary.push_str(&format!("; {present} already present, unchanged"));
    }
    if inserted == 0 && problems.is_empty() {
        summary.push_str("; nothing changed");
    }
    println!("{summary}");
    if !problems.is_empty() {
        return Err(format!(
            "{}: {} (listed above)",
            file.display(),
            count(problems.len() as u64, "problem", "problems")
        )
        .into());
    }
    Ok(())
}

/// Refuses an output file that is the database or one of its companions (`-wal`, `-shm`,
/// `-journal`), before anything is created or truncated. `doing` says what the command does
/// with the database ("exported", "backed up").
fn refuse_database_as_output(db: &Database, out: &Path, doing: &str) -> Result<(), String> {
    match db.file_named(out) {
        None => Ok(()),
        Some("") => Err(format!(
            "{} is the database being {doing}; choose another file",
            out.display()
        )),
        Some(companion) => Err(format!(
            "{} is the {companion} file of the database being {doing}; choose another file",
            out.display()
        )),
    }
}

fn export(
    trace_ids: &[String],
    agent_id: Option<&str>,
    output: Option<&Path>,
    db: &DbArg,
) -> Result<(), Box<dyn Error>> {
    // Before anything is opened: `-o` must never truncate the database it reads.
    if let Some(path) = output {
        refuse_database_as_output(&db.database, path, "exported")?;
    }
    let store = open_store(db.existing()?)?;
    let ids: Vec<TraceId> = if trace_ids.is_empty() {
        // Every matching run, oldest first.
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = Page {
                after,
                offset: 0,
                limit: 1000,
                max_bytes: u64::MAX,
            };
            let runs = store.list_runs(Scope::All, agent_id, page)?;
            let Some(last) = runs.last() else { break };
            after = Some(last.key);
            for r in &runs {
                ids.push(TraceId::parse(&r.trace_id)?);
            }
        }
        ids.reverse();
        ids
    } else {
        // Each run once, in the order first named: a run written twice could not be
        // replayed or imported.
        let mut seen = std::collections::HashSet::new();
        let mut ids = Vec::with_capacity(trace_ids.len());
        for t in trace_ids {
            let id = TraceId::parse(t)?;
            if seen.insert(id) {
                ids.push(id);
            }
        }
        ids
    };
    let mut out: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    for id in &ids {
        let lines = export_run(store.as_ref(), *id).map_err(|e| match e {
            crate::store::StoreError::NotFound => format!("no run with trace_id {id}"),
            other => other.to_string(),
        })?;
        for l in lines {
            writeln!(out, "{l}")?;
        }
    }
    out.flush()?;
    eprintln!("exported {}", count(ids.len() as u64, "run", "runs"));
    Ok(())
}

fn backup(out: &Path, force: bool, db: &DbArg) -> Result<(), Box<dyn Error>> {
    let source = match db.database() {
        Database::Sqlite(path) => path,
        Database::Postgres(_) => {
            return Err(
                "runwarden backup copies SQLite databases only; back up PostgreSQL with \
                        its own tools (pg_dump, or your provider's snapshots)"
                    .into(),
            );
        }
    };
    refuse_database_as_output(&db.database, out, "backed up")?;
    let report = crate::store::sqlite::backup(&source, out, force)?;
    println!(
        "backed up {} to {}: {} pages, {} bytes in {:.3} s (integrity_check ok in {:.3} s)",
        escape_for_terminal(&source.display().to_string()),
        escape_for_terminal(&out.display().to_string()),
        report.pages,
        report.bytes,
        report.elapsed.as_secs_f64(),
        report.check_time.as_secs_f64()
    );
    Ok(())
}

fn replay(file: &Path, policy: Option<&Path>, json: bool) -> Result<(), Box<dyn Error>> {
    let policy = policy.map_or_else(|| Ok(Policy::default()), load_policy)?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut replayer = Replayer::new(&policy);
    let mut out = std::io::stdout().lock();
    // Every line printed holds text of the file (reasoning quotes arguments), so each goes
    // through the one escaping function; JSON output is JSON-escaped instead.
    fn print(out: &mut impl Write, line: &str) -> std::io::Result<()> {
        writeln!(out, "{}", escape_for_terminal(line))
    }
    let (mut checks, mut blocked, mut unmet, mut bad) = (0u64, 0u64, 0u64, 0u64);
    for (i, line) in text.lines().enumerate() {
        let started = std::time::Instant::now();
        let outcome = replayer.line(i + 1, line);
        let micros = started.elapsed().as_micros();
        match outcome {
            Ok(None) => {}
            Ok(Some(o)) if json => {
                checks += 1;
                blocked += u64::from(!o.verdict.is_safe);
                unmet += u64::from(o.unmet.is_some());
                let rules: Vec<&str> = o.verdict.findings.iter().map(|f| f.rule).collect();
                let record = serde_json::json!({"line": o.line, "tool": o.tool,
                    "is_safe": o.verdict.is_safe, "rules": rules, "expect": o.expect,
                    "unmet": o.unmet, "micros": micros});
                writeln!(out, "{}", json_for_terminal(&record.to_string()))?;
            }
            Ok(Some(o)) => {
                checks += 1;
                let verdict = if o.verdict.is_safe {
                    "pass "
                } else {
                    blocked += 1;
                    "BLOCK"
                };
                let rule = o.verdict.findings.first().map_or("-", |f| f.rule);
                let expectation = match (&o.expect, &o.unmet) {
                    (None, _) => String::new(),
                    (Some(_), None) => "  [expected]".to_string(),
                    (Some(_), Some(why)) => {
                        unmet += 1;
                        format!("  [UNMET: {why}]")
                    }
                };
                print(
                    &mut out,
                    &format!(
                        "line {:<5} {verdict}  {:<24} {}{expectation}",
                        o.line, rule, o.verdict.reasoning
                    ),
                )?;
            }
            Err(e) => {
                bad += 1;
                print(&mut out, &e.to_string())?;
            }
        }
    }
    let problems = format!(
        "{} unmet, {}",
        count(unmet, "expectation", "expectations"),
        count(bad, "invalid line", "invalid lines")
    );
    if !json {
        print(
            &mut out,
            &format!(
                "{}: {} passed, {blocked} blocked; {problems}",
                count(checks, "check", "checks"),
                checks - blocked
            ),
        )?;
    }
    if unmet > 0 || bad > 0 {
        return Err(format!("{}: {problems}", file.display()).into());
    }
    if replayer.sessions() == 0 {
        return Err(format!(
            "{} holds no sessions (no \"run\" record): nothing was checked",
            file.display()
        )
        .into());
    }
    Ok(())
}

fn open_store(database: Database) -> Result<Box<dyn Store>, String> {
    Ok(match database {
        Database::Sqlite(path) => Box::new(SqliteStore::open(&SqliteOptions::new(path))?),
        Database::Postgres(url) => Box::new(PgStore::open(&PgOptions::new(url))?),
    })
}

fn keys(cmd: KeysCommand) -> Result<(), Box<dyn Error>> {
    let now = crate::domain::time::format_millis_utc(time::OffsetDateTime::now_utc());
    match cmd {
        KeysCommand::Create {
            project,
            spec,
            name,
            db,
        } => {
            let project = parse_project(&project)?;
            let new = generate_key(spec.key_type)?;
            let key = ApiKey {
                id: new.id.clone(),
                project,
                key_type: spec.key_type,
                name,
                rpm: spec.rpm,
                rph: spec.rph,
                created_at: now,
                last_used_at: None,
                revoked_at: None,
            };
            let limits = key.limits();
            let summary = format!(
                "created {} key {} for project {:?} (limits: {} per minute, {} per hour); \
                 this is the only time the key is shown",
                key.key_type,
                key.id,
                key.project,
                limits
                    .per_minute
                    .map_or("no limit".into(), |n| n.to_string()),
                limits.per_hour.map_or("no limit".into(), |n| n.to_string()),
            );
            open_store(db.database())?.insert_key(key, new.hash)?;
            println!("{}", new.secret);
            eprintln!("{}", escape_for_terminal(&summary));
        }
        KeysCommand::List { db } => {
            let keys = open_store(db.existing()?)?.list_keys()?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<16} {:<16} {:<11} {:<16} {:<24} {:<24} {:>8} {:>8}  REVOKED",
                "ID", "PROJECT", "TYPE", "NAME", "CREATED", "LAST USED", "RPM", "RPH"
            )?;
            for k in keys {
                let limits = k.limits();
                let show = |n: Option<u32>| n.map_or("-".to_string(), |n| n.to_string());
                writeln!(
                    out,
                    "{:<16} {:<16} {:<11} {:<16} {:<24} {:<24} {:>8} {:>8}  {}",
                    escape_for_terminal(&k.id),
                    escape_for_terminal(&k.project),
                    k.key_type.as_str(),
                    escape_for_terminal(k.name.as_deref().unwrap_or("-")),
                    escape_for_terminal(&k.created_at),
                    escape_for_terminal(k.last_used_at.as_deref().unwrap_or("never")),
                    show(limits.per_minute),
                    show(limits.per_hour),
                    escape_for_terminal(k.revoked_at.as_deref().unwrap_or("no")),
                )?;
            }
        }
        KeysCommand::Revoke { id, db } => {
            if !open_store(db.existing()?)?.revoke_key(&id, &now)? {
                return Err(format!("no key with id {id} (see runwarden keys list)").into());
            }
            eprintln!("revoked key {}", escape_for_terminal(&id));
        }
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = ServeConfig {
        addr: args.addr,
        db: args.db.database(),
        threads: args.threads.map_or_else(default_threads, usize::from),
        max_body_bytes: args.max_body_bytes,
        busy_timeout: Duration::from_millis(args.busy_timeout_ms),
        write_batch: usize::from(args.write_batch),
        allow_open: args.allow_open,
        idempotency_ttl: Duration::from_secs(args.idempotency_ttl_secs),
        policy: args.policy,
        client_timeout: Duration::from_secs(args.client_timeout_secs),
        max_connections: args.max_connections as usize,
    };
    let server = Server::bind(&config)?;
    let handle = server.shutdown_handle();
    ctrlc::set_handler(move || handle.shutdown())
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    // The one start-up line (stdout, so it shows whatever RUST_LOG says; tests read the port
    // from it).
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "runwarden listening on http://{} (database: {}, {} threads, {})",
        server.local_addr(),
        escape_for_terminal(&config.db.to_string()),
        config.threads,
        server.mode()
    )?;
    out.flush()?;
    drop(out);
    server.run()?;
    log::info!("runwarden stopped; database closed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn control_bidi_and_invisible_characters_are_escaped_and_quotes_are_not() {
        let cases = [
            (
                "plain text, \"quoted\" and policy's",
                "plain text, \"quoted\" and policy's",
            ),
            ("a\nb\u{1b}[2J\t", "a\\nb\\u{1b}[2J\\t"),
            ("abc\u{202e}txt.exe", "abc\\u{202e}txt.exe"),
            (
                "\u{2066}\u{2069}\u{200b}\u{200f}",
                "\\u{2066}\\u{2069}\\u{200b}\\u{200f}",
            ),
            (
                "\u{2028}\u{2029}\u{feff}\u{e0041}",
                "\\u{2028}\\u{2029}\\u{feff}\\u{e0041}",
            ),
            ("é ü 日本 \\u{202e}", "é ü 日本 \\u{202e}"),
        ];
        for (text, shown) in cases {
            assert_eq!(escape_for_terminal(text), shown, "{text:?}");
        }
        assert!(matches!(escape_for_terminal("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_cut_line_never_ends_inside_an_escape() {
        assert_eq!(one_line("abcdef", 6), "abcdef");
        assert_eq!(one_line("abcdefg", 6), "abcde…");
        // "ab" + "\u{202e}" (8 characters) does not fit in 6 - 1: the escape is left out whole.
        assert_eq!(one_line("ab\u{202e}cdef", 6), "ab…");
    }

    #[test]
    fn json_lines_stay_json_with_invisible_characters_escaped() {
        let value = serde_json::json!({"tool": "pay\u{202e}\u{7f}\u{e0041}"});
        let shown = json_for_terminal(&value.to_string()).into_owned();
        assert!(!shown.chars().any(needs_escape), "{shown}");
        let back: serde_json::Value = serde_json::from_str(&shown).expect("still JSON");
        assert_eq!(back, value);
    }

    #[test]
    fn counts_of_one_are_singular() {
        assert_eq!(count(0, "run", "runs"), "0 runs");
        assert_eq!(count(1, "run", "runs"), "1 run");
        assert_eq!(count(2, "run", "runs"), "2 runs");
    }

    #[test]
    fn every_boolean_flag_read_from_the_environment_takes_the_usual_words() {
        fn walk(cmd: &clap::Command, found: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let boolean = matches!(
                    arg.get_action(),
                    clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
                );
                if !boolean || arg.get_env().is_none() {
                    continue;
                }
                // The flag's own value parser, fed each word as a value of an option.
                let probe = arg
                    .clone()
                    .action(clap::ArgAction::Set)
                    .num_args(1)
                    .env(None::<&str>);
                let long = probe.get_long().unwrap_or_default().to_string();
                for word in ["1", "0", "true", "false", "yes", "no", "on", "off"] {
                    let parsed = clap::Command::new("probe")
                        .arg(probe.clone())
                        .try_get_matches_from(["probe", &format!("--{long}"), word]);
                    assert!(
                        parsed.is_ok(),
                        "{} --{long} from the environment: {word}: {parsed:?}",
                        cmd.get_name()
                    );
                }
                found.push(arg.get_id().to_string());
            }
            for sub in cmd.get_subcommands() {
                walk(sub, found);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut found = Vec::new();
        walk(&cmd, &mut found);
        assert!(found.contains(&"allow_open".to_string()), "{found:?}");
    }

    #[test]
    fn a_database_url_wins_unless_db_was_typed() {
        use ValueSource::{CommandLine, DefaultValue, EnvVariable};
        let file = || PathBuf::from("rw.db");
        let url = || Some("postgres://h/db".to_string());
        let postgres = Ok(Database::Postgres("postgres://h/db".into()));
        let cases = [
            (Some(DefaultValue), None, Ok(Database::Sqlite(file()))),
            (Some(CommandLine), None, Ok(Database::Sqlite(file()))),
            (Some(DefaultValue), Some(EnvVariable), postgres.clone()),
            (Some(DefaultValue), Some(CommandLine), postgres.clone()),
            (Some(EnvVariable), Some(EnvVariable), postgres.clone()),
            (Some(EnvVariable), Some(CommandLine), postgres),
            (Some(CommandLine), Some(CommandLine), Err("--database-url")),
            (
                Some(CommandLine),
                Some(EnvVariable),
                Err("RUNWARDEN_DATABASE_URL"),
            ),
        ];
        let empty = DbArg::resolve(
            file(),
            Some(CommandLine),
            Some(" ".into()),
            Some(EnvVariable),
        );
        assert_eq!(
            empty.ok(),
            Some(Database::Sqlite(file())),
            "an empty variable is unset"
        );
        for (db_from, url_from, expected) in cases {
            let got = DbArg::resolve(file(), db_from, url_from.and_then(|_| url()), url_from);
            match (got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{db_from:?} {url_from:?}"),
                (Err(e), Err(word)) => {
                    assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
                    assert!(e.to_string().contains(word), "{e}");
                }
                (got, expected) => panic!("{db_from:?} {url_from:?}: {got:?}, not {expected:?}"),
            }
        }
    }
}
