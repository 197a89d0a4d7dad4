//! Runs `mdbus bench udp --quick --json` and checks the shape of the report and that its
//! counts add up (every message delivered, every dropped message recovered). No timing is
//! asserted: the figures depend on the machine.

use std::process::Command;

use serde_json::Value;

fn mdbus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mdbus"))
        .args(args)
        .output()
        .expect("the mdbus binary runs")
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn quick_json_has_every_system_and_the_counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let hgrm = dir.path().join("hgrm");
    let plot = dir.path().join("udp.svg");
    let out = mdbus(&[
        "bench",
        "udp",
        "--quick",
        "--json",
        "--hgrm",
        hgrm.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench udp failed: {stderr}");
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "one JSON line: {stdout}"
    );
    let v: Value = serde_json::from_str(stdout.trim()).expect("stdout is one JSON object");
    assert_eq!(v["scenario"], "udp");

    let p = &v["params"];
    let (count, warmup, rounds) = (u(p, "count"), u(p, "warmup"), u(p, "rounds"));
    assert_eq!(u(p, "msg_bytes"), 64);
    assert_eq!(p["mode"], "ping-pong");
    assert!(p["rate"].is_null());
    assert!(!p["threads"].as_array().unwrap().is_empty());
    assert!(p["layout"].as_str().unwrap().contains("cpu"));

    let results = v["results"].as_array().expect("results array");
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["udp-floor", "mdbus-udp", "mdbus-udp-recovery"]);
    for r in results {
        for key in [
            "msg_bytes",
            "count",
            "min_ns",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "p999_ns",
            "p9999_ns",
            "max_ns",
        ] {
            u(r, key);
        }
        let q: Vec<u64> = ["min_ns", "p50_ns", "p99_ns", "p999_ns", "max_ns"]
            .iter()
            .map(|k| u(r, k))
            .collect();
        assert!(
            q.windows(2).all(|w| w[0] <= w[1]),
            "percentiles in order: {r}"
        );
    }
    let (floor, udp, rec) = (&results[0], &results[1], &results[2]);
    // Every latency sample asked for was taken, round by round.
    assert_eq!(u(floor, "count"), count);
    assert_eq!(u(udp, "count"), count);
    assert_eq!(
        floor["round_p50_ns"].as_array().unwrap().len() as u64,
        rounds
    );
    assert_eq!(udp["round_p50_ns"].as_array().unwrap().len() as u64, rounds);
    assert_eq!(u(udp, "lost"), 0);
    assert_eq!(floor["p50_vs_floor"].as_f64(), Some(1.0));
    assert!(udp["p50_vs_floor"].as_f64().unwrap() > 0.0);
    assert!(udp["msgs_per_sec"].as_f64().unwrap() > 0.0);
    assert!(floor["msgs_per_sec"].is_null());

    // The latency phase sent every message (warm-up included) once and delivered it.
    let s = &v["sender"];
    let sent = count + rounds * warmup;
    assert_eq!(u(s, "messages"), sent);
    assert_eq!(u(s, "received"), sent);
    assert!(u(s, "packets") >= 1 && u(s, "packets") <= sent);

    // Recovery: every dropped message came back; the samples are the measured ones of them.
    let r = &v["recovery"];
    assert!(
        u(r, "dropped_packets") > 0,
        "1% of the packets were dropped: {r}"
    );
    assert_eq!(u(r, "recovered"), u(r, "dropped_messages"), "{r}");
    assert_eq!(u(r, "unrecoverable"), 0);
    assert!(u(r, "requests") >= 1);
    assert!(u(r, "samples") <= u(r, "dropped_messages"));
    assert_eq!(u(r, "samples"), u(rec, "count"));
    assert_eq!(u(r, "p99_ns"), u(rec, "p99_ns"));
    assert_eq!(
        u(r, "target_p99_ns"),
        2 * u(r, "rtt_ns") + u(r, "nak_delay_ns")
    );
    assert_eq!(u(r, "rtt_ns"), 2 * u(floor, "p99_ns"));
    assert_eq!(u(r, "nak_delay_ns"), 1_000_000);
    assert_eq!(
        r["met"].as_bool(),
        Some(u(r, "p99_ns") <= u(r, "target_p99_ns"))
    );
    assert_eq!(u(&r["all_messages"], "count"), u(p, "recovery_count"));

    let host = &v["host"];
    assert!(host["cpu_model"].is_string());
    assert!(!host["cores_used"].as_array().unwrap().is_empty());
    let idle = &v["idle_cost"];
    for key in ["sender_turn_ns", "receiver_turn_ns", "empty_recv_ns"] {
        assert!(idle[key].as_f64().unwrap() > 0.0, "{key}: {idle}");
    }

    for name in names {
        let f = hgrm.join(format!("{name}.hgrm"));
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(text.starts_with("       Value     Percentile"), "{text}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("udp-floor") && svg.contains("mdbus-udp-recovery"));
}

#[test]
fn bad_cpu_lists_are_clear_errors() {
    let out = mdbus(&["bench", "udp", "--quick", "--cpus", "0,0,0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cpus") && err.contains("two cpus"), "{err}");
    let out = mdbus(&["bench", "udp", "--quick", "--loss", "1.5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--loss"));
}
