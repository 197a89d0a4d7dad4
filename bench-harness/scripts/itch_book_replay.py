"""The `itch-book` row of `mdbus bench replay --input FILE`.

    python3 itch_book_replay.py FILE     # one timed replay, one JSON line on stdout
    python3 itch_book_replay.py --probe  # is the package importable? its version

Replays a length-prefixed ITCH 5.0 file through the C++ core of the `itch-book` package
(`pip install itch-book`), parse and book apply for every symbol, one thread, no table
requested, through its public `Session` API. The file is mapped with its pages populated,
and one untimed replay of its first 8 MiB in a throwaway session warms the code and the
allocator; then a fresh session replays the whole file and only that call is timed
(`time.perf_counter_ns`). Prints {"messages", "ns", "peak_rss_bytes", "version", "stats"}.
The peak RSS is this process's `VmHWM`: `ru_maxrss` would not do, since Linux carries the
forking parent's high-water mark into a child across exec.
`mdbus` runs this as a subprocess, once per round; an error goes to stderr with status 1.
"""

import json
import mmap
import sys
import time

WARMUP_BYTES = 8 << 20


def probe() -> int:
    import itch_book

    print(json.dumps({"version": getattr(itch_book, "__version__", "?")}))
    return 0


def peak_rss_bytes() -> int:
    """This process's peak resident set size (`VmHWM`), bytes; 0 if unknown."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def replay(path: str) -> int:
    import numpy as np
    import itch_book
    from itch_book._core import Session

    with open(path, "rb") as f:
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        m = mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
    data = np.frombuffer(m, dtype=np.uint8)

    warm = Session(tables=[], depth=0, symbols=[])
    warm.feed(data[: min(len(data), WARMUP_BYTES)])
    del warm

    session = Session(tables=[], depth=0, symbols=[])
    t0 = time.perf_counter_ns()
    session.feed(data)
    ns = time.perf_counter_ns() - t0

    stats = session.stats()
    print(json.dumps({
        "messages": int(stats["messages"]),
        "ns": ns,
        "peak_rss_bytes": peak_rss_bytes(),
        "version": getattr(itch_book, "__version__", "?"),
        "stats": {k: v for k, v in stats.items() if isinstance(v, (int, str, bool)) or v is None},
    }))
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        return probe()
    if len(argv) != 1:
        print("usage: itch_book_replay.py FILE | --probe", file=sys.stderr)
        return 2
    return replay(argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
