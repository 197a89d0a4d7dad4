//! What the verbs share: their error types, signal handling, where a feed handler and its
//! book builder run, the book builder's thread, and the parsers of flags several verbs take.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mdbus_bench_harness::pinning::{LayoutArg, Pinning, PinningError, ThreadRole};
use mdbus_feed_handlers::net::{Idle, NetError};
use mdbus_shm::counters;

use super::feed::DurationArg;
use mdbus_bus::{Subscriber, WaitStrategy};
use mdbus_feed_handlers::bookstream::{
    BookService, BookServiceError, BookServiceStats, book_stream_name, levels_stream_name,
    trades_stream_name,
};
use mdbus_feed_handlers::net::fault::FaultConfig;
use mdbus_feed_handlers::record::RecordError;
use mdbus_feed_handlers::replay::ReplayError;

/// The threads of `mdbus replay` and `mdbus feed` (the book builder only with `--book`) and the layout roles
/// they take their cpus from.
pub const REPLAY_THREADS: [ThreadRole; 2] = [
    ThreadRole {
        thread: "feed handler",
        roles: &["feed_handler"],
    },
    ThreadRole {
        thread: "book builder",
        roles: &["book_builder"],
    },
];

/// What can go wrong in `mdbus replay` or `mdbus record`.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The replay failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Recording failed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A bus stream could not be opened.
    #[error(transparent)]
    Bus(#[from] mdbus_bus::BusError),
    /// The book service failed.
    #[error(transparent)]
    Book(#[from] mdbus_feed_handlers::bookstream::BookServiceError),
    /// A bad argument.
    #[error("{0}")]
    BadArg(String),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    /// A thread panicked (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The report line of a book service publishing for `feed` (stderr).
pub(crate) fn print_book_line(b: &BookServiceStats, feed: &str) {
    eprintln!(
        "  book service: {} BBO on {:?}, {} level updates on {:?}, {} trades on {:?}",
        b.bbos_published,
        book_stream_name(feed),
        b.levels_published,
        levels_stream_name(feed),
        b.trades_published,
        trades_stream_name(feed)
    );
}

/// The book builder's thread: the service and what `run` made of its input.
pub(crate) type BookThread<'scope> = std::thread::ScopedJoinHandle<
    'scope,
    Result<(BookServiceStats, BookService), BookServiceError>,
>;

/// Starts the book service of `book` (if any) on a thread of `s` named `mdbus-book`, placed
/// by stage 1 of `pinning`, running until its input ends or `stop` is set. Used by
/// `mdbus replay --book` and `mdbus feed --book`.
pub(crate) fn spawn_book_thread<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    pinning: &'scope Pinning,
    book: Option<(BookService, Subscriber)>,
    stop: &'scope AtomicBool,
) -> Result<Option<BookThread<'scope>>, CmdError> {
    let Some((mut svc, mut input)) = book else {
        return Ok(None);
    };
    std::thread::Builder::new()
        .name("mdbus-book".into())
        .spawn_scoped(s, move || {
            pinning.enter(1);
            let stats = svc.run(
                &mut input,
                WaitStrategy::SpinThenYield { spins: 1000 },
                stop,
            )?;
            Ok((stats, svc))
        })
        .map(Some)
        .map_err(|e| CmdError::Internal(format!("cannot start the book thread: {e}")))
}

/// Waits for the book thread of [`spawn_book_thread`], if one was started.
pub(crate) fn join_book_thread(
    handle: Option<BookThread<'_>>,
) -> Result<Option<(BookServiceStats, BookService)>, CmdError> {
    let Some(handle) = handle else {
        return Ok(None);
    };
    let r = handle
        .join()
        .map_err(|_| CmdError::Internal("the book thread panicked".into()))?;
    Ok(Some(r?))
}

