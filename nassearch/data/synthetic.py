"""Embedded default dataset: cluttered synthetic shapes in COCO format, generated on demand.

Six shape classes with random colours, textures, rotations and a >= 16x size range (log-uniform,
so every pyramid level P3-P7 sees objects) on noisy backgrounds with distractor lines and blobs.
Boxes are the tight box of the full drawn shape (later objects may occlude earlier ones, but each
object keeps at least half of its pixels visible). Generation uses numpy + Pillow only and is
byte-for-byte deterministic for a given parameter set.
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from nassearch.errors import NasSearchError

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
SPLITS = ("train", "val")
# Bump when the drawing code changes, so cached datasets from older code are not reused.
GENERATOR_VERSION = 1
_DONE_MARKER = "SYNTHETIC_DONE.json"
_MIN_VISIBLE = 0.5  # an earlier object must keep at least this fraction of its pixels visible
_PLACEMENT_TRIES = 20
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of one synthetic dataset; `key()` names its cache folder."""

    num_train: int = 400
    num_val: int = 100
    image_size: int = 160
    min_object_size: int = 8
    max_object_size: int = 128
    max_objects: int = 6
    seed: int = 0
    # "clutter": noisy textured background; "plain": black, no clutter or noise (for checks).
    background: str = "clutter"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "background":
                if v not in ("clutter", "plain"):
                    raise NasSearchError(
                        f"synthetic background must be 'clutter' or 'plain', got {v!r}"
                    )
            elif not isinstance(v, int) or isinstance(v, bool):
                raise NasSearchError(f"synthetic {f.name} must be an integer, got {v!r}")
        checks = [
            (self.num_train >= 0, "num_train must be >= 0"),
            (self.num_val >= 0, "num_val must be >= 0"),
            (self.num_train + self.num_val > 0, "num_train + num_val must be > 0"),
            (self.image_size >= 8, "image_size must be >= 8"),
            (self.min_object_size >= 2, "min_object_size must be >= 2"),
            (
                self.max_object_size >= self.min_object_size,
                "max_object_size must be >= min_object_size",
            ),
            (self.max_object_size <= self.image_size, "max_object_size must be <= image_size"),
            (self.max_objects >= 1, "max_objects must be >= 1"),
            (self.seed >= 0, "seed must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise NasSearchError(f"synthetic dataset: {msg} (got {self.to_dict()})")

    @classmethod
    def from_params(cls, **params: Any) -> SyntheticSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        for k in params:
            if k not in names:
                raise NasSearchError(
                    f"unknown synthetic dataset parameter {k!r} (expected one of {sorted(names)})"
                )
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Stable short hash of the parameters and the generator version."""
        blob = json.dumps({"version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """(images folder, annotation file) of one split ('train' or 'val') of a generated dataset."""
    root = Path(root)
    return root / split, root / "annotations" / f"instances_{split}.json"


# ------------------------------------------------------------------------------------ shapes


def _regular(n: int, radius: float = 1.0, start: float = math.pi / 2) -> np.ndarray:
    a = start + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def _unit_shape(name: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Outline of a shape around the origin (radius ~1) and its holes."""
    if name == "circle":
        return _regular(96), []
    if name == "square":
        return _regular(4, start=math.pi / 4), []
    if name == "triangle":
        return _regular(3), []
    if name == "star":
        pts = _regular(10)
        pts[1::2] *= 0.42
        return pts, []
    if name == "cross":
        t = 0.3
        pts = [(t, 1), (t, t), (1, t), (1, -t), (t, -t), (t, -1)]
        pts += [(-t, -1), (-t, -t), (-1, -t), (-1, t), (-t, t), (-t, 1)]
        return np.array(pts, dtype=np.float64), []
    if name == "ring":
        return _regular(96), [_regular(96, radius=0.55)]
    raise ValueError(f"unknown shape {name!r}")


def shape_mask(name: str, long_side: int, aspect: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """Binary mask of a shape stretched by `aspect` in x, rotated by `angle`, `long_side` px long.

    The outline is scaled so its longer side spans exactly `long_side` pixels. A pixel belongs to
    the shape when more than half of it is covered (4x4 supersampling) or when it holds one of the
    outline's extreme points, so sharp tips still reach the box edges and boxes stay exact.
    """
    outer, holes = _unit_shape(name)
    c, s = math.cos(angle), math.sin(angle)
    m = np.array([[c, -s], [s, c]]) @ np.diag([aspect, 1.0])
    outer = outer @ m.T
    lo = outer.min(axis=0)
    k = long_side / (outer.max(axis=0) - lo).max()
    outer = (outer - lo) * k  # pixel-edge coordinates: the outline spans [0, w] x [0, h]
    holes = [(h @ m.T - lo) * k for h in holes]
    w, h = np.maximum(np.ceil(outer.max(axis=0) - 1e-6), 1).astype(int)
    # Pillow's polygon coordinates are subpixel centres: edge coordinate X is X * SS - 0.5.
    ss = _SUPERSAMPLE
    img = Image.new("L", (int(w) * ss, int(h) * ss), 0)
    draw = ImageDraw.Draw(img)
    draw.polygon([tuple(p) for p in outer * ss - 0.5], fill=1)
    for hole in holes:
        draw.polygon([tuple(p) for p in hole * ss - 0.5], fill=0)
    mask = np.asarray(img, dtype=np.float32).reshape(h, ss, w, ss).mean(axis=(1, 3)) > 0.5
    for i in (
        outer[:, 0].argmin(),
        outer[:, 0].argmax(),
        outer[:, 1].argmin(),
        outer[:, 1].argmax(),
    ):
        x, y = outer[i]
        mask[min(int(y), h - 1), min(int(x), w - 1)] = True
    return mask


# ----------------------------------------------------------------------------------- colours


def _colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]):
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([r, g, b], dtype=np.float32) * 255


def _grid_projection(h: int, w: int, angle: float) -> np.ndarray:
    """x cos(angle) + y sin(angle) over an h x w pixel grid."""
    xs = np.arange(w, dtype=np.float32) * math.cos(angle)
    ys = np.arange(h, dtype=np.float32) * math.sin(angle)
    return ys[:, None] + xs[None, :]


def _direction_ramp(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Values in [0, 1] increasing along a random direction over an h x w grid."""
    a = rng.uniform(0, 2 * math.pi)
    t = _grid_projection(h, w, a)
    return (t - t.min()) / max(float(np.ptp(t)), 1e-6)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Object fill: solid, stripes, gradient, noise or checkerboard in saturated colours."""
    c1 = _colour(rng, (0.5, 1.0), (0.55, 1.0))
    c2 = _colour(rng, (0.5, 1.0), (0.55, 1.0))
    kind = rng.integers(5)
    if kind == 0:
        tex = np.broadcast_to(c1, (h, w, 3)).copy()
    elif kind == 1:
        a, period = rng.uniform(0, math.pi), rng.uniform(3, 10)
        on = (_grid_projection(h, w, a) / period) % 1.0 < 0.5
        tex = np.where(on[..., None], c1, c2)
    elif kind == 2:
        t = _direction_ramp(rng, h, w)[..., None]
        tex = c1 * (1 - t) + c2 * t
    elif kind == 3:
        tex = c1 + 25 * rng.standard_normal((h, w, 3), dtype=np.float32)
    else:
        cell = int(rng.integers(2, 7))
        on = ((np.arange(h)[:, None] // cell) + (np.arange(w)[None, :] // cell)) % 2 == 0
        tex = np.where(on[..., None], c1, c2)
    # A floor keeps every object pixel distinguishable from the black "plain" background.
    return np.clip(tex, 24, 255).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted gradient + low-frequency noise + soft blobs + random lines (none of them objects)."""
    t = _direction_ramp(rng, size, size)[..., None]
    img = _colour(rng, (0, 0.35), (0.2, 0.8)) * (1 - t) + _colour(rng, (0, 0.35), (0.2, 0.8)) * t
    coarse = rng.normal(0, 18, size=(6, 6, 3)).astype(np.float32)
    img += np.stack(
        [
            np.asarray(Image.fromarray(coarse[..., c]).resize((size, size), Image.BILINEAR))
            for c in range(3)
        ],
        axis=-1,
    )
    coords = np.arange(size, dtype=np.float32)
    for _ in range(int(rng.integers(2, 7))):
        cx, cy = rng.uniform(0, size, size=2)
        rx, ry = rng.uniform(0.03, 0.25, size=2) * size
        # Soft-edged, semi-transparent Gaussian blobs: clutter that never looks like a solid shape.
        gx, gy = np.exp(-(((coords - cx) / rx) ** 2)), np.exp(-(((coords - cy) / ry) ** 2))
        alpha = rng.uniform(0.2, 0.5) * np.outer(gy, gx)
        img = img * (1 - alpha[..., None]) + _colour(rng, (0, 0.8), (0.1, 1)) * alpha[..., None]
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 9))):
        x0, y0, x1, y1 = rng.uniform(-0.2, 1.2, size=4) * size
        colour = tuple(int(v) for v in _colour(rng, (0, 1), (0, 1)))
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 3)))
    return np.asarray(canvas).astype(np.float32)


# ------------------------------------------------------------------------------------ scenes


def _object_size(u: float, spec: SyntheticSpec) -> int:
    """Log-uniform size in [min, max] from a quantile u in [0, 1) (floor over [min, max + 1))."""
    lo, hi = math.log(spec.min_object_size), math.log(spec.max_object_size + 1)
    return min(int(math.exp(lo + u * (hi - lo))), spec.max_object_size)


def render_scene(
    spec: SyntheticSpec, rng: np.random.Generator, size_quantile: float | None = None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image (HxWx3 uint8) and its objects (category index, xywh box, full-shape pixel area).

    `size_quantile` fixes the first object's size quantile: the generator stratifies it over the
    images of a split so the set always spans the whole size range.
    """
    n = spec.image_size
    if spec.background == "clutter":
        img = _background(rng, n)
    else:
        img = np.zeros((n, n, 3), dtype=np.float32)
    visible: list[np.ndarray] = []  # per placed object: canvas-sized mask of its visible pixels
    areas: list[int] = []
    objects: list[dict[str, Any]] = []
    for k in range(int(rng.integers(1, spec.max_objects + 1))):
        cls = int(rng.integers(len(SHAPES)))
        u = size_quantile if (k == 0 and size_quantile is not None) else rng.random()
        aspect = math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
        mask = shape_mask(SHAPES[cls], _object_size(u, spec), aspect, rng.uniform(0, 2 * math.pi))
        h, w = mask.shape
        for _ in range(_PLACEMENT_TRIES):
            x0, y0 = int(rng.integers(0, n - w + 1)), int(rng.integers(0, n - h + 1))
            full = np.zeros((n, n), dtype=bool)
            full[y0 : y0 + h, x0 : x0 + w] = mask
            if all(
                (vis & ~full).sum() >= _MIN_VISIBLE * area
                for vis, area in zip(visible, areas, strict=True)
            ):
                break
        else:
            continue  # no placement keeps the earlier objects recognisable: skip this one
        for vis in visible:
            vis &= ~full
        visible.append(full)
        areas.append(int(mask.sum()))
        region = img[y0 : y0 + h, x0 : x0 + w]
        region[mask] = _texture(rng, h, w)[mask]
        objects.append({"category": cls, "bbox": [x0, y0, w, h], "area": areas[-1]})
    if spec.background == "clutter":
        img += rng.uniform(2, 8) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), objects


def _write_split(root: Path, split: str, split_index: int, count: int, spec: SyntheticSpec) -> None:
    images_dir, ann_file = split_paths(root, split)
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        rng = np.random.default_rng([spec.seed, split_index, i])
        img, objects = render_scene(spec, rng, size_quantile=(i + rng.random()) / count)
        file_name = f"{i:06d}.png"
        Image.fromarray(img).save(images_dir / file_name, format="PNG", compress_level=1)
        images.append(
            {"id": i + 1, "file_name": file_name, "width": img.shape[1], "height": img.shape[0]}
        )
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": obj["category"] + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {
            "description": "nassearch synthetic shapes",
            "generator_version": GENERATOR_VERSION,
            "spec": spec.to_dict(),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPES)
        ],
    }
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(data, separators=(",", ":")))


