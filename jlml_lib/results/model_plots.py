"""Notebook 02's pictures of the model: Figure 1 (the two branches), the m stripes on a person,
and Table 1 traced stage by stage.

Everything is read from a built :class:`jlml_lib.model.JLML` — its config's stage tables
(``GLOBAL_STAGES`` / ``LOCAL_STAGES``), its modules' kernels and widths, and the shapes a toy
tensor takes on its way through (:func:`jlml_lib.complexity.trace_stages`) — so a picture
cannot drift from the code: change the model and the picture changes with it. Each plot returns
its Figure; given a ``path`` it is also saved as a PNG and closed (as in :mod:`.plots`).
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle
from PIL import Image

from jlml_lib.complexity import TraceStep, stage_name, trace_stages
from jlml_lib.data import build_transform, load_dataset, open_image, resolve_root
from jlml_lib.model import JLML
from jlml_lib.results.paper import load_paper_table
from jlml_lib.results.plots import save_figure

__all__ = ["table1_trace", "stripe_rows", "example_person", "plot_stripes", "Box", "figure1_boxes",
           "plot_figure1"]

#: box colours by role (shared conv1, the two branches, feature layers W_G / W_L, classifiers, joint)
COLOURS = {"input": "#f0f0f0", "shared": "#d9d9d9", "global": "#9ecae1", "local": "#fdd0a2",
           "feature": "#a1d99b", "classifier": "#dadaeb", "joint": "#74c476"}
#: one colour per stripe (cycled when m > 8)
STRIPE_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999")


def _finish(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


@contextmanager
def _evaluating(model: JLML) -> Iterator[None]:
    """Eval mode and no autograd for the block; the model's mode is restored after."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def _trace(model: JLML, input_size: tuple[int, int], seed: int = 0) -> tuple[list[TraceStep], torch.Tensor]:
    x = torch.randn(1, 3, *input_size, generator=torch.Generator().manual_seed(seed))
    return trace_stages(model, x)


