//! The `runwarden` binary: parse the command line, run it, turn an error into one line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = runwarden::cli::Cli::parse();
    match runwarden::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
