//! The command line: `runwarden serve` (and `--help`). One function per subcommand; each
//! returns a `Result` and `main` turns an error into one line and exit code 1. Usage errors are
//! clap's (exit code 2).

use std::error::Error;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    /// /v1/runs/{trace_id}, /v1/events, /v1/checks, /healthz).
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
    /// stored verdict: an exported run is a CI fixture for `runwarden replay`.
    Export {
        /// Runs to export (repeatable).
        #[arg(long = "trace-id", value_name = "TRACE_ID", conflicts_with_all = ["agent_id", "all"])]
        trace_ids: Vec<String>,
        /// Every run of this agent.
        #[arg(long, conflicts_with = "all")]
        agent_id: Option<String>,
        /// Every run.
        #[arg(long)]
        all: bool,
        /// Write to this file instead of stdout.
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
    /// check's verdict; exits 1 when a line is invalid or an `expect` is not met.
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
        /// development (60/min, 1,000/h), production (600/min, 10,000/h), restricted (only
        /// event and check; limits as production) or admin (cross-project reads, unlimited).
        #[arg(long = "type", value_name = "TYPE")]
        key_type: String,
        /// A label to recognise the key by.
        #[arg(long)]
        name: Option<String>,
        /// Requests per minute, instead of the type's default.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rpm: Option<u32>,
        /// Requests per hour, instead of the type's default.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rph: Option<u32>,
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

#[derive(Debug, Args)]
struct DbArg {
    /// SQLite database file; created with its tables on first start.
    #[arg(long, env = vars::DB, default_value = "runwarden.db", value_name = "FILE")]
    db: PathBuf,

    /// PostgreSQL database instead of the SQLite file, as postgres://USER:PASSWORD@HOST:PORT/DB
    /// (the database must exist; its tables are created on first start).
    #[arg(long, env = vars::DATABASE_URL, value_name = "URL", conflicts_with = "db")]
    database_url: Option<String>,
}

impl DbArg {
    fn database(&self) -> Database {
        match &self.database_url {
            Some(url) => Database::Postgres(url.clone()),
            None => Database::Sqlite(self.db.clone()),
        }
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

    /// Milliseconds a write waits for a database lock held by another process before 503.
    #[arg(long, env = vars::BUSY_TIMEOUT_MS, default_value_t = 5000, value_name = "MS")]
    busy_timeout_ms: u64,

    /// Most writes committed in one transaction (group commit); 1 = one transaction per write.
    #[arg(long, env = vars::WRITE_BATCH, default_value_t = 64, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    write_batch: u16,

    /// Serve without API keys (while none exists) on a non-loopback address too.
    #[arg(long, env = vars::ALLOW_OPEN)]
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

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Box<dyn Error>> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Keys(cmd) => keys(cmd),
        Command::Policy(PolicyCommand::Check { file }) => {
            let policy = load_policy(&file)?;
            println!(
                "{}: ok ({} section{})",
                file.display(),
                policy.sections(),
                if policy.sections() == 1 { "" } else { "s" }
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
            all,
            output,
            db,
        } => export(trace_ids, agent_id, all, output, &db),
    }
}

/// Agent-supplied text for one terminal line: control characters (escape sequences included)
/// escaped, at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| {
            let shown: Vec<char> = if c.is_control() {
                c.escape_debug().collect()
            } else {
                vec![c]
            };
            shown
        })
        .collect();
    if escaped.chars().count() > max {
        let mut cut: String = escaped.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        escaped
    }
}

