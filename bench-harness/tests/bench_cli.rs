//! Runs `bench ring` and `bench compare` through their command-line arguments with tiny counts
//! and checks the shape of what they print and write. No timing is asserted.

use clap::Parser;
use mdbus_bench_harness::bench::{BenchArgs, run_to};
use serde_json::Value;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn run(args: &[&str]) -> String {
    let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("bad arguments {args:?}: {e}"));
    let mut out = Vec::new();
    run_to(&cli.bench, &mut out).unwrap_or_else(|e| panic!("bench {args:?} failed: {e}"));
    String::from_utf8(out).expect("utf-8 output")
}

/// The rows of a default `bench ring`, in order (`iceoryx2` with the `peers-iceoryx2` feature).
fn systems() -> Vec<&'static str> {
    let mut v = vec!["floor", "mdbus-shm", "rtrb", "disruptor"];
    if cfg!(feature = "peers-iceoryx2") {
        v.push("iceoryx2");
    }
    v.push("crossbeam-channel");
    v
}

fn tiny(throughput: &'static str, extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![
        "ring",
        "--json",
        "--count",
        "300",
        "--warmup",
        "20",
        "--rounds",
        "3",
        "--throughput-count",
        throughput,
        "--batch",
        "16",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn ring_json_has_every_system_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let hgrm = dir.path().join("hgrm");
    let plot = dir.path().join("latency.svg");
    let (h, p) = (hgrm.to_str().unwrap(), plot.to_str().unwrap());
    let mut args = tiny("3000", &[]);
    args.extend_from_slice(&["--hgrm", h, "--plot", p]);
    let out = run(&args);
    // Exactly one JSON object, nothing else.
    assert_eq!(
        out.trim_end().lines().count(),
        1,
        "one line of output: {out}"
    );
    let v: Value = serde_json::from_str(out.trim()).expect("stdout is one JSON object");
    assert_eq!(v["scenario"], "ring");
    let results = v["results"].as_array().expect("results array");
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, systems());
    for r in results {
        let name = r["name"].as_str().unwrap();
        assert_eq!(r["msg_bytes"], 64, "{name}");
        assert_eq!(r["count"], 300, "{name}");
        for k in ["p50_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns"] {
            assert!(r[k].as_u64().is_some(), "{name}.{k} = {}", r[k]);
        }
        let p50 = r["p50_ns"].as_u64().unwrap();
        let p99 = r["p99_ns"].as_u64().unwrap();
        let max = r["max_ns"].as_u64().unwrap();
        assert!(p50 <= p99 && p99 <= max, "{name}: percentiles out of order");
        assert!(r.get("msgs_per_sec").is_some(), "{name}: msgs_per_sec key");
        assert_eq!(
            r["round_p50_ns"].as_array().unwrap().len(),
            3,
            "{name}: one median per round"
        );
        if name == "floor" || name == "iceoryx2" {
            // One word cannot stream; iceoryx2 is measured by ping-pong only.
            assert!(r["msgs_per_sec"].is_null());
        } else {
            assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{name}");
        }
    }
    for k in [
        "cpu_model",
        "cores_used",
        "kernel",
        "governor",
        "isolated_cores",
        "tsc_invariant",
    ] {
        assert!(v["host"].get(k).is_some(), "host.{k}");
    }
    assert_eq!(v["host"]["cores_used"].as_array().unwrap().len(), 2);
    assert_eq!(v["params"]["count"], 300);
    assert_eq!(v["params"]["rounds"], 3);
    assert_eq!(v["params"]["mode"], "ping-pong");

    for s in systems() {
        let text = std::fs::read_to_string(hgrm.join(format!("{s}.hgrm"))).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(
            text.contains("Total count    =          300]"),
            "{s}: {text}"
        );
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    for s in systems() {
        assert!(svg.contains(s), "chart names {s}");
    }

    // compare the report with itself: every ratio is 1.
    let a = dir.path().join("a.json");
    std::fs::write(&a, &out).unwrap();
    let a = a.to_str().unwrap();
    let cmp: Value = serde_json::from_str(&run(&["compare", a, a, "--json"])).unwrap();
    let systems = cmp["systems"].as_array().unwrap();
    assert_eq!(systems.len(), self::systems().len());
    for s in systems {
        for r in s["ratios"].as_array().unwrap() {
            if !r["ratio"].is_null() {
                assert_eq!(r["ratio"].as_f64().unwrap(), 1.0, "{s}");
            }
        }
    }
    let table = run(&["compare", a, a]);
    assert!(
        table.contains("mdbus-shm") && table.contains("1.000"),
        "{table}"
    );
}