def _per_stripe(step: TraceStep, model: JLML) -> tuple[int, ...]:
    """A local map's (channels, H, W) per stripe: the grouped streams hold the m stripes side by side
    in channels; ``share_local`` holds them in the batch instead."""
    c, h, w = step.shape[1:]
    return (c, h, w) if model.cfg.share_local else (c // model.cfg.m, h, w)


def _hw(shape: tuple[int, ...]) -> str:
    h, w = shape[-2:] if len(shape) == 4 else (1, 1)   # a feature vector is Table 1's "1×1"
    return f"{h}×{w}"


def _channels(step: TraceStep, model: JLML) -> str:
    if step.branch == "local" and len(step.shape) == 4 and step.layer not in ("conv1", "fc"):
        return f"{model.cfg.m} × {_per_stripe(step, model)[0]}"
    return str(step.shape[1])


def table1_trace(model: JLML, input_size: tuple[int, int] = (224, 224), seed: int = 0) -> pd.DataFrame:
    """Every step of :func:`trace_stages` beside Table 1's row (results/paper/table1.csv).

    ``paper H×W`` / ``paper channels`` are filled on the step that completes a Table 1 row (its
    last call); ``match`` says whether ours equals them (None where the paper prints nothing).
    Local maps are per stripe: ``channels`` reads "m × c".
    """
    steps, _ = _trace(model, input_size, seed)
    paper = load_paper_table(1)
    last = {(s.layer, s.branch): i for i, s in enumerate(steps)}
    rows = []
    for i, s in enumerate(steps):
        row = {"Table 1 row": s.layer, "branch": s.branch, "code": s.code, "output shape": s.shape,
               "channels": _channels(s, model), "H×W": _hw(s.shape), "paper H×W": "",
               "paper channels": None, "match": None}
        hit = paper[(paper.layer == s.layer) & (paper.branch == s.branch)]
        if last.get((s.layer, s.branch)) == i and len(hit):
            p = hit.iloc[0]
            widths = re.findall(r"/(\d+)", str(p.kernel_widths))   # "1x1/32 3x3/32 1x1/64" -> 64
            row["paper H×W"] = "" if pd.isna(p.output_h) else f"{int(p.output_h)}×{int(p.output_w)}"
            ours_c = _per_stripe(s, model)[0] if row["channels"].startswith(f"{model.cfg.m} × ") else s.shape[1]
            row["paper channels"] = int(widths[-1]) if widths else None
            checks = [(row["paper H×W"], row["H×W"]), (row["paper channels"], ours_c)]
            checks = [(a, b) for a, b in checks if a not in (None, "")]
            row["match"] = all(a == b for a, b in checks) if checks else None
        rows.append(row)
    out = pd.DataFrame(rows)
    out["paper channels"] = out["paper channels"].astype("Int64")
    return out


# ---------------------------------------------------------------- the stripes
def stripe_rows(model: JLML, input_size: tuple[int, int] = (224, 224)) -> list[tuple[int, int]]:
    """For each stripe j, the input rows [start, stop) whose conv1 outputs stream j receives.

    Read from the model itself: row numbers are pushed through ``model.stripes`` (the cut the
    local branch makes), then scaled by conv1's stride. (Each conv1 output also sees one row
    either side through its 3×3 kernel; the bands show the rows it is centred on.)
    """
    with _evaluating(model):   # eval: a forward in train mode would move BN's running statistics
        h1 = model.conv1(torch.zeros(1, 3, *input_size)).shape[2]
    index = torch.arange(1, h1 + 1, dtype=torch.float32).view(1, 1, h1, 1)  # 0 would be padding
    cut = model.stripes(index)[0, :, :, 0]                                    # (m, rows per stripe)
    stride = model.conv1[0].stride[0]
    out = []
    for rows in cut:
        real = rows[rows > 0].long() - 1
        out.append((int(real.min()) * stride, min(int(real.max() + 1) * stride, input_size[0])))
    return out


def example_person(data_root: str | os.PathLike | None = None, seed: int = 0) -> tuple[Image.Image, str]:
    """A Market-1501 person image and its source ("real" / "synthetic").

    With ``data_root``: the first query image of the user's copy. Without: one person drawn in
    memory by the synthetic Market-1501 generator's renderer (its 128×64 crop, a tight box);
    nothing is written or generated on disk.
    """
    if data_root:
        root, source = resolve_root("market1501", data_root)
        return open_image(load_dataset("market1501", root).query[0][0]), source
    from jlml_lib.data.synthetic.market1501 import NUM_CAMS
    from jlml_lib.data.synthetic.render import CANVAS, Studio

    studio = Studio(np.random.default_rng([seed, 1501]), 1, NUM_CAMS)
    sharpest = int(np.argmin(studio.cams.down + studio.cams.blur))   # the camera that blurs least
    shots, _ = studio.shots(np.array([0]), np.array([sharpest]), "tight")
    (_, arr), = studio.render(shots, CANVAS)
    return Image.fromarray(arr), "synthetic"


def plot_stripes(model: JLML, image: Image.Image, input_size: tuple[int, int] = (224, 224),
                 source: str = "", path: str | os.PathLike | None = None) -> Figure:
    """The m stripes on a person, and what each local stream receives.

    Left: the image as the model sees it (resized to ``input_size``; drawn at the original box's
    aspect ratio so the person is not stretched) with each stripe's rows.
    Middle: those rows. Right: stream j's input, the conv1 map of stripe j (mean over channels;
    the model's current weights — random if untrained), from ``model.stripes(model.conv1(x))``.
    """
    m = model.cfg.m
    h, w = input_size
    aspect = (image.height / image.width) / (h / w)   # pixels drawn this much taller than wide
    shown = image.convert("RGB").resize((w, h), Image.BILINEAR)
    with _evaluating(model):
        x = build_transform(input_size, train=False)(image.convert("RGB"))[None]
        conv1 = model.conv1(x) if model.local_conv1 is None else model.local_conv1(x)
        cut = model.stripes(conv1)[0]
    c = cut.shape[0] // m
    bands = stripe_rows(model, input_size)
    fig = plt.figure(figsize=(8, 1.0 + 1.5 * m))
    grid = fig.add_gridspec(m, 3, width_ratios=[1.3, 1, 1])
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(np.asarray(shown), aspect=aspect)
    for j, (a, b) in enumerate(bands):
        col = STRIPE_COLOURS[j % len(STRIPE_COLOURS)]
        ax.add_patch(Rectangle((-0.5, a - 0.5), w, b - a, facecolor=col, alpha=0.22, edgecolor=col, lw=2))
        ax.text(w + 4, (a + b) / 2, f"{j + 1}", color=col, va="center", fontsize=11, weight="bold")
    ax.set_title(f"input {h}×{w}" + (f"\n({source})" if source else ""), fontsize=9)
    ax.set(xticks=[], yticks=[])
    arr = np.asarray(shown)
    for j, (a, b) in enumerate(bands):
        col = STRIPE_COLOURS[j % len(STRIPE_COLOURS)]
        ax1 = fig.add_subplot(grid[j, 1])
        ax1.imshow(arr[a:b], aspect=aspect)
        ax1.set_title(f"stripe {j + 1}: input rows {a}–{b - 1}", fontsize=8, color=col)
        ax2 = fig.add_subplot(grid[j, 2])
        ax2.imshow(cut[j * c:(j + 1) * c].mean(0).numpy(), cmap="viridis", aspect=aspect)
        ax2.set_title(f"stream {j + 1} receives conv1 {c}×{cut.shape[1]}×{cut.shape[2]}", fontsize=8, color=col)
        for a_ in (ax1, ax2):
            a_.set(xticks=[], yticks=[])
            for spine in a_.spines.values():
                spine.set(edgecolor=col, linewidth=2)
    fig.suptitle(f"the local branch's m = {m} horizontal stripes (SL-{m}, Table 1)", fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


# ---------------------------------------------------------------- Figure 1
class Box(NamedTuple):
    """One box of the Figure 1 diagram: centre (x, y), height in rows, its text and role."""

    key: str
    x: float
    y: float
    height: float
    text: str
    kind: str          # a key of COLOURS


def _widths(widths: tuple[int, int, int]) -> str:
    return f"1×1,{widths[0]} 3×3,{widths[1]} 1×1,{widths[2]}"


def figure1_boxes(model: JLML, input_size: tuple[int, int] = (224, 224)) -> list[Box]:
    """The boxes of Figure 1, each labelled from the model (stage tables, module sizes, traced shapes).

    Rows: the global branch on top, the m local streams below it (stripe 1 = top of the image).
    """
    cfg, m = model.cfg, model.cfg.m
    steps, joint = _trace(model, input_size)
    shape = {}
    for s in steps:                       # the last call of each (row, branch): its output
        shape[(s.layer, s.branch)] = s
    top = m + 1.0                         # the global row; local stream j sits at y = m - 1 - j
    mid_local = (m - 1) / 2
    conv = model.conv1[0]
    c1 = shape[("conv1", "shared")].shape
    boxes = [
        Box("input", 0, (top + mid_local) / 2, 1, f"input\n{_chw(steps[0].shape)}", "input"),
        Box("conv1", 1.1, (top + mid_local) / 2, 1,
            f"conv1 (shared)\n{conv.kernel_size[0]}×{conv.kernel_size[1]}, {conv.out_channels}, "
            f"S-{conv.stride[0]}\n{_chw(c1)}", "shared"),
    ]
    gp = model.global_pool
    boxes.append(Box("G:pool1", 2.2, top, 1, f"{gp.kernel_size}×{gp.kernel_size} MP, S-{gp.stride}\n"
                     f"{_chw(shape[('pool1', 'global')].shape)}", "global"))
    pooled = _per_stripe(shape[("pool1", "local")], model)
    boxes.append(Box("L:pool1", 2.2, mid_local, m, f"SL-{m}\n+ StripePool\n\n{m} × {_chw(pooled)}", "local"))
    for i, (widths, _stride) in enumerate(cfg.global_stages):
        boxes.append(Box(f"G:{stage_name(i)}", 3.3 + 1.1 * i, top, 1,
                         f"{stage_name(i)} ×{cfg.blocks_per_stage}\n{_widths(widths)}\n"
                         f"{_chw(shape[(stage_name(i), 'global')].shape)}", "global"))
    for j in range(m):
        for i, (widths, _stride) in enumerate(cfg.local_stages):
            text = (f"{stage_name(i)} ×{cfg.blocks_per_stage}\n{_widths(widths)}\n"
                    f"{_chw(_per_stripe(shape[(stage_name(i), 'local')], model))}" if j == 0
                    else f"stream {j + 1}\n{stage_name(i)}")
            boxes.append(Box(f"L{j + 1}:{stage_name(i)}", 3.3 + 1.1 * i, m - 1 - j, 1, text, "local"))
    x_ap = 3.3 + 1.1 * len(cfg.global_stages)
    g5 = shape[(stage_name(len(cfg.global_stages) - 1), "global")].shape
    l5 = _per_stripe(shape[(stage_name(len(cfg.local_stages) - 1), "local")], model)
    ca = [s for s in steps if s.branch == "local" and s.layer == "fc" and len(s.shape) == 2][0].shape
    boxes.append(Box("G:ap", x_ap, top, 1, f"{g5[2]}×{g5[3]} AP\n{g5[1]}", "global"))
    boxes.append(Box("L:ap", x_ap, mid_local, m, f"{l5[1]}×{l5[2]} AP\nCA-{m}\n\n{m}·{l5[0]}\n= {ca[1]}", "local"))
    for branch, fc, y, eq in (("global", model.global_fc[0], top, "W_G, Eq. 1"),
                              ("local", model.local_fc[0], mid_local, "W_L, Eq. 2")):
        boxes.append(Box(f"{branch[0].upper()}:fc", x_ap + 1.2, y, 1,
                         f"feature layer\n{eq}\n{fc.in_features} → {fc.out_features}", "feature"))
    x_head = x_ap + 2.6
    y_joint = (top + mid_local) / 2
    heads = (("global", model.global_classifier, x_head, top, "Eqs. 1, 3–5"),
             ("local", model.local_classifier, x_head, mid_local, "Eqs. 2–5"),
             ("joint", model.joint_classifier, x_head + 1.3, y_joint, "UniLoss"))
    for branch, head, x, y, eq in heads:
        if head is not None:
            boxes.append(Box(f"{branch}:ID", x, y, 1, f"{branch} ID classifier\n{head.in_features} → "
                             f"{head.out_features} ids\n(softmax CE, {eq})", "classifier"))
    boxes.append(Box("joint", x_head, y_joint, 1, f"joint feature\n{joint.shape[1]}-d (§2.3)\nL2 distance",
                     "joint"))
    return boxes


def _chw(shape: tuple[int, ...]) -> str:
    return "×".join(str(v) for v in (shape[1:] if len(shape) == 4 else shape[-3:]))


def _edges(model: JLML, boxes: list[Box]) -> list[tuple[str, str]]:
    keys = {b.key for b in boxes}
    n_stages = len(model.cfg.global_stages)
    g = ["input", "conv1", "G:pool1"] + [f"G:{stage_name(i)}" for i in range(n_stages)] + ["G:ap", "G:fc"]
    edges = list(zip(g, g[1:])) + [("conv1", "L:pool1")]
    for j in range(model.cfg.m):
        chain = ["L:pool1"] + [f"L{j + 1}:{stage_name(i)}" for i in range(len(model.cfg.local_stages))] + ["L:ap"]
        edges += list(zip(chain, chain[1:]))
    edges += [("L:ap", "L:fc"), ("G:fc", "joint"), ("L:fc", "joint")]
    edges += [("G:fc", "global:ID"), ("L:fc", "local:ID"), ("joint", "joint:ID")]
    return [(a, b) for a, b in edges if a in keys and b in keys]


def plot_figure1(model: JLML, input_size: tuple[int, int] = (224, 224),
                 path: str | os.PathLike | None = None) -> Figure:
    """Figure 1 of the paper redrawn from ``model`` (:func:`figure1_boxes`): shared conv1, the
    global branch, the m local streams, the feature layers W_G / W_L, the joint feature and the ID
    classifiers (one per branch: MultiLoss)."""
    boxes = figure1_boxes(model, input_size)
    where = {b.key: b for b in boxes}
    m = model.cfg.m
    xmax = max(b.x for b in boxes) + 0.7
    fig, ax = plt.subplots(figsize=(1.45 * xmax, 1.2 * (m + 2.6)))
    bw = 0.98
    for b in boxes:
        ax.add_patch(FancyBboxPatch((b.x - bw / 2, b.y - b.height / 2 + 0.08), bw, b.height - 0.16,
                                    boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor=COLOURS[b.kind], edgecolor="0.3", lw=0.8))
        ax.text(b.x, b.y, b.text, ha="center", va="center", fontsize=6.3)
    for a, b in _edges(model, boxes):
        pa, pb = where[a], where[b]
        ax.annotate("", xy=(pb.x - bw / 2, pb.y if pb.height == 1 or pa.height != 1 else pa.y),
                    xytext=(pa.x + bw / 2, pa.y if pa.height == 1 or pb.height != 1 else pb.y),
                    arrowprops=dict(arrowstyle="-|>", color="0.35", lw=0.7, shrinkA=0, shrinkB=0))
    top = m + 1.0
    ax.text(1.75, top + 0.6, "global branch", fontsize=9, weight="bold", color="#3182bd")
    ax.text(1.75, m - 0.45, f"local branch: m = {m} stripe streams (separate weights)" if not model.cfg.share_local
            else f"local branch: m = {m} stripes, one shared stream", fontsize=9, weight="bold", color="#e6550d")
    ax.set(xlim=(-0.6, xmax), ylim=(-0.7, top + 0.9))
    ax.set_axis_off()
    head = "MultiLoss: one ID classifier per branch" if model.cfg.head == "multi" else "UniLoss: one classifier"
    ax.set_title(f"Figure 1 from the code: JLML-ResNet39 at {input_size[0]}×{input_size[1]} "
                 f"(channels×H×W per image; local maps per stripe) — {head}", fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)