def generate_synthetic(
    out_dir: str | Path,
    *,
    num_train: int = 400,
    num_val: int = 100,
    image_size: int = 160,
    min_object_size: int = 8,
    max_object_size: int = 128,
    max_objects: int = 6,
    seed: int = 0,
    background: str = "clutter",
) -> Path:
    """Write out_dir/{train,val}/*.png and out_dir/annotations/instances_{train,val}.json."""
    spec = SyntheticSpec(
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        min_object_size=min_object_size,
        max_object_size=max_object_size,
        max_objects=max_objects,
        seed=seed,
        background=background,
    )
    out = Path(out_dir)
    for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_val), strict=True)):
        _write_split(out, split, split_index, count, spec)
    return out


def ensure_synthetic(cache_dir: str | Path, **params: Any) -> Path:
    """Generate the dataset for `params` once under cache_dir/synthetic-<key> and reuse it.

    Safe against concurrent callers: each generates into a private temporary folder next to the
    target and renames it into place; a caller that loses the race uses the winner's copy.
    """
    spec = SyntheticSpec.from_params(**params)
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"synthetic-{spec.key()}"
    if (final / _DONE_MARKER).is_file():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=cache))
    try:
        generate_synthetic(tmp, **spec.to_dict())
        (tmp / _DONE_MARKER).write_text(json.dumps(spec.to_dict(), sort_keys=True))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / _DONE_MARKER).is_file():
                raise NasSearchError(
                    f"cannot place synthetic dataset at {final}: the folder exists but is "
                    "incomplete; remove it and retry"
                ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