#[test]
fn fixed_rate_mode_counts_every_message() {
    let out = run(&tiny(
        "0",
        &[
            "--rate",
            "20000",
            "--msg-bytes",
            "128",
            "--shm-mode",
            "broadcast",
        ],
    ));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["params"]["mode"], "fixed-rate");
    assert_eq!(v["params"]["rate"], 20000);
    let results = v["results"].as_array().unwrap();
    // iceoryx2 is measured by ping-pong only.
    let expected = systems().into_iter().filter(|s| *s != "iceoryx2").count();
    assert_eq!(results.len(), expected);
    for r in results {
        // A broadcast ring may be lapped on a loaded host: lost messages are counted apart.
        let n = r["count"].as_u64().unwrap() + r["lost"].as_u64().unwrap();
        assert_eq!(n, 300, "{r}");
        assert_eq!(r["msg_bytes"], 128);
        assert!(r["msgs_per_sec"].is_null(), "throughput skipped");
    }
}

#[test]
fn readable_table_names_every_system() {
    let out = run(&[
        "ring",
        "--count",
        "100",
        "--warmup",
        "5",
        "--rounds",
        "1",
        "--throughput-count",
        "500",
        "--systems",
        "rtrb,floor",
    ]);
    assert!(out.contains("p99.99") && out.contains("p50/floor"), "{out}");
    assert!(out.contains("\nrtrb ") && out.contains("\nfloor "), "{out}");
    assert!(!out.contains("mdbus-shm"), "{out}");
}

#[test]
fn bad_arguments_are_refused() {
    assert!(Cli::try_parse_from(["bench", "ring", "--msg-bytes", "63"]).is_err());
    assert!(Cli::try_parse_from(["bench", "ring", "--capacity", "1000"]).is_err());
    assert!(Cli::try_parse_from(["bench", "ring", "--systems", "nope"]).is_err());
    assert!(Cli::try_parse_from(["bench", "ring", "--cores", "0"]).is_err());
    let cli =
        Cli::try_parse_from(["bench", "ring", "--cores", "0,100000", "--count", "10"]).unwrap();
    let err = run_to(&cli.bench, &mut Vec::new()).unwrap_err().to_string();
    assert!(err.contains("100000"), "{err}");
}

