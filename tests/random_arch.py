"""Random architectures for the function-preservation oracle.

`architectures()` is a hypothesis strategy of `(module, example_input, fresh_input)`. The module is
a `RandomNet`: an `nn.Module` built from a drawn *spec* (a list of layer records forming a small
DAG over earlier nodes). Its `forward` is generated Python source from that spec, so the exact code
under test can be printed (`net.to_source()`) as a standalone, copy-pasteable reproducer.

Families, mixed at random:
  * vector nets (B, F): linear, activations, LayerNorm, hand-written RMSNorm, layer scale, residual
    add (with a projection when widths differ), feature concat, GLU (chunk + product), sigmoid
    gates, elementwise products, dropout;
  * conv nets (B, C, H, W): conv2d (kernel 1/3, "same" padding, random groups incl. depthwise),
    BatchNorm2d (eval, random running stats), GroupNorm, residual add, channel concat,
    squeeze-excite gates, max/avg pooling, channel GLU, layer scale, ConvNeXt-style channels-last
    LayerNorm and pointwise Linear; then global mean pool or flatten;
  * token nets (B, T, D): linear, attention (manual or SDPA; separate, fused (through permute or
    movedim, or inside the heads: (B, T, H, 3, D)) or split qkv; grouped-query with repeat_interleave or expand+reshape; value head
    dim != key head dim; cross-attention over another token node), LayerNorm, RMSNorm, layer
    scale, residuals; then mean / sum over tokens or first token.
Vector and token nets also draw feature-axis softmax / log-softmax and other reductions along the
features or the batch (equivariant), cumsum / flip / diff / scatter over the features (not
equivariant: must be frozen), view round trips (movedim, transpose, flatten / unflatten, view_as,
in-place views, tile, diagonal, glu, ...), an FFT over the batch, a masked fill by index_put,
slices, per-feature buffers, a clamp to a learned per-feature bound, a Linear applied twice, and a
Linear used with its transposed weight. Token nets draw recurrent layers (nn.LSTM / GRU / RNN (tanh or relu):
1-2 layers, uni- or bidirectional, batch_first or not, with or without biases, LSTM proj_size,
reading the output or adding the final state); vector nets draw recurrent cells (two steps, the
second from the first's state; the Elman cell with tanh or relu).
Conv and token trunks may be followed by a short vector tail. Every net ends with a Linear head to
`N_OUT` outputs so that all hidden units are internal (model inputs and outputs are frozen spaces).
"""

from __future__ import annotations

import math
import textwrap

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

__all__ = [
    "FEATURE_FNS",
    "N_OUT",
    "SHAPE_FNS",
    "RandomNet",
    "architectures",
    "build",
    "init_weights",
    "repro_source",
    "specs",
]

N_OUT = 3
MAX_WIDTH = 48
ACTS = {
    "relu": "F.relu({})",
    "gelu": "F.gelu({})",
    "silu": "F.silu({})",
    "tanh": "torch.tanh({})",
    "sigmoid": "torch.sigmoid({})",
}
# Feature-axis functions for vector/token nets (any rank >= 2, features last). Most commute with
# any permutation of the features; cumsum and flip do not, so the analysis has to freeze (or
# exactly constrain) them. The reductions and the view round trips use keyword, negative and
# positional argument forms on purpose (the rules read arguments by schema name).
FEATURE_FNS = {
    "softmax": "{}.softmax(dim=-1)",
    "log_softmax": "{0} - {0}.logsumexp(-1, keepdim=True)",
    "cumsum": "{}.cumsum(-1)",
    "flip": "{}.flip(-1)",
    "amax_center": "{0} - {0}.amax(dim=-1, keepdim=True)",
    "std_scale": "{0} / (1 + {0}.std(-1, keepdim=True))",
    "norm_scale": "{0} / (1 + torch.linalg.vector_norm({0}, dim=-1, keepdim=True))",
    "kth_center": "{0} - {0}.kthvalue(1, dim=0, keepdim=True).values",
    "clamp_row": "torch.clamp({0}, min={0}[:1])",
    "movedim": "{0}.movedim(-1, 0).movedim(0, -1)",
    "swapaxes": "{0}.transpose(0, -1).swapaxes(-1, 0)",
    "mT": "{0}.mT.mT",
    "unsqueeze": "{0}.unsqueeze(-2).squeeze(-2)",
    "flatten": "{0}.flatten(0, -2).unflatten(0, {0}.shape[:-1])",
}
# The shape / view ops and others added for the core ATen opset: a separate op ("shapefn") so that
# the generator draws them as often as the feature functions above.
SHAPE_FNS = {
    "view_as": "{0}.reshape(-1).view_as({0}) + {0}.flatten().reshape_as({0})",
    "inplace_views": "{0}.clone().unsqueeze_(0).transpose_(0, -1).transpose_(0, -1).squeeze_(0)",
    "tile": "{0}.tile((2,)).unflatten(-1, (2, {0}.shape[-1])).sum(-2)",
    "diagonal": "torch.diagonal({0}[..., :, None] * {0}[..., None, :], dim1=-2, dim2=-1)",
    "glu_twice": "F.glu(torch.cat([{0}, torch.tanh({0})], -1), -1)",
    "logsigmoid": "F.logsigmoid({0}) + torch.log2(1 + {0}.abs())",
    "index_put_mask": "{0}.index_put(({0} < -1.5,), torch.tensor(-1.5))",
    "fft_batch": "torch.fft.irfft(torch.fft.rfft({0}, dim=0), n={0}.shape[0], dim=0)",
    "cdist_scale": "{0} * torch.cdist({0}, {0} + 1).mean()",
    "diff": "torch.diff({0}, dim=-1, prepend={0}[..., :1])",
    "scatter_add": (
        "torch.zeros_like({0}).scatter_add(-1, torch.arange({0}.shape[-1]).flip(0).expand_as({0}), {0})"
    ),
}
GLU_ACTS = {
    "sigmoid": "torch.sigmoid({})",
    "silu": "F.silu({})",
    "gelu": "F.gelu({})",
    "none": "{}",
}


