//! The `runwarden` binary: parse the command line, run it, turn an error into one line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = runwarden::cli::Cli::parse();
    match runwarden::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`runwarden replay … | head`) is the reader's choice, not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