fn runs_list(agent_id: Option<&str>, limit: u32, db: &DbArg) -> Result<(), Box<dyn Error>> {
    let store = open_store(db)?;
    let page = Page {
        after: None,
        offset: 0,
        limit,
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
            r.trace_id,
            r.received_at,
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
    let store = open_store(db)?;
    let run = store.get_run(Scope::All, id).map_err(|e| match e {
        crate::store::StoreError::NotFound => format!("no run with trace_id {id}"),
        other => other.to_string(),
    })?;
    let all = Page {
        after: None,
        offset: 0,
        limit: u32::MAX,
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
        run.trace_id,
        one_line(&run.agent_id, 80),
        one_line(&run.project, 64)
    )?;
    writeln!(
        out,
        "started {}  received {}",
        one_line(&run.started_at, 40),
        run.received_at
    )?;
    writeln!(
        out,
        "{} events, {} checks, {} blocked",
        run.event_count, run.check_count, run.blocked_check_count
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
                e.event_type,
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
        lines.push((
            c.seq,
            format!(
                "{:>5}  {}  check {paint}{mark}{reset}  {} {dim}{}{reset}\n       {}",
                c.seq,
                time(c.occurred_at),
                one_line(&c.tool_name, 40),
                one_line(&c.content.text, 80),
                one_line(&c.reasoning, 200)
            ),
        ));
    }
    lines.sort_by_key(|(seq, _)| *seq);
    for (_, l) in lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

fn import(
    file: &std::path::Path,
    policy: Option<&std::path::Path>,
    db: &DbArg,
) -> Result<(), Box<dyn Error>> {
    let policy = policy.map_or_else(|| Ok(Policy::default()), load_policy)?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (runs, orphans) = read_export(&text, &policy);
    let store = open_store(db)?;
    // A progress bar on a terminal (indicatif draws nothing when stderr is not one).
    let bar = indicatif::ProgressBar::new(runs.len() as u64);
    if runs.len() < 20 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut inserted, mut present, mut items) = (0, 0, 0);
    let mut problems: Vec<String> = orphans.iter().map(|e| e.to_string()).collect();
    for candidate in runs {
        bar.inc(1);
        match candidate.run {
            Err(e) => problems.push(format!("{e}; run {} skipped", candidate.trace_id)),
            Ok(run) => {
                let n = run.items.len();
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
        eprintln!("{p}");
    }
    let mut summary = format!("imported {inserted} runs ({items} events and checks)");
    if present > 0 {
        summary.push_str(&format!("; {present} already present, unchanged"));
    }
    if inserted == 0 && problems.is_empty() {
        summary.push_str("; nothing changed");
    }
    println!("{summary}");
    if !problems.is_empty() {
        return Err(format!(
            "{}: {} problems (listed above)",
            file.display(),
            problems.len()
        )
        .into());
    }
    Ok(())
}

fn export(
    trace_ids: Vec<String>,
    agent_id: Option<String>,
    all: bool,
    output: Option<PathBuf>,
    db: &DbArg,
) -> Result<(), Box<dyn Error>> {
    if trace_ids.is_empty() && agent_id.is_none() && !all {
        return Err("say which runs: --trace-id T (repeatable), --agent-id A or --all".into());
    }
    let store = open_store(db)?;
    let ids: Vec<TraceId> = if trace_ids.is_empty() {
        // Every matching run, oldest first.
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = Page {
                after,
                offset: 0,
                limit: 1000,
            };
            let runs = store.list_runs(Scope::All, agent_id.as_deref(), page)?;
            let Some(last) = runs.last() else { break };
            after = Some(last.key);
            for r in &runs {
                ids.push(TraceId::parse(&r.trace_id)?);
            }
        }
        ids.reverse();
        ids
    } else {
        trace_ids
            .iter()
            .map(|t| TraceId::parse(t))
            .collect::<Result<_, _>>()?
    };
    let mut out: Box<dyn Write> = match &output {
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
    eprintln!(
        "exported {} run{}",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

fn backup(out: &std::path::Path, force: bool, db: &DbArg) -> Result<(), Box<dyn Error>> {
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
    let report = crate::store::sqlite::backup(&source, out, force)?;
    println!(
        "backed up {} to {}: {} pages, {} bytes in {:.3} s (integrity_check ok in {:.3} s)",
        source.display(),
        out.display(),
        report.pages,
        report.bytes,
        report.elapsed.as_secs_f64(),
        report.check_time.as_secs_f64()
    );
    Ok(())
}

fn replay(
    file: &std::path::Path,
    policy: Option<&std::path::Path>,
    json: bool,
) -> Result<(), Box<dyn Error>> {
    let policy = policy.map_or_else(|| Ok(Policy::default()), load_policy)?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut replayer = Replayer::new(&policy);
    let mut out = std::io::stdout().lock();
    let (mut checks, mut blocked, mut unmet, mut bad) = (0, 0, 0, 0);
    for (i, line) in text.lines().enumerate() {
        let started = std::time::Instant::now();
        let outcome = replayer.line(i + 1, line);
        let micros = started.elapsed().as_micros();
        match outcome {
            Ok(None) => {}
            Ok(Some(o)) if json => {
                checks += 1;
                blocked += usize::from(!o.verdict.is_safe);
                unmet += usize::from(o.unmet.is_some());
                let rules: Vec<&str> = o.verdict.findings.iter().map(|f| f.rule).collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"line": o.line, "tool": o.tool, "is_safe": o.verdict.is_safe,
                                       "rules": rules, "expect": o.expect, "unmet": o.unmet,
                                       "micros": micros})
                )?;
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
                writeln!(
                    out,
                    "line {:<5} {verdict}  {:<24} {}{expectation}",
                    o.line,
                    rule,
                    o.verdict.reasoning.escape_debug()
                )?;
            }
            Err(e) => {
                bad += 1;
                writeln!(out, "{e}")?;
            }
        }
    }
    if !json {
        writeln!(
            out,
            "{checks} checks: {} passed, {blocked} blocked; {unmet} expectations unmet; {bad} invalid lines",
            checks - blocked
        )?;
    }
    if unmet > 0 || bad > 0 {
        return Err(format!(
            "{}: {unmet} expectations unmet, {bad} invalid lines",
            file.display()
        )
        .into());
    }
    Ok(())
}

fn open_store(db: &DbArg) -> Result<Box<dyn Store>, String> {
    Ok(match db.database() {
        Database::Sqlite(path) => Box::new(SqliteStore::open(&SqliteOptions::new(path))?),
        Database::Postgres(url) => Box::new(PgStore::open(&PgOptions::new(url))?),
    })
}

fn keys(cmd: KeysCommand) -> Result<(), Box<dyn Error>> {
    let now = crate::domain::time::format_millis_utc(time::OffsetDateTime::now_utc());
    match cmd {
        KeysCommand::Create {
            project,
            key_type,
            name,
            rpm,
            rph,
            db,
        } => {
            let key_type = KeyType::parse(&key_type).ok_or_else(|| {
                format!(
                    "--type must be one of development, production, restricted, admin (got {key_type:?})"
                )
            })?;
            let project = parse_project(&project)?;
            let new = generate_key(key_type)?;
            let key = ApiKey {
                id: new.id.clone(),
                project,
                key_type,
                name,
                rpm,
                rph,
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
            open_store(&db)?.insert_key(key, new.hash)?;
            println!("{}", new.secret);
            eprintln!("{summary}");
        }
        KeysCommand::List { db } => {
            let keys = open_store(&db)?.list_keys()?;
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
                    k.id,
                    k.project,
                    k.key_type.as_str(),
                    k.name.as_deref().unwrap_or("-").escape_debug().to_string(),
                    k.created_at,
                    k.last_used_at.as_deref().unwrap_or("never"),
                    show(limits.per_minute),
                    show(limits.per_hour),
                    k.revoked_at.as_deref().unwrap_or("no"),
                )?;
            }
        }
        KeysCommand::Revoke { id, db } => {
            if !open_store(&db)?.revoke_key(&id, &now)? {
                return Err(format!("no key with id {id:?} (see runwarden keys list)").into());
            }
            eprintln!("revoked key {id}");
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
        config.db,
        config.threads,
        server.mode()
    )?;
    out.flush()?;
    drop(out);
    server.run()?;
    log::info!("runwarden stopped; database closed");
    Ok(())
}
