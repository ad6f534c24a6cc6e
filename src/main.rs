use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use parprof::cli::{Cli, Command};

fn main() -> ExitCode {
    parprof::process::ptrace::block_stop_notices();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // clap's first line says what is wrong; the usage block that follows is noise
            // in a script's log. One line, and where to look.
            let text = e.render().to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("parprof: {first} (see parprof --help)");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Command::Report(_) | Command::Diff(_)) {
        // These only read files and print: a closed pipe (`parprof diff … | head`) ends
        // them quietly, as it ends other tools, instead of a panic in `println!`. Not
        // `record` or `dump`, which must release the target whatever becomes of their output.
        // SAFETY: restoring a signal's default action has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Record(args) => parprof::record::run(args),
        Command::Dump(args) => parprof::dump::run(args),
        Command::Report(args) => parprof::report::run(args),
        Command::Diff(args) => parprof::diff_cmd::run(args),
        Command::Top(args) => parprof::top::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("parprof: {e:#}");
            ExitCode::from(1)
        }
    }
}
