//! What the namespace tests of `mdbus send` and `mdbus recv` share: "hosts" (network
//! namespaces on a bridge), child processes, reading and checking the streams, summaries, and
//! the usual run of a replay through a sender to two receivers. See `net_multihost.rs`.

#![allow(dead_code, unused_imports)]

use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mdbus_bus::schema::GapScope;
use mdbus_bus::{Bus, ENVELOPE_MSG_TYPE, ProducerStatus, ReceiveError, SubscribeOptions};
use mdbus_codecs::moldudp64::{HEADER_LEN, PacketBuilder, RequestPacket, Session, encode_header};
use mdbus_feed_handlers::net::wire;
use mdbus_shm::counters::read_counters;
use serde_json::Value;

pub const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");
/// How long any one step may take before the case fails (generous: the machine is shared).
pub const LIMIT: Duration = Duration::from_secs(60);
/// The stream sent, and the local stream of each receiver.
pub const STREAM: &str = "s";
pub const PORT: u16 = 31_000;
pub const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 234, 0, 1), PORT);
/// Idle strategy of every role: the processes share two cores with other tests.
pub const IDLE: &str = "sleep:50";

/// The hosts, as indexes into [`Net::hosts`].
pub const SND: usize = 0;
pub const RX1: usize = 1;
pub const RX2: usize = 2;
pub const ROGUE: usize = 3;
pub const HOSTS: [&str; 4] = ["snd", "rx1", "rx2", "rogue"];

pub fn host_ip(h: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 234, 0, 1 + h as u8)
}

pub fn itch_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/testdata/itch/aapl-2020-01-30-10k.itch")
}

// ---------------------------------------------------------------------------------------------
// MoldUDP64 packets

/// The session named `name` (10 bytes).
pub fn session_of(name: &str) -> Session {
    Session(name.as_bytes().try_into().expect("a 10-byte session name"))
}

/// A re-request of `message_count` messages of `session` from `sequence_number`.
pub fn request_packet(
    session: Session,
    sequence_number: u64,
    message_count: u16,
) -> [u8; HEADER_LEN] {
    let mut req = [0u8; HEADER_LEN];
    RequestPacket {
        session,
        sequence_number,
        message_count,
    }
    .encode(&mut req)
    .expect("request");
    req
}

// ---------------------------------------------------------------------------------------------
// Host commands and namespaces

