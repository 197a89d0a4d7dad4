//! One flag language across the verbs: the same names, value syntax and checks everywhere,
//! the old spellings still read (hidden from `--help`, with a deprecation warning), and
//! `-v`/`-q`.
//!
//! Most cases end at the bus root, which is a path under a regular file here: a run that gets
//! that far (status 1, `bus root` in the error) had its command line accepted; a refused
//! command line is a usage error (status 2) before anything is set up.

mod cli_run;

use cli_run::*;

/// Asserts `args` is refused as a usage error naming `flag` and saying `why`.
fn refused(args: &[&str], flag: &str, why: &str) {
    let o = mdbus(args);
    assert_eq!(o.code, Some(2), "mdbus {args:?} not refused: {o:?}");
    assert!(
        o.stderr.contains(flag),
        "mdbus {args:?}: {flag} not named: {o:?}"
    );
    assert!(
        o.stderr.contains(why),
        "mdbus {args:?}: {why:?} not said: {o:?}"
    );
    assert!(!o.stderr.contains("panicked"), "mdbus {args:?}: {o:?}");
}

#[test]
fn a_ring_size_that_is_not_a_power_of_two_is_refused_by_every_verb() {
    let itch = itch_file();
    // recv used to round 3 MiB up to 4 MiB without a word, where replay refused it.
    refused(
        &["recv", "--stream", "x", "--ring-mb", "3", "--root", NO_ROOT],
        "--ring-mb",
        "not a power of two",
    );
    refused(
        &["replay", s(&itch), "--ring-mb", "3", "--root", NO_ROOT],
        "--ring-mb",
        "not a power of two",
    );
    for verb in [
        &["recv", "--stream", "x"][..],
        &["replay", s(&itch)],
        &["feed", "--group", "239.255.121.1:31901"],
    ] {
        let mut args = verb.to_vec();
        args.extend(["--ring-size", "3MiB", "--root", NO_ROOT]);
        refused(&args, "--ring-size", "not a power of two");
    }
    // Units are read the same everywhere.
    accepted(&[
        "recv",
        "--stream",
        "x",
        "--ring-size",
        "4MiB",
        "--root",
        NO_ROOT,
    ]);
    accepted(&[
        "replay",
        s(&itch),
        "--ring-size",
        "64KiB",
        "--root",
        NO_ROOT,
    ]);
}

#[test]
fn a_group_that_is_not_multicast_or_has_no_port_is_refused() {
    for verb in ["send", "recv"] {
        refused(
            &[
                verb,
                "--stream",
                "x",
                "--group",
                "10.0.0.1:31000",
                "--root",
                NO_ROOT,
            ],
            "--group",
            "not a multicast address",
        );
        refused(
            &[
                verb,
                "--stream",
                "x",
                "--line-b",
                "10.0.0.1:31000",
                "--root",
                NO_ROOT,
            ],
            "--line-b",
            "not a multicast address",
        );
        refused(
            &[
                verb,
                "--stream",
                "x",
                "--group",
                "239.255.121.2:0",
                "--root",
                NO_ROOT,
            ],
            "--group",
            "port 0",
        );
    }
    let itch = itch_file();
    refused(
        &[
            "exchange",
            s(&itch),
            "--group",
            "239.255.121.3:0",
            "--root",
            NO_ROOT,
        ],
        "--group",
        "port 0",
    );
    refused(
        &["feed", "--group", "239.255.121.4:0", "--root", NO_ROOT],
        "--group",
        "port 0",
    );
    refused(
        &[
            "recv",
            "--stream",
            "x",
            "--request-server",
            "10.0.0.1:0",
            "--root",
            NO_ROOT,
        ],
        "--request-server",
        "port 0",
    );
}

