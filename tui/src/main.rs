//! `kiln`: the terminal client of kilnd. Bare, it opens the dashboard; with a subcommand it is the
//! scripting CLI. This file only parses arguments and picks one of the two.

use std::process::ExitCode;

use clap::Parser;

mod app;
mod cli;
mod dashboard;
mod stats;
mod views;

fn main() -> ExitCode {
    // Usage errors exit 2 from inside `parse`, as clap does.
    let args = cli::Cli::parse();
    let settings = cli::Settings::from_args(&args.global);
    match args.command {
        None => dashboard::run(&settings),
        Some(command) => cli::run(&settings, command),
    }
}
