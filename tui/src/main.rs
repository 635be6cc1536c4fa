//! `kiln`: the terminal client of kilnd. Only parses arguments; everything else is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit 2 from inside `parse`, as clap does.
    kiln::run(kiln::cli::Cli::parse())
}