#[test]
fn the_nak_delay_is_a_duration_on_every_verb_that_has_one() {
    accepted(&[
        "recv",
        "--stream",
        "x",
        "--nak-delay",
        "1ms",
        "--root",
        NO_ROOT,
    ]);
    accepted(&[
        "feed",
        "--group",
        "239.255.121.5:31905",
        "--nak-delay",
        "1ms",
        "--root",
        NO_ROOT,
    ]);
    for verb in [
        &["recv", "--stream", "x"][..],
        &["feed", "--group", "239.255.121.5:31905"],
    ] {
        let mut args = verb.to_vec();
        args.extend(["--nak-delay", "1000", "--root", NO_ROOT]);
        refused(&args, "--nak-delay", "no unit");
    }
}

#[test]
fn old_spellings_still_work_are_hidden_and_warned_about() {
    let itch = itch_file();
    let itch = s(&itch);
    let cases: [(&[&str], &str); 20] = [
        (&["recv", "x"], "positional"),
        (&["recv", "--stream", "x", "--ring-mb", "4"], "--ring-mb"),
        (
            &["recv", "--stream", "x", "--nak-delay-us", "500"],
            "--nak-delay-us",
        ),
        (&["recv", "--stream", "x", "--join", "start"], "--join"),
        (
            &["recv", "--stream", "x", "--request", "127.0.0.1:9"],
            "--request",
        ),
        (&["recv", "--stream", "x", "--core", "0"], "--core"),
        (&["recv", "--stream", "x", "--stall-ms", "5"], "--stall-ms"),
        (
            &["recv", "--stream", "x", "--session-timeout-ms", "5"],
            "--session-timeout-ms",
        ),
        (
            &["recv", "--stream", "x", "--jump-confirm-ms", "5"],
            "--jump-confirm-ms",
        ),
        (&["send", "x"], "positional"),
        (&["send", "--stream", "x", "--flush-us", "5"], "--flush-us"),
        (
            &["send", "--stream", "x", "--heartbeat-ms", "5"],
            "--heartbeat-ms",
        ),
        (&["send", "--stream", "x", "--store-mb", "5"], "--store-mb"),
        (
            &["send", "--stream", "x", "--linger-ms", "5"],
            "--linger-ms",
        ),
        (&["send", "--stream", "x", "--core", "0"], "--core"),
        (&["replay", itch, "--ring-mb", "16"], "--ring-mb"),
        (
            &[
                "feed",
                "--group",
                "239.255.121.6:31906",
                "--ring-bytes",
                "65536",
            ],
            "--ring-bytes",
        ),
        (
            &["record", "--stream", "x", "out.rec", "--wait-secs", "1"],
            "--wait-secs",
        ),
        (&["stat", "x"], "positional"),
        (&["replay", itch, "--core", "0"], "--core"),
    ];
    for (args, old) in cases {
        let mut args = args.to_vec();
        args.extend(["--root", NO_ROOT]);
        let o = accepted(&args);
        let warning = o
            .stderr
            .lines()
            .find(|l| l.contains("deprecated"))
            .unwrap_or_else(|| panic!("mdbus {args:?}: no deprecation warning: {o:?}"));
        assert!(warning.contains("WARN"), "{warning}");
        assert!(warning.contains(old), "{old} not named: {warning}");
        assert!(
            warning.contains("use --"),
            "no replacement named: {warning}"
        );
        if old.starts_with("--") {
            let help = mdbus(&[args[0], "--help"]);
            assert_eq!(help.code, Some(0), "{help:?}");
            assert!(
                !help.stdout.split_whitespace().any(|w| w == old),
                "{old} shown by mdbus {} --help",
                args[0]
            );
        }
    }
    // bench ring's --cores is now --cpus, as everywhere.
    let o = mdbus(&["bench", "ring", "--quick", "--cores", "0,100000"]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("--cpus: cpu 100000"), "{o:?}");
    assert!(
        o.stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("--cores is deprecated")),
        "{o:?}"
    );
    let help = mdbus(&["bench", "ring", "--help"]);
    assert!(help.stdout.contains("--cpus"), "{help:?}");
    assert!(
        !help
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("--cores")),
        "{help:?}"
    );
    // The old integer flags keep their unit.
    let o = accepted(&[
        "recv",
        "--stream",
        "x",
        "--nak-delay-us",
        "500",
        "-v",
        "--root",
        NO_ROOT,
    ]);
    assert!(o.stderr.contains("nak_delay: DurationArg(500µs)"), "{o:?}");
    assert!(o.stderr.contains("use --nak-delay 500us"), "{o:?}");
}

