"""Showing an analysis to a person: a text table, JSON, and a picture of modules and groups.

Used by `graphmerge inspect`. Everything here reads `PermutationGroup` records (and, for JSON,
an `Analysis`) and never changes them.

Example:
    >>> from graphmerge.records import Member, PermutationGroup
    >>> g = PermutationGroup("fc1:out", 8, False, None, members=(Member("fc1.weight", 0, "out"),))
    >>> print(groups_table([g]).splitlines()[0].split())
    ['group', 'size', 'structure', 'members', 'capture', 'state']
"""

from __future__ import annotations

import dataclasses
import html
import json
import shutil
import subprocess
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import networkx as nx

from graphmerge.loading import save_atomic
from graphmerge.records import PermutationGroup, hidden_unit_share

__all__ = [
    "graph_dot",
    "graph_html",
    "graph_layers",
    "graph_picture_path",
    "group_graph",
    "group_state",
    "groups_json",
    "groups_table",
    "permutable_share",
    "stop_points_text",
    "summary_line",
    "write_graph_picture",
]

_SHOW_MEMBERS = 3
_FROZEN_COLOR = "#d0d0d0"
_PALETTE = (
    "#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462",
    "#b3de69", "#fccde5", "#bc80bd", "#ccebc5", "#ffed6f", "#a6cee3",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# text


def group_state(group: PermutationGroup) -> str:
    """`"free"`, `"verified"` (free and self-checked) or `"frozen: <reason>"`."""
    if group.frozen:
        return f"frozen: {group.reason or 'unknown reason'}"
    return "verified" if group.verified else "free"


def _size_text(group: PermutationGroup) -> str:
    heads = group.structure.heads
    return f"{group.size} x{heads} heads" if heads > 1 else str(group.size)


def _members_text(group: PermutationGroup, width: int | None, most: int | None) -> str:
    """`"5: a, b, +3 more"`: the count, then as many of the first `most` members as fit in
    `width` characters (all of them when both are None)."""
    names = [str(m) for m in group.members]
    head = f"{len(names)}: "
    for k in range(min(len(names), len(names) if most is None else most), -1, -1):
        more = len(names) - k
        text = head + ", ".join(names[:k] + ([f"+{more} more"] if more else []))
        if width is None or len(text) <= width:
            return text
    return _clip(f"{head}+{len(names)} more", width)


def _clip(text: str, width: int | None, middle: bool = False) -> str:
    """`text` in at most `width` characters: cut at the end, or in the middle (names, whose
    two ends tell them apart), marked with `...`."""
    if width is None or len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    if middle:
        tail = (width - 3) // 2
        return text[: width - 3 - tail] + "..." + text[len(text) - tail :]
    return text[: width - 3] + "..."


def permutable_share(groups: Sequence[PermutationGroup]) -> tuple[int, int]:
    """(free units, all hidden units): groups of more than one unit that are not the model's
    input or output axes; units count every head."""
    return hidden_unit_share(groups)


def summary_line(groups: Sequence[PermutationGroup]) -> str:
    """One line: the permutable share of hidden units as a percentage, with the counts."""
    free, total = permutable_share(groups)
    n_free = sum(1 for g in groups if not g.frozen and g.hidden)
    n_all = sum(1 for g in groups if g.hidden)
    share = f"{100.0 * free / total:.1f}%" if total else "n/a"
    return (
        f"permutable share of hidden units: {share} "
        f"({free} of {total} units; {n_free} of {n_all} groups free)"
    )


def groups_table(groups: Sequence[PermutationGroup], width: int | None = None) -> str:
    """A fixed-width table, one row per group, then the summary line.

    Columns: group name, size (with heads), structure, members (count, then members), capture
    site, state (`free`, `verified`, `frozen: reason`). width: fit every line in that many
    columns: members shortened to the first few that fit and `+N more`, the capture and
    structure columns narrowed or left out, names shortened in the middle, states clipped (and
    lines cut at `width` when even that is too wide).
    None: every column, every member, nothing clipped.
    """
    header = ("group", "size", "structure", "members", "capture", "state")
    most = None if width is None else _SHOW_MEMBERS
    texts = [
        [
            g.name,
            _size_text(g),
            str(g.structure),
            _members_text(g, None, most),
            str(g.capture) if g.capture is not None else "-",
            group_state(g),
        ]
        for g in groups
    ]
    widths = [max(len(r[i]) for r in [header, *texts]) for i in range(len(header))]
    if width is not None:
        widths = _fit_widths(widths, width)
    shown = [i for i, w in enumerate(widths) if w > 0]

    def cell(i: int, text: str, group: PermutationGroup | None) -> str:
        if group is not None and i == 3:
            return _members_text(group, widths[3], most)
        return _clip(text, widths[i], middle=i in (0, 4))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cells[i].ljust(widths[i]) for i in shown).rstrip()[:width]

    rows = [[cell(i, t, g) for i, t in enumerate(r)] for g, r in zip(groups, texts, strict=True)]
    head = [cell(i, t, None) for i, t in enumerate(header)]
    body = [line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    if not rows:
        body.append("(no groups)")
    summary = summary_line(groups)
    if width is not None:
        summary = "\n".join(textwrap.wrap(summary, width, subsequent_indent="  "))
    return "\n".join([*body, "", summary])


# How the table gives up room, in order: (column, the width it keeps, whether it may go).
# Members first down to about one member, then capture and structure (left out when they
# would be narrower than 20), then members down to the count, names, states; what is still
# too wide is cut at the end of the line.
_SHRINK = ((3, 60, False), (4, 20, True), (2, 20, True), (3, 14, False), (0, 24, False),
           (5, 16, False))  # fmt: skip


def _fit_widths(widths: list[int], room: int) -> list[int]:
    """Column widths (0: left out) whose line, with two spaces between columns, fits in `room`
    columns when the smallest widths allow it."""
    widths = list(widths)

    def over() -> int:
        kept = [w for w in widths if w > 0]
        return sum(kept) + 2 * (len(kept) - 1) - room

    for col, least, may_go in _SHRINK:
        if over() <= 0:
            break
        widths[col] = max(min(least, widths[col]), widths[col] - over())
        if may_go and over() > 0:
            widths[col] = 0
    return widths


def stop_points_text(points: Sequence[str], width: int | None = None, lines: int = 3) -> str:
    """The stop points a partial merge accepts, after a title line start.

    width: wrap at that many columns and keep at most `lines` lines, listing the first points
    that fit and `+N more`; None: every point on one line.
    """
    title = f"stop points for a partial merge (merge ... stop_at=NAME), {len(points)}:"

    def text(k: int) -> list[str]:
        more = [f"+{len(points) - k} more"] if k < len(points) else []
        words = f"{title} {', '.join([*points[:k], *more])}".rstrip()
        if width is None:
            return [words]
        return textwrap.wrap(words, width, subsequent_indent="  ", break_on_hyphens=False)

    low, high = 0, len(points)  # the most points that fit, by bisection (more never fit better)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if len(text(mid)) <= lines else (low, mid - 1)
    return "\n".join(text(low))


# ---------------------------------------------------------------------------------------------
# JSON


def groups_json(analysis: Any) -> str:
    """The whole analysis as JSON: groups (every record field plus `units` and `state`),
    a summary, the trace / infer / verify times and the ops without rules.

    Reads `analysis.groups`, `.model_name`, `.trace_seconds`, `.infer_seconds`,
    `.verify_seconds`, `.unruled` (`(op, source, count)` triples), `.param_count_permuted`,
    `.param_count_total`.
    """
    groups = list(analysis.groups)
    free, total = permutable_share(groups)
    doc = {
        "model": analysis.model_name,
        "summary": {
            "groups": len(groups),
            "free_groups": sum(1 for g in groups if not g.frozen),
            "frozen_groups": sum(1 for g in groups if g.frozen),
            "permutable_units": free,
            "total_units": total,
            "permutable_share": free / total if total else None,
            "param_count_permuted": analysis.param_count_permuted,
            "param_count_total": analysis.param_count_total,
        },
        "seconds": {
            "trace": analysis.trace_seconds,
            "infer": analysis.infer_seconds,
            "verify": analysis.verify_seconds,
        },
        "unruled": [
            {"op": op, "source": source, "count": count} for op, source, count in analysis.unruled
        ],
        "groups": [
            {**dataclasses.asdict(g), "units": g.units, "state": group_state(g)} for g in groups
        ],
    }
    return json.dumps(doc, indent=2, default=str)


# ---------------------------------------------------------------------------------------------
# graph


def _module_of(param: str) -> str:
    """`layer1.0.conv1.weight` -> `layer1.0.conv1`; a top-level parameter names itself."""
    owner, _, _ = param.rpartition(".")
    return owner or param


def group_graph(groups: Sequence[PermutationGroup]) -> nx.DiGraph:
    """A bipartite graph of modules and groups: module -> group for members with role "out",
    group -> module for role "in".

    Node ids are `"m:<module>"` and `"g:<group name>"`. Attributes: `kind` ("module" | "group"),
    `label`, `fill` (frozen groups grey, free groups a palette color, modules white),
    `tooltip`; groups also carry `frozen`, `heads`, `size`, `state`.
    """
    graph = nx.DiGraph()
    for i, g in enumerate(groups):
        gid = f"g:{g.name}"
        lines = [g.name, f"size {_size_text(g)}"]
        if str(g.structure) != "-":
            lines.append(str(g.structure))
        if g.frozen:
            lines.append(_clip(f"frozen: {g.reason or '?'}", 40))
        graph.add_node(
            gid,
            kind="group",
            label="\n".join(lines),
            fill=_FROZEN_COLOR if g.frozen else _PALETTE[i % len(_PALETTE)],
            tooltip="\n".join([str(g), *(str(m) for m in g.members)]),
            frozen=g.frozen,
            heads=g.structure.heads,
            size=g.size,
            state=group_state(g),
        )
        for m in g.members:
            mod = _module_of(m.param)
            mid = f"m:{mod}"
            if mid not in graph:
                graph.add_node(mid, kind="module", label=mod, fill="#ffffff", tooltip=mod)
            edge = (mid, gid) if m.role == "out" else (gid, mid)
            if not graph.has_edge(*edge):
                graph.add_edge(*edge, members=[])
            graph.edges[edge]["members"].append(str(m))
    return graph


def graph_layers(graph: nx.DiGraph) -> tuple[list[list[str]], set[tuple[str, str]]]:
    """Columns for drawing: topological generations after dropping edges that close cycles.

    Returns the layers (lists of node ids in insertion order) and the dropped back edges
    (a module reading and writing the same group, e.g. a residual stream).
    """
    dag = nx.DiGraph(graph)
    back: set[tuple[str, str]] = set()
    while True:
        try:
            cycle = nx.find_cycle(dag)
        except nx.NetworkXNoCycle:
            break
        # prefer dropping a group -> module (consumer) edge, the later one in the cycle
        edge = next((e for e in reversed(cycle) if e[0].startswith("g:")), cycle[-1])
        dag.remove_edge(edge[0], edge[1])
        back.add((edge[0], edge[1]))
    order = {n: i for i, n in enumerate(graph.nodes)}
    layers = [sorted(layer, key=order.__getitem__) for layer in nx.topological_generations(dag)]
    return layers, back


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def graph_dot(graph: nx.DiGraph) -> str:
    """The graph in Graphviz DOT, left to right, modules as boxes and groups as ellipses."""
    out = [
        "digraph groups {",
        '  rankdir=LR; node [fontname="Helvetica", fontsize=10, style=filled];',
        '  edge [color="#555555", arrowsize=0.6];',
    ]
    for node, attrs in graph.nodes(data=True):
        shape = "box" if attrs["kind"] == "module" else "ellipse"
        extra = ", peripheries=2" if attrs.get("heads", 1) > 1 else ""
        out.append(
            f"  {_dot_quote(node)} [label={_dot_quote(attrs['label'])}, shape={shape}, "
            f"fillcolor={_dot_quote(attrs['fill'])}, "
            f"tooltip={_dot_quote(attrs['tooltip'])}{extra}];"
        )
    for src, dst, attrs in graph.edges(data=True):
        out.append(
            f"  {_dot_quote(src)} -> {_dot_quote(dst)} "
            f"[tooltip={_dot_quote(', '.join(attrs.get('members', [])))}];"
        )
    out.append("}")
    return "\n".join(out) + "\n"


def graph_picture_path(path_stem: str | Path) -> Path:
    """The file `write_graph_picture(groups, path_stem)` writes: `<stem>.svg` when Graphviz's
    `dot` is on PATH, else `<stem>.html`."""
    stem = Path(path_stem)
    return stem.with_name(stem.name + (".svg" if shutil.which("dot") else ".html"))


def write_graph_picture(
    groups: Sequence[PermutationGroup],
    path_stem: str | Path,
    protect: Iterable[str | Path] = (),
) -> Path:
    """Draw modules and groups; returns the file written (`graph_picture_path(path_stem)`).

    With Graphviz's `dot` on PATH: renders `<stem>.svg` (the DOT text goes to `dot` on stdin; no
    `.dot` file is left). Without it: writes `<stem>.html`, a self-contained page with an inline
    SVG laid out in topological columns (no external scripts or styles). The file is written
    atomically and never over or inside one of `protect` (the command's inputs).
    """
    graph = group_graph(groups)
    path = graph_picture_path(path_stem)
    dot = shutil.which("dot")
    if path.suffix == ".svg" and dot:
        text = graph_dot(graph)
        return save_atomic(
            lambda tmp: subprocess.run(
                [dot, "-Tsvg", "-o", str(tmp)],
                input=text,
                text=True,
                check=True,
                capture_output=True,
            ),
            path,
            protect,
        )
    page = graph_html(graph, title=f"graphmerge groups: {Path(path_stem).name}")
    return save_atomic(lambda tmp: tmp.write_text(page), path.with_suffix(".html"), protect)


# ---------------------------------------------------------------------------------------------
# self-contained HTML

_CHAR_W, _LINE_H, _PAD, _COL_GAP, _ROW_GAP = 6.6, 14, 8, 70, 16


def _box_size(label: str) -> tuple[float, float]:
    lines = label.split("\n")
    return max(len(ln) for ln in lines) * _CHAR_W + 2 * _PAD, len(lines) * _LINE_H + 2 * _PAD


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("inf")


def _layout(
    graph: nx.DiGraph,
) -> tuple[dict[str, tuple[float, float, float, float]], set, float, float]:
    """Node boxes `(x, y, w, h)` in topological columns, the back edges, and the canvas size."""
    layers, back = graph_layers(graph)
    row: dict[str, float] = {}
    for i, layer in enumerate(layers):  # barycenter ordering: sit near your predecessors
        if i:
            layer.sort(key=lambda n: _mean([row[p] for p in graph.predecessors(n) if p in row]))
        row.update({n: float(j) for j, n in enumerate(layer)})
    boxes: dict[str, tuple[float, float, float, float]] = {}
    x, height = 20.0, 0.0
    for layer in layers:
        sizes = [_box_size(graph.nodes[n]["label"]) for n in layer]
        col_w = max(w for w, _ in sizes)
        y = 20.0
        for node, (w, h) in zip(layer, sizes, strict=True):
            boxes[node] = (x + (col_w - w) / 2, y, w, h)
            y += h + _ROW_GAP
        height = max(height, y)
        x += col_w + _COL_GAP
    return boxes, back, x, height + 20


def _svg_node(node: str, attrs: dict, box: tuple[float, float, float, float]) -> str:
    x, y, w, h = box
    radius = h / 2 if attrs["kind"] == "group" else 3
    stroke = ' stroke-width="2.5"' if attrs.get("heads", 1) > 1 else ""
    lines = attrs["label"].split("\n")
    text = "".join(
        f'<text x="{x + w / 2:.1f}" y="{y + _PAD + (i + 0.8) * _LINE_H:.1f}">'
        f"{html.escape(ln)}</text>"
        for i, ln in enumerate(lines)
    )
    return (
        f"<g><title>{html.escape(attrs['tooltip'])}</title>"
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{radius:.1f}" '
        f'fill="{attrs["fill"]}"{stroke}/>{text}</g>'
    )


def _svg_edge(a: tuple, b: tuple, back: bool, members: list[str]) -> str:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    if back:  # drawn as a dashed loop below the boxes, from the group back to the reader
        x1, y1, x2, y2 = ax + aw / 2, ay + ah, bx + bw / 2, by + bh
        dip = max(y1, y2) + 30
        path = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{dip:.1f} {x2:.1f},{dip:.1f} {x2:.1f},{y2:.1f}"
        style = ' stroke-dasharray="4 3"'
    else:
        x1, y1, x2, y2 = ax + aw, ay + ah / 2, bx, by + bh / 2
        mid = (x1 + x2) / 2
        path = f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
        style = ""
    title = html.escape(", ".join(members))
    return f'<path d="{path}"{style} marker-end="url(#arrow)"><title>{title}</title></path>'


def graph_html(graph: nx.DiGraph, title: str = "graphmerge groups") -> str:
    """A self-contained HTML page drawing `graph` as inline SVG (hover a node for its members)."""
    boxes, back, width, height = _layout(graph)
    edges = [
        _svg_edge(boxes[s], boxes[d], (s, d) in back, a.get("members", []))
        for s, d, a in graph.edges(data=True)
    ]
    nodes = [_svg_node(n, a, boxes[n]) for n, a in graph.nodes(data=True)]
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 16px; }}
svg text {{ font-size: 11px; text-anchor: middle; font-family: Menlo, Consolas, monospace; }}
svg rect {{ stroke: #333; }}
svg path {{ fill: none; stroke: #666; }}
</style></head><body>
<h3>{html.escape(title)}</h3>
<p>Boxes are modules, rounded nodes are permutation groups (grey: frozen; thick border: heads).
An arrow module &rarr; group means the module produces the group's units; group &rarr; module,
that it consumes them. Dashed arrows close a cycle (e.g. a residual stream). Hover for members.</p>
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}"
 viewBox="0 0 {width:.0f} {height:.0f}">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"
 markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#666"
 stroke="none"/></marker></defs>
{chr(10).join(edges)}
{chr(10).join(nodes)}
</svg></body></html>
"""
