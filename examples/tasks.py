"""Disjoint-class tasks on real data, trained in seconds on a CPU (the MuDSC paper's protocol).

Each model ends in the paper's shared-head protocol: it outputs a d-dimensional embedding scored
by scaled cosine against a fixed matrix of class vectors common to all models (a constant, not a
parameter), so joint accuracy is the argmax over all classes. Model A is trained on task A's
classes only, model B on task B's. Used by `graphmerge demo` and the benchmarks; not part of the
graphmerge library (installed beside it as `graphmerge_examples`).

    >>> from graphmerge_examples.tasks import MLPEmbed, digits_split, evaluate, train
    >>> data = digits_split(seed=0)
    >>> model = train(MLPEmbed(), data, task=0, seed=0)
    >>> round(evaluate(model, data)["task_a"], 2) > 0.9
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "CNNEmbed",
    "ClassHead",
    "MLPEmbed",
    "TaskData",
    "calibration_batches",
    "digits_split",
    "ensemble_evaluate",
    "evaluate",
    "train",
]


@dataclass(frozen=True)
class TaskData:
    """Train/test tensors and the two disjoint class sets."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    tasks: tuple[tuple[int, ...], tuple[int, ...]]
    num_classes: int


def digits_split(seed: int = 0, image: bool = False) -> TaskData:
    """sklearn's 8x8 digits (ships with sklearn), 5+5 random class split, 75/25 train/test.

    The class split and the train/test split are drawn from `seed`; `image` shapes the inputs
    (N, 1, 8, 8) for a CNN instead of (N, 64). Needs scikit-learn (an ImportError saying so).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "the digits data set ships with scikit-learn, which is not installed: "
            "pip install scikit-learn"
        ) from exc

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    y = torch.tensor(digits.target)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    cut = int(0.75 * len(y))
    classes = rng.permutation(10)
    tasks = (tuple(sorted(classes[:5].tolist())), tuple(sorted(classes[5:].tolist())))
    if image:
        x = x.view(-1, 1, 8, 8)
    tr, te = order[:cut], order[cut:]
    return TaskData(x[tr], y[tr], x[te], y[te], tasks, 10)


class ClassHead(nn.Module):
    """Scaled cosine against fixed class vectors (a non-persistent buffer: never merged)."""

    def __init__(self, dim: int, num_classes: int, scale: float = 10.0, seed: int = 1234):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        vectors = F.normalize(torch.randn(num_classes, dim, generator=gen), dim=1)
        self.register_buffer("classes", vectors, persistent=False)
        self.scale = scale

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(emb, dim=-1) @ self.classes.T


class MLPEmbed(nn.Module):
    def __init__(self, d_in: int = 64, width: int = 128, dim: int = 32, num_classes: int = 10):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, width), nn.Linear(width, width)
        self.emb = nn.Linear(width, dim)
        self.head = ClassHead(dim, num_classes)

    def forward(self, x):
        return self.head(self.emb(F.relu(self.fc2(F.relu(self.fc1(x))))))


class CNNEmbed(nn.Module):
    def __init__(self, width: int = 32, dim: int = 32, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width * 16, 128)
        self.emb = nn.Linear(128, dim)
        self.head = ClassHead(dim, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.head(self.emb(F.relu(self.fc(x.flatten(1)))))


def _task_mask(y: torch.Tensor, classes) -> torch.Tensor:
    return torch.isin(y, torch.tensor(classes))


def train(
    model: nn.Module,
    data: TaskData,
    task: int,
    seed: int,
    epochs: int = 30,
    batch: int = 64,
    lr: float = 3e-3,
    schedule: str = "constant",
    progress: str | None = None,
) -> nn.Module:
    """Train on one task's classes, cross-entropy over that task's logits only (Adam).

    schedule: "constant" keeps `lr`; "cosine" warms up linearly over the first 5% of the steps,
    then decays to 0 on a cosine (a few epochs then get much further). `progress`: a label for a
    progress bar over the epochs on stderr (None: silent). Returns `model`, trained, in eval mode.
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    classes = torch.tensor(data.tasks[task])
    mask = _task_mask(data.y_train, data.tasks[task])
    x, y = data.x_train[mask], data.y_train[mask]
    remap = torch.full((data.num_classes,), -1, dtype=torch.long)
    remap[classes] = torch.arange(len(classes))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total = epochs * -(-len(y) // batch)
    warmup = max(1, total // 20)

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    model.train()
    for _ in tqdm(
        range(epochs), desc=progress, unit="epoch", disable=progress is None, leave=False
    ):
        for idx in torch.randperm(len(y)).split(batch):
            loss = F.cross_entropy(model(x[idx])[:, classes], remap[y[idx]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def _scores(logits_fn, data: TaskData, batch: int = 500) -> dict[str, float]:
    # in batches: one 10,000-image batch through a CNN is 2x slower (cache) and holds GBs
    logits = torch.cat([logits_fn(x) for x in data.x_test.split(batch)])
    out = {"joint": float((logits.argmax(1) == data.y_test).float().mean())}
    for name, classes in zip(("task_a", "task_b"), data.tasks):
        mask = _task_mask(data.y_test, classes)
        sub = logits[mask][:, list(classes)]
        pred = torch.tensor(classes)[sub.argmax(1)]
        out[name] = float((pred == data.y_test[mask]).float().mean())
    out["per_task"] = (out["task_a"] + out["task_b"]) / 2
    return out


def evaluate(model: nn.Module, data: TaskData) -> dict[str, float]:
    """Joint (argmax over all classes), per-task and per-task-average accuracy."""
    model.eval()
    return _scores(model, data)


def ensemble_evaluate(models: list[nn.Module], data: TaskData) -> dict[str, float]:
    """The upper bound: sum of the models' softmax outputs (the paper's ensemble)."""
    return _scores(lambda x: sum(torch.softmax(m.eval()(x), 1) for m in models), data)


def calibration_batches(data: TaskData, batch: int = 128, limit: int | None = None) -> list:
    """Training inputs of both tasks (the union, as in MuDSC), in batches of `batch`."""
    x = data.x_train if limit is None else data.x_train[:limit]
    return list(x.split(batch))