# --------------------------------------------------------------------------------------------
# code generation: spec -> (__init__ lines, forward lines)
# --------------------------------------------------------------------------------------------


def _emit(spec: dict) -> tuple[list[str], list[str]]:
    """Init lines (executed with `self` bound) and forward lines (inside `forward(self, x)`)."""
    init: list[str] = []
    fwd: list[str] = [f"h0 = x  # {tuple(spec['input_shape'])}"]
    for rec in spec["ops"]:
        i, op = rec["id"], rec["op"]
        h = f"h{i}"
        src = [f"h{j}" for j in rec["ins"]]
        a = src[0]
        if op == "linear":
            init.append(f"self.lin{i} = nn.Linear({rec['cin']}, {rec['cout']}, bias={rec['bias']})")
            fwd.append(f"{h} = self.lin{i}({a})")
        elif op == "act":
            fwd.append(f"{h} = " + ACTS[rec["fn"]].format(a))
        elif op == "featfn":
            fwd.append(f"{h} = " + FEATURE_FNS[rec["fn"]].format(a))
        elif op == "shapefn":
            fwd.append(f"{h} = " + SHAPE_FNS[rec["fn"]].format(a))
        elif op == "slice":
            fwd.append(f"{h} = {a}[..., {rec['start']}:{rec['stop']}]")
        elif op == "clamp":  # a learned per-feature lower bound (a tensor argument of clamp)
            init.append(f"self.lo{i} = nn.Parameter(torch.zeros({rec['c']}))")
            fwd.append(f"{h} = torch.clamp({a}, min=self.lo{i})")
        elif op == "buffer":  # a persistent per-feature buffer (must be permuted like a parameter)
            init.append(f"self.register_buffer('buf{i}', torch.ones({rec['c']}))")
            fwd.append(f"{h} = {a} * self.buf{i}")
        elif op == "reuse":  # one square Linear applied twice: its in and out spaces are one space
            init.append(f"self.lin{i} = nn.Linear({rec['c']}, {rec['c']})")
            fwd.append(f"{h} = self.lin{i}(torch.tanh(self.lin{i}({a})))")
        elif op == "tied":  # a Linear and its transpose (tied embedding / unembedding style)
            init.append(f"self.lin{i} = nn.Linear({rec['c']}, {rec['hidden']})")
            fwd.append(f"{h} = F.gelu(self.lin{i}({a})) @ self.lin{i}.weight")
        elif op == "scale":
            shape = f"{rec['c']}, 1, 1" if rec["dim"] == 1 else f"{rec['c']}"
            init.append(f"self.ls{i} = nn.Parameter(torch.ones({shape}))")
            fwd.append(f"{h} = {a} * self.ls{i}")
        elif op == "ln2d":  # ConvNeXt: LayerNorm over channels in channels-last layout
            init.append(f"self.ln{i} = nn.LayerNorm({rec['c']})")
            fwd.append(f"{h} = self.ln{i}({a}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)")
        elif op == "pwlinear":  # ConvNeXt: pointwise Linear in channels-last layout
            init.append(f"self.pw{i} = nn.Linear({rec['cin']}, {rec['cout']})")
            if rec["style"] == "permute":
                fwd.append(f"{h} = self.pw{i}({a}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)")
            else:
                fwd.append(f"{h} = self.pw{i}({a}.transpose(1, -1)).transpose(1, -1)")
        elif op == "dropout":
            init.append(f"self.drop{i} = nn.Dropout({rec['p']})")
            fwd.append(f"{h} = self.drop{i}({a})")
        elif op == "layernorm":
            init.append(
                f"self.ln{i} = nn.LayerNorm({rec['c']}, elementwise_affine={rec['affine']}, "
                f"bias={rec['bias']})"
            )
            fwd.append(f"{h} = self.ln{i}({a})")
        elif op == "rmsnorm":
            init.append(f"self.rms{i}_w = nn.Parameter(torch.ones({rec['c']}))")
            fwd.append(
                f"{h} = {a} * torch.rsqrt({a}.pow(2).mean(-1, keepdim=True) + 1e-6) * self.rms{i}_w"
            )
        elif op in ("add", "gate", "mul"):
            b = src[1]
            dim = rec["dim"]
            if rec["proj"]:
                if dim == 1:
                    init.append(f"self.proj{i} = nn.Conv2d({rec['cb']}, {rec['ca']}, 1)")
                else:
                    init.append(f"self.proj{i} = nn.Linear({rec['cb']}, {rec['ca']})")
                b = f"self.proj{i}({b})"
            if op == "add":
                fwd.append(f"{h} = {a} + {b}")
            elif op == "gate":
                fwd.append(f"{h} = {a} * torch.sigmoid({b})")
            else:
                fwd.append(f"{h} = {a} * {b}")
        elif op == "cat":
            fwd.append(f"{h} = torch.cat([{', '.join(src)}], dim={rec['dim']})")
        elif op == "glu":
            fwd.append(f"{h}a, {h}b = {a}.chunk(2, dim={rec['dim']})")
            fwd.append(f"{h} = {h}a * " + GLU_ACTS[rec["fn"]].format(f"{h}b"))
        elif op == "conv":
            k = rec["k"]
            init.append(
                f"self.conv{i} = nn.Conv2d({rec['cin']}, {rec['cout']}, {k}, padding={k // 2}, "
                f"groups={rec['groups']}, bias={rec['bias']})"
            )
            fwd.append(f"{h} = self.conv{i}({a})")
        elif op == "bn":
            init.append(f"self.bn{i} = nn.BatchNorm2d({rec['c']})")
            fwd.append(f"{h} = self.bn{i}({a})")
        elif op == "gn":
            init.append(f"self.gn{i} = nn.GroupNorm({rec['groups']}, {rec['c']})")
            fwd.append(f"{h} = self.gn{i}({a})")
        elif op == "pool":
            kind = rec["kind"]
            if kind == "max2":
                fwd.append(f"{h} = F.max_pool2d({a}, 2)")
            elif kind == "avg2":
                fwd.append(f"{h} = F.avg_pool2d({a}, 2)")
            else:  # max3s1: keeps the spatial size
                fwd.append(f"{h} = F.max_pool2d({a}, 3, stride=1, padding=1)")
        elif op == "se":
            c, r = rec["c"], rec["r"]
            if rec["style"] == "conv":
                init.append(f"self.se{i}_1 = nn.Conv2d({c}, {r}, 1)")
                init.append(f"self.se{i}_2 = nn.Conv2d({r}, {c}, 1)")
                fwd.append(f"{h}s = {a}.mean((2, 3), keepdim=True)")
                fwd.append(f"{h}s = torch.sigmoid(self.se{i}_2(F.relu(self.se{i}_1({h}s))))")
                fwd.append(f"{h} = {a} * {h}s")
            else:
                init.append(f"self.se{i}_1 = nn.Linear({c}, {r})")
                init.append(f"self.se{i}_2 = nn.Linear({r}, {c})")
                if rec["style"] == "mean":
                    fwd.append(f"{h}s = {a}.mean((2, 3))")
                else:
                    fwd.append(f"{h}s = F.adaptive_avg_pool2d({a}, 1).flatten(1)")
                fwd.append(f"{h}s = torch.sigmoid(self.se{i}_2(F.relu(self.se{i}_1({h}s))))")
                if rec["style"] == "mean":
                    fwd.append(f"{h} = {a} * {h}s[:, :, None, None]")
                else:
                    fwd.append(f"{h} = {a} * {h}s.view({h}s.shape[0], {c}, 1, 1)")
        elif op == "to_vec":
            kind = rec["kind"]
            if kind == "gap_mean":
                fwd.append(f"{h} = {a}.mean((2, 3))")
            elif kind == "gap_pool":
                fwd.append(f"{h} = F.adaptive_avg_pool2d({a}, 1).flatten(1)")
            elif kind == "flatten":
                fwd.append(f"{h} = {a}.flatten(1)")
            elif kind == "tok_mean":
                fwd.append(f"{h} = {a}.mean(dim=1)")
            elif kind == "tok_sum":
                fwd.append(f"{h} = {a}.sum(1)")
            else:  # tok_first
                fwd.append(f"{h} = {a}[:, 0]")
        elif op == "attn":
            init_a, fwd_a = _emit_attn(rec, a, src[-1], h)
            init += init_a
            fwd += fwd_a
        elif op == "rnn":
            init_r, fwd_r = _emit_rnn(rec, a, h)
            init += init_r
            fwd += fwd_r
        elif op == "cell":
            cls, i = rec["cls"], rec["id"]
            relu = ", nonlinearity='relu'" if rec.get("relu") else ""
            init.append(
                f"self.cell{i} = nn.{cls}({rec['cin']}, {rec['cout']}, bias={rec['bias']}{relu})"
            )
            fwd.append(f"{h}s = self.cell{i}({a})")
            fwd.append(f"{h}s = self.cell{i}(torch.tanh({a}), {h}s)")
            fwd.append(f"{h} = {h}s[0]" if cls == "LSTMCell" else f"{h} = {h}s")
        else:  # pragma: no cover
            raise ValueError(op)
    init.append(f"self.head = nn.Linear({spec['head_in']}, {N_OUT})")
    fwd.append(f"return self.head(h{spec['out']})")
    return init, fwd


