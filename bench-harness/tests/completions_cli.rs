//! `mdbus completions SHELL` and `mdbus manpage` are written from the same clap definitions
//! the parser uses, so they name every verb and its flags.

use std::process::Command;

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

fn stdout(args: &[&str]) -> String {
    let out = Command::new(MDBUS).args(args).output().expect("run mdbus");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn completions_name_every_verb_and_their_flags() {
    let bash = stdout(&["completions", "bash"]);
    for verb in [
        "replay", "feed", "exchange", "send", "recv", "stat", "streams", "demo",
    ] {
        assert!(bash.contains(verb), "bash completion lacks {verb}");
    }
    assert!(
        bash.contains("--book-summary") && bash.contains("--serve"),
        "flags"
    );
    for shell in ["zsh", "fish"] {
        assert!(
            stdout(&["completions", shell]).contains("exchange"),
            "{shell}"
        );
    }
    let out = Command::new(MDBUS)
        .args(["completions", "cmd.exe"])
        .output()
        .expect("run mdbus");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn the_manual_page_is_roff_with_every_verb() {
    let man = stdout(&["manpage"]);
    assert!(
        man.contains(".TH mdbus 1"),
        "{}",
        &man[..man.len().min(200)]
    );
    for verb in ["replay", "exchange", "stat"] {
        assert!(man.contains(verb), "the manual page lacks {verb}");
    }
}
