"""Shared pytest setup: the hypothesis profile and the tests folder on sys.path (for `zoo`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import settings

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

# "ci": no per-example deadline (tracing a model takes a while on a loaded machine) and a
# derandomized search, so a run is reproducible. Select another with HYPOTHESIS_PROFILE=...
settings.register_profile("ci", deadline=None, derandomize=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Under pytest-xdist every worker is a process: one torch thread each, so two workers on two
# cores do not oversubscribe them (OpenMP spin-waits made small merges 50x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy/scipy's OpenBLAS threads too
