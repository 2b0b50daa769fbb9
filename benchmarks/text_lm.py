"""Merging two small causal language models trained on real text: Python's own standard library.

    python -m benchmarks.text_lm [--steps 1500] [--dim 128] [--layers 2] [--threads 1]
                                 [--split same|halves]

The corpus is the top-level `*.py` files of the running Python's standard library (it ships with
Python: nothing is downloaded), read as bytes (vocabulary 256) and split by file: a file whose
name hashes to 0 mod 10 is validation, the rest training. Two GPT-style models (token and
position embeddings, pre-LayerNorm blocks of causal attention and a GELU MLP, a final
LayerNorm, an untied byte head) are trained from different seeds (1 and 2), then merged with
each method, with and without the least-squares refit and the repair, on calibration windows of
the whole training text. With `--split same` (default) both models train on the same text; with
`--split halves` model A trains only on half A of the training files and model B only on half
B (`halves`: files in the order of a hash of their name, each to the half with fewer bytes so
far), and the table adds the loss on each half's own validation files (split the same way).
Rows: validation loss (nats per byte) and perplexity of each model, the ensemble (the mean of
the two models' probabilities: 2x compute), and every merge. Checkpoints are cached in
benchmarks/cache/text_lm/ keyed by the training config.
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
from graphmerge_examples.compare import COMPARED, with_least_squares

ROOT = Path(__file__).resolve().parent

# row key -> (label, gm.merge method, options): the demo's methods, plus averaging refit
MERGES: dict[str, tuple[str, str, dict]] = {
    "average": COMPARED["average"],
    "average_ls": with_least_squares("average"),
    **{
        key: COMPARED[key]
        for key in (
            "mudsc_permute",
            "mudsc_permute_ls",
            "mudsc_zip",
            "mudsc_zip_repair",
            "mudsc_zip_ls",
        )
    },
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


def halves(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """`files` split in two halves of about equal bytes: in the order of a hash of each name,
    each file goes to the half with fewer bytes so far (deterministic, independent of the
    validation split)."""
    out: tuple[list[Path], list[Path]] = ([], [])
    size = [0, 0]
    for f in sorted(files, key=lambda f: (zlib.crc32(b"half:" + f.name.encode()), f.name)):
        h = int(size[1] < size[0])
        out[h].append(f)
        size[h] += f.stat().st_size
    return out


def corpus(half: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train bytes, validation bytes) of the standard library's top-level .py files, or with
    `half` (0 or 1) of that half's files only (`halves` of each split)."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    train, val = [], []
    for f in files:
        (val if zlib.crc32(f.name.encode()) % 10 == 0 else train).append(f)
    if half is not None:
        train, val = halves(train)[half], halves(val)[half]
    return tuple(
        np.frombuffer(b"\n".join(f.read_bytes() for f in s), np.uint8) for s in (train, val)
    )


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


def pair_texts(split: str, config: dict, train_text, val_text) -> tuple[list, list, dict]:
    """What the pair trains and is scored on, for `split` "same" or "halves": (each model's
    training config, each model's training text, {column name: validation text})."""
    if split == "same":
        configs = [{**config, "seed": s} for s in (1, 2)]
        return configs, [train_text, train_text], {"validation": val_text}
    parts = [corpus(half) for half in (0, 1)]
    configs = [{**config, "seed": s, "half": h} for h, s in enumerate((1, 2))]
    vals = {"validation": val_text, "half A's files": parts[0][1], "half B's files": parts[1][1]}
    return configs, [part[0] for part in parts], vals


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
    configs, texts, vals = pair_texts(args.split, config, train_text, val_text)
    cache = Path(args.cache)
    models = [train(c, text, cache)[0] for c, text in zip(configs, texts)]
    trained = time.perf_counter() - start
    val = [windows(text, 40, 32, config["context"], seed=100) for text in vals.values()]
    cal = [b[:, :-1] for b in windows(train_text, args.calibration, 32, config["context"], 200)]
    rows = [
        ("model A alone", [val_loss(models[:1], v) for v in val], None),
        ("model B alone", [val_loss(models[1:], v) for v in val], None),
        ("ensemble (2x compute)", [val_loss(models, v) for v in val], None),
    ]
    for label, method, options in MERGES.values():
        t = time.perf_counter()
        merged = gm.merge(models, cal, method=method, progress=False, **options)
        rows.append((label, [val_loss([merged], v) for v in val], time.perf_counter() - t))
        print(f"{label}: {rows[-1][1][0]:.3f}", flush=True)
    sizes = [len(text) for text in (*texts, *vals.values())]
    return _table(args, list(vals)[1:], rows, sizes, trained)


def _table(args, halves: list[str], rows, sizes: list[int], trained: float) -> str:
    """The markdown table: a header sentence, then loss, perplexity, the loss on each of
    `halves`' validation files, and the merge time of each row."""
    data = (
        f"stdlib text {sizes[0]:,} training / {sizes[2]:,} validation bytes"
        if args.split == "same"
        else f"stdlib text split in halves: model A trains on {sizes[0]:,} bytes, model B on "
        f"{sizes[1]:,}; validation {sizes[2]:,} bytes ({sizes[3]:,} of half A's files, "
        f"{sizes[4]:,} of half B's)"
    )
    split = "" if args.split == "same" else f" --split {args.split}"
    head = ["validation loss (nats/byte)", "perplexity", *[f"loss on {h}" for h in halves]]
    lines = [
        (
            f"`python -m benchmarks.text_lm --steps {args.steps} --dim {args.dim} --layers "
            f"{args.layers} --threads {args.threads}{split}` on {datetime.date.today()}, "
            f"{platform.machine()}, torch {torch.__version__}: {data}, {args.calibration} "
            "calibration batches of 32 x 64 bytes of the whole training text, training "
            f"{trained:.0f} s (0 when cached)."
        ),
        "",
        "| model | " + " | ".join(head) + " | merge time (s) |",
        "|---|" + "---|" * (len(head) + 1),
    ]
    for label, losses, seconds in rows:
        sec = "—" if seconds is None else f"{seconds:.1f}"
        cells = [
            f"{losses[0]:.3f}",
            f"{math.exp(losses[0]):.2f}",
            *(f"{x:.3f}" for x in losses[1:]),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {sec} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=16, help="calibration batches")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--split",
        choices=("same", "halves"),
        default="same",
        help="both models on the same training text, or each on its own half of the files",
    )
    parser.add_argument("--cache", default=str(ROOT / "cache" / "text_lm"))
    parser.add_argument("--out", default=None, help="write the table to this .md file")
    args = parser.parse_args(argv)
    table = run(args)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
