//! The keyboard dashboard that `kiln` opens when run without a subcommand. Not built yet: this
//! placeholder keeps the entry point (`run`) for whoever builds it.

use std::process::ExitCode;

use crate::cli::Settings;

/// Runs the dashboard against the daemon named in `settings` until the person quits.
pub fn run(_settings: &Settings) -> ExitCode {
    eprintln!("the dashboard is not built yet; see `kiln --help`");
    ExitCode::from(2)
}
