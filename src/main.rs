use std::process::ExitCode;

use clap::Parser;
use parprof::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(args) => parprof::record::run(args),
        Command::Dump(args) => parprof::dump::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("parprof: {e:#}");
            ExitCode::from(1)
        }
    }
}
