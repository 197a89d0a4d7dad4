//! `--config FILE` of `feed`, `send`, `recv` and `exchange`, and `mdbus config example ROLE`.
//!
//! Most cases end at the bus root, which is a path under a regular file here: a run that gets
//! that far (status 1, `bus root` in the error) had its command line accepted; a refused
//! command line is a usage error (status 2) before anything is set up.

mod cli_run;

use cli_run::*;
use std::time::Duration;

#[test]
fn every_example_configuration_parses_back_and_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let itch = itch_file();
    for role in ["feed", "send", "recv", "exchange"] {
        let o = mdbus(&["config", "example", role]);
        assert_eq!(o.code, Some(0), "{o:?}");
        let table: toml::Table = o.stdout.parse().unwrap_or_else(|e| panic!("{role}: {e}"));
        assert!(table.len() > 5, "{role}: {table:?}");
        assert!(o.stdout.lines().any(|l| l.starts_with("# ")), "comments");
        let path = dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, &o.stdout).expect("write the example");
        let mut args = vec![role, "--config", s(&path), "--root", NO_ROOT];
        if role == "exchange" {
            args.push(s(&itch));
        }
        accepted(&args);
    }
}

#[test]
fn a_configuration_with_an_unknown_key_or_a_bad_value_is_refused_naming_both() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("recv.toml");
    for (text, key, why) in [
        (
            "stream = \"x\"\nnak-dealy = \"1ms\"\n",
            "nak-dealy",
            "unknown key",
        ),
        ("stream = \"x\"\nring-mb = 4\n", "ring-mb", "unknown key"),
        ("stream = \"x\"\n[group]\nx = 1\n", "group", "table"),
        (
            "stream = \"x\"\nsummary = \"yes\"\n",
            "summary",
            "true or false",
        ),
        (
            "stream = \"x\"\ngroup = [\"239.1.1.1:1\"]\n",
            "group",
            "not a list",
        ),
        (
            "stream = \"x\"\nnak-delay = \"5\"\n",
            "nak-delay",
            "no unit",
        ),
        (
            "stream = \"x\"\nring-size = \"3MiB\"\n",
            "ring-size",
            "not a power of two",
        ),
        (
            "stream = \"x\"\ngroup = \"10.1.1.1:5\"\n",
            "group",
            "not a multicast",
        ),
        ("stream = \"x\"\nnak-delay = ", "nak-delay", "TOML"),
    ] {
        std::fs::write(&path, text).expect("write");
        let o = mdbus(&["recv", "--config", s(&path), "--root", NO_ROOT]);
        assert_eq!(o.code, Some(2), "{text:?}: {o:?}");
        assert!(o.stderr.contains(key), "{text:?}: {key} not named: {o:?}");
        assert!(o.stderr.contains(why), "{text:?}: {why:?} not said: {o:?}");
        assert!(
            o.stderr.contains(s(&path)),
            "{text:?}: the file not named: {o:?}"
        );
    }
    let o = mdbus(&["recv", "--config", "/dev/null/none.toml", "--root", NO_ROOT]);
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("/dev/null/none.toml"), "{o:?}");
}

#[test]
fn flags_on_the_command_line_win_over_the_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let path = dir.path().join("exchange.toml");
    std::fs::write(
        &path,
        "group = \"239.255.121.7:31907\"\n\
         interface = \"127.0.0.1\"\n\
         request-port = 31908\n\
         session = \"FROMFILE\"\n\
         linger = \"100ms\"\n\
         summary = true\n",
    )
    .expect("write");
    let itch = itch_file();
    let o = mdbus_for(
        &[
            "-v",
            "exchange",
            s(&itch),
            "--config",
            s(&path),
            "--session",
            "FROMFLAG",
            "--root",
            s(&root),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    let summary: serde_json::Value = serde_json::from_str(o.stdout.trim()).expect("one JSON");
    assert_eq!(summary["session"], "FROMFLAG", "the flag wins: {summary}");
    assert_eq!(
        summary["group"], "239.255.121.7:31907",
        "the file's: {summary}"
    );
    assert_eq!(summary["counters"]["messages"], 10_000, "{summary}");
    assert!(
        o.stderr.contains("given on the command line instead") && o.stderr.contains("session"),
        "{o:?}"
    );
}
