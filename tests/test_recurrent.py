"""Recurrent layers (graphmerge/rules/recurrent.py): nn.LSTM / GRU / RNN and their cells.

Through the public API: `gm.shuffle` keeps the function of every variant (1 or 2 layers, uni- or
bidirectional, batch_first or not, with and without biases, `proj_size`, the output or the final
state read per layer, cells unrolled in a Python loop, an encoder's state handed to a decoder); the
groups are the per-layer hidden spaces with the gate blocks of the weights; a merge with a shuffled
copy gives the model back; and two GRUs / LSTMs trained on digits from different seeds merge better
than plain averaging.
"""

from __future__ import annotations

import itertools
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import fx, nn

import graphmerge as gm
from graphmerge.layout import Alt, Blk, Cat, SpaceStore
from graphmerge.program import AXES, AxesMeta
from graphmerge.rule_context import RuleContext, normalized_args
from graphmerge.rules import rule_for
from graphmerge_examples.tasks import TaskData, calibration_batches, digits_split, evaluate, train

# export warns that nn.RNNBase's `_flat_weights` list was "assigned during export": the list holds
# the module's own registered parameters, which export lifts like any other (checked below)
pytestmark = pytest.mark.filterwarnings("ignore:The tensor attribute")

CELLS = {nn.LSTM: nn.LSTMCell, nn.GRU: nn.GRUCell, nn.RNN: nn.RNNCell}


class SeqNet(nn.Module):
    """Embedding -> recurrent layer -> head on the last output step or on the final state."""

    def __init__(self, cls, read: str = "output", d_in: int = 5, hidden: int = 7, **kw):
        super().__init__()
        self.embed = nn.Linear(d_in, 6)
        self.rnn = cls(6, hidden, **kw)
        self.read, self.batch_first = read, kw.get("batch_first", False)
        self.dirs = 2 if kw.get("bidirectional") else 1
        self.head = nn.Linear(self.dirs * (kw.get("proj_size") or hidden), 3)

    def forward(self, x):  # x: (batch, time, features)
        x = torch.relu(self.embed(x))
        out, state = self.rnn(x if self.batch_first else x.transpose(0, 1))
        if self.read == "output":
            return self.head(out[:, -1] if self.batch_first else out[-1])
        h = state[0] if isinstance(state, tuple) else state  # (layers * dirs, batch, units)
        return self.head(torch.cat([h[-k] for k in range(self.dirs, 0, -1)], dim=-1))


def _variants():
    """(class, read, kwargs): every option on and off at least once, both reads everywhere."""
    for cls, layers, bidir, (batch_first, bias, read) in itertools.product(
        (nn.LSTM, nn.GRU, nn.RNN),
        (1, 2),
        (False, True),
        ((False, True, "output"), (True, False, "state")),
    ):
        kw = {
            "num_layers": layers,
            "bidirectional": bidir,
            "batch_first": batch_first,
            "bias": bias,
        }
        yield cls, read, kw
    for layers, bidir in itertools.product((1, 2), (False, True)):
        kw = {"num_layers": layers, "bidirectional": bidir, "proj_size": 4, "batch_first": bidir}
        yield nn.LSTM, ("state" if layers == 2 else "output"), kw
    yield nn.RNN, "state", {"nonlinearity": "relu", "num_layers": 2, "bidirectional": False}


VARIANTS = list(_variants())


def _ids(v):
    cls, read, kw = v
    return "-".join([cls.__name__, read, *(f"{k}={x}" for k, x in kw.items())])


def _shuffled_diff(model, example, fresh, seed=1):
    twin = gm.shuffle(model, example, seed=seed, strict=True)
    with torch.no_grad():
        got, expected = twin(*fresh), model(*fresh)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, twin.state_dict()[k])]
    return (got - expected).abs().max().item(), changed


@pytest.mark.parametrize("variant", VARIANTS, ids=[_ids(v) for v in VARIANTS])
def test_shuffle_keeps_the_function_of_every_variant(variant):
    cls, read, kw = variant
    torch.manual_seed(0)
    model = SeqNet(cls, read, **kw).eval()
    example, fresh = (torch.randn(4, 6, 5),), (torch.randn(3, 9, 5),)  # other batch and length
    diff, changed = _shuffled_diff(model, example, fresh)
    assert diff < 1e-5
    layers = kw["num_layers"] * (2 if kw["bidirectional"] else 1)
    assert sum(".weight_hh_l" in k for k in changed) == layers  # every layer-direction moved


def _params(groups, name):
    """Free groups (as sets of (param, axis)) that contain `name`'s axis 0."""
    return [g.params() for g in groups if not g.frozen and (name, 0) in g.params()]