def _emit_attn(rec: dict, a: str, kv_src: str, h: str) -> tuple[list[str], list[str]]:
    """Attention of queries from `a` over keys/values from `kv_src` (the same node unless cross)."""
    i = rec["id"]
    d, nh, kv, dh, dout = rec["c"], rec["heads"], rec["kv_heads"], rec["dh"], rec["cout"]
    dv = rec.get("dv", dh)  # value head dim (differs from dh only with separate projections)
    inner, kv_inner, v_inner = nh * dh, kv * dh, kv * dv
    dkv = rec.get("ckv", d)
    bias = rec["bias"]
    init, fwd = [], []
    fwd.append(f"B, T = {a}.shape[0], {a}.shape[1]")
    if rec["qkv"] == "separate":
        init.append(f"self.q{i} = nn.Linear({d}, {inner}, bias={bias})")
        init.append(f"self.k{i} = nn.Linear({dkv}, {kv_inner}, bias={bias})")
        init.append(f"self.v{i} = nn.Linear({dkv}, {v_inner}, bias={bias})")
        fwd.append(f"q = self.q{i}({a}).view(B, T, {nh}, {dh}).transpose(1, 2)")
        fwd.append(f"k = self.k{i}({kv_src}).view(B, T, {kv}, {dh}).transpose(1, 2)")
        fwd.append(f"v = self.v{i}({kv_src}).reshape(B, T, {kv}, -1).transpose(1, 2)")
    elif rec["qkv"] == "fused":  # timm style, needs kv == heads
        init.append(f"self.qkv{i} = nn.Linear({d}, {3 * inner}, bias={bias})")
        fwd.append(f"qkv = self.qkv{i}({a}).reshape(B, T, 3, {nh}, {dh}).permute(2, 0, 3, 1, 4)")
        fwd.append("q, k, v = qkv.unbind(0)")
    elif rec["qkv"] == "fused_movedim":  # the same blocks reached through movedim / transpose
        init.append(f"self.qkv{i} = nn.Linear({d}, {3 * inner}, bias={bias})")
        fwd.append(
            f"qkv = self.qkv{i}({a}).reshape(B, T, 3, {nh}, {dh}).movedim(2, 0).transpose(2, 3)"
        )
        fwd.append("q, k, v = qkv.unbind(0)")
    elif rec["qkv"] == "fused_heads":  # Bloom / Persimmon: (B, T, heads, 3, dh), q/k/v by index
        init.append(f"self.qkv{i} = nn.Linear({d}, {3 * inner}, bias={bias})")
        fwd.append(f"qkv = self.qkv{i}({a}).view(B, T, {nh}, 3, {dh})")
        fwd.append("q, k, v = (qkv[..., j, :].transpose(1, 2) for j in range(3))")
    else:  # "split": one projection, split into q | k | v of different widths
        init.append(f"self.qkv{i} = nn.Linear({d}, {inner + 2 * kv_inner}, bias={bias})")
        fwd.append(f"q, k, v = self.qkv{i}({a}).split([{inner}, {kv_inner}, {kv_inner}], dim=-1)")
        fwd.append(f"q = q.view(B, T, {nh}, {dh}).transpose(1, 2)")
        fwd.append(f"k = k.view(B, T, {kv}, {dh}).transpose(1, 2)")
        fwd.append(f"v = v.view(B, T, {kv}, {dh}).transpose(1, 2)")
    if kv != nh:
        rep = nh // kv
        if rec["expand"] == "repeat_interleave":
            fwd.append(f"k = k.repeat_interleave({rep}, dim=1)")
            fwd.append(f"v = v.repeat_interleave({rep}, dim=1)")
        else:
            fwd.append(
                f"k = k[:, :, None].expand(B, {kv}, {rep}, T, {dh}).reshape(B, {nh}, T, {dh})"
            )
            fwd.append(
                f"v = v[:, :, None].expand(B, {kv}, {rep}, T, {dv}).reshape(B, {nh}, T, {dv})"
            )
    causal = rec["causal"]
    if rec["impl"] == "sdpa":
        fwd.append(f"o = F.scaled_dot_product_attention(q, k, v, is_causal={causal})")
    else:
        fwd.append(f"att = (q @ k.transpose(-2, -1)) * {1.0 / math.sqrt(dh)!r}")
        if causal:
            fwd.append(
                "att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float('-inf'))"
            )
        fwd.append("o = att.softmax(dim=-1) @ v")
    fwd.append(f"o = o.transpose(1, 2).reshape(B, T, {nh * dv})")
    init.append(f"self.o{i} = nn.Linear({nh * dv}, {dout}, bias={bias})")
    fwd.append(f"{h} = self.o{i}(o)")
    return init, fwd


