"""Survey of every model type the installed `transformers` ships: which ATen ops its export holds.

    python -m benchmarks.hf_survey                        # every model type (about an hour)
    python -m benchmarks.hf_survey --only bert,llama      # a few
    python -m benchmarks.hf_survey --out benchmarks/results/hf_survey.json

For each model type in transformers' auto mapping, in its own try/except and time limit: pick one
model class (sequence classification, image classification, audio classification, causal LM, or
the base model, in that order), build it from the config class's defaults shrunk to a tiny size
(`tiny_config`: hidden 32, 2 layers, 4 heads, vocabulary 128, 32-pixel images, ...), make inputs
from the model's main input name, run it once, and analyse it with `gm.analyze` (no self-check).
A model type whose tiny config does not build, whose inputs are not one of text / image / audio /
mel features, or whose export fails is recorded with the stage and the error.

The result (JSON) lists per model type its class, parameter count, the ATen ops of its exported
graph, the ops without a rule and the share of permutable hidden units. `benchmarks/op_table.py`
reads it: every op in it must have a rule or a documented reason (tests/test_op_table.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

from benchmarks.coverage import time_limit

__all__ = ["OUT", "inputs_for", "model_class", "survey", "survey_one", "tiny_config", "write"]

OUT = Path(__file__).with_name("results") / "hf_survey.json"
MAX_PARAMS = 20_000_000  # a config the shrinking missed: skipped, not exported
TIMEOUT = 90

# Integer config attributes and their tiny values (set wherever a config has them).
TINY = {
    **dict.fromkeys(
        ("hidden_size", "d_model", "n_embd", "dim", "embed_dim", "n_embed", "emb_dim"), 32
    ),
    **dict.fromkeys(("embedding_size", "projection_dim", "word_embed_proj_dim"), 32),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "n_layers", "num_layers"), 2),
    **dict.fromkeys(("encoder_layers", "decoder_layers", "num_decoder_layers"), 1),
    **dict.fromkeys(
        ("num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads"), 4
    ),
    **dict.fromkeys(("decoder_attention_heads", "num_decoder_attention_heads"), 4),
    **dict.fromkeys(("num_key_value_heads", "num_kv_heads", "multi_query_group_num"), 2),
    **dict.fromkeys(("head_dim", "attention_head_dim", "kv_channels", "d_kv"), 8),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim"), 64),
    **dict.fromkeys(("n_inner", "d_ff", "ffn_hidden_size", "mlp_dim"), 64),
    **dict.fromkeys(("vocab_size", "n_vocab"), 128),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "max_seq_len"), 64),
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"), 4),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "top_k"), 2),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size"), 32),
    **dict.fromkeys(("kv_lora_rank", "q_lora_rank"), 16),
    **dict.fromkeys(("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"), 8),
    "image_size": 32,
    "patch_size": 4,
    "window_size": 4,
    "num_channels": 3,
    "num_labels": 3,
    "num_mel_bins": 16,
    "max_source_positions": 16,
}
# List-valued attributes (per-stage sizes of hierarchical models): each entry's tiny value.
TINY_LISTS = {
    "hidden_sizes": lambda i: 16 * 2**i,
    "embed_dims": lambda i: 16 * 2**i,
    "depths": lambda i: 1,
    "num_heads": lambda i: 2**i,
    "num_attention_heads": lambda i: 2**i,
}
TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")
TOKEN_IDS += ("sep_token_id", "cls_token_id", "mask_token_id", "unk_token_id")
CLASS_ORDER = (
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_MAPPING_NAMES",
)


def _shrink_one(cfg, key: str) -> None:
    old = getattr(cfg, key, None)
    if isinstance(old, bool):
        return
    with contextlib.suppress(Exception):
        if isinstance(old, int) and key in TINY:
            setattr(cfg, key, TINY[key])
        elif isinstance(old, (list, tuple)) and key in TINY_LISTS and old:
            setattr(cfg, key, [TINY_LISTS[key](i) for i in range(len(old))])


def tiny_config(cfg, depth: int = 0):
    """`cfg` (a transformers config, changed in place) shrunk to a tiny model; returned."""
    for key in {**TINY, **TINY_LISTS}:
        _shrink_one(cfg, key)
    for key in TOKEN_IDS:
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v >= 128:
            setattr(cfg, key, 2)
    if hasattr(cfg, "pad_token_id") and cfg.pad_token_id is None:
        cfg.pad_token_id = 0
    for key in ("use_cache", "tie_word_embeddings"):
        if hasattr(cfg, key):
            with contextlib.suppress(Exception):
                setattr(cfg, key, False)
    if depth < 3:
        for name in getattr(cfg, "sub_configs", None) or {}:
            sub = getattr(cfg, name, None)
            if sub is not None and hasattr(sub, "to_dict"):
                tiny_config(sub, depth + 1)
    return cfg


def model_class(model_type: str):
    """The class surveyed for a model type (see CLASS_ORDER), or None."""
    import transformers
    from transformers.models.auto import modeling_auto

    for mapping in CLASS_ORDER:
        names = getattr(modeling_auto, mapping)
        if model_type in names:
            name = names[model_type]
            name = name[0] if isinstance(name, (list, tuple)) else name
            cls = getattr(transformers, name, None)
            if cls is not None:
                return cls
    return None


def inputs_for(model, cfg, batch: int = 2, seed: int = 0) -> dict:
    """Keyword inputs from the model's main input name; ValueError for other kinds."""
    import inspect

    gen = torch.Generator().manual_seed(seed)
    name = getattr(model, "main_input_name", "input_ids")
    params = inspect.signature(model.forward).parameters
    if name == "input_ids":
        ids = torch.randint(3, 100, (batch, 8), generator=gen)
        eos = getattr(cfg, "eos_token_id", None)
        if isinstance(eos, int):
            ids[:, -1] = eos
        out = {"input_ids": ids}
        if "attention_mask" in params:
            out["attention_mask"] = torch.ones_like(ids)
        # sequence classifiers make their decoder inputs from input_ids themselves
        derived = type(model).__name__.endswith("ForSequenceClassification")
        if (
            getattr(cfg, "is_encoder_decoder", False)
            and "decoder_input_ids" in params
            and not derived
        ):
            out["decoder_input_ids"] = ids.clone()
        return out
    if name == "pixel_values":
        size = getattr(cfg, "image_size", 32)
        size = size[0] if isinstance(size, (list, tuple)) else size
        c = getattr(cfg, "num_channels", 3)
        return {"pixel_values": torch.randn(batch, c, size, size, generator=gen)}
    if name == "input_values":
        return {"input_values": torch.randn(batch, 400, generator=gen)}
    if name == "input_features":
        mels = getattr(cfg, "num_mel_bins", 16)
        frames = 2 * getattr(cfg, "max_source_positions", 16)
        return {"input_features": torch.randn(batch, mels, frames, generator=gen)}
    raise ValueError(f"main input {name!r} is not text, image, audio or mel features")