def test_groups_are_the_hidden_spaces_with_their_gate_blocks():
    model = SeqNet(nn.LSTM, bidirectional=True, num_layers=2, proj_size=4, batch_first=True)
    groups = gm.permutation_groups(model.eval(), torch.randn(2, 5, 5))
    free = [g for g in groups if not g.frozen]
    assert len(free) == 1 + 4 * 2  # embed, and per layer-direction its hidden and its projection
    for k, sfx in itertools.product((0, 1), ("", "_reverse")):
        p = f"rnn.%s_l{k}{sfx}"
        hidden = _params(groups, p % "weight_ih")
        assert hidden == [
            {(p % w, 0) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            | {(p % "weight_hr", 1)}
        ]
        # the projection: weight_hr rows, weight_hh columns, and what reads the layer's output
        readers = {("rnn.weight_ih_l1", 1), ("rnn.weight_ih_l1_reverse", 1)} if k == 0 else set()
        readers |= {("head.weight", 1)} if k == 1 else set()
        assert _params(groups, p % "weight_hr") == [
            {(p % "weight_hr", 0), (p % "weight_hh", 1)} | readers
        ]
    assert all(g.reason.startswith("model") for g in groups if g.frozen and g.size > 1)
    lstm = next(g for g in free if ("rnn.weight_ih_l0", 0) in g.params())
    assert lstm.size == 7 and lstm.verified
    assert {(m.param, m.axis, m.role) for m in lstm.members} >= {
        ("rnn.weight_ih_l0", 0, "out"),
        ("rnn.weight_hr_l0", 1, "in"),
    }


CELL_VARIANTS = [(c, {}) for c in CELLS.values()] + [(nn.RNNCell, {"nonlinearity": "relu"})]


@pytest.mark.parametrize(
    "cls,kw", CELL_VARIANTS, ids=[f"{c.__name__}{kw}" for c, kw in CELL_VARIANTS]
)
def test_cells_unrolled_in_a_loop_share_one_space_per_cell(cls, kw):
    class CellNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.cell, self.cell2 = nn.Linear(5, 6), cls(6, 8, **kw), cls(8, 7, **kw)
            self.head = nn.Linear(7, 3)

        def forward(self, x):
            s1 = s2 = None
            for t in range(x.shape[1]):
                s1 = self.cell(torch.relu(self.embed(x[:, t])), s1)
                s2 = self.cell2(s1[0] if isinstance(s1, tuple) else s1, s2)
            return self.head(s2[0] if isinstance(s2, tuple) else s2)

    torch.manual_seed(0)
    model = CellNet().eval()
    example, fresh = torch.randn(4, 3, 5), torch.randn(2, 3, 5)
    diff, changed = _shuffled_diff(model, (example,), (fresh,))
    assert diff < 1e-5 and "cell.weight_ih" in changed and "cell2.weight_hh" in changed
    groups = gm.permutation_groups(model, example)
    hidden = _params(groups, "cell.weight_ih")
    assert hidden == [
        {("cell.weight_ih", 0), ("cell.weight_hh", 0), ("cell.bias_ih", 0), ("cell.bias_hh", 0)}
        | {("cell.weight_hh", 1), ("cell2.weight_ih", 1)}
    ]


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_an_encoder_state_handed_to_a_decoder_lines_up_layer_by_layer(cls):
    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = cls(5, 8, num_layers=2, batch_first=True)
            self.dec = cls(4, 8, num_layers=2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x, y):
            _, state = self.enc(x)
            out, _ = self.dec(y, state)
            return self.head(out)

    torch.manual_seed(0)
    model = Seq2Seq().eval()
    example = (torch.randn(4, 6, 5), torch.randn(4, 3, 4))
    diff, _ = _shuffled_diff(model, example, (torch.randn(2, 7, 5), torch.randn(2, 2, 4)))
    assert diff < 1e-5
    groups = gm.permutation_groups(model, example)
    for k in (0, 1):  # encoder layer k and decoder layer k: one space, the layers stay apart
        (g,) = _params(groups, f"enc.weight_ih_l{k}")
        assert (f"dec.weight_ih_l{k}", 0) in g and (f"dec.weight_ih_l{1 - k}", 0) not in g


def test_a_learned_initial_state_moves_with_its_layers_and_pins_the_layer_axis():
    class Learned(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.GRU(5, 8, num_layers=2), nn.Linear(8, 3)
            self.h0 = nn.Parameter(torch.randn(2, 1, 8))

        def forward(self, x):
            out, _ = self.rnn(x, self.h0.expand(-1, x.shape[1], -1).contiguous())
            return self.head(out)

    model = Learned().eval()
    diff, changed = _shuffled_diff(model, (torch.randn(6, 2, 5),), (torch.randn(4, 3, 5),))
    assert diff < 1e-5 and "h0" in changed
    groups = gm.permutation_groups(model, torch.randn(6, 2, 5))
    layer_axis = [g for g in groups if ("h0", 0) in g.params()]
    assert layer_axis[0].frozen and "layer/direction index" in layer_axis[0].reason


def test_an_initial_state_given_as_model_input_freezes_the_hidden_units():
    class StateIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.GRU(5, 8), nn.Linear(8, 3)

        def forward(self, x, h):
            return self.head(self.rnn(x, h)[0])

    groups = gm.permutation_groups(StateIn().eval(), (torch.randn(6, 2, 5), torch.randn(1, 2, 8)))
    (g,) = [g for g in groups if ("rnn.weight_hh_l0", 0) in g.params()]
    assert g.frozen and g.reason.startswith("model input")


class StackedNet(nn.Module):
    """A two-layer bidirectional LSTM feeding a GRU; the head reads both the GRU's last output
    and its final state."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.lstm = nn.LSTM(8, 10, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(20, 9, batch_first=True)
        self.head = nn.Linear(9, 3)

    def forward(self, x):
        out, _ = self.lstm(torch.relu(self.embed(x)))
        out, h = self.gru(out)
        return self.head(out[:, -1] + h[-1])


@pytest.mark.parametrize(
    "method,options",
    [("mudsc", {}), ("weight_matching", {})],
)
def test_merging_with_a_shuffled_copy_gives_the_model_back(method, options):
    torch.manual_seed(0)
    model = StackedNet().eval()
    example = torch.randn(8, 5, 6)
    twin = gm.shuffle(model, example, seed=2)
    data = [torch.randn(16, 5, 6, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    merged = gm.merge([model, twin], data, method=method, progress=False, **options)
    probe = torch.randn(4, 7, 6)
    with torch.no_grad():
        ref, got = model(probe), merged.eval()(probe)
    assert (ref - got).abs().max() / ref.abs().max() < 1e-4


def test_the_packed_data_form_has_the_same_rule():
    """`aten.lstm.data` (packed sequences; torch.export cannot trace PackedSequence) on a
    one-node graph: hidden spaces as for the input form, output rows are the packed steps."""
    graph, store = fx.Graph(), SpaceStore()
    layer = nn.LSTM(5, 6, num_layers=2)
    data, sizes = torch.randn(9, 5), torch.tensor([3, 3, 2, 1])
    hx = [torch.zeros(2, 3, 6), torch.zeros(2, 3, 6)]

    def lift(t, name):
        node = graph.placeholder(name)
        node.meta["val"] = t
        node.meta[AXES] = AxesMeta(tuple(store.new(s, name) for s in t.shape), None)
        return node

    weights = [p.detach() for p in layer._flat_weights]
    args = (
        lift(data, "data"),
        lift(sizes, "sizes"),
        [lift(h, f"h{i}") for i, h in enumerate(hx)],
        [lift(w, f"w{i}") for i, w in enumerate(weights)],
        True,
        2,
        0.0,
        False,
        False,
    )
    op = torch.ops.aten.lstm.data
    node = graph.call_function(op, args)
    node.meta["val"] = op(data, sizes, hx, weights, True, 2, 0.0, False, False)
    program = SimpleNamespace(store=store, param_roles={}, sites=[])
    out, h_n, c_n = rule_for(op).fn(RuleContext(program, node, *normalized_args(node), True))
    w = [n.meta[AXES].dims for n in args[3]]
    assert out[0] == args[0].meta[AXES].dims[0]
    assert store.normalize(w[0][0]) == Cat((store.normalize(w[1][1]),) * 4)  # i, f, g, o blocks
    assert store.normalize(out[1]) == store.normalize(w[5][1])  # layer 1's hidden space
    assert isinstance(h_n[0], Blk) and isinstance(h_n[2], Alt) and len(h_n[2].options) == 2
    assert store.normalize(c_n[2].options[0]) == store.normalize(w[1][1])


# -- merging trained models -----------------------------------------------------------------------
class DigitsRNN(nn.Module):
    """A digit image read as 8 steps of 8 pixels; a linear head on the last step's output."""

    def __init__(self, cls, width: int = 48):
        super().__init__()
        self.rnn = cls(8, width, batch_first=True)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        out, _ = self.rnn(x.view(-1, 8, 8))
        return self.head(out[:, -1])


@pytest.fixture(scope="module")
def digits() -> TaskData:
    split = digits_split(seed=0)
    every = tuple(range(10))  # one task: all ten classes, both models
    return TaskData(split.x_train, split.y_train, split.x_test, split.y_test, (every, every), 10)


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM])
def test_merging_two_trained_recurrent_models_beats_averaging(cls, digits):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = train(DigitsRNN(cls), digits, task=0, seed=1, epochs=5, lr=1e-2)
        b = train(DigitsRNN(cls), digits, task=0, seed=2, epochs=5, lr=1e-2)
        assert min(evaluate(a, digits)["joint"], evaluate(b, digits)["joint"]) > 0.9
        cal = calibration_batches(digits)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no "mostly averaged" warning
            warnings.filterwarnings("ignore", "The tensor attribute")
            merged = gm.merge([a, b], cal, method="mudsc", progress=False)
        average = gm.merge([a, b], cal, method="average", progress=False)
    finally:
        torch.set_num_threads(threads)
    joint, avg = evaluate(merged, digits)["joint"], evaluate(average, digits)["joint"]
    assert joint >= avg + 0.10, f"{cls.__name__}: MuDSC {joint:.3f} vs average {avg:.3f}"
