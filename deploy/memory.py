"""Peak resident memory of this process, sampled on a thread while a block runs."""
from __future__ import annotations

import os
import threading
import time


def rss_bytes() -> int:
    """Resident memory of this process now (psutil if present, else /proc/self/statm)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """``with RssSampler() as mem: ...``: ``mem.start`` is the RSS on entry and ``mem.peak``
    the largest sampled every ``period`` seconds until exit (bytes; process-wide, so memory
    kept from earlier work counts too)."""

    def __init__(self, period: float = 0.01):
        self.period, self.start, self.peak = period, 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.period)

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())