def _emit_rnn(rec: dict, a: str, h: str) -> tuple[list[str], list[str]]:
    """A recurrent layer over a token node (B, T, D) -> (B, T, dirs * units)."""
    i, cls = rec["id"], rec["cls"]
    proj = f", proj_size={rec['proj']}" if rec["proj"] else ""
    proj += ", nonlinearity='relu'" if rec.get("relu") else ""
    init = [
        (
            f"self.rnn{i} = nn.{cls}({rec['cin']}, {rec['hidden']}, num_layers={rec['layers']}, "
            f"bidirectional={rec['bidir']}, batch_first={rec['batch_first']}, bias={rec['bias']}{proj})"
        )
    ]
    seq = a if rec["batch_first"] else f"{a}.transpose(0, 1)"
    fwd = [f"{h}, {h}s = self.rnn{i}({seq})"]
    if not rec["batch_first"]:
        fwd.append(f"{h} = {h}.transpose(0, 1)")
    if rec["read"] == "state":  # the last layer's final state (both directions), per token
        fwd.append(f"{h}s = {h}s[0] if isinstance({h}s, tuple) else {h}s")
        last = f"{h}s[-2], {h}s[-1]" if rec["bidir"] else f"{h}s[-1]"
        fwd.append(f"{h} = {h} + torch.cat([{last}], -1)[:, None]")
    return init, fwd


