//! `mdbus bench all`: every scenario, one after the other, with its defaults (or `--quick`),
//! and one combined JSON document.
//!
//! Each scenario runs exactly as `mdbus bench <name> --json` would (the same argument parsing,
//! defaults and report), with `--quick`, `--layout FILE`, `--hgrm DIR/<name>` and
//! `--plot DIR/<name>.svg` passed on to the scenarios that have those flags. The combined
//! document keeps every scenario's report unchanged under its name, so `bench compare` can
//! compare two of them scenario by scenario:
//!
//! ```text
//! {"scenario":"all","quick":false,"order":["ring","replay"],
//!  "scenarios":{"ring":{<bench ring --json>},"replay":{<bench replay --json>}},
//!  "host":{<host facts, cores_used: every core any scenario used>},"notes":[...]}
//! ```

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{FromArgMatches, Subcommand};
use serde_json::{Map, Value, json};

use super::{BenchArgs, BenchError, Scenario, host};
use crate::pinning::LayoutArg;

/// The scenarios `bench all` runs, in order: names of `mdbus bench` subcommands. Adding a
/// scenario to `bench all` is one line here; the scenario needs `--json` (printing one JSON
/// object with `results` and `host` like `bench ring --json`) and gets `--quick`, `--layout`,
/// `--hgrm DIR` and `--plot FILE` when it has them.
pub const SCENARIOS: &[&str] = &["ring", "replay", "udp"];

/// Subcommands of `mdbus bench` that are not scenarios `bench all` runs.
pub const NOT_SCENARIOS: &[&str] = &["all", "compare", "synth"];

/// `mdbus bench all`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AllArgs {
    /// Print one combined JSON object (each scenario's report under its name, the host facts
    /// once) instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Short smoke runs: each scenario's `--quick`.
    #[arg(long)]
    pub quick: bool,
    /// Write each scenario's HdrHistogram percentile distributions under `DIR/<scenario>/`.
    #[arg(long, value_name = "DIR")]
    pub hgrm: Option<PathBuf>,
    /// Write one latency-by-percentile chart per scenario, `DIR/<scenario>.svg`.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// The core layout every scenario pins its threads by (`--layout FILE` or
    /// `$MDBUS_LAYOUT`).
    #[command(flatten)]
    pub layout: LayoutArg,
}

/// The flags (argument ids) of `mdbus bench <name>`; `None` when there is no such scenario.
pub fn flags_of(name: &str) -> Option<Vec<String>> {
    let cmd = Scenario::augment_subcommands(clap::Command::new("bench"));
    let sub = cmd.find_subcommand(name)?;
    Some(
        sub.get_arguments()
            .map(|a| a.get_id().as_str().to_string())
            .collect(),
    )
}

/// The measuring scenarios `mdbus bench` has (every subcommand but [`NOT_SCENARIOS`]).
pub fn measuring_subcommands() -> Vec<String> {
    Scenario::augment_subcommands(clap::Command::new("bench"))
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|n| !NOT_SCENARIOS.contains(&n.as_str()))
        .collect()
}

/// The command line `bench all` runs scenario `name` with, and notes on flags it lacks.
pub fn scenario_argv(
    name: &str,
    args: &AllArgs,
) -> Result<(Vec<OsString>, Vec<String>), BenchError> {
    let flags = flags_of(name).ok_or_else(|| {
        BenchError::Internal(format!("bench all: no scenario {name:?} in `mdbus bench`"))
    })?;
    let has = |f: &str| flags.iter().any(|x| x == f);
    let mut argv: Vec<OsString> = vec!["bench".into(), name.into()];
    let mut notes = Vec::new();
    if args.json {
        if !has("json") {
            return Err(BenchError::Internal(format!(
                "bench all: scenario {name} has no --json"
            )));
        }
        argv.push("--json".into());
    }
    if args.quick {
        if has("quick") {
            argv.push("--quick".into());
        } else {
            notes.push(format!("{name}: no --quick, ran with its defaults"));
        }
    }
    if let Some(path) = &args.layout.layout {
        if has("layout") {
            argv.push("--layout".into());
            argv.push(path.into());
        } else {
            notes.push(format!(
                "{name}: takes no --layout, ran with its default cores"
            ));
        }
    }
    if let Some(dir) = &args.hgrm {
        if has("hgrm") {
            argv.push("--hgrm".into());
            argv.push(dir.join(name).into());
        } else {
            notes.push(format!("{name}: writes no .hgrm files"));
        }
    }
    if let Some(dir) = &args.plot {
        if has("plot") {
            argv.push("--plot".into());
            argv.push(dir.join(format!("{name}.svg")).into());
        } else {
            notes.push(format!("{name}: draws no chart"));
        }
    }
    Ok((argv, notes))
}

/// Parses a scenario's command line with the definitions of `mdbus bench` itself.
fn parse(argv: &[OsString]) -> Result<BenchArgs, BenchError> {
    let cmd = <BenchArgs as clap::Args>::augment_args(clap::Command::new("bench"));
    let matches = cmd
        .try_get_matches_from(argv)
        .map_err(|e| BenchError::Internal(format!("bench all: {argv:?}: {e}")))?;
    BenchArgs::from_arg_matches(&matches)
        .map_err(|e| BenchError::Internal(format!("bench all: {argv:?}: {e}")))
}

fn stdout_err(source: std::io::Error) -> BenchError {
    BenchError::Io {
        path: PathBuf::from("<stdout>"),
        source,
    }
}