def _graph_ops(program) -> list[str]:
    """`namespace.op` of every call in the exported graph and in inlined higher-order bodies."""
    from torch import fx

    from graphmerge.rule_context import qualified_name

    ops, modules = set(), [program.traced.program.graph_module]
    while modules:
        gm_ = modules.pop()
        for node in gm_.graph.nodes:
            if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
                ops.add(qualified_name(node.target))
        modules += [m for m in gm_.children() if isinstance(m, fx.GraphModule)]
    return sorted(ops)


def survey_one(model_type: str, timeout: int = TIMEOUT) -> dict:
    """Build, run and analyse one model type; never raises (failures carry their stage)."""
    import graphmerge as gm

    row: dict = {"model_type": model_type, "ok": False}
    stage, start = "class", time.perf_counter()
    try:
        with time_limit(timeout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING

            cls = model_class(model_type)
            if cls is None:
                raise ValueError("no model class in transformers' auto mappings")
            row["model_cls"] = cls.__name__
            stage = "config"
            cfg = tiny_config(CONFIG_MAPPING[model_type]())
            with contextlib.suppress(Exception):
                cfg._attn_implementation = "eager"
            stage = "build"
            torch.manual_seed(0)
            model = cls(cfg).eval()
            row["params"] = sum(p.numel() for p in model.parameters())
            if row["params"] > MAX_PARAMS:
                raise ValueError(f"{row['params']:,} parameters: the config was not shrunk")
            stage = "run"
            inputs = inputs_for(model, cfg)
            with torch.no_grad():
                model(**inputs)
            stage = "export"
            analysis = gm.analyze(model, inputs, verify=False)
            row["ops"] = _graph_ops(analysis.program)
            row["unruled"] = sorted({op.split(" ")[0] for op, _, _ in analysis.unruled})
            row["permutable_share"] = round(analysis.permutable_share, 4)
            row["ok"] = True
    except Exception as exc:  # noqa: BLE001 (one model type never stops the survey)
        row["stage"] = stage
        row["error"] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def survey(model_types: list[str], out: Path, timeout: int = TIMEOUT) -> dict:
    """Survey `model_types`, adding to (and rewriting) the JSON file `out` after each one."""
    import transformers

    data = json.loads(out.read_text()) if out.exists() else {}
    data["transformers"], data["torch"] = transformers.__version__, torch.__version__
    models = data.setdefault("models", {})
    for i, mt in enumerate(model_types, 1):
        row = survey_one(mt, timeout)
        models[mt] = row
        status = "ok" if row["ok"] else f"{row['stage']}: {row['error'][:100]}"
        print(f"[{i}/{len(model_types)}] {mt:32s} {row['seconds']:5.1f}s {status}", flush=True)
        write(data, out)
    return data


def write(data: dict, out: Path) -> None:
    """The survey as JSON, one model type per line (diffs stay readable)."""
    models = data.get("models", {})
    head = {k: v for k, v in sorted(data.items()) if k != "models"}
    lines = [json.dumps(head)[:-1] + ', "models": {']
    rows = [f"{json.dumps(mt)}: {json.dumps(models[mt], sort_keys=True)}" for mt in sorted(models)]
    lines.append(",\n".join(rows))
    lines.append("}}")
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hf_survey", description=__doc__)
    parser.add_argument("--only", help="comma-separated model types")
    parser.add_argument("--skip-done", action="store_true", help="skip types already in --out")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--timeout", type=int, default=TIMEOUT)
    args = parser.parse_args(argv)
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    types = args.only.split(",") if args.only else sorted(MODEL_MAPPING_NAMES)
    if args.skip_done and args.out.exists():
        done = json.loads(args.out.read_text()).get("models", {})
        types = [t for t in types if t not in done]
    torch.set_num_threads(1)
    survey(types, args.out, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
