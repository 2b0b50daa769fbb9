"""Axis algebra: spaces of units, and layouts that say how a tensor axis is built from spaces.

A *space* is a set of units (channels, features, heads, tokens) that one permutation acts on.
Every tensor axis in the traced graph gets a *layout*, a small tree over spaces:

- `Leaf(space)`: the axis is the space itself;
- `Prod(parts)`: the axis is the row-major product of its parts (C -> heads x head_dim);
- `Cat(parts)`: the axis is the concatenation of its parts (DenseNet concat, fused q|k|v);
- `Blk(key, k)` / `Alt(key, options)`: a block index axis of a stacked tensor and an axis whose
  layout depends on the index along that block axis (q, k, v stacked before `unbind`). These two
  exist only on activations between a reshape and the `select`/`unbind` that resolves them.

Spaces live in a `SpaceStore`, a union-find. Unifying two layouts says "these axes must be permuted
the same way"; a space can later get a *definition* (it turns out to be a product or a
concatenation), and definitions are unified structurally, with mixed-radix refinement when two
products factor the same size differently (B x C vs B*H x D). Anything that cannot be unified
exactly is frozen, never guessed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

__all__ = [
    "EMPTY",
    "POSITIONAL",
    "UNIT",
    "Alt",
    "Blk",
    "Cat",
    "Layout",
    "Leaf",
    "Prod",
    "SpaceStore",
]

# Frozen-reason prefixes of axes that index positions (pixels, kernel taps, vocabulary rows), not
# hidden units: they are not reported as groups.
POSITIONAL = ("spatial axis", "convolution kernel axis", "padded axis", "embedding rows indexed")


@dataclass(frozen=True)
class Leaf:
    space: int


@dataclass(frozen=True)
class Prod:
    parts: tuple


@dataclass(frozen=True)
class Cat:
    parts: tuple


@dataclass(frozen=True)
class Blk:
    key: int
    size: int


@dataclass(frozen=True)
class Alt:
    key: int
    options: tuple


Layout = Leaf | Prod | Cat | Blk | Alt
UNIT = Prod(())
EMPTY = Cat(())  # an axis of length 0


class SpaceStore:
    """Union-find over spaces, with sizes, definitions, frozen reasons and readable hints."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._hint: list[str] = []
        self.definition: dict[int, Layout] = {}
        self.frozen: dict[int, str] = {}
        self._next_key = 0

    # -- spaces ---------------------------------------------------------------------------------
    def new(self, size: int, hint: str = "", frozen: str | None = None) -> Layout:
        """A fresh layout of `size` units: a new leaf, or UNIT for size 1."""
        if size == 1:
            return UNIT
        if size == 0:
            return EMPTY
        if size < 0:
            raise ValueError(f"space of size {size}")
        sid = len(self._parent)
        self._parent.append(sid)
        self._size.append(size)
        self._hint.append(hint)
        if frozen:
            self.frozen[sid] = frozen
        return Leaf(sid)

    def new_key(self) -> int:
        self._next_key += 1
        return self._next_key

    def find(self, sid: int) -> int:
        root = sid
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[sid] != root:
            self._parent[sid], sid = root, self._parent[sid]
        return root

    def space_size(self, sid: int) -> int:
        return self._size[self.find(sid)]

    def hint(self, sid: int) -> str:
        return self._hint[self.find(sid)]

    def __len__(self) -> int:
        return len(self._parent)

    def roots(self) -> list[int]:
        return [s for s in range(len(self._parent)) if self._parent[s] == s]

    # -- layouts --------------------------------------------------------------------------------
    def size(self, lay: Layout) -> int:
        if isinstance(lay, Leaf):
            return self.space_size(lay.space)
        if isinstance(lay, Prod):
            return math.prod(self.size(p) for p in lay.parts)
        if isinstance(lay, Cat):
            return sum(self.size(p) for p in lay.parts)
        if isinstance(lay, Blk):
            return lay.size
        return self.size(lay.options[0])

    def expand(self, lay: Layout) -> Layout:
        """Follow definitions at the top: a defined leaf becomes its definition."""
        while isinstance(lay, Leaf):
            root = self.find(lay.space)
            if root not in self.definition:
                return Leaf(root)
            lay = self.definition[root]
        return lay

    def normalize(self, lay: Layout) -> Layout:
        """Fully expanded canonical form: leaves are undefined roots, products flat, no units."""
        lay = self.expand(lay)
        if isinstance(lay, Leaf):
            return lay
        if isinstance(lay, Prod):
            parts: list[Layout] = []
            for p in lay.parts:
                p = self.normalize(p)
                if isinstance(p, Prod):
                    parts.extend(p.parts)
                else:
                    parts.append(p)
            return parts[0] if len(parts) == 1 else Prod(tuple(parts))
        if isinstance(lay, Cat):
            parts = []
            for p in lay.parts:
                if self.size(p) == 0:
                    continue
                p = self.normalize(p)
                parts.extend(p.parts if isinstance(p, Cat) else [p])
            return parts[0] if len(parts) == 1 else Cat(tuple(parts))
        if isinstance(lay, Alt):
            return Alt(lay.key, tuple(self.normalize(o) for o in lay.options))
        return lay

    def factors(self, lay: Layout) -> list[Layout]:
        """Product factors of a normalized layout (a non-product is its own single factor)."""
        lay = self.normalize(lay)
        if isinstance(lay, Prod):
            return list(lay.parts)
        return [] if self.size(lay) == 1 else [lay]

    def leaves(self, lay: Layout) -> list[int]:
        """Root ids of every leaf in the normalized layout, in order."""
        lay = self.normalize(lay)
        if isinstance(lay, Leaf):
            return [lay.space]
        if isinstance(lay, (Prod, Cat)):
            return [s for p in lay.parts for s in self.leaves(p)]
        if isinstance(lay, Alt):
            return [s for o in lay.options for s in self.leaves(o)]
        return []

    # -- constraints ----------------------------------------------------------------------------
    def freeze(self, lay: Layout, reason: str) -> None:
        """Pin every space in the layout (the first reason given is kept)."""
        for sid in self._all_spaces(lay):
            self.frozen.setdefault(sid, reason)

    def _all_spaces(self, lay: Layout) -> list[int]:
        out: list[int] = []
        stack = [lay]
        while stack:
            cur = stack.pop()
            if isinstance(cur, Leaf):
                root = self.find(cur.space)
                out.append(root)
                if root in self.definition:
                    stack.append(self.definition[root])
            elif isinstance(cur, (Prod, Cat)):
                stack.extend(cur.parts)
            elif isinstance(cur, Alt):
                stack.extend(cur.options)
        return out

    def finish(self) -> None:
        """Propagate frozenness from defined spaces down into their definitions."""
        changed = True
        while changed:
            changed = False
            for root, reason in list(self.frozen.items()):
                root = self.find(root)
                if root in self.definition:
                    for sid in self._all_spaces(self.definition[root]):
                        if sid not in self.frozen:
                            self.frozen[sid] = reason
                            changed = True

    def frozen_reason(self, sid: int) -> str | None:
        return self.frozen.get(self.find(sid))

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if ra > rb:
            ra, rb = rb, ra  # the older space stays the root: stable names
        self._parent[rb] = ra
        if not self._hint[ra]:
            self._hint[ra] = self._hint[rb]
        if rb in self.frozen:
            self.frozen.setdefault(ra, self.frozen.pop(rb))
        da, db = self.definition.get(ra), self.definition.pop(rb, None)
        if db is not None:
            if da is None:
                self.definition[ra] = db
            else:
                self.unify(da, db, "conflicting structures")

    def define(self, sid: int, lay: Layout, why: str) -> None:
        root = self.find(sid)
        if root in self.definition:
            self.unify(self.definition[root], lay, why)
        elif root in self._all_spaces(lay):
            self.freeze(Leaf(root), f"{why}: recursive structure")
        else:
            self.definition[root] = lay

    def unify(self, a: Layout, b: Layout, why: str) -> None:
        """Require layouts `a` and `b` to be permuted identically; freeze what cannot be."""
        sa, sb = self.size(a), self.size(b)
        if sa != sb:
            self.freeze(a, f"{why}: size mismatch {sa} vs {sb}")
            self.freeze(b, f"{why}: size mismatch {sa} vs {sb}")
            return
        if sa <= 1:
            return
        a, b = self.expand(a), self.expand(b)
        if isinstance(a, (Blk, Alt)) or isinstance(b, (Blk, Alt)):
            raise AssertionError("stacked layouts must be collapsed before unification")  # noqa: TRY004
        if isinstance(a, Leaf) and isinstance(b, Leaf):
            self.union(a.space, b.space)
        elif isinstance(a, Leaf):
            self.define(a.space, b, why)
        elif isinstance(b, Leaf):
            self.define(b.space, a, why)
        elif isinstance(a, Cat) and isinstance(b, Cat):
            self._unify_cats(a, b, why)
        elif isinstance(a, Cat) or isinstance(b, Cat):
            cat, prod = (a, b) if isinstance(a, Cat) else (b, a)
            self._unify_cat_prod(cat, prod, why)
        else:
            self._unify_factors(self.factors(a), self.factors(b), why)

    def _unify_cats(self, a: Cat, b: Cat, why: str) -> None:
        bounds = sorted(set(_offsets(self, a.parts)) | set(_offsets(self, b.parts)))
        pa, pb = self.cut_many(a, bounds, why), self.cut_many(b, bounds, why)
        for x, y in zip(pa, pb):
            self.unify(x, y, why)

    def _unify_cat_prod(self, cat: Cat, prod: Layout, why: str) -> None:
        """k equal blocks against (F of size k) x rest: F is pinned, each block is `rest`."""
        facs = self.factors(prod)
        k = len(cat.parts)
        if (
            facs
            and self.size(facs[0]) == k
            and all(self.size(p) == self.size(cat) // k for p in cat.parts)
        ):
            self.freeze(facs[0], f"{why}: block index")
            rest = facs[1] if len(facs) == 2 else Prod(tuple(facs[1:]))
            for p in cat.parts:
                self.unify(p, rest, why)
            return
        self.freeze(cat, f"{why}: concatenation against product")
        self.freeze(prod, f"{why}: concatenation against product")

    def _unify_factors(self, fa: list[Layout], fb: list[Layout], why: str) -> None:
        sizes_a = [self.size(f) for f in fa]
        sizes_b = [self.size(f) for f in fb]
        bounds = _common_bounds(sizes_a, sizes_b)
        if bounds is None:
            for f in fa + fb:
                self.freeze(f, f"{why}: incompatible factorizations {sizes_a} vs {sizes_b}")
            return
        pieces_a = self.refine(fa, bounds, why)
        pieces_b = self.refine(fb, bounds, why)
        for x, y in zip(pieces_a, pieces_b):
            self.unify(x, y, why)

    def refine(self, facs: list[Layout], bounds: list[int], why: str) -> list[Layout]:
        """Split factors (outer to inner) at the inner-cumulative-product `bounds`.

        bounds: sorted inner cumulative products (1 excluded, total included) that every factor
        boundary belongs to. Returns the pieces, outer to inner.
        """
        out: list[Layout] = []
        inner = 1
        spans = []
        for f in reversed(facs):
            size = self.size(f)
            spans.append((f, inner, inner * size))
            inner *= size
        for f, lo, hi in reversed(spans):
            cuts = [b for b in bounds if lo < b <= hi]
            if len(cuts) == 1:
                out.append(f)
                continue
            sizes = [cuts[0] // lo] + [cuts[i + 1] // cuts[i] for i in range(len(cuts) - 1)]
            sizes.reverse()  # outer first
            out.extend(self.split(f, sizes, why))
        return out

    def split(self, lay: Layout, sizes: list[int], why: str) -> list[Layout]:
        """Factor `lay` into a product of the given sizes (outer first)."""
        lay = self.expand(lay)
        facs = self.factors(lay)
        if isinstance(lay, Leaf):
            names = (
                ["heads", "head_dim"] if len(sizes) == 2 else [f"f{i}" for i in range(len(sizes))]
            )
            base = self.hint(lay.space)
            parts = [self.new(s, f"{base}.{n}" if base else n) for s, n in zip(sizes, names)]
            self.define(lay.space, Prod(tuple(parts)), why)
            return parts
        if isinstance(lay, Prod):
            bounds = _common_bounds([self.size(f) for f in facs], sizes)
            if bounds is not None:
                pieces = self.refine(facs, bounds, why)
                return _group_pieces(self, pieces, sizes)
        self.freeze(lay, f"{why}: cannot split {self.size(lay)} into {sizes}")
        return [self.new(s, "pinned", frozen=f"{why}: cannot split") for s in sizes]

    def cut_many(self, lay: Layout, bounds: list[int], why: str) -> list[Layout]:
        """Cut an axis into consecutive blocks at the given offsets (0 and size included)."""
        total = self.size(lay)
        bounds = sorted({b for b in bounds if 0 <= b <= total} | {0, total})
        return [self.cut(lay, lo, hi, why) for lo, hi in itertools.pairwise(bounds)]

    def cut(self, lay: Layout, lo: int, hi: int, why: str) -> Layout:
        """The layout of positions [lo, hi) of an axis; the axis is refined into blocks."""
        total = self.size(lay)
        if hi <= lo:
            return EMPTY
        if lo < 0 or hi > total:  # a rule's bug: the rule fails and its spaces are frozen
            raise ValueError(f"cut [{lo}:{hi}] outside an axis of {total}")
        if lo == 0 and hi == total:
            return lay
        lay = self.expand(lay)
        if isinstance(lay, Leaf):
            blocks = [b for b in (lo, hi - lo, total - hi) if b > 0]
            base = self.hint(lay.space)
            parts = [
                self.new(b, f"{base}.block{i}" if base else f"block{i}")
                for i, b in enumerate(blocks)
            ]
            self.define(lay.space, Cat(tuple(parts)), why)
            return parts[1] if lo > 0 else parts[0]
        if isinstance(lay, Cat):
            picked, off = [], 0
            for p in lay.parts:
                size = self.size(p)
                a, b = max(lo, off), min(hi, off + size)
                if a < b:
                    picked.append(self.cut(p, a - off, b - off, why))
                off += size
            return picked[0] if len(picked) == 1 else Cat(tuple(picked))
        facs = self.factors(lay)
        if facs:
            inner = total // self.size(facs[0])
            if lo % inner == 0 and hi % inner == 0:
                outer = self.cut(facs[0], lo // inner, hi // inner, why)
                return Prod((outer, *facs[1:]))
        self.freeze(lay, f"{why}: slice [{lo}:{hi}] across structure")
        return self.new(hi - lo, "pinned", frozen=f"{why}: slice across structure")


def _offsets(store: SpaceStore, parts) -> list[int]:
    out, off = [0], 0
    for p in parts:
        off += store.size(p)
        out.append(off)
    return out


def _inner_products(sizes: list[int]) -> list[int]:
    out, acc = [], 1
    for s in reversed(sizes):
        acc *= s
        out.append(acc)
    return out


def _common_bounds(a: list[int], b: list[int]) -> list[int] | None:
    """Merged inner cumulative products of two factor lists, or None if they do not nest."""
    a = [s for s in a if s != 1]
    b = [s for s in b if s != 1]
    bounds = sorted(set(_inner_products(a)) | set(_inner_products(b)))
    prev = 1
    for x in bounds:
        if x % prev:
            return None
        prev = x
    return bounds


def _group_pieces(store: SpaceStore, pieces: list[Layout], sizes: list[int]) -> list[Layout]:
    out, i = [], 0
    for s in sizes:
        group, acc = [], 1
        while acc < s:
            group.append(pieces[i])
            acc *= store.size(pieces[i])
            i += 1
        out.append(UNIT if not group else group[0] if len(group) == 1 else Prod(tuple(group)))
    return out