/// Where a feed handler thread (and, `with_book`, a book builder thread) runs: `--cpus`
/// (one cpu for both threads means they share it), else the layout's `feed_handler` and
/// `book_builder` roles, else unpinned. Used by `mdbus replay` and `mdbus feed`.
pub(crate) fn feed_pinning(
    cpus: &[usize],
    layout: &LayoutArg,
    with_book: bool,
) -> Result<Pinning, CmdError> {
    let threads = if with_book {
        &REPLAY_THREADS[..]
    } else {
        &REPLAY_THREADS[..1]
    };
    if cpus.len() > threads.len() {
        return Err(CmdError::BadArg(format!(
            "--cpus: {} cpus for {} thread(s) (the feed handler{})",
            cpus.len(),
            threads.len(),
            if with_book {
                " and the book builder"
            } else {
                ""
            }
        )));
    }
    let explicit = (!cpus.is_empty()).then(|| {
        // One cpu with a book builder: both threads share it.
        let mut cpus = cpus.to_vec();
        while cpus.len() < threads.len() {
            cpus.push(cpus[cpus.len() - 1]);
        }
        cpus
    });
    Pinning::choose(layout, threads, explicit, || Ok(None))
        .map_err(|e| CmdError::BadArg(e.to_string()))
}

/// `--idle`: `spin`, `yield` or `sleep:DURATION` (a bare number: microseconds).
pub(crate) fn parse_idle(s: &str) -> Result<Idle, String> {
    match s {
        "spin" => Ok(Idle::BusyPoll),
        "yield" => Ok(Idle::Yield),
        _ => match s.strip_prefix("sleep:") {
            Some(us) if !us.is_empty() && us.bytes().all(|b| b.is_ascii_digit()) => us
                .parse::<u64>()
                .map(|us| Idle::Sleep(Duration::from_micros(us)))
                .map_err(|e| format!("sleep:MICROSECONDS: {e}")),
            Some(d) => d
                .parse::<DurationArg>()
                .map(|d| Idle::Sleep(d.0))
                .map_err(|e| format!("sleep:DURATION: {e}")),
            None => Err("expected spin, yield or sleep:DURATION".to_owned()),
        },
    }
}

/// A flag the first SIGINT or SIGTERM sets, so a role ends cleanly (a sender lingers, a
/// recorder flushes, a feed prints its report); a second signal ends the process at once with
/// status 130, so a role that does not stop can still be ended.
pub(crate) fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// `--fault SPEC` of `feed`, `recv`, `send` and `exchange` (see [`FaultConfig`]).
pub(crate) fn parse_fault(s: &str) -> Result<FaultConfig, String> {
    s.parse::<FaultConfig>().map_err(|e| e.to_string())
}

/// A role's counters as a JSON object, for `--summary`.
pub(crate) fn counters_json(
    names: &[&str],
    values: &[u64],
) -> serde_json::Map<String, serde_json::Value> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| ((*n).to_owned(), serde_json::Value::from(*v)))
        .collect()
}

/// Pins the calling thread (a transport loop) by `--core` or the layout's `role`; prints
/// where it runs and what could not be applied.
pub(crate) fn pin_loop(
    who: &str,
    layout: &LayoutArg,
    core: Option<usize>,
    role: &'static [&'static str],
) -> Result<(), PinningError> {
    let threads = [ThreadRole {
        thread: role[0],
        roles: role,
    }];
    let pinning = Pinning::choose(layout, &threads, core.map(|c| vec![c]), || Ok(None))?;
    pinning.enter(0);
    if let Some(line) = pinning.describe() {
        eprintln!("mdbus {who}: {line}");
    }
    for w in pinning.warnings() {
        eprintln!("mdbus {who}: warning: {w}");
    }
    Ok(())
}

/// A failed `send`, `recv`, `stat` or `exchange`.
#[derive(Debug, thiserror::Error)]
pub enum NetCmdError {
    /// The transport failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The bus root could not be opened.
    #[error(transparent)]
    Bus(#[from] mdbus_bus::BusError),
    /// Counters could not be read.
    #[error(transparent)]
    Counters(#[from] counters::CounterError),
    /// A bad argument.
    #[error("{0}")]
    BadArg(String),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    /// The book builder could not be set up.
    #[error("book builder: {0}")]
    Book(String),
    /// The core layout cannot be used.
    #[error(transparent)]
    Pinning(#[from] PinningError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_flags_parse() {
        assert_eq!(parse_idle("spin"), Ok(Idle::BusyPoll));
        assert_eq!(parse_idle("yield"), Ok(Idle::Yield));
        assert_eq!(
            parse_idle("sleep:250"),
            Ok(Idle::Sleep(Duration::from_micros(250)))
        );
        assert_eq!(
            parse_idle("sleep:2ms"),
            Ok(Idle::Sleep(Duration::from_millis(2)))
        );
        assert!(parse_idle("nap").is_err());
        assert!(parse_idle("sleep:x").is_err());
    }
}