/// Runs `mdbus bench all`, writing the tables or the combined JSON object to `out`.
///
/// A scenario that fails with a bad argument (a bad layout file, say) stops the run at once;
/// one that fails while measuring is recorded (`{"error": ...}` under its name, and a note)
/// and the others still run; the first such failure is returned after the output is written.
pub fn run(args: &AllArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir).map_err(|source| BenchError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    let mut reports = Map::new();
    let mut notes = Vec::new();
    let mut failed: Option<BenchError> = None;
    for &name in SCENARIOS {
        let (argv, mut n) = scenario_argv(name, args)?;
        notes.append(&mut n);
        let parsed = parse(&argv)?;
        let result = if args.json {
            let mut buf = Vec::new();
            super::run_to(&parsed, &mut buf).and_then(|()| {
                serde_json::from_slice::<Value>(&buf).map_err(|e| {
                    BenchError::Internal(format!("bench {name} --json printed no JSON: {e}"))
                })
            })
        } else {
            // Each table is printed whole once its scenario is done, so a scenario refused
            // for a bad argument leaves no header behind.
            let mut buf = Vec::new();
            let r = super::run_to(&parsed, &mut buf);
            if r.is_ok() || !buf.is_empty() {
                writeln!(out, "== bench {name} ==").map_err(stdout_err)?;
                out.write_all(&buf).map_err(stdout_err)?;
            }
            r.map(|()| Value::Null)
        };
        match result {
            Ok(report) => {
                reports.insert(name.to_string(), report);
            }
            Err(e @ (BenchError::BadArg(_) | BenchError::Io { .. })) => {
                return Err(BenchError::InScenario {
                    scenario: name.to_string(),
                    error: Box::new(e),
                });
            }
            Err(e) => {
                notes.push(format!("{name} failed: {e}"));
                reports.insert(name.to_string(), json!({ "error": e.to_string() }));
                if !args.json {
                    writeln!(out, "== bench {name} ==\nfailed: {e}").map_err(stdout_err)?;
                }
                failed.get_or_insert(BenchError::InScenario {
                    scenario: name.to_string(),
                    error: Box::new(e),
                });
            }
        }
        if !args.json {
            writeln!(out).map_err(stdout_err)?;
        }
    }
    if args.json {
        let doc = combine(args.quick, reports, notes);
        writeln!(out, "{doc}").map_err(stdout_err)?;
    } else {
        for n in &notes {
            writeln!(out, "note: {n}").map_err(stdout_err)?;
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The combined document: the reports under their names, the host facts once.
fn combine(quick: bool, reports: Map<String, Value>, notes: Vec<String>) -> Value {
    let mut cores: Vec<usize> = Vec::new();
    let mut pinned = true;
    let mut clock = None;
    for r in reports.values() {
        let h = &r["host"];
        for c in h["cores_used"].as_array().into_iter().flatten() {
            if let Some(c) = c.as_u64() {
                cores.push(c as usize);
            }
        }
        pinned &= h["pinned"].as_bool().unwrap_or(true);
        if clock.is_none() {
            clock = h["clock"].as_str().map(str::to_string);
        }
    }
    cores.sort_unstable();
    cores.dedup();
    let clock = clock.unwrap_or_else(|| {
        if host::tsc_invariant() {
            "tsc".into()
        } else {
            "monotonic".into()
        }
    });
    let host = host::collect(&cores, pinned, &clock);
    let order: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| reports.contains_key(*s))
        .collect();
    json!({
        "scenario": "all",
        "quick": quick,
        "order": order,
        "scenarios": reports,
        "host": host,
        "notes": notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_measuring_scenario_is_in_bench_all() {
        // A scenario added to `mdbus bench` must be added to `SCENARIOS` too.
        let mut subs = measuring_subcommands();
        subs.sort();
        let mut listed: Vec<String> = SCENARIOS.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(
            subs, listed,
            "add the new scenario to bench::all::SCENARIOS"
        );
        for s in SCENARIOS {
            let flags = flags_of(s).unwrap();
            assert!(flags.iter().any(|f| f == "json"), "{s} needs --json");
        }
    }

    #[test]
    fn flags_are_passed_on_where_the_scenario_has_them() {
        let args = AllArgs {
            json: true,
            quick: true,
            hgrm: Some("h".into()),
            plot: Some("p".into()),
            layout: LayoutArg {
                layout: Some("l.toml".into()),
            },
        };
        let (argv, notes) = scenario_argv("ring", &args).unwrap();
        let argv: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            argv,
            [
                "bench",
                "ring",
                "--json",
                "--quick",
                "--layout",
                "l.toml",
                "--hgrm",
                "h/ring",
                "--plot",
                "p/ring.svg"
            ]
        );
        assert!(notes.is_empty(), "{notes:?}");
        // Every scenario takes the layout, udp included.
        for name in SCENARIOS {
            let (argv, notes) = scenario_argv(name, &args).unwrap();
            assert!(
                argv.windows(2)
                    .any(|w| w[0] == "--layout" && w[1] == "l.toml"),
                "{name}: {argv:?}"
            );
            assert!(notes.is_empty(), "{name}: {notes:?}");
        }
        let parsed = parse(&scenario_argv("replay", &args).unwrap().0).unwrap();
        assert!(matches!(parsed.scenario, Scenario::Replay(ref r) if r.quick && r.json));
        assert!(scenario_argv("nope", &args).is_err());
    }
}