#[test]
fn all_quick_json_has_every_scenario_and_compares_scenario_by_scenario() {
    use mdbus_bench_harness::bench::all::SCENARIOS;
    let dir = tempfile::tempdir().unwrap();
    let hgrm = dir.path().join("hgrm");
    let plot = dir.path().join("plots");
    let (h, p) = (hgrm.to_str().unwrap(), plot.to_str().unwrap());
    let out = run(&["all", "--quick", "--json", "--hgrm", h, "--plot", p]);
    assert_eq!(out.trim_end().lines().count(), 1, "one JSON line: {out}");
    let v: Value = serde_json::from_str(out.trim()).expect("stdout is one JSON object");
    assert_eq!(v["scenario"], "all");
    assert_eq!(v["quick"], true);
    let order: Vec<&str> = v["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(order, SCENARIOS);
    for name in SCENARIOS {
        let r = &v["scenarios"][name];
        assert_eq!(r["scenario"], *name, "{name}: {r}");
        assert!(
            !r["results"].as_array().expect("results").is_empty(),
            "{name}"
        );
        assert!(
            r["host"]["cores_used"].is_array(),
            "{name}: its own host facts"
        );
        // Each scenario wrote its chart.
        let svg = std::fs::read_to_string(plot.join(format!("{name}.svg"))).unwrap();
        assert!(svg.contains("<svg"), "{name}");
    }
    // The quick sizes.
    assert_eq!(v["scenarios"]["ring"]["params"]["count"], 2000);
    assert_eq!(v["scenarios"]["ring"]["params"]["rounds"], 2);
    assert_eq!(
        v["scenarios"]["replay"]["params"]["throughput_count"],
        20_430
    );
    // The host facts once, with every core a scenario used.
    for k in [
        "cpu_model",
        "cores_used",
        "kernel",
        "governor",
        "isolated_cores",
    ] {
        assert!(v["host"].get(k).is_some(), "host.{k}");
    }
    let all_cores = v["host"]["cores_used"].as_array().unwrap();
    for name in SCENARIOS {
        for c in v["scenarios"][name]["host"]["cores_used"]
            .as_array()
            .unwrap()
        {
            assert!(all_cores.contains(c), "{name} core {c} in {all_cores:?}");
        }
    }
    for s in systems() {
        assert!(hgrm.join("ring").join(format!("{s}.hgrm")).is_file(), "{s}");
    }
    assert!(hgrm.join("replay/mdbus-pipeline.hgrm").is_file());
    assert!(hgrm.join("replay/mdbus-pipeline-shared.hgrm").is_file());

    // Compared with itself: every scenario, every ratio 1.
    let a = dir.path().join("a.json");
    std::fs::write(&a, &out).unwrap();
    let a = a.to_str().unwrap();
    let cmp: Value = serde_json::from_str(&run(&["compare", a, a, "--json"])).unwrap();
    let scenarios = cmp["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), SCENARIOS.len(), "{cmp}");
    for s in scenarios {
        assert!(!s["systems"].as_array().unwrap().is_empty(), "{s}");
        for sys in s["systems"].as_array().unwrap() {
            for r in sys["ratios"].as_array().unwrap() {
                if !r["ratio"].is_null() {
                    assert_eq!(r["ratio"].as_f64().unwrap(), 1.0, "{s}");
                }
            }
        }
    }
    // A candidate whose ring rtrb median doubled and whose replay failed.
    let mut b: Value = serde_json::from_str(out.trim()).unwrap();
    let rtrb = b["scenarios"]["ring"]["results"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == "rtrb")
        .unwrap();
    let p50 = rtrb["p50_ns"].as_u64().unwrap();
    rtrb["p50_ns"] = (p50 * 2).into();
    b["scenarios"]["replay"] = serde_json::json!({"error": "stalled"});
    let bp = dir.path().join("b.json");
    std::fs::write(&bp, b.to_string()).unwrap();
    let bp = bp.to_str().unwrap();
    let cmp: Value = serde_json::from_str(&run(&["compare", a, bp, "--json"])).unwrap();
    let ring = &cmp["scenarios"][0];
    assert_eq!(ring["scenario"], "ring");
    let rtrb = ring["systems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "rtrb")
        .unwrap();
    if p50 > 0 {
        assert_eq!(rtrb["ratios"][0]["ratio"].as_f64().unwrap(), 2.0);
    }
    assert_eq!(cmp["unmatched"][0], "replay (no results in B)", "{cmp}");
    let table = run(&["compare", a, bp]);
    assert!(
        table.contains("== ring ==") && table.contains("unmatched scenario: replay"),
        "{table}"
    );
}

#[test]
fn all_tables_name_every_scenario() {
    let out = run(&["all", "--quick"]);
    for name in mdbus_bench_harness::bench::all::SCENARIOS {
        assert!(out.contains(&format!("== bench {name} ==")), "{out}");
    }
    assert!(
        out.contains("p50/floor") && out.contains("mdbus-pipeline"),
        "{out}"
    );
}
