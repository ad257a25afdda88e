"""`nassearch show`: draw a searched architecture the way the papers do (pyramid levels vs. cell order).

NAS-FPN (paper Fig. 6): input levels P3-P7 on the left, each merging cell at its output level, edges
from its two inputs, output cells marked, and dashed edges for the "unused layer" additions.
NAS-FCOS: backbone maps C2-C5 on the left, each cell at its output stride with its two ops and its
aggregation, the leaves feeding P3-P5, and the head's six layers with the share index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nassearch.errors import NasSearchError, first_line
from nassearch.search_spaces import Genotype, named_genotypes, resolve_genotype, space_names

NODE_RADIUS = 0.32
COLORS = {
    "input": "#f6d55c",
    "cell": "#d9d9d9",
    "output": "#7fb3e6",
    "edge": "#555555",
    "unused": "#d1495b",
}


def load_genotype(source: str) -> tuple[Genotype, dict[str, Any]]:
    """A genotype from `space:NAME` (e.g. nasfpn:PAPER), an arch/genotype YAML, or an experiment config.

    Returns the genotype and drawing context (stacks, title).
    """
    if ":" in source and not Path(source).exists():
        space, _, name = source.partition(":")
        if space not in space_names():
            raise NasSearchError(
                f"{source}: unknown space {space!r} (expected {', '.join(space_names())})"
            )
        named = named_genotypes(space)
        if name not in named:
            raise NasSearchError(
                f"{source}: unknown genotype {name!r} (named ones: {', '.join(named)})"
            )
        return named[name], {"title": f"{space} {name}"}
    path = Path(source)
    if not path.is_file():
        raise NasSearchError(
            f"{source}: not a file, and not SPACE:NAME (e.g. nasfpn:PAPER, nasfcos:PAPER)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise NasSearchError(f"{path}: not valid YAML ({first_line(exc)})") from exc
    if not isinstance(data, dict):
        raise NasSearchError(f"{path}: expected a mapping")
    if "model" in data:  # an experiment config
        from nassearch.config import load_config
        from nassearch.detectors.build import model_genotype

        cfg = load_config(path, require_data=False)
        genotype = model_genotype(cfg.model)
        if genotype is None:
            raise NasSearchError(
                f"{path}: model.neck.type is fpn: no searched architecture to draw"
            )
        stacks = getattr(cfg.model.neck, "stacks", 1)
        return genotype, {"title": cfg.name, "stacks": stacks}
    space = data.get("space") or (data.get("genotype") or {}).get("space")
    if space not in space_names():
        raise NasSearchError(f"{path}: no `space` field naming one of {', '.join(space_names())}")
    try:
        genotype = resolve_genotype(str(path), space)
    except NasSearchError as exc:
        raise NasSearchError(f"{path}: {exc}") from None
    return genotype, {"title": path.stem}


def draw(genotype: Genotype, out: str | Path, *, title: str = "", stacks: int = 1) -> Path:
    """Render `genotype` to an image file (format from the suffix: .png, .pdf, .svg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if genotype.space == "nasfpn":
        fig = _draw_nasfpn(plt, genotype, title, stacks)
    else:
        fig = _draw_nasfcos(plt, genotype, title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return out


def _node(
    ax, x: float, y: float, text: str, color: str, *, size: float = NODE_RADIUS, box=False
) -> None:
    from matplotlib.patches import Circle, FancyBboxPatch

    if box:
        patch = FancyBboxPatch(
            (x - size * 1.4, y - size * 0.8),
            size * 2.8,
            size * 1.6,
            boxstyle="round,pad=0.02",
            fc=color,
            ec="#333333",
            lw=1.0,
            zorder=3,
        )
    else:
        patch = Circle((x, y), size, fc=color, ec="#333333", lw=1.0, zorder=3)
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=8, zorder=4)


def _blocked(a, b, others, clearance: float = NODE_RADIUS * 1.2) -> bool:
    """Whether the straight segment a-b passes through another node (then the edge is curved)."""
    ax_, ay = a
    dx, dy = b[0] - ax_, b[1] - ay
    length2 = dx * dx + dy * dy or 1.0
    for px, py in others:
        t = ((px - ax_) * dx + (py - ay) * dy) / length2
        if 0.0 < t < 1.0:
            cx, cy = ax_ + t * dx, ay + t * dy
            if (px - cx) ** 2 + (py - cy) ** 2 < clearance**2:
                return True
    return False


def _trim(a, b, r: float = NODE_RADIUS):
    """Endpoints moved onto the node circles, so arrow heads stay visible."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    d = (dx * dx + dy * dy) ** 0.5 or 1.0
    return (a[0] + dx * r / d, a[1] + dy * r / d), (b[0] - dx * r / d, b[1] - dy * r / d)


def _edge(ax, a, b, *, color=COLORS["edge"], dashed=False, label: str | None = None, rad=0.0):
    start, end = _trim(a, b)
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={
            "arrowstyle": "-|>,head_length=0.5,head_width=0.25",
            "color": color,
            "lw": 1.1,
            "ls": "--" if dashed else "-",
            "shrinkA": 0,
            "shrinkB": 0,
            "connectionstyle": f"arc3,rad={rad}",
        },
        zorder=2,
    )
    if label:
        mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
        ax.text(
            mx,
            my + 0.12,
            label,
            fontsize=6.5,
            ha="center",
            color="#222222",
            zorder=5,
            bbox={"fc": "white", "ec": "none", "pad": 0.5, "alpha": 0.8},
        )


def _draw_nasfpn(plt, genotype, title: str, stacks: int):
    from nassearch.search_spaces.nasfpn import LEVELS

    cells = genotype.cells
    n_in = len(LEVELS)
    first_output = len(cells) - 5
    fig, ax = plt.subplots(figsize=(1.2 * (len(cells) + 2), 5.2))
    pos = {i: (0.0, float(level)) for i, level in enumerate(LEVELS)}
    for k, cell in enumerate(cells):
        pos[n_in + k] = (float(k + 1) * 1.25, float(cell.level))
    additions = genotype.unused_additions()
    for k, cell in enumerate(cells):
        target = pos[n_in + k]
        for src in (cell.input1, cell.input2):
            others = [p for i, p in pos.items() if i not in (src, n_in + k)]
            rad = 0.0
            if _blocked(pos[src], target, others):
                # Bow the edge around the node in its way: arc height ~ rad * length / 2.
                length = sum((u - v) ** 2 for u, v in zip(pos[src], target, strict=True)) ** 0.5
                rad = -max(0.3, 4 * NODE_RADIUS / length)
            _edge(ax, pos[src], target, rad=rad)
        for src in additions[k]:
            _edge(ax, pos[src], target, color=COLORS["unused"], dashed=True, rad=-0.2)
    for i, level in enumerate(LEVELS):
        _node(ax, *pos[i], f"P{level}", COLORS["input"])
    for k, cell in enumerate(cells):
        is_out = k >= first_output
        op = "GP" if cell.op == "global_pool" else "+"
        _node(ax, *pos[n_in + k], op, COLORS["output"] if is_out else COLORS["cell"])
        x, y = pos[n_in + k]
        name = f"P{cell.level} out" if is_out else f"cell {k + 1}"
        ax.text(x, y - 0.48, name, ha="center", va="top", fontsize=7)
    ax.set_yticks(list(LEVELS), [f"P{lv} (stride {2**lv})" for lv in LEVELS])
    ax.set_xticks(
        [0] + [pos[n_in + k][0] for k in range(len(cells))],
        ["inputs"] + [str(k + 1) for k in range(len(cells))],
    )
    ax.set_xlabel("merging cell (order of construction)")
    ax.set_xlim(-0.8, pos[n_in + len(cells) - 1][0] + 0.8)
    ax.set_ylim(2.4, 7.6)
    ax.set_aspect("equal")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    _legend(
        ax,
        plt,
        [
            (COLORS["input"], "input level"),
            (COLORS["cell"], "intermediate cell"),
            (COLORS["output"], "output cell"),
        ],
        [
            ("solid", COLORS["edge"], "cell input"),
            ("dashed", COLORS["unused"], "unused layer added"),
        ],
    )
    suffix = f", {stacks} stacked pyramids" if stacks > 1 else ""
    ax.set_title(
        f"NAS-FPN {title}{suffix}  (GP = global pooling, + = sum; every cell ends with ReLU-conv-BN)",
        fontsize=9,
    )
    return fig


def _legend(ax, plt, patches, lines) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(fc=c, ec="#333333", label=t) for c, t in patches]
    handles += [Line2D([0], [0], color=c, ls=s, label=t) for s, c, t in lines]
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False
    )


SHORT_OPS = {
    "sep_conv_3x3": "sep3",
    "sep_conv_3x3_dil3": "sep3 d3",
    "sep_conv_5x5_dil6": "sep5 d6",
    "skip_connect": "skip",
    "def_conv_3x3": "dcn3",
    "conv1x1": "conv1",
    "conv3x3": "conv3",
}


def _draw_nasfcos(plt, genotype, title: str):
    from nassearch.search_spaces.nasfcos import (
        BACKBONE_STRIDES,
        NUM_BACKBONE,
        cell_strides,
        fpn_leaves,
    )

    panels = [p for p in ("fpn", "head") if getattr(genotype, p) is not None]
    heights = [7.0 if p == "fpn" else 2.2 for p in panels]
    ys = 1.8  # vertical spacing of stride rows (edges between same-stride cells need room)
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(16, sum(heights)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        if panel == "fpn":
            cells = genotype.fpn
            strides = list(BACKBONE_STRIDES) + cell_strides(cells)
            pos = {i: (0.0, ys * float(np.log2(s))) for i, s in enumerate(BACKBONE_STRIDES)}
            for k in range(len(cells)):
                pos[NUM_BACKBONE + k] = (
                    (k + 1) * 2.0,
                    ys * float(np.log2(strides[NUM_BACKBONE + k])),
                )
            for k, (in1, in2, op1, op2, _agg) in enumerate(cells):
                target = pos[NUM_BACKBONE + k]
                for j, (src, op) in enumerate(((in1, op1), (in2, op2))):
                    others = [p for i, p in pos.items() if i not in (src, NUM_BACKBONE + k)]
                    rad = 0.0
                    if in1 == in2:
                        rad = 0.3 if j else -0.3
                    elif _blocked(pos[src], target, others):
                        rad = -0.3
                    _edge(ax, pos[src], target, label=SHORT_OPS[op], rad=rad)
            leaves = fpn_leaves(cells)
            out_x = (len(cells) + 1) * 2.0 + 0.4
            outputs = dict(zip(leaves[-3:], (5, 4, 3), strict=True))
            for leaf, level in outputs.items():
                _edge(ax, pos[leaf], (out_x, ys * level))
                for extra in leaves[:-3]:
                    _edge(
                        ax,
                        pos[extra],
                        (out_x, ys * level),
                        color=COLORS["unused"],
                        dashed=True,
                        rad=0.15,
                    )
            for i, name in enumerate(("C2", "C3", "C4", "C5")):
                _node(ax, *pos[i], name, COLORS["input"])
            for k, cell in enumerate(cells):
                _node(
                    ax, *pos[NUM_BACKBONE + k], "+" if cell[4] == "psum" else "cat", COLORS["cell"]
                )
                x, y = pos[NUM_BACKBONE + k]
                ax.text(x, y - 0.45, f"cell {k + 1}", ha="center", va="top", fontsize=7)
            for level in (3, 4, 5):
                _node(ax, out_x, ys * level, f"P{level}", COLORS["output"])
            ax.set_yticks([ys * v for v in (2, 3, 4, 5)], [f"stride {2**v}" for v in (2, 3, 4, 5)])
            ax.set_xticks([])
            ax.set_xlim(-0.8, out_x + 0.8)
            ax.set_ylim(ys * 2 - 0.8, ys * 5 + 1.2)
            ax.set_aspect("equal")
            for side in ("top", "right", "bottom"):
                ax.spines[side].set_visible(False)
            _legend(
                ax,
                plt,
                [
                    (COLORS["input"], "backbone map"),
                    (COLORS["cell"], "cell (+ = psum, cat)"),
                    (COLORS["output"], "output level"),
                ],
                [
                    ("solid", COLORS["edge"], "op on the input"),
                    ("dashed", COLORS["unused"], "extra leaf added"),
                ],
            )
            ax.set_title(
                f"NAS-FCOS {title}: FPN (leaves -> P5, P4, P3 oldest first; P6, P7 by stride-2 convs on P5)",
                fontsize=9,
            )
        else:
            head = genotype.head
            for i, op in enumerate(head.ops):
                shared = i >= head.share
                _node(
                    ax,
                    i * 1.6,
                    0.0,
                    SHORT_OPS.get(op, op),
                    COLORS["output"] if shared else COLORS["input"],
                    size=0.45,
                    box=True,
                )
                if i:
                    _edge(ax, ((i - 1) * 1.6 + 0.35, 0.0), (i * 1.6 - 0.35, 0.0))
            if 0 < head.share < len(head.ops):
                x = (head.share - 0.5) * 1.6
                ax.axvline(x, color=COLORS["unused"], ls="--", lw=1)
            ax.set_xlim(-1.0, len(head.ops) * 1.6)
            ax.set_ylim(-1.0, 1.0)
            ax.set_aspect("equal")
            ax.axis("off")
            _legend(
                ax,
                plt,
                [(COLORS["input"], "per-level copy"), (COLORS["output"], "shared across levels")],
                [],
            )
            ax.set_title(
                f"head (classification and regression branches, separate weights; share index {head.share}), "
                "each op + GN + ReLU, then FCOS predictors",
                fontsize=9,
            )
    return fig
