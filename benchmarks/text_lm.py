"""Merging two small causal language models trained on real text: Python's own standard library.

    python -m benchmarks.text_lm [--steps 1500] [--dim 128] [--layers 2] [--threads 1]

The corpus is the top-level `*.py` files of the running Python's standard library (it ships with
Python: nothing is downloaded), read as bytes (vocabulary 256) and split by file: a file whose
name hashes to 0 mod 10 is validation, the rest training. Two GPT-style models (token and
position embeddings, pre-LayerNorm blocks of causal attention and a GELU MLP, a final
LayerNorm, an untied byte head) are trained on the same training text from different seeds,
then merged with each method, with and without the least-squares refit and the repair, on
calibration windows of training text. Rows: validation loss (nats per byte) and perplexity of
each model, the ensemble (the mean of the two models' probabilities: 2x compute), and every
merge. Checkpoints are cached in benchmarks/cache/text_lm/ keyed by the training config.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import platform
import sysconfig
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import graphmerge as gm

ROOT = Path(__file__).resolve().parent

# row key -> (label, gm.merge method, options)
MERGES: dict[str, tuple[str, str, dict]] = {
    "average": ("average", "average", {}),
    "average_ls": ("average + least squares", "average", {"refine": "least_squares"}),
    "mudsc_permute": ("MuDSC permute", "mudsc", {"matcher": "permute"}),
    "mudsc_permute_ls": (
        "MuDSC permute + least squares",
        "mudsc",
        {"matcher": "permute", "refine": "least_squares"},
    ),
    "mudsc_zip": ("MuDSC zip", "mudsc", {}),
    "mudsc_zip_repair": ("MuDSC zip + REPAIR", "mudsc", {"repair": True}),
    "mudsc_zip_ls": ("MuDSC zip + least squares", "mudsc", {"refine": "least_squares"}),
}


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        qkv = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ByteGPT(nn.Module):
    """A GPT-style causal LM over bytes: (batch, tokens) int64 -> (batch, tokens, 256) logits."""

    def __init__(self, dim: int = 128, layers: int = 2, heads: int = 4, context: int = 64):
        super().__init__()
        self.tok = nn.Embedding(256, dim)
        self.pos = nn.Parameter(torch.randn(context, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 256)

    def forward(self, ids):
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        return self.head(self.ln(self.blocks(x)))


def corpus() -> tuple[np.ndarray, np.ndarray]:
    """(train bytes, validation bytes) of the standard library's top-level .py files."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    train, val = [], []
    for f in files:
        (val if zlib.crc32(f.name.encode()) % 10 == 0 else train).append(f.read_bytes())
    return (np.frombuffer(b"\n".join(s), dtype=np.uint8) for s in (train, val))


def windows(text: np.ndarray, n: int, batch: int, context: int, seed: int) -> list:
    """n batches of (batch, context + 1) windows drawn from `text`."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        starts = rng.integers(0, len(text) - context - 1, batch)
        out.append(torch.from_numpy(np.stack([text[s : s + context + 1] for s in starts])).long())
    return out


def train(config: dict, text: np.ndarray, cache: Path) -> tuple[ByteGPT, bool]:
    """A ByteGPT trained with AdamW and a cosine schedule (or loaded from `cache`)."""
    key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    path = cache / f"bytegpt-s{config['seed']}-{key}.pt"
    torch.manual_seed(config["seed"])
    model = ByteGPT(config["dim"], config["layers"], config["heads"], config["context"])
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval(), True
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.01)
    steps = config["steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    for batch in windows(text, steps, config["batch"], config["context"], config["seed"]):
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval(), False


@torch.no_grad()
def val_loss(models: list[nn.Module], batches: list) -> float:
    """Mean validation cross-entropy (nats per byte) of the mean of the models' probabilities."""
    total, count = 0.0, 0
    for batch in batches:
        probs = sum(F.softmax(m.eval()(batch[:, :-1]), -1) for m in models) / len(models)
        nll = -torch.log(probs.clamp_min(1e-12)).gather(-1, batch[:, 1:, None])
        total, count = total + float(nll.sum()), count + nll.numel()
    return total / count


def run(args) -> str:
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    train_text, val_text = corpus()
    config = {
        "dim": args.dim,
        "layers": args.layers,
        "heads": 4,
        "context": 64,
        "steps": args.steps,
        "batch": 32,
        "lr": 3e-3,
    }
    models = [train({**config, "seed": s}, train_text, Path(args.cache))[0] for s in (1, 2)]
    trained = time.perf_counter() - start
    val = windows(val_text, 40, 32, config["context"], seed=100)
    cal = [b[:, :-1] for b in windows(train_text, args.calibration, 32, config["context"], 200)]
    rows = [
        ("model A alone", val_loss(models[:1], val), None),
        ("model B alone", val_loss(models[1:], val), None),
        ("ensemble (2x compute)", val_loss(models, val), None),
    ]
    for label, method, options in MERGES.values():
        t = time.perf_counter()
        merged = gm.merge(models, cal, method=method, progress=False, **options)
        rows.append((label, val_loss([merged], val), time.perf_counter() - t))
        print(f"{label}: {rows[-1][1]:.3f}", flush=True)
    return _table(args, rows, len(train_text), len(val_text), trained)


def _table(args, rows, n_train: int, n_val: int, trained: float) -> str:
    lines = [
        (
            f"`python -m benchmarks.text_lm --steps {args.steps} --dim {args.dim} --layers "
            f"{args.layers} --threads {args.threads}` on {datetime.date.today()}, "
            f"{platform.machine()}, torch {torch.__version__}: stdlib text {n_train:,} training / "
            f"{n_val:,} validation bytes, {args.calibration} calibration batches of 32 x 64 bytes, "
            f"training {trained:.0f} s (0 when cached)."
        ),
        "",
        "| model | validation loss (nats/byte) | perplexity | merge time (s) |",
        "|---|---|---|---|",
    ]
    for label, loss, seconds in rows:
        sec = "—" if seconds is None else f"{seconds:.1f}"
        lines.append(f"| {label} | {loss:.3f} | {math.exp(loss):.2f} | {sec} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=16, help="calibration batches")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default=str(ROOT / "cache" / "text_lm"))
    parser.add_argument("--out", default=None, help="write the table to this .md file")
    args = parser.parse_args(argv)
    table = run(args)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
