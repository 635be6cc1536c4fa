//! kiln-tui: the terminal client of kilnd, as a library the `kiln` binary is a thin shell over.
//! Bare, `kiln` opens the dashboard (`dashboard`, over the pure state in `app` drawn by `views`);
//! with a subcommand it is the scripting CLI (`cli`).
//!
//! The library is named `kiln`, like the binary, so module paths (and with them the names of the
//! views' insta snapshots) stay `kiln::…`.

use std::process::ExitCode;

pub mod app;
pub mod cli;
pub mod dashboard;
pub mod ssh_key;
pub mod stats;
pub mod views;

/// Runs `kiln` with parsed arguments: the dashboard when no subcommand is given.
pub fn run(args: cli::Cli) -> ExitCode {
    let settings = cli::Settings::from_args(&args.global);
    match args.command {
        None => dashboard::run(&settings),
        Some(command) => cli::run(&settings, command),
    }
}
