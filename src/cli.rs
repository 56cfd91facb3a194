//! The command line: `runwarden serve` (and `--help`). One function per subcommand; each
//! returns a `Result` and `main` turns an error into one line and exit code 1. Usage errors are
//! clap's (exit code 2).

use std::error::Error;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{ServeConfig, default_threads, vars};
use crate::server::Server;

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
    /// Run the HTTP API server (POST /v1/register-agent-run, /v1/event, /v1/check; GET /healthz).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// IP address and port to listen on; port 0 picks a free port.
    #[arg(long, env = vars::ADDR, default_value = "127.0.0.1:8787", value_name = "IP:PORT")]
    addr: SocketAddr,

    /// SQLite database file; created with its tables on first start.
    #[arg(long, env = vars::DB, default_value = "runwarden.db", value_name = "FILE")]
    db: PathBuf,

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
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Box<dyn Error>> {
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = ServeConfig {
        addr: args.addr,
        db: args.db,
        threads: args.threads.map_or_else(default_threads, usize::from),
        max_body_bytes: args.max_body_bytes,
        busy_timeout: Duration::from_millis(args.busy_timeout_ms),
        write_batch: usize::from(args.write_batch),
    };
    let server = Server::bind(&config)?;
    let handle = server.shutdown_handle();
    ctrlc::set_handler(move || handle.shutdown())
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    let db = std::fs::canonicalize(&config.db).unwrap_or(config.db.clone());
    // The one start-up line (stdout, so it shows whatever RUST_LOG says; tests read the port
    // from it).
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "runwarden listening on http://{} (database: {}, {} threads)",
        server.local_addr(),
        db.display(),
        config.threads
    )?;
    out.flush()?;
    drop(out);
    server.run();
    log::info!("runwarden stopped; database closed");
    Ok(())
}
