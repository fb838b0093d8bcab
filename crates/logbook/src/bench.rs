//! `logbook bench`: placeholder, filled in below.
use std::process::ExitCode;

/// Load generator settings.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs the load generator.
pub fn main(_args: BenchArgs) -> ExitCode {
    ExitCode::SUCCESS
}
