"""Resident memory per merge stage, sampled by a background thread.

    with RSSSampler() as rss:
        merged, program = gm.merge(..., return_program=True)
    rss.per_stage(program.spans)   # {"collect_features": MiB above the start, ..., "peak": ...}

The thread reads this process's RSS (/proc/self/statm) every `interval` seconds. Torch and numpy
release the GIL in their kernels, so the sampler keeps running during the heavy work; an
allocation that lives for less than one interval can still be missed, so the figures are a lower
bound on the true peak (usually within a few MiB). On entry, glibc's malloc_trim hands memory
that earlier work freed back to the OS, so that a merge reusing it still shows. Where /proc is
missing (not Linux), nothing is sampled and `per_stage` returns {}.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Self

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """This process's resident set size in bytes (None where /proc/self/statm is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return None


def peak_rss_bytes() -> int | None:
    """This process's peak RSS so far (VmHWM of /proc/self/status), bytes; None without /proc.

    Not ru_maxrss: on Linux that is max(VmHWM, the RSS of the image replaced by exec), so a
    child spawned by a big parent reports the parent's RSS as its floor."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux: `echo 5 > clear_refs`).
    False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim() -> None:
    """glibc's malloc_trim(0): return freed heap pages to the OS (no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RSSSampler:
    """Context manager: samples RSS in a thread between enter and exit."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_rss: int | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = rss_bytes()
            if rss is None:
                return
            self.samples.append((time.perf_counter(), rss))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        _trim()  # hand memory freed by earlier work back to the OS, else the figures hide reuse
        self.start_rss = rss_bytes()
        if self.start_rss is not None:
            self.samples.append((time.perf_counter(), self.start_rss))
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        rss = rss_bytes()
        if rss is not None:
            self.samples.append((time.perf_counter(), rss))

    def per_stage(self, spans: dict[str, tuple[float, float]]) -> dict[str, float]:
        """Peak RSS in MiB above the RSS at entry (0 when it never rose above it), per span, and
        "peak" over the whole run.
        A span with no sample inside it gets the larger of the samples just before and after."""
        if self.start_rss is None or not self.samples:
            return {}
        out = {}
        for stage, (begin, end) in spans.items():
            inside = [r for t, r in self.samples if begin <= t <= end]
            if not inside:  # shorter than one interval: bracket it
                before = [r for t, r in self.samples if t < begin][-1:]
                after = [r for t, r in self.samples if t > end][:1]
                inside = before + after
            out[stage] = max(0.0, (max(inside) - self.start_rss) / 2**20) if inside else 0.0
        out["peak"] = max(0.0, (max(r for _, r in self.samples) - self.start_rss) / 2**20)
        return out
