//! `mdbus`: the one command-line entry point of the market-data bus (`src/cli/`).
//!
//! Run it from the repository root with `cargo run --release --bin mdbus -- <subcommand>`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