_NAMESPACE = {"torch": torch, "nn": nn, "F": F, "math": math}


class RandomNet(nn.Module):
    """A network interpreted from a drawn spec (see module docstring)."""

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        init, fwd = _emit(spec)
        exec("\n".join(init), dict(_NAMESPACE), {"self": self})  # noqa: S102 (generated, printable)
        src = "def _forward(self, x):\n" + textwrap.indent("\n".join(fwd), "    ")
        ns = dict(_NAMESPACE)
        exec(compile(src, "<RandomNet forward>", "exec"), ns)  # noqa: S102
        self._forward_impl = ns["_forward"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_impl(self, x)

    def to_source(self, name: str = "Repro") -> str:
        """A standalone class with the same parameter names and the same forward."""
        init, fwd = _emit(self.spec)
        body = ["def __init__(self):", "    super().__init__()"]
        body += ["    " + line for line in init]
        body += ["", "def forward(self, x):"] + ["    " + line for line in fwd]
        return f"class {name}(nn.Module):\n" + textwrap.indent("\n".join(body), "    ")


def init_weights(model: nn.Module, seed: int) -> nn.Module:
    """Random, far-from-symmetric values for every parameter and BN statistic (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (1.2 / math.sqrt(fan_in)))
            elif name.endswith(("weight", "_w")):
                p.copy_(1.0 + 0.4 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.4 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.4 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.rpartition(".")[2].startswith("buf"):
                b.copy_(1.0 + 0.4 * torch.randn(b.shape, generator=g))
    return model


def build(spec: dict) -> tuple[RandomNet, torch.Tensor, torch.Tensor]:
    """The eval-mode net with initialised weights, an example input and a fresh input."""
    model = init_weights(RandomNet(spec), spec["seed"]).eval()
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    example = torch.randn(spec["input_shape"], generator=g)
    fresh = torch.randn(spec["input_shape"], generator=g)
    return model, example, fresh


def repro_source(model: RandomNet) -> str:
    """A complete script reproducing `model` (with the same weights) and its inputs."""
    seed, shape = model.spec["seed"], tuple(model.spec["input_shape"])
    return "\n".join(
        [
            "import math, torch",
            "import torch.nn.functional as F",
            "from torch import nn",
            "",
            model.to_source(),
            "",
            "",
            textwrap.dedent(
                f"""\
                def init_weights(model, seed):
                    g = torch.Generator().manual_seed(seed)
                    with torch.no_grad():
                        for name, p in model.named_parameters():
                            if p.dim() >= 2:
                                p.copy_(torch.randn(p.shape, generator=g) * (1.2 / math.sqrt(p[0].numel())))
                            elif name.endswith(("weight", "_w")):
                                p.copy_(1.0 + 0.4 * torch.randn(p.shape, generator=g))
                            else:
                                p.copy_(0.4 * torch.randn(p.shape, generator=g))
                        for name, b in model.named_buffers():
                            if name.endswith("running_mean"):
                                b.copy_(0.4 * torch.randn(b.shape, generator=g))
                            elif name.endswith("running_var"):
                                b.copy_(0.5 + torch.rand(b.shape, generator=g))
                            elif name.rpartition(".")[2].startswith("buf"):
                                b.copy_(1.0 + 0.4 * torch.randn(b.shape, generator=g))
                    return model


                model = init_weights(Repro(), {seed}).eval()
                g = torch.Generator().manual_seed({seed + 1})
                example = torch.randn({shape}, generator=g)
                fresh = torch.randn({shape}, generator=g)
                """
            ),
        ]
    )


# --------------------------------------------------------------------------------------------
# the spec strategy
# --------------------------------------------------------------------------------------------

_width = st.integers(4, 24)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _pick(draw, nodes: list[dict], pred=lambda n: True) -> int:
    """Index of an earlier node satisfying `pred`, preferring the most recent (shrinks to chains)."""
    cands = [n["id"] for n in reversed(nodes) if pred(n)]
    return draw(st.sampled_from(cands))


def _feature_op(draw, nodes: list[dict], kind: str, ops: list[str]) -> dict:
    """One op on a node whose feature axis is last (kind "vec" or "tok")."""
    i = len(nodes)
    same = lambda n: n["kind"] == kind
    if any(n["c"] > 32 for n in nodes[-1:]) and nodes[-1]["kind"] == kind:
        op = "linear"  # bring a flattened map down to a small width first
    else:
        op = draw(st.sampled_from(ops))
    a = _pick(draw, nodes, same)
    ca = nodes[a]["c"]
    rec: dict = {"id": i, "op": op, "ins": [a]}
    if op == "linear":
        rec.update(cin=ca, cout=draw(_width), bias=draw(st.booleans()))
        c = rec["cout"]
    elif op == "act":
        rec["fn"] = draw(st.sampled_from(sorted(ACTS)))
        c = ca
    elif op == "featfn":
        rec["fn"] = draw(st.sampled_from(list(FEATURE_FNS)))
        c = ca
    elif op == "shapefn":
        rec["fn"] = draw(st.sampled_from(list(SHAPE_FNS)))
        c = ca
    elif op == "slice":
        start = draw(st.integers(0, max(ca - 2, 0)))
        stop = draw(st.integers(start + 1, ca))
        rec.update(start=start, stop=stop)
        c = stop - start
    elif op in ("buffer", "reuse", "clamp"):
        rec["c"] = ca
        c = ca
    elif op == "tied":
        rec.update(c=ca, hidden=draw(_width))
        c = ca
    elif op == "dropout":
        rec["p"] = draw(st.sampled_from([0.1, 0.5]))
        c = ca
    elif op == "layernorm":
        affine = draw(st.booleans())
        rec.update(c=ca, affine=affine, bias=affine and draw(st.booleans()))
        c = ca
    elif op == "rmsnorm":
        rec["c"] = ca
        c = ca
    elif op == "scale":
        rec.update(c=ca, dim=-1)
        c = ca
    elif op in ("add", "gate", "mul"):
        b = _pick(draw, nodes, same)
        cb = nodes[b]["c"]
        rec.update(ins=[a, b], dim=-1, ca=ca, cb=cb, proj=cb != ca)
        c = ca
    elif op == "cat" and any(same(n) and n["c"] + ca <= MAX_WIDTH for n in nodes):
        b = _pick(draw, nodes, lambda n: same(n) and n["c"] + ca <= MAX_WIDTH)
        rec.update(ins=[a, b], dim=-1)
        c = ca + nodes[b]["c"]
    elif op == "cat":  # too wide to concatenate: an identity-like op instead
        rec.update(op="act", fn="relu")
        c = ca
    elif op == "glu":
        a = _pick(draw, nodes, lambda n: same(n) and n["c"] % 2 == 0 and n["c"] >= 4)
        rec.update(ins=[a], dim=-1, fn=draw(st.sampled_from(sorted(GLU_ACTS))))
        c = nodes[a]["c"] // 2
    elif op == "rnn":
        cls = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
        rec.update(
            cls=cls,
            cin=ca,
            hidden=draw(st.integers(2, 12)),
            layers=draw(st.integers(1, 2)),
            bidir=draw(st.booleans()),
            batch_first=draw(st.booleans()),
            bias=draw(st.booleans()),
            read=draw(st.sampled_from(["output", "state"])),
        )
        rec["proj"] = (
            draw(st.integers(1, rec["hidden"] - 1)) if cls == "LSTM" and draw(st.booleans()) else 0
        )
        rec["relu"] = cls == "RNN" and draw(st.booleans())  # aten.rnn_relu
        c = (2 if rec["bidir"] else 1) * (rec["proj"] or rec["hidden"])
    elif op == "cell":
        rec.update(
            cls=draw(st.sampled_from(["LSTMCell", "GRUCell", "RNNCell"])),
            cin=ca,
            cout=draw(_width),
            bias=draw(st.booleans()),
        )
        rec["relu"] = rec["cls"] == "RNNCell" and draw(st.booleans())  # aten.rnn_relu_cell
        c = rec["cout"]
    elif op == "attn":
        heads = draw(st.integers(1, 4))
        dh = draw(st.integers(1, 6))
        qkv = draw(st.sampled_from(["separate", "fused", "split", "fused_movedim", "fused_heads"]))
        kv = heads if qkv.startswith("fused") else draw(st.sampled_from(_divisors(heads)[::-1]))
        rec.update(
            c=ca,
            heads=heads,
            kv_heads=kv,
            dh=dh,
            qkv=qkv,
            cout=draw(_width),
            bias=draw(st.booleans()),
            impl=draw(st.sampled_from(["manual", "sdpa"])),
            causal=draw(st.booleans()),
            expand=draw(st.sampled_from(["repeat_interleave", "expand"])),
        )
        if qkv == "separate":
            rec["dv"] = draw(st.integers(1, 6))
            b = _pick(draw, nodes, same)  # keys/values from another token node: cross-attention
            if b != a:
                rec.update(ins=[a, b], ckv=nodes[b]["c"])
        c = rec["cout"]
    else:  # pragma: no cover
        raise ValueError(op)
    nodes.append({"id": i, "kind": kind, "c": c})
    return rec


def _conv_op(draw, nodes: list[dict]) -> dict:
    i = len(nodes)
    ops = ["conv", "conv", "bn", "gn", "act", "add", "cat", "se", "pool", "glu", "dropout"]
    ops += ["scale", "ln2d", "pwlinear"]
    if not any(n["c"] % 2 == 0 for n in nodes):
        ops.remove("glu")
    op = draw(st.sampled_from(ops))
    is_map = lambda n: n["kind"] == "map"
    a = _pick(draw, nodes, is_map)
    ca, s = nodes[a]["c"], nodes[a]["s"]
    rec: dict = {"id": i, "op": op, "ins": [a]}
    c = ca
    if op == "conv":
        cout = draw(_width)
        rec.update(
            cin=ca,
            cout=cout,
            k=draw(st.sampled_from([1, 3])),
            groups=draw(st.sampled_from(_divisors(math.gcd(ca, cout)))),
            bias=draw(st.booleans()),
        )
        c = cout
    elif op == "bn":
        rec["c"] = ca
    elif op == "gn":
        rec.update(c=ca, groups=draw(st.sampled_from(_divisors(ca))))
    elif op == "act":
        rec["fn"] = draw(st.sampled_from(sorted(ACTS)))
    elif op == "dropout":
        rec["p"] = 0.1
    elif op == "scale":
        rec.update(c=ca, dim=1)
    elif op == "ln2d":
        rec["c"] = ca
    elif op == "pwlinear":
        c = draw(_width)
        rec.update(cin=ca, cout=c, style=draw(st.sampled_from(["permute", "transpose"])))
    elif op == "add":
        b = _pick(draw, nodes, lambda n: is_map(n) and n["s"] == s)
        cb = nodes[b]["c"]
        rec.update(ins=[a, b], dim=1, ca=ca, cb=cb, proj=cb != ca)
    elif op == "cat" and any(is_map(n) and n["s"] == s and n["c"] + ca <= MAX_WIDTH for n in nodes):
        b = _pick(draw, nodes, lambda n: is_map(n) and n["s"] == s and n["c"] + ca <= MAX_WIDTH)
        rec.update(ins=[a, b], dim=1)
        c = ca + nodes[b]["c"]
    elif op == "cat":
        rec.update(op="act", fn="relu")
    elif op == "se":
        rec.update(
            c=ca, r=draw(st.integers(2, 8)), style=draw(st.sampled_from(["mean", "pool", "conv"]))
        )
    elif op == "pool":
        kinds = ["max3s1"] + (["max2", "avg2"] if s >= 2 else [])
        rec["kind"] = draw(st.sampled_from(kinds))
        if rec["kind"] != "max3s1":
            s = s // 2
    elif op == "glu":
        a = _pick(draw, nodes, lambda n: is_map(n) and n["c"] % 2 == 0)
        rec.update(ins=[a], dim=1, fn=draw(st.sampled_from(sorted(GLU_ACTS))))
        c, s = nodes[a]["c"] // 2, nodes[a]["s"]
    nodes.append({"id": i, "kind": "map", "c": c, "s": s})
    return rec


VEC_OPS = [
    "linear",
    "linear",
    "act",
    "layernorm",
    "rmsnorm",
    "add",
    "cat",
    "glu",
    "gate",
    "mul",
    "dropout",
    "scale",
    "featfn",
    "shapefn",
    "slice",
    "buffer",
    "reuse",
    "tied",
    "clamp",
    "cell",
]
TOK_OPS = ["linear", "act", "layernorm", "rmsnorm", "add", "attn", "attn", "glu", "cat", "gate"]
TOK_OPS += ["scale", "featfn", "shapefn", "slice", "buffer", "reuse", "tied", "clamp", "rnn"]


@st.composite
def specs(draw, families=("vector", "conv", "token")) -> dict:
    family = draw(st.sampled_from(list(families)))
    seed = draw(st.integers(0, 2**16))
    depth = draw(st.integers(1, 6))
    ops: list[dict] = []
    if family == "vector":
        f = draw(st.integers(3, 12))
        shape = (3, f)
        nodes = [{"id": 0, "kind": "vec", "c": f}]
    elif family == "conv":
        c, s = draw(st.integers(1, 4)), draw(st.integers(3, 8))
        shape = (2, c, s, s)
        nodes = [{"id": 0, "kind": "map", "c": c, "s": s}]
    else:
        d, t = draw(st.integers(3, 12)), draw(st.integers(2, 5))
        shape = (2, t, d)
        nodes = [{"id": 0, "kind": "tok", "c": d}]

    def feature_step(kind, opnames):
        names = list(opnames)
        if not any(n["kind"] == kind and n["c"] % 2 == 0 and n["c"] >= 4 for n in nodes):
            names = [o for o in names if o != "glu"]
        ops.append(_feature_op(draw, nodes, kind, names))

    for _ in range(depth):
        if family == "conv":
            ops.append(_conv_op(draw, nodes))
        elif family == "token":
            feature_step("tok", TOK_OPS)
        else:
            feature_step("vec", VEC_OPS)

    if family in ("conv", "token"):
        last = nodes[-1]
        if family == "conv":
            kind = draw(st.sampled_from(["gap_mean", "gap_pool", "flatten"]))
            c = last["c"] * last["s"] ** 2 if kind == "flatten" else last["c"]
        else:
            kind = draw(st.sampled_from(["tok_mean", "tok_sum", "tok_first"]))
            c = last["c"]
        i = len(nodes)
        ops.append({"id": i, "op": "to_vec", "kind": kind, "ins": [last["id"]]})
        nodes.append({"id": i, "kind": "vec", "c": c})
        for _ in range(draw(st.integers(0, 2))):
            feature_step("vec", VEC_OPS)
    out = nodes[-1]
    return {
        "family": family,
        "seed": seed,
        "input_shape": shape,
        "ops": ops,
        "out": out["id"],
        "head_in": out["c"],
    }


def architectures(families=("vector", "conv", "token")):
    """Strategy of `(module, example_input, fresh_input)`; the module is in eval mode."""
    return specs(families).map(build)
