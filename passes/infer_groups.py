"""infer_groups: turn the unified spaces into named `PermutationGroup`s.

Reads: `program.store`, `program.param_axes`, `program.param_roles`, `program.sites`, and
`node.meta[AXES]` of every node (for nesting: a space may be permuted per head only if every
tensor that carries it also carries the head).
Writes: `program.axis_layouts`, `program.spaces`, `program.groups`.

A group is one space that appears on at least one parameter axis. Its permutation may be chosen
independently per index of *parent* spaces (units within heads, channels within GroupNorm groups)
when every parameter axis carrying it also carries the parents as outer factors and every
activation carrying it also carries the parents. The space graph (networkx) records which groups
nest in which.
"""

from __future__ import annotations

import math

import networkx as nx

from graphmerge.layout import POSITIONAL, Alt, Cat, Layout, Leaf, Prod
from graphmerge.program import AXES, GroupSpace, Program
from graphmerge.records import CaptureSite, Member, PermutationGroup, Structure

__all__ = ["infer_groups", "space_graph"]


def _mandatory(lay: Layout) -> set[int]:
    if isinstance(lay, Leaf):
        return {lay.space}
    if isinstance(lay, Prod):
        return set().union(*(_mandatory(p) for p in lay.parts)) if lay.parts else set()
    if isinstance(lay, Cat):
        sets = [_mandatory(p) for p in lay.parts]
        return set.intersection(*sets) if sets else set()
    return set()


def _coindexed(lay: Layout, outer_only: bool) -> dict[int, set[int]]:
    """For each leaf, the leaves present at every position where it is (outer ones only)."""
    if isinstance(lay, Leaf):
        return {lay.space: set()}
    out: dict[int, set[int]] = {}
    if isinstance(lay, Prod):
        mand = [_mandatory(p) for p in lay.parts]
        for i, part in enumerate(lay.parts):
            others = set().union(
                *(m for j, m in enumerate(mand) if (j < i if outer_only else j != i))
            )
            for leaf, co in _coindexed(part, outer_only).items():
                out.setdefault(leaf, set(co | others)).intersection_update(co | others)
    elif isinstance(lay, Cat):
        for part in lay.parts:
            for leaf, co in _coindexed(part, outer_only).items():
                out.setdefault(leaf, set(co)).intersection_update(co)
    return out


def _parents(program: Program, members: dict[int, list]) -> dict[int, tuple[int, ...]]:
    """Spaces each group may nest in (see module docstring)."""
    store = program.store
    cand: dict[int, set[int]] = {}
    for lay in program.axis_layouts.values():
        for leaf, co in _coindexed(lay, outer_only=True).items():
            cand.setdefault(leaf, set(co)).intersection_update(co)
    for node in program.traced.graph.nodes:
        meta = node.meta.get(AXES)
        if meta is None:
            continue
        for dims in [meta.dims] if meta.dims is not None else list(meta.items or ()):
            if not dims:
                continue
            norm = [store.normalize(d) for d in dims]
            mand = [_mandatory(n) for n in norm]
            for d, lay in enumerate(norm):
                rest = set().union(*(m for e, m in enumerate(mand) if e != d))
                for leaf, co in _coindexed(lay, outer_only=False).items():
                    if leaf in cand:
                        cand[leaf].intersection_update(co | rest)
    parents = {}
    for space in members:
        ps = sorted(
            p
            for p in cand.get(space, ())
            if p != space and p in members and store.frozen_reason(p) is None
        )
        parents[space] = tuple(ps)
    return parents


def _repeat(lay: Layout, space: int, sizes) -> int:
    """How many positions of the axis carry each unit of `space`."""
    if isinstance(lay, Leaf):
        return 1 if lay.space == space else 0
    if isinstance(lay, Prod):
        for i, p in enumerate(lay.parts):
            r = _repeat(p, space, sizes)
            if r:
                return r * math.prod(sizes(q) for j, q in enumerate(lay.parts) if j != i)
        return 0
    if isinstance(lay, Cat):
        return max((_repeat(p, space, sizes) for p in lay.parts), default=0)
    return 0


def _path(lay: Layout, space: int, hint) -> list[str] | None:
    """Readable position of a space inside an axis layout: ['block2', 'head_dim']."""
    if isinstance(lay, Leaf):
        return [] if lay.space == space else None
    names = None
    if isinstance(lay, Prod):
        n = len(lay.parts)
        names = [hint(p.space).rsplit(".", 1)[-1] if isinstance(p, Leaf) else "" for p in lay.parts]
        good = [bool(x) and ":" not in x for x in names]
        if not any(good) or len(set(names)) < n:
            names = ["heads", "head_dim"] if n == 2 else [f"f{i}" for i in range(n)]
        else:
            names = [x if ok else f"f{i}" for i, (x, ok) in enumerate(zip(names, good))]
    elif isinstance(lay, Cat):
        names = [f"block{i}" for i in range(len(lay.parts))]
    for name, part in zip(names or [], getattr(lay, "parts", ())):
        sub = _path(part, space, hint)
        if sub is not None:
            return [name] + sub
    return None


