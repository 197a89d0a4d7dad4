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

const SYSTEMS: [&str; 4] = ["floor", "mdbus-shm", "rtrb", "crossbeam-channel"];

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
    assert_eq!(names, SYSTEMS);
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
        if name == "floor" {
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

    for s in SYSTEMS {
        let text = std::fs::read_to_string(hgrm.join(format!("{s}.hgrm"))).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(
            text.contains("Total count    =          300]"),
            "{s}: {text}"
        );
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    for s in SYSTEMS {
        assert!(svg.contains(s), "chart names {s}");
    }

    // compare the report with itself: every ratio is 1.
    let a = dir.path().join("a.json");
    std::fs::write(&a, &out).unwrap();
    let a = a.to_str().unwrap();
    let cmp: Value = serde_json::from_str(&run(&["compare", a, a, "--json"])).unwrap();
    let systems = cmp["systems"].as_array().unwrap();
    assert_eq!(systems.len(), 4);
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
    assert_eq!(results.len(), 4);
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