/// Runs a host command to completion; fails the case, saying what is needed, if it cannot.
pub fn host_cmd(prog: &str, args: &[&str], stdin: Option<&str>) -> String {
    let line = format!("{prog} {}", args.join(" "));
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{line}`: {e} -- these tests need root and iproute2, nftables and \
                 tshark installed"
            )
        });
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("writing to `{line}`: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for `{line}`: {e}"));
    assert!(
        out.status.success(),
        "`{line}` failed ({}): {} -- these tests need root, network namespaces, nftables and \
         tshark",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ip(args: &[&str]) {
    host_cmd("ip", args, None);
}

/// Moves this thread into network namespace `name` (other threads stay where they are).
pub fn enter_netns(name: &str) {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{name}");
    let f = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: `setns` with a valid namespace file descriptor (open for the call) and
    // CLONE_NEWNET changes only this thread's network namespace; no memory is involved.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Deletes the namespaces of earlier runs of these tests whose process is gone (killed before
/// it could clean up).
pub fn remove_stale_namespaces(prefix: &str) {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Four "hosts" (network namespaces) on one bridge that lives in a fifth namespace, so
/// nothing is added to the host's own namespace. Each host has a bus root and an output
/// folder under one temporary directory. Everything is deleted on drop.
pub struct Net {
    pub bridge: String,
    pub hosts: [String; 4],
    pub dir: tempfile::TempDir,
}

impl Net {
    pub fn new() -> Net {
        Net::with_prefix("mdbus-mh")
    }

    /// As [`new`](Self::new), the namespaces named `<prefix><pid>-<n>-...`: each test file
    /// its own prefix, so runs of several at once never meet.
    pub fn with_prefix(prefix: &str) -> Net {
        remove_stale_namespaces(prefix);
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("{prefix}{}-{n}", std::process::id());
        // Built before the namespaces exist, so a failing setup still deletes what it made.
        let net = Net {
            bridge: format!("{base}-br"),
            hosts: HOSTS.map(|h| format!("{base}-{h}")),
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        let br = net.bridge.as_str();
        ip(&["netns", "add", br]);
        ip(&["-n", br, "link", "set", "lo", "up"]);
        // Snooping off: the bridge floods multicast to every port, as a plain switch would.
        ip(&[
            "-n",
            br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", br, "link", "set", "br0", "up"]);
        for (h, ns) in net.hosts.iter().enumerate() {
            ip(&["netns", "add", ns]);
            let port = format!("p{h}");
            ip(&[
                "-n", br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            ip(&["-n", br, "link", "set", &port, "master", "br0"]);
            ip(&["-n", br, "link", "set", &port, "up"]);
            let addr = format!("{}/24", host_ip(h));
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
            // A bus root must be the user's alone, whatever the umask.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(net.root(h))
                .expect("bus root");
        }
        net
    }

    pub fn ns(&self, h: usize) -> &str {
        &self.hosts[h]
    }

    /// Bus root of host `h`.
    pub fn root(&self, h: usize) -> PathBuf {
        self.dir.path().join(format!("root-{}", HOSTS[h]))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Loads an nftables ruleset (a table `inet t` with a filter chain `in` on the input hook
    /// holding `rules`) into host `h`.
    pub fn nft(&self, h: usize, rules: &[&str]) {
        let mut script = String::from(
            "table inet t {\n  chain in {\n    type filter hook input priority 0; policy accept;\n",
        );
        for r in rules {
            script.push_str("    ");
            script.push_str(r);
            script.push('\n');
        }
        script.push_str("  }\n}\n");
        host_cmd(
            "ip",
            &["netns", "exec", self.ns(h), "nft", "-f", "-"],
            Some(&script),
        );
    }

    /// Packets counted by the `counter` statements of table `inet t` in host `h`.
    pub fn nft_counted(&self, h: usize) -> u64 {
        let out = host_cmd(
            "ip",
            &[
                "netns",
                "exec",
                self.ns(h),
                "nft",
                "-j",
                "list",
                "table",
                "inet",
                "t",
            ],
            None,
        );
        let v: Value = serde_json::from_str(&out).expect("nft -j prints JSON");
        let mut total = 0;
        for item in v["nftables"].as_array().expect("nftables array") {
            for e in item["rule"]["expr"].as_array().into_iter().flatten() {
                if let Some(p) = e["counter"]["packets"].as_u64() {
                    total += p;
                }
            }
        }
        total
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.bridge]) {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process whose output goes to files; killed on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub out: PathBuf,
    pub err: PathBuf,
}

/// What a finished child printed.
#[derive(Debug)]
pub struct Done {
    pub status: ExitStatus,
    pub out: String,
    pub err: String,
}

impl Proc {
    /// Runs `args` (the `mdbus` binary unless `prog` is given) in host `ns` (`None`: here).
    pub fn spawn(
        net: &Net,
        name: &str,
        ns: Option<usize>,
        prog: Option<&str>,
        args: &[String],
    ) -> Proc {
        let (out, err) = (
            net.file(&format!("{name}.out")),
            net.file(&format!("{name}.err")),
        );
        let prog = prog.unwrap_or(MDBUS);
        let mut cmd = match ns {
            Some(h) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", net.ns(h), prog]);
                c
            }
            None => Command::new(prog),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("output file"))
            .stderr(fs::File::create(&err).expect("output file"));
        // Killed with the test thread that started it, even if the test process is killed.
        let die_with_parent = || {
            // SAFETY: `prctl(PR_SET_PDEATHSIG)` takes integers only and touches no memory.
            let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY: the closure runs in the forked child before exec; it calls only `prctl`,
        // which is async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(die_with_parent);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {prog} {args:?}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            out,
            err,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Fails the case if the child has exited with a failure (it may have finished its work
    /// and exited cleanly, as a sender does a linger time after its session ends).
    pub fn assert_running_or_done(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait()
            && !status.success()
        {
            panic!("{} failed ({status}): {}", self.name, self.stderr().trim());
        }
    }

    /// Fails the case if the child has exited (it was expected to keep running).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}): {}",
                self.name,
                self.stderr().trim()
            );
        }
    }

    /// Sends `sig` (`libc::SIGTERM`, `libc::SIGINT`, ...).
    pub fn signal(&self, sig: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: `kill` takes plain integers; `pid` is our own child, not yet reaped (a
        // `Child` is reaped only by `wait`), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill {} ({}): {}",
            self.pid(),
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the child to exit (at most `LIMIT`), returns what it printed.
    pub fn wait(&mut self) -> Done {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let _ = self.child.kill();
                    panic!(
                        "{} did not finish within {LIMIT:?}; stderr: {}",
                        self.name,
                        self.stderr().trim()
                    );
                }
                Err(e) => panic!("waiting for {}: {e}", self.name),
            }
        };
        Done {
            status,
            out: fs::read_to_string(&self.out).unwrap_or_default(),
            err: self.stderr(),
        }
    }

    /// [`wait`](Self::wait), and the child must have succeeded.
    pub fn wait_ok(&mut self) -> Done {
        let d = self.wait();
        assert!(
            d.status.success(),
            "{} failed ({}): {}",
            self.name,
            d.status,
            d.err.trim()
        );
        d
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Waits until the counters file `path` is written by `p` (the role is bound and joined),
/// returns its detail line.
pub fn wait_ready(p: &mut Proc, path: &Path) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(s) = read_counters(path)
            && s.pid == p.pid()
        {
            return s.detail;
        }
        p.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} wrote no counters at {} within {LIMIT:?}",
            p.name,
            path.display()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `mdbus recv` on receiver host `h` (ready: sockets joined, local stream created).
pub fn start_recv(net: &Net, h: usize, name: &str, extra: &[&str]) -> Proc {
    let mut args = strings(&["recv", STREAM, "--group"]);
    args.push(GROUP.to_string());
    args.extend(strings(&["--interface", &host_ip(h).to_string()]));
    args.extend(strings(&["--exit-at-end", "--summary", "--book-summary"]));
    args.extend(strings(&["--idle", IDLE, "--root"]));
    args.push(net.root(h).display().to_string());
    args.extend(strings(extra));
    let mut p = Proc::spawn(net, name, Some(h), None, &args);
    wait_ready(&mut p, &net.root(h).join(format!("{STREAM}.recv.stat")));
    p
}

/// Starts `mdbus send` of the sender host's stream from its oldest record; returns it
/// (ready: sockets bound) and its session name.
pub fn start_send(net: &Net, name: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = strings(&["send", STREAM, "--group"]);
    args.push(GROUP.to_string());
    args.extend(strings(&["--interface", &host_ip(SND).to_string()]));
    args.extend(strings(&["--start", "oldest", "--summary", "--idle", IDLE]));
    args.push("--root".into());
    args.push(net.root(SND).display().to_string());
    args.extend(strings(extra));
    let mut p = Proc::spawn(net, name, Some(SND), None, &args);
    let detail = wait_ready(&mut p, &net.root(SND).join(format!("{STREAM}.send.stat")));
    let session = detail.rsplit(' ').next().unwrap_or_default().to_owned();
    assert_eq!(session.len(), 10, "a session name in {detail:?}");
    (p, session)
}

/// Starts `mdbus replay` of the AAPL sample into the sender host's stream at `speed`.
pub fn start_replay(net: &Net, speed: &str) -> Proc {
    let mut args = strings(&["replay"]);
    args.push(itch_file().display().to_string());
    args.extend(strings(&[
        "--feed",
        STREAM,
        "--book-summary",
        "--no-progress",
    ]));
    args.extend(strings(&["--speed", speed, "--root"]));
    args.push(net.root(SND).display().to_string());
    Proc::spawn(net, "replay", None, None, &args)
}

/// A counter of a live role, read from its counters file (0 until it is written).
pub fn live_counter(root: &Path, role: &str, name: &str) -> u64 {
    read_counters(&root.join(format!("{STREAM}.{role}.stat")))
        .ok()
        .and_then(|s| s.get(name))
        .unwrap_or(0)
}

/// Stops a paced replay (`SIGSTOP`), which must still be running: the stream is not over.
pub fn pause(replay: &mut Proc) {
    replay.signal(libc::SIGSTOP);
    replay.assert_running();
}

/// Waits until receiver host `h` delivered at least `n` messages.
pub fn wait_delivered(net: &Net, h: usize, n: u64, p: &mut Proc) {
    let deadline = Instant::now() + LIMIT;
    while live_counter(&net.root(h), "recv", "messages") < n {
        p.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} delivered fewer than {n} messages within {LIMIT:?}",
            p.name
        );
        thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Reading streams

/// One record of a local stream: a transport gap notice, or anything else, as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Rec(u32, Vec<u8>),
    Gap { first: u64, count: u64 },
}

impl Item {
    pub fn of(msg_type: u32, payload: &[u8]) -> Item {
        if msg_type == ENVELOPE_MSG_TYPE
            && let Ok(env) = mdbus_bus::schema::root_as_envelope(payload)
            && let Some(g) = env.event_as_gap_notice()
            && g.scope() == GapScope::Transport
        {
            assert!(!g.recoverable(), "transport gap notices are final");
            return Item::Gap {
                first: g.first_missing_seq(),
                count: g.count(),
            };
        }
        Item::Rec(msg_type, payload.to_vec())
    }
}

/// Reads stream [`STREAM`] under `root`, every epoch of it (a receiver starts a new one per
/// session, and a restarted receiver another), until `done` is set and everything is read.
pub fn read_epochs(root: &Path, done: &AtomicBool) -> Vec<Vec<Item>> {
    let bus = Bus::with_root(root).expect("bus root");
    let deadline = Instant::now() + 3 * LIMIT;
    let mut sub = loop {
        let stopping = done.load(Ordering::Acquire);
        match bus.subscriber(STREAM, &SubscribeOptions::default()) {
            Ok(s) => break s,
            Err(_) if stopping => return Vec::new(),
            Err(e) => {
                assert!(Instant::now() < deadline, "{}: {e}", root.display());
                thread::sleep(Duration::from_millis(2));
            }
        }
    };
    let mut epochs = vec![Vec::new()];
    let mut idle_turns = 0u32;
    loop {
        assert!(
            Instant::now() < deadline,
            "reading {} took too long",
            root.display()
        );
        // Read before polling: once set, every record was committed before this poll.
        let stopping = done.load(Ordering::Acquire);
        let cur = epochs.last_mut().expect("an epoch");
        let r = sub.poll(|m| cur.push(Item::of(m.msg_type(), m.payload())));
        let switch = match r {
            Ok(true) => {
                idle_turns = 0;
                continue;
            }
            Ok(false) => {
                idle_turns += 1;
                let replaced = idle_turns.is_multiple_of(16)
                    && sub.producer_status(LIMIT) == ProducerStatus::Replaced;
                if replaced {
                    // The old publisher is gone: read what it wrote last, then move on.
                    while sub
                        .poll(|m| cur.push(Item::of(m.msg_type(), m.payload())))
                        .is_ok_and(|more| more)
                    {}
                }
                replaced || stopping
            }
            Err(ReceiveError::Closed | ReceiveError::NewEpoch { .. }) => true,
            Err(e) => panic!("reading {}: {e}", root.display()),
        };
        if switch {
            let change = sub
                .reopen()
                .unwrap_or_else(|e| panic!("reopening {}: {e}", root.display()));
            if change.new != change.old {
                epochs.push(Vec::new());
                continue;
            }
            if stopping {
                return epochs;
            }
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// A thread reading a receiver's local stream while it runs.
pub struct Reader {
    pub done: Arc<AtomicBool>,
    pub handle: JoinHandle<Vec<Vec<Item>>>,
}

impl Reader {
    pub fn start(root: PathBuf) -> Reader {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        Reader {
            done,
            handle: thread::spawn(move || read_epochs(&root, &d)),
        }
    }

    /// Call once the writer is gone: the epochs read.
    pub fn finish(self) -> Vec<Vec<Item>> {
        self.done.store(true, Ordering::Release);
        self.handle.join().expect("stream reader")
    }
}

/// The sender host's stream, as the replay wrote it.
pub fn sender_stream(net: &Net) -> Vec<(u32, Vec<u8>)> {
    let epochs = read_epochs(&net.root(SND), &AtomicBool::new(true));
    assert_eq!(epochs.len(), 1, "one epoch in the sender's stream");
    epochs
        .into_iter()
        .flatten()
        .map(|it| match it {
            Item::Rec(t, p) => (t, p),
            Item::Gap { first, count } => panic!("a gap notice {first}+{count} in the source"),
        })
        .collect()
}

/// Where a local epoch ended up against the sender's stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// The session sequence number after the last record or notice.
    pub next: u64,
    pub delivered: u64,
    /// (first, count) of each transport gap notice.
    pub gaps: Vec<(u64, u64)>,
}

/// Walks a local epoch (a session: sequence numbers from 1) against the sender's stream:
/// every record must be the next message, byte for byte, every gap notice must start exactly
/// at the next message and stay within the stream.
pub fn walk(what: &str, items: &[Item], stream: &[(u32, Vec<u8>)]) -> Walk {
    let mut w = Walk {
        next: 1,
        ..Walk::default()
    };
    let total = stream.len() as u64;
    for (k, it) in items.iter().enumerate() {
        match it {
            Item::Rec(t, p) => {
                let Some((et, ep)) = stream.get((w.next - 1) as usize) else {
                    panic!("{what}: record {k} is beyond the {total} messages sent");
                };
                assert!(
                    t == et && p == ep,
                    "{what}: record {k} (type {t}, {} bytes) is not message {} of the sender's \
                     stream (type {et}, {} bytes)",
                    p.len(),
                    w.next,
                    ep.len()
                );
                w.next += 1;
                w.delivered += 1;
            }
            Item::Gap { first, count } => {
                assert_eq!(
                    *first, w.next,
                    "{what}: record {k} is a gap notice of {count} from {first}, where message {} \
                     was due",
                    w.next
                );
                assert!(
                    *count > 0 && first + count <= total + 1,
                    "{what}: gap notice {first}+{count} outside the {total} messages sent"
                );
                w.gaps.push((*first, *count));
                w.next += count;
            }
        }
    }
    w
}

/// Every message exactly once, in order, byte for byte, and no gap notice.
pub fn assert_complete(what: &str, items: &[Item], stream: &[(u32, Vec<u8>)]) {
    let w = walk(what, items, stream);
    assert_eq!(w.gaps, [], "{what}: no gap notices");
    assert_eq!(
        w.delivered,
        stream.len() as u64,
        "{what}: every message of the sender's stream"
    );
}

// ---------------------------------------------------------------------------------------------
// Summaries

/// A counter of a `--summary` JSON object.
pub fn counter(summary: &Value, name: &str) -> u64 {
    summary["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name:?} in {summary}"))
}

/// The JSON lines a role printed.
pub fn json_lines(what: &str, out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {l}")))
        .collect()
}

/// What a receiver printed and published.
#[derive(Debug)]
pub struct RecvOut {
    /// The `--summary` object.
    pub summary: Value,
    /// The `--book-summary` object.
    pub book: Value,
    pub epochs: Vec<Vec<Item>>,
}

pub fn recv_out(what: &str, done: &Done, epochs: Vec<Vec<Item>>) -> RecvOut {
    let lines = json_lines(what, &done.out);
    assert_eq!(
        lines.len(),
        2,
        "{what}: a summary and a book summary: {}",
        done.out
    );
    assert_eq!(lines[0]["role"], "recv", "{what}: {}", lines[0]);
    RecvOut {
        summary: lines[0].clone(),
        book: lines[1].clone(),
        epochs,
    }
}

pub fn send_summary(done: &Done) -> Value {
    let lines = json_lines("send", &done.out);
    assert_eq!(lines.len(), 1, "send prints one summary: {}", done.out);
    assert_eq!(lines[0]["role"], "send");
    lines[0].clone()
}

pub fn replay_book(done: &Done) -> Value {
    let lines = json_lines("replay", &done.out);
    assert_eq!(
        lines.len(),
        1,
        "replay prints one book summary: {}",
        done.out
    );
    lines[0].clone()
}

/// `recv --book-summary` equals `replay --book-summary`, field by field.
pub fn assert_same_books(what: &str, replay: &Value, recv: &Value) {
    let (Some(a), Some(b)) = (replay.as_object(), recv.as_object()) else {
        panic!("{what}: book summaries are objects: {replay} / {recv}");
    };
    for (k, v) in a {
        assert_eq!(b.get(k), Some(v), "{what}: book summary field {k:?}");
    }
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: the same fields: {replay} / {recv}"
    );
}

// ---------------------------------------------------------------------------------------------
// The usual run: two receivers, a sender, a replay

/// Receivers that may lose or see reordered the session's first datagrams ask for everything
/// from its first message (`--join start`), so these cases do not depend on how a receiver
/// tells a session it saw begin from one it joined late; the default is checked on its own
/// ([`a_receiver_up_before_the_session_recovers_a_lost_first_datagram`]).
pub const JOIN_START: &[&str] = &["--join", "start"];

/// How one run is set up.
pub struct Spec<'a> {
    pub send: &'a [&'a str],
    pub rx1: &'a [&'a str],
    pub rx2: &'a [&'a str],
    /// `mdbus replay --speed`.
    pub speed: &'a str,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            send: &["--linger-ms", "1000"],
            rx1: &[],
            rx2: &[],
            speed: "max",
        }
    }
}

/// What one run produced.
pub struct Outcome {
    pub stream: Vec<(u32, Vec<u8>)>,
    pub session: String,
    pub replay_book: Value,
    pub send: Value,
    /// From starting the sender to its exit.
    pub send_lifetime: Duration,
    pub rx: [RecvOut; 2],
}

impl Outcome {
    pub fn rx(&self, h: usize) -> &RecvOut {
        &self.rx[h - RX1]
    }
}

/// Receivers first (joined and ready), then the sender, then the replay; `during` runs while
/// the replay does (with the session name); then everything is waited for and read.
pub fn run(net: &Net, spec: &Spec<'_>, during: impl FnOnce(&Net, &str)) -> Outcome {
    let readers = [Reader::start(net.root(RX1)), Reader::start(net.root(RX2))];
    let mut rx1 = start_recv(net, RX1, "rx1", spec.rx1);
    let mut rx2 = start_recv(net, RX2, "rx2", spec.rx2);
    let started = Instant::now();
    let (mut tx, session) = start_send(net, "send", spec.send);
    let mut replay = start_replay(net, spec.speed);
    during(net, &session);
    let replayed = replay.wait_ok();
    let (d1, d2) = (rx1.wait_ok(), rx2.wait_ok());
    let sent = tx.wait_ok();
    let send_lifetime = started.elapsed();
    let [r1, r2] = readers;
    let (e1, e2) = (r1.finish(), r2.finish());
    let send = send_summary(&sent);
    assert_eq!(send["session"], session.as_str());
    Outcome {
        stream: sender_stream(net),
        session,
        replay_book: replay_book(&replayed),
        send,
        send_lifetime,
        rx: [recv_out("rx1", &d1, e1), recv_out("rx2", &d2, e2)],
    }
}

/// The checks every run without unrecoverable loss passes.
pub fn assert_all_delivered(o: &Outcome) {
    let total = o.stream.len() as u64;
    assert!(
        total > 10_000,
        "the AAPL sample and its end: {total} records"
    );
    assert_eq!(counter(&o.send, "messages"), total, "{}", o.send);
    assert_eq!(counter(&o.send, "sessions"), 1);
    assert_eq!(counter(&o.send, "stream_lost"), 0);
    assert_eq!(counter(&o.send, "send_errors"), 0);
    for (h, what) in [(RX1, "rx1"), (RX2, "rx2")] {
        let r = o.rx(h);
        let s = &r.summary;
        assert_eq!(r.epochs.len(), 1, "{what}: one session, one local epoch");
        assert_complete(what, &r.epochs[0], &o.stream);
        assert_eq!(counter(s, "messages"), total, "{what}: {s}");
        assert_eq!(counter(s, "published"), total, "{what}: {s}");
        assert_eq!(counter(s, "unrecoverable"), 0, "{what}: {s}");
        assert_eq!(counter(s, "local_lost"), 0, "{what}: {s}");
        assert_eq!(counter(s, "abandoned"), 0, "{what}: {s}");
        assert_eq!(counter(s, "late_joins"), 0, "{what}: {s}");
        assert_eq!(counter(s, "sessions"), 1, "{what}: {s}");
        assert_eq!(counter(s, "sessions_ended"), 1, "{what}: {s}");
        assert_eq!(counter(s, "stale_session"), 0, "{what}: {s}");
        assert_same_books(what, &o.replay_book, &r.book);
    }
    // Every message recovered was sent again by the sender.
    let recovered =
        counter(&o.rx(RX1).summary, "recovered") + counter(&o.rx(RX2).summary, "recovered");
    assert!(
        counter(&o.send, "retransmit_messages") >= recovered,
        "{} / recovered {recovered}",
        o.send
    );
}