def _name(program: Program, space: int, members: list[Member], taken: set[str]) -> str:
    first = next((m for m in members if m.role == "out"), members[0])
    module = first.param.rsplit(".", 1)[0] if "." in first.param else first.param
    path = _path(program.axis_layouts[(first.param, first.axis)], space, program.store.hint) or []
    name = f"{module}:{first.role}" + "".join(f".{p}" for p in path)
    base, k = name, 2
    while name in taken:
        name, k = f"{base}#{k}", k + 1
    taken.add(name)
    return name


def _capture(program: Program, space: int) -> CaptureSite | None:
    store = program.store
    for site in reversed(program.sites):
        if space in store.leaves(site.layout):
            return CaptureSite(site.node, site.arg, site.dim, site.kind, site.module)
    for node in reversed(list(program.traced.graph.nodes)):
        meta = node.meta.get(AXES)
        if node.op != "call_function" or meta is None or meta.dims is None:
            continue
        for d, lay in enumerate(meta.dims):
            if _carries(store, lay, space):
                return CaptureSite(node.name, -1, d, "output", "")
    return None


def _carries(store, lay: Layout, space: int) -> bool:
    """Whether every position of an axis's stack carries `space`: an `Alt` axis (one slice per
    layer of a recurrent state, q|k|v stacked) carries it only if all its options do, otherwise
    the other slices would be read as samples of this space."""
    if isinstance(lay, Alt):
        return all(space in store.leaves(o) for o in lay.options)
    return space in store.leaves(lay)


def _first_use(program: Program) -> dict[str, int]:
    """Parameters in the order the graph first uses them (stable names: stem before head)."""
    index = {n: i for i, n in enumerate(program.traced.graph.nodes)}
    order = {}
    for node in program.traced.graph.nodes:
        if node.op == "placeholder" and node.users:
            kind, target = program.traced.placeholders.get(node.name, ("input", node.name))
            if kind in ("param", "buffer"):
                order[target] = min(index[u] for u in node.users)
    return order


def _members(program: Program) -> dict[int, list[Member]]:
    store = program.store
    aliases = program.traced.aliases
    order = _first_use(program)
    out: dict[int, list[Member]] = {}
    for (param, axis), lay in sorted(
        program.axis_layouts.items(), key=lambda kv: (order.get(kv[0][0], 1 << 30), kv[0][1])
    ):
        roles = program.param_roles.get((param, axis), set())
        role = "in" if roles == {"in"} else "out"
        for space in dict.fromkeys(store.leaves(lay)):
            rep = _repeat(lay, space, store.size)
            for name in [param, *aliases.get(param, [])]:
                out.setdefault(space, []).append(Member(name, axis, role, rep))
    return out


def _structure(space, parents, children, in_cat, names) -> Structure:
    heads = math.prod(names[p][1] for p in parents[space]) if parents[space] else 1
    within = tuple(names[p][0] for p in parents[space])
    nested = tuple(names[c][0] for c in children.get(space, ()))
    kind = "within" if within else "heads" if nested else "blocks" if space in in_cat else "plain"
    return Structure(kind, within, heads, nested)


def space_graph(program: Program) -> nx.DiGraph:
    """Groups as nodes, an edge parent -> child for each nesting (whole heads -> within heads)."""
    g = nx.DiGraph()
    for grp in program.groups:
        g.add_node(grp.name, size=grp.size, frozen=grp.frozen)
    by_space = {gs.space: name for name, gs in program.spaces.items()}
    for name, gs in program.spaces.items():
        for p in gs.parents:
            g.add_edge(by_space[p], name)
    return g


def infer_groups(program: Program) -> Program:
    """Build the groups; see the module docstring."""
    store = program.store
    store.finish()
    program.axis_layouts = {k: store.normalize(v) for k, v in program.param_axes.items()}
    members = {
        s: ms
        for s, ms in _members(program).items()
        if not (store.frozen_reason(s) or "").startswith(POSITIONAL)
    }
    parents = _parents(program, members)
    in_cat = {
        s
        for lay in program.axis_layouts.values()
        if isinstance(lay, Cat)
        for s in store.leaves(lay)
    }
    taken: set[str] = set()
    names = {s: (_name(program, s, ms, taken), store.space_size(s)) for s, ms in members.items()}
    children: dict[int, list[int]] = {}
    for s, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(s)
    program.groups, program.spaces = [], {}
    for space, ms in members.items():
        name, size = names[space]
        reason = store.frozen_reason(space)
        program.groups.append(
            PermutationGroup(
                name=name,
                size=size,
                frozen=reason is not None,
                reason=reason,
                structure=_structure(space, parents, children, in_cat, names),
                members=tuple(ms),
                capture=_capture(program, space),
                verified=None,
            )
        )
        program.spaces[name] = GroupSpace(space, size, parents[space])
    return program
