"""Dynamic sequence axes: text models trace and export with a symbolic sequence length as well as
a symbolic batch (issue 16 item 3).

Models come from the coverage benchmark's tiny configs (benchmarks/coverage_archs.py, random
weights, nothing downloaded): their traced graphs, their ONNX files (checked with onnxruntime
at two other lengths) and their partial merges run at batch sizes and lengths other than the
example's (8 tokens; encoder-decoders have 6 decoder tokens).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_ROOT = str(Path(__file__).resolve().parents[1])  # `benchmarks` lives at the repository root
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

pytest.importorskip("transformers")

import graphmerge as gm
from benchmarks.coverage import ARCH_BY_NAME, build, make_inputs
from graphmerge.trace import dynamic_axes, sequence_axes, trace


def _sized(arch, batch: int, length: int, dec_length: int, seed: int = 3) -> dict:
    """The arch's inputs with `batch` rows, `length` tokens (`dec_length` decoder tokens)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in make_inputs(arch, seed).items():
        n = dec_length if k.startswith("decoder_") else length
        out[k] = (
            torch.ones(batch, n, dtype=v.dtype)
            if k == "attention_mask"
            else torch.randint(3, 128, (batch, n), generator=g)
        )
    return out


def _tensors(out) -> list[torch.Tensor]:
    values = out.values() if hasattr(out, "values") else out
    return [v for v in values if isinstance(v, torch.Tensor)]


def test_sequence_axes_name_each_length():
    ids, dec = torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 6, dtype=torch.long)
    kw = {"input_ids": ids, "attention_mask": ids, "decoder_input_ids": dec}
    assert sequence_axes((), kw) == {8: "sequence", 6: "decoder_sequence"}
    assert dynamic_axes((), kw, sequence=True) == {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "decoder_input_ids": {0: "batch", 1: "decoder_sequence"},
    }
    # floating inputs (images, features) have no sequence axis of their own
    assert sequence_axes((torch.zeros(2, 8, 3),), {}) == {}
    assert dynamic_axes((torch.zeros(2, 8, 3),), {}, sequence=True) == ({0: "batch"},)
    assert dynamic_axes((ids, dec), {}, sequence=False) == ({0: "batch"}, {0: "batch"})


@pytest.mark.parametrize("name", ["bert-cls", "gpt2-cls", "llama-cls", "t5-lm"])
def test_text_models_trace_with_a_symbolic_batch_and_sequence(name):
    arch = ARCH_BY_NAME[name]
    model, example = build(arch), make_inputs(arch, 0)
    traced = trace(model, example, dynamic_batch=True, dynamic_sequence=True)
    vals = {n.name: n.meta["val"] for n in traced.graph.nodes if n.op == "placeholder"}
    for key in example:
        shape = vals[key].shape
        assert all(isinstance(d, torch.SymInt) for d in shape[:2]), (key, shape)
    module = traced.program.module()
    for batch, length in ((3, 5), (1, 13)):
        inputs = _sized(arch, batch, length, length - 2)
        with torch.no_grad():
            want, got = _tensors(model(**inputs)), _tensors(module(**inputs))
        assert len(got) == len(want) > 0
        for w, g in zip(want, got, strict=True):
            assert g.shape == w.shape and g.shape[0] == batch
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["gpt2-cls", "llama-cls", "t5-lm"])
def test_text_models_export_onnx_with_a_symbolic_sequence(name, tmp_path):
    import onnx
    import onnxruntime

    arch = ARCH_BY_NAME[name]
    model, example = build(arch), make_inputs(arch, 0)
    path = gm.export_onnx(model, example, tmp_path / f"{name}.onnx")
    graph = onnx.load(str(path)).graph
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in graph.input
    }
    want_dims = {
        k: ["batch", "decoder_sequence" if k.startswith("decoder_") else "sequence"]
        for k in example
    }
    assert dims == want_dims
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 5), (3, 14)):
        inputs = _sized(arch, batch, length, length + 1)
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        with torch.no_grad():
            want = _tensors(model(**inputs))
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert tuple(g.shape) == tuple(w.shape)
            torch.testing.assert_close(torch.as_tensor(g), w, rtol=1e-4, atol=1e-4)


def test_a_partial_merge_of_a_text_model_runs_at_other_lengths():
    """The partial-merge module is built from a graph traced with a symbolic sequence: it was
    fixed to the calibration batches' length before."""
    arch = ARCH_BY_NAME["bert-cls"]
    model, example = build(arch), make_inputs(arch, 0)
    twin = gm.shuffle(model, example, seed=1)
    data = [make_inputs(arch, s) for s in (1, 2)]
    part = gm.merge(
        [model, twin],
        data,
        method="weight_matching",
        stop_at="bert.encoder.layer.0",
        progress=False,
    )
    for batch, length in ((3, 13), (1, 4)):
        inputs = _sized(arch, batch, length, length)
        out_a, out_b = part(**inputs)
        with torch.no_grad():
            torch.testing.assert_close(out_a, model(**inputs).logits, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(out_b, twin(**inputs).logits, rtol=1e-4, atol=1e-5)
