"""Merging two small BERT-style encoders trained on sklearn's digits from different seeds.

    python -m benchmarks.bert_digits [--epochs 40] [--pairs 1] [--threads 1]

Each 8x8 digit (sklearn's digits: it ships with scikit-learn, nothing is downloaded) is a
sequence of 65 tokens: a [CLS] token, then its 64 pixels in reading order, each pixel's
intensity (0-16) a token. The model is transformers' `BertForSequenceClassification` with a
tiny config (2 post-LayerNorm blocks of full attention, width 64, 4 heads, MLP 128, learned
position embeddings, the tanh pooler over [CLS] and a 10-way classifier). Both models of a pair
train on the same 75% of the digits (the split is fixed) from different seeds (2p+1 and 2p+2 for
pair p: initialisation and batch order), then are merged with each method, with and without the
least-squares refit and the repair, on the training images as calibration data. Rows: test
accuracy of each model, the ensemble (mean of the two models' probabilities: 2x compute) and
every merge. Checkpoints are cached in benchmarks/cache/bert_digits/ keyed by the config.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import graphmerge as gm
from graphmerge_examples.compare import COMPARED, with_least_squares

ROOT = Path(__file__).resolve().parent
CLS = 17  # pixel intensities are tokens 0-16

# row key -> (label, gm.merge method, options): each of the demo's matchers with and without
# the least-squares refit, then MuDSC zip's repair variants
_REFIT = ("average", "weight_matching", "activation_matching", "zipit", "mudsc_permute")
MERGES: dict[str, tuple[str, str, dict]] = {
    **{
        key: merge
        for base in _REFIT
        for key, merge in ((base, COMPARED[base]), (f"{base}_ls", with_least_squares(base)))
    },
    **{
        k: COMPARED[k]
        for k in ("mudsc_zip", "mudsc_zip_repair", "mudsc_zip_ls", "mudsc_zip_ls_repair")
    },
}


def digits_tokens() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train ids, train labels, test ids, test labels): sklearn's digits as [CLS] + 64 pixel
    tokens, a fixed 75/25 split (seed 0)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.tensor(digits.data, dtype=torch.long)
    ids = torch.cat([torch.full((len(pixels), 1), CLS), pixels], 1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
    cut = int(0.75 * len(ids))
    return ids[order[:cut]], labels[order[:cut]], ids[order[cut:]], labels[order[cut:]]


def tiny_bert(config: dict):
    """A `BertForSequenceClassification` of the benchmark's size, initialised from the seed."""
    import transformers

    torch.manual_seed(config["seed"])
    bert = transformers.BertConfig(
        vocab_size=CLS + 1,
        hidden_size=config["dim"],
        num_hidden_layers=config["layers"],
        num_attention_heads=4,
        intermediate_size=2 * config["dim"],
        max_position_embeddings=65,
        type_vocab_size=1,
        num_labels=10,
    )
    return transformers.BertForSequenceClassification(bert)


def train(config: dict, ids: torch.Tensor, labels: torch.Tensor, cache: Path):
    """A tiny BERT trained with AdamW (warm-up, cosine decay, batches of 64) or loaded from
    `cache`: (model in eval mode, whether it came from the cache)."""
    key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    path = cache / f"bert-s{config['seed']}-{key}.pt"
    model = tiny_bert(config)
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval(), True
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.01)
    steps = config["epochs"] * math.ceil(len(ids) / 64)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    model.train()
    for _ in range(config["epochs"]):
        for batch in torch.randperm(len(ids)).split(64):
            loss = F.cross_entropy(model(input_ids=ids[batch]).logits, labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval(), False


@torch.no_grad()
def accuracy(models: list, ids: torch.Tensor, labels: torch.Tensor) -> float:
    """Test accuracy (%) of the mean of the models' probabilities."""
    probs = sum(F.softmax(m.eval()(input_ids=ids).logits, -1) for m in models)
    return 100.0 * float((probs.argmax(-1) == labels).float().mean())


def run_pair(config: dict, pair: int, data, cache: Path) -> tuple[list[float], list, float]:
    """One pair's accuracies (A, B, ensemble, then each of MERGES), merge times and training
    seconds."""
    x_train, y_train, x_test, y_test = data
    start = time.perf_counter()
    models = [train({**config, "seed": 2 * pair + s}, x_train, y_train, cache)[0] for s in (1, 2)]
    trained = time.perf_counter() - start
    cal = [{"input_ids": batch} for batch in x_train.split(128)]
    accs = [accuracy(models[:1], x_test, y_test), accuracy(models[1:], x_test, y_test)]
    accs.append(accuracy(models, x_test, y_test))
    times = []
    for label, method, options in MERGES.values():
        t = time.perf_counter()
        merged = gm.merge(models, cal, method=method, progress=False, **options)
        times.append(time.perf_counter() - t)
        accs.append(accuracy([merged], x_test, y_test))
        print(f"pair {pair} {label}: {accs[-1]:.1f}", flush=True)
    return accs, times, trained


def run(args) -> str:
    """The markdown table of `args.pairs` pairs."""
    torch.set_num_threads(args.threads)
    config = {"dim": args.dim, "layers": args.layers, "epochs": args.epochs, "lr": 2e-3}
    data = digits_tokens()
    results = [run_pair(config, p, data, Path(args.cache)) for p in range(args.pairs)]
    labels = ["model A alone", "model B alone", "ensemble (2x compute)"]
    labels += [label for label, _, _ in MERGES.values()]
    pairs = " | ".join(f"pair {p + 1} (seeds {2 * p + 1}, {2 * p + 2})" for p in range(args.pairs))
    lines = [
        (
            f"`python -m benchmarks.bert_digits --epochs {args.epochs} --dim {args.dim} "
            f"--layers {args.layers} --pairs {args.pairs} --threads {args.threads}` on "
            f"{datetime.date.today()}, {platform.machine()}, torch {torch.__version__}: test "
            f"accuracy (%) on {len(data[2])} digits, {len(data[0])} training digits (also the "
            f"calibration data), training {sum(r[2] for r in results):.0f} s (0 when cached)."
        ),
        "",
        f"| model | {pairs} | mean | merge time (s) |",
        "|---|" + "---|" * (args.pairs + 2),
    ]
    for row, label in enumerate(labels):
        accs = [r[0][row] for r in results]
        times = [r[1][row - 3] for r in results] if row >= 3 else []
        cells = [f"{a:.1f}" for a in accs] + [f"{statistics.mean(accs):.1f}"]
        cells.append(f"{statistics.mean(times):.1f}" if times else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default=str(ROOT / "cache" / "bert_digits"))
    parser.add_argument("--out", default=None, help="write the table to this .md file")
    args = parser.parse_args(argv)
    table = run(args)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
