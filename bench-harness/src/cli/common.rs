//! What the verbs share: the error type of the feed-side verbs, opening the bus, where a feed
//! handler and its book builder run, and the book builder's thread.

use std::sync::atomic::AtomicBool;

use mdbus_bench_harness::pinning::{LayoutArg, Pinning, ThreadRole};
use mdbus_bus::{Subscriber, WaitStrategy};
use mdbus_feed_handlers::bookstream::{
    BookService, BookServiceError, BookServiceStats, book_stream_name, levels_stream_name,
    trades_stream_name,
};
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
