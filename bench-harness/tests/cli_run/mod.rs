//! Running the `mdbus` binary from the command-line tests: a run's status and output, and
//! the outcome most cases end at (accepted up to the bus root, which cannot be opened).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

/// A bus root that cannot be opened (a path under a regular file).
pub const NO_ROOT: &str = "/dev/null/mdbus-flags-cli";

/// What a run of `mdbus` did.
#[derive(Debug)]
pub struct Out {
    /// The exit status; `None` when it had to be killed (it ran on).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `mdbus args`, killing it after `limit` (a command line that should have been refused
/// may run on, receiving).
pub fn mdbus_for(args: &[&str], limit: Duration) -> Out {
    let mut child = Command::new(MDBUS)
        .args(args)
        .env_remove("MDBUS_LOG")
        .env_remove("RUST_LOG")
        .env_remove("MDBUS_LAYOUT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mdbus");
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let until = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for mdbus") {
            break status.code();
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

pub fn mdbus(args: &[&str]) -> Out {
    mdbus_for(args, Duration::from_secs(20))
}

/// Asserts `args` got past its command line (to the bus root that cannot be opened).
pub fn accepted(args: &[&str]) -> Out {
    let o = mdbus(args);
    assert_eq!(o.code, Some(1), "mdbus {args:?}: {o:?}");
    assert!(o.stderr.contains("bus root"), "mdbus {args:?}: {o:?}");
    o
}

pub fn itch_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/testdata/itch/aapl-2020-01-30-10k.itch")
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
