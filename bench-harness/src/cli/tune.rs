//! `mdbus tune check` and `mdbus tune plan`: how well this host is tuned, and a core layout.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum TuneCommand {
    /// Inspect the host (reads /proc and /sys only, changes nothing): each check passes,
    /// warns or fails, with the fix. Exits with status 2 when a check fails.
    Check {
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Read /proc and /sys under this directory instead of / (for a saved host tree).
        #[arg(long, default_value = "/")]
        sysroot: PathBuf,
    },
    /// Propose a core layout for a set of roles on this host, with the kernel command line
    /// and sysctls that would isolate them.
    Plan {
        /// Roles, comma separated, each `kind`, `kind:count` or `name=kind[:count]`; kinds:
        /// feed_handler, receiver, book_builder, sender, strategy, background.
        #[arg(long, default_value = "feed_handler,book_builder,strategy")]
        roles: String,
        /// Put the latency-critical roles on this NUMA node (e.g. the NIC's).
        #[arg(long)]
        node: Option<usize>,
        /// Write the layout (TOML) to this file, for the feed handler, bus and bench to read.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the layout as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `mdbus tune check` or `mdbus tune plan`.
pub fn run(command: &TuneCommand) -> Result<ExitCode, Box<dyn Error>> {
    use mdbus_tuning as tuning;
    match command {
        TuneCommand::Check { json, sysroot } => {
            // A saved host tree may carry its non-file facts (limits, uid) in facts.toml.
            let facts = sysroot.join("facts.toml");
            let sys = if sysroot == std::path::Path::new("/") {
                tuning::SysRoot::host()
            } else if facts.exists() {
                tuning::SysRoot::new(sysroot, tuning::StaticFacts::load(&facts)?)
            } else {
                tuning::SysRoot::new(sysroot, tuning::LiveHost)
            };
            let report = tuning::run_checks(&sys);
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(if report.worst() == tuning::Status::Fail {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        TuneCommand::Plan {
            roles,
            node,
            out,
            json,
        } => {
            let sys = tuning::SysRoot::host();
            let topology = tuning::Topology::read(&sys)?;
            let roles = tuning::parse_roles(roles)?;
            let options = tuning::PlanOptions { prefer_node: *node };
            let layout = tuning::plan_with(&topology, &roles, &options)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&layout)?);
            } else {
                print!("{layout}");
            }
            if let Some(path) = out {
                layout.save(path)?;
                tracing::info!("layout written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