#[test]
fn bench_scenarios_share_the_vocabulary() {
    // Refused as everywhere: a ring size that is not a power of two, a duration without a
    // unit.
    refused(
        &["bench", "ring", "--ring-size", "3MiB"],
        "--ring-size",
        "not a power of two",
    );
    refused(
        &["bench", "udp", "--nak-delay", "1000"],
        "--nak-delay",
        "no unit",
    );
    refused(
        &["bench", "ring", "--stall-timeout", "5"],
        "--stall-timeout",
        "no unit",
    );
    // Accepted: the runs end at cpus this process may not use, before anything is measured.
    let bad_cpus = |args: &[&str]| {
        let o = mdbus(args);
        assert_eq!(o.code, Some(1), "mdbus {args:?}: {o:?}");
        assert!(
            o.stderr.contains("--cpus: cpu 100000"),
            "mdbus {args:?}: {o:?}"
        );
        o
    };
    bad_cpus(&[
        "bench",
        "udp",
        "--quick",
        "--nak-delay",
        "250us",
        "--cpus",
        "100000,100001",
    ]);
    bad_cpus(&[
        "bench",
        "ring",
        "--quick",
        "--ring-size",
        "64KiB",
        "--cpus",
        "0,100000",
    ]);
    // The old spellings, warned about.
    for (args, old) in [
        (
            &[
                "bench",
                "udp",
                "--quick",
                "--nak-delay-us",
                "500",
                "--cpus",
                "100000,1",
            ][..],
            "--nak-delay-us",
        ),
        (
            &[
                "bench",
                "udp",
                "--quick",
                "--stall-secs",
                "5",
                "--cpus",
                "100000,1",
            ],
            "--stall-secs",
        ),
        (
            &[
                "bench",
                "ring",
                "--quick",
                "--capacity",
                "65536",
                "--cpus",
                "0,100000",
            ],
            "--capacity",
        ),
        (
            &[
                "bench",
                "ring",
                "--quick",
                "--stall-secs",
                "5",
                "--cpus",
                "0,100000",
            ],
            "--stall-secs",
        ),
    ] {
        let o = bad_cpus(args);
        assert!(
            o.stderr
                .lines()
                .any(|l| l.contains("WARN") && l.contains(&format!("{old} is deprecated"))),
            "mdbus {args:?}: {o:?}"
        );
    }
}

#[test]
fn quiet_silences_warnings_and_verbose_shows_debug_lines() {
    let args = ["recv", "--stream", "x", "--ring-mb", "4", "--root", NO_ROOT];
    let plain = accepted(&args);
    assert!(plain.stderr.contains("WARN"), "{plain:?}");
    assert!(!plain.stderr.contains("DEBUG"), "{plain:?}");
    let mut quiet = vec!["-q"];
    quiet.extend(args);
    let q = accepted(&quiet);
    assert!(!q.stderr.contains("WARN"), "{q:?}");
    assert!(!q.stderr.contains("deprecated"), "{q:?}");
    assert!(
        q.stderr.contains("mdbus: error: bus root"),
        "errors still show: {q:?}"
    );
    let mut verbose = args.to_vec();
    verbose.push("-v");
    let v = accepted(&verbose);
    assert!(
        v.stderr
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains("the command line as parsed")),
        "{v:?}"
    );
    // Each line has a timestamp and a level.
    let line = v
        .stderr
        .lines()
        .find(|l| l.contains("WARN"))
        .expect("the warning");
    assert!(line.starts_with("20") && line.contains('T'), "{line}");
}
