"""Running `graphmerge merge` (or any function) on several processes with torch.distributed.

Two ways in: under `torchrun`, each worker finds RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in
its environment and `join_from_env` joins the process group; `graphmerge merge --nproc N` (and
`run_workers`) starts N workers on this machine itself. The backend is NCCL when the worker has a
GPU (LOCAL_RANK picks it), else gloo. Rank r reads batches r, r + N, r + 2N, ... (`shard`).

A worker that fails exits non-zero; graphmerge's collective steps make the other ranks fail
with a `RankError` naming it, and a rank that dies makes them fail when the collective
backend notices (at the latest after `timeout` seconds).
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from graphmerge.distributed import Team, current_team

__all__ = [
    "DEFAULT_TIMEOUT",
    "add_arguments",
    "join_from_env",
    "launch_merge",
    "merge_team",
    "run_workers",
    "shard",
]

DEFAULT_TIMEOUT = 600.0  # seconds a rank waits in a collective for the others


def shard(data: Iterable, rank: int, size: int) -> list:
    """Batches rank, rank + size, rank + 2·size, ... of `data` (batch i goes to rank i mod N)."""
    return [batch for i, batch in enumerate(data) if i % size == rank]


def join_from_env(timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Join the process group torchrun (or `run_workers`) describes in the environment;
    returns False when there is none (WORLD_SIZE unset or 1) or it is joined already."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    backend = "gloo"
    if torch.cuda.is_available() and dist.is_nccl_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return True


def merge_team(timeout: float = DEFAULT_TIMEOUT) -> Team | None:
    """This rank's `Team` when the environment describes a process group (torchrun), joined
    here if need be; None for a single process."""
    join_from_env(timeout)
    return current_team()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, size: int, port: int, timeout: float, threads: int, target, args) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(size),
        LOCAL_WORLD_SIZE=str(size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(threads)
    code = 1
    try:
        join_from_env(timeout)
        result = target(*args)
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 (a worker reports any failure as its exit code)
        traceback.print_exc()
    if code == 0 and dist.is_initialized():
        # every rank done with its collectives before rank 0's store goes away
        dist.barrier()
        dist.destroy_process_group()
    gc.collect()  # finalizers (temporary files) run now, not at an interpreter exit
    sys.stdout.flush()
    sys.stderr.flush()
    # leave without the interpreter's teardown: a failed rank must not wait on its peers, and a
    # C++ thread still alive at static destruction aborts the process ("terminate called
    # without an active exception", seen once in CI after a successful merge)
    os._exit(code)


def run_workers(
    target: Callable[..., Any],
    nproc: int,
    args: tuple = (),
    timeout: float = DEFAULT_TIMEOUT,
    threads: int | None = None,
) -> list[int]:
    """Run `target(*args)` on `nproc` new processes joined in one gloo/NCCL process group;
    returns their exit codes (0: it returned None or 0, an int: that, 1: it raised).

    `target` must be importable (a module-level function). Each worker runs with `threads`
    torch threads (default: this machine's cores shared out). When a worker fails, the others
    get `timeout` seconds to finish before they are stopped (exit code -15).
    """
    env_threads = os.environ.get("OMP_NUM_THREADS", "")
    threads = threads or (int(env_threads) if env_threads.isdigit() else 0)
    threads = threads or max(1, (os.cpu_count() or 1) // nproc)
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, nproc, port, timeout, threads, target, args))
        for r in range(nproc)
    ]
    for p in procs:
        p.start()
    deadline = None
    while any(p.exitcode is None for p in procs):
        time.sleep(0.05)
        if deadline is None and any(p.exitcode not in (None, 0) for p in procs):
            deadline = time.monotonic() + timeout
        if deadline is not None and time.monotonic() > deadline:
            for p in procs:
                if p.exitcode is None:
                    p.terminate()
            break
    for p in procs:
        p.join()
    return [p.exitcode for p in procs]


# ---------------------------------------------------------------------------------------------
# `graphmerge merge --nproc N`


def add_arguments(parser) -> None:
    """`--nproc` and `--timeout` of `graphmerge merge`."""
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes on this machine (rank r reads batches r, r+N, ...); "
        "under torchrun leave it out: the ranks come from the environment",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long a rank waits for the others before it gives up (default {DEFAULT_TIMEOUT:.0f})",
    )


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _cli(argv: list[str]) -> int:
    from graphmerge.cli import main

    return main(argv)


def launch_merge(argv: list[str], nproc: int, timeout: float) -> int:
    """Run `graphmerge <argv>` (without --nproc) on `nproc` local workers; the exit status is
    0 when every worker succeeded, else the first failed worker's (1 if it was stopped)."""
    codes = run_workers(_cli, nproc, (_without_nproc(argv),), timeout)
    failed = [c for c in codes if c != 0]
    return 0 if not failed else (failed[0] if failed[0] > 0 else 1)
