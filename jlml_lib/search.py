"""``jlml embed`` and ``jlml search``: features and ranked lists for a folder of your own images.

    jlml embed runs/05_market photos/ --out feats.npz          # features + file names
    jlml search runs/05_market --query q1.jpg q2.jpg --gallery photos/ --top 10 --out search.html

Features are the model's test features (:func:`jlml_lib.inference.image_features`: the joint
1,024-d feature of §2.3, raw or normalised as its run evaluated); the ranking is by the L2 distance
of §2.3 (:func:`jlml_lib.distances.pairwise_distances`, float64), nearest first. The search page is
one HTML file with every thumbnail inline (``data:`` URIs): it opens in a browser with no server
and can be mailed as is.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from jlml_lib.distances import pairwise_distances
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.inference import AMP_MODES, TrainedModel, file_sha256, list_images, load_model
from jlml_lib.io import atomic_open, write_text
from jlml_lib.model import FEATURE_KINDS

__all__ = ["embed", "SearchResult", "search", "search_page", "embed_main", "search_main"]

THUMB_HEIGHT = 128  # pixels of a thumbnail on the search page (re-id crops are about 2:1)


def embed(model: str | os.PathLike | TrainedModel, images: Sequence[str | os.PathLike], out: str | os.PathLike,
          *, kind: str = "joint", amp: str = "off", batch_size: int | None = None, device: str = "cpu",
          progress: bool = True) -> Path:
    """Features of ``images`` (files, or folders of images) in ``out`` (.npz): ``features`` (N × D
    float32), ``files`` (the paths, in the same order), ``kind``, ``normalized``, ``model_sha256``."""
    tm = model if isinstance(model, TrainedModel) else load_model(model, device)
    files = list_images(images)
    feats = tm.features(files, kind=kind, amp=amp, batch_size=batch_size, progress=progress)
    with atomic_open(Path(out), "wb") as fh:
        np.savez(fh, features=feats.numpy(), files=np.array([str(f) for f in files]), kind=np.array(kind),
                 normalized=np.array(tm.normalize), model_sha256=np.array(file_sha256(tm.checkpoint)))
    return Path(out)


@dataclass
class SearchResult:
    """One query's ranked gallery: ``files[i]`` at distance ``distances[i]``, nearest first."""

    query: Path
    files: list[Path]
    distances: np.ndarray


def search(model: str | os.PathLike | TrainedModel, queries: Sequence[str | os.PathLike],
           gallery: Sequence[str | os.PathLike], *, top: int = 10, kind: str = "joint", amp: str = "off",
           device: str = "cpu", progress: bool = False) -> list[SearchResult]:
    """Each query's ``top`` nearest gallery images (L2 on the model's features, §2.3)."""
    if top < 1:
        raise ConfigError(f"--top {top}: must be a positive number of gallery images")
    tm = model if isinstance(model, TrainedModel) else load_model(model, device)
    qfiles, gfiles = list_images(queries), list_images(gallery)
    qf = tm.features(qfiles, kind=kind, amp=amp, progress=progress)
    gf = tm.features(gfiles, kind=kind, amp=amp, progress=progress)
    dist = pairwise_distances(qf, gf)
    dist = dist.numpy() if isinstance(dist, torch.Tensor) else np.asarray(dist)
    out = []
    for i, q in enumerate(qfiles):
        order = np.argsort(dist[i], kind="stable")[:top]
        out.append(SearchResult(q, [gfiles[j] for j in order], dist[i, order]))
    return out


def _thumbnail(path: Path) -> str:
    """A JPEG ``data:`` URI of the image, THUMB_HEIGHT pixels high."""
    from jlml_lib.data import open_image

    img = open_image(str(path))
    w = max(1, round(img.width * THUMB_HEIGHT / max(1, img.height)))
    buf = io.BytesIO()
    img.resize((w, THUMB_HEIGHT)).save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(path: Path, caption: str, cls: str = "") -> str:
    return (f'<figure class="{cls}"><img src="{_thumbnail(path)}" alt="{html.escape(path.name)}">'
            f'<figcaption>{caption}</figcaption></figure>')


def search_page(results: Sequence[SearchResult], *, title: str = "jlml search") -> str:
    """A self-contained HTML page: each query, then its ranked gallery with rank and distance."""
    rows = []
    for r in results:
        cells = [_figure(r.query, f"query<br>{html.escape(r.query.name)}", "query")]
        cells += [_figure(f, f"#{k + 1} · d = {d:.4g}<br>{html.escape(f.name)}")
                  for k, (f, d) in enumerate(zip(r.files, r.distances))]
        rows.append(f'<section><h2>{html.escape(str(r.query))}</h2><div class="row">{"".join(cells)}</div></section>')
    style = ("body{font-family:sans-serif;margin:1em} .row{display:flex;flex-wrap:wrap;gap:6px} "
             "figure{margin:0;text-align:center;font-size:11px;max-width:110px;word-wrap:break-word} "
             "figure.query{border-right:3px solid #c33;padding-right:6px} h2{font-size:14px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            "<p>Ranked by L2 distance on the model's features (smaller = more alike).</p>"
            + "".join(rows) + "</body></html>\n")


# ---------------------------------------------------------------- command lines
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=FEATURE_KINDS, default="joint", help="feature (default the joint 1,024-d)")
    p.add_argument("--amp", choices=AMP_MODES, default="off", help="bf16: bfloat16 autocast while extracting")
    p.add_argument("--device", default="cpu")


def embed_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jlml embed", description="Features of images (files or folders) -> .npz")
    p.add_argument("model", help="a run folder of `jlml train` or a checkpoint (.pt)")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--out", required=True, help="the .npz to write (features, files)")
    p.add_argument("--batch-size", type=int, help="images per batch (default the run's evaluation batch)")
    _common(p)
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        out = embed(args.model, args.images, args.out, kind=args.kind, amp=args.amp, batch_size=args.batch_size,
                    device=args.device)
    except (ConfigError, DataError) as exc:
        print(f"jlml embed: {exc}", file=sys.stderr)
        return 2
    with np.load(out) as z:
        print(f"{out}: {z['features'].shape[0]} images × {z['features'].shape[1]} ({args.kind} features)")
    return 0


def search_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jlml search", description="Rank a gallery of images for each query; "
                                "writes an HTML page with thumbnails (opens without a server)")
    p.add_argument("model", help="a run folder of `jlml train` or a checkpoint (.pt)")
    p.add_argument("--query", nargs="+", required=True, help="query image files or folders")
    p.add_argument("--gallery", nargs="+", required=True, help="gallery image files or folders")
    p.add_argument("--top", type=int, default=10, help="gallery images shown per query (default 10)")
    p.add_argument("--out", default="search.html", help="the page to write (default search.html)")
    _common(p)
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        results = search(args.model, args.query, args.gallery, top=args.top, kind=args.kind, amp=args.amp,
                         device=args.device, progress=True)
        write_text(args.out, search_page(results, title=f"jlml search: {args.model}"))
    except (ConfigError, DataError) as exc:
        print(f"jlml search: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(results)} queries, top {args.top} each (open it in a browser)")
    return 0
