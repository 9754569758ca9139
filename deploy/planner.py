"""Shape-grouped batch planning.

Input: each image's content size ``(h, w)`` *after* the model's resize policy. Output: a
:class:`BatchPlan` — batches of image indices, each with the padded shape ``(H, W)`` the
batch is fed at (a multiple of the stride; zero padding at the bottom/right), and the padded-
pixel waste. The plan never drops or duplicates an image, and :meth:`BatchPlan.restore`
puts per-batch results back into the caller's order.

Policies:

* ``none`` — upstream behaviour and the baseline: consecutive slices of the caller's list,
  each padded to its own maximum.
* ``orientation`` — two buckets, landscape/square (``h <= w``) and portrait; caller order
  within a bucket.
* ``buckets`` — ``num_buckets`` aspect-ratio bins of equal image count (quantiles of
  ``log(w/h)``), images sorted by padded shape inside a bin so identical shapes share batches.
  With ``shapes=...`` it becomes *canonical shapes*: every batch is padded to one of a fixed
  set of shapes, so a shape-specialised engine (TensorRT) sees only those. ``shapes="auto"``
  picks ``num_buckets`` shapes that hold every image unchanged with the least padded area
  (exact dynamic programme over the distinct padded shapes sorted by aspect); explicit
  shapes that cannot hold an image make it shrink to fit (aspect kept), which is reported in
  :attr:`BatchPlan.resized`.
* ``shape`` — one group per exact padded shape: every image is padded exactly as it would be
  alone (bs=1), so even a network whose outputs depend on padding everywhere (GroupNorm
  statistics cover the padding) returns bs=1 results. Rare shapes form small batches.

Everything is deterministic: ties break on the image index.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, TypeVar, Union

HW = Tuple[int, int]
T = TypeVar("T")
POLICIES = ("none", "orientation", "buckets", "shape")


def _round_up(v: int, stride: int) -> int:
    return -(-v // stride) * stride


@dataclass(frozen=True)
class Batch:
    """One planned batch.

    Attributes:
        indices: Image indices into the caller's list, in feed order.
        shape: Padded ``(H, W)`` fed to the network.
        content_pixels: Sum of ``h * w`` of the images' content.
    """

    indices: Tuple[int, ...]
    shape: HW
    content_pixels: int

    @property
    def size(self) -> int:
        return len(self.indices)

    @property
    def total_pixels(self) -> int:
        """``B * H * W``: pixels the network processes for this batch."""
        return len(self.indices) * self.shape[0] * self.shape[1]

    @property
    def waste_pixels(self) -> int:
        """Padded pixels: processed but not part of any image."""
        return self.total_pixels - self.content_pixels

    @property
    def waste_fraction(self) -> float:
        return self.waste_pixels / self.total_pixels if self.total_pixels else 0.0


@dataclass
class BatchPlan:
    """Batches over ``len(sizes)`` images, plus waste accounting.

    Attributes:
        sizes: Content ``(h, w)`` per image as it will be fed (after any canonical shrink).
        batches: The batches, in run order.
        policy, batch_size, stride: The planning inputs.
        resized: Indices whose size the plan shrank to fit a canonical shape.
    """

    sizes: List[HW]
    batches: List[Batch]
    policy: str
    batch_size: int
    stride: int
    resized: List[int] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.sizes)

    @property
    def total_pixels(self) -> int:
        return sum(b.total_pixels for b in self.batches)

    @property
    def waste_pixels(self) -> int:
        return sum(b.waste_pixels for b in self.batches)

    @property
    def waste_fraction(self) -> float:
        """Padded pixels / all pixels processed, over the whole plan."""
        t = self.total_pixels
        return self.waste_pixels / t if t else 0.0

    def shapes(self) -> Counter:
        """``Counter`` of ``(B, H, W)`` input shapes the plan feeds."""
        return Counter((b.size, b.shape[0], b.shape[1]) for b in self.batches)

    def restore(self, per_batch: Sequence[Sequence[T]]) -> List[T]:
        """Reorder per-batch results (aligned with ``batch.indices``) to the caller's order."""
        if len(per_batch) != len(self.batches):
            raise ValueError(f"expected {len(self.batches)} batch results, got {len(per_batch)}")
        out: List[Optional[T]] = [None] * self.num_images
        filled = [False] * self.num_images
        for batch, results in zip(self.batches, per_batch):
            if len(results) != batch.size:
                raise ValueError(f"batch of {batch.size} images returned {len(results)} results")
            for i, r in zip(batch.indices, results):
                out[i] = r
                filled[i] = True
        if not all(filled):
            raise ValueError("plan does not cover every image")
        return out  # type: ignore[return-value]

    def summary(self) -> Dict[str, object]:
        """Numbers for logs and benchmark records."""
        return {
            "policy": self.policy, "batch_size": self.batch_size, "stride": self.stride,
            "images": self.num_images, "batches": len(self.batches),
            "distinct_shapes": len({b.shape for b in self.batches}),
            "waste_fraction": round(self.waste_fraction, 6),
            "waste_pixels": self.waste_pixels, "total_pixels": self.total_pixels,
            "shrunk_to_fit": len(self.resized),
        }


def plan_batches(sizes: Sequence[HW], batch_size: int, policy: str = "none", *,
                 stride: int = 32, num_buckets: int = 3,
                 shapes: Union[None, str, Sequence[HW]] = None,
                 fixed_hw: Optional[HW] = None) -> BatchPlan:
    """Group images into batches.

    Args:
        sizes: Content ``(h, w)`` per image after the model's resize policy.
        batch_size: Maximum images per batch (>= 1).
        policy: ``none`` | ``orientation`` | ``buckets`` | ``shape``.
        stride: Padded H and W are multiples of this (1: no constraint).
        num_buckets: Aspect bins for ``buckets`` (and for ``shapes="auto"``).
        shapes: Only for ``buckets``: ``"auto"`` or a list of canonical ``(H, W)``.
        fixed_hw: The graph's fixed input size, if any: every batch is fed at it.

    Returns:
        The :class:`BatchPlan`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if shapes is not None and policy != "buckets":
        raise ValueError("canonical shapes are a variant of policy 'buckets'")
    stride = max(1, int(stride))
    sizes = [(int(h), int(w)) for h, w in sizes]
    for h, w in sizes:
        if h < 1 or w < 1:
            raise ValueError(f"image size must be positive, got {(h, w)}")

    if fixed_hw is not None:
        # One graph shape: grouping cannot reduce padding; plain slices, all at fixed_hw.
        groups = [list(range(len(sizes)))]
        return _assemble(sizes, groups, batch_size, policy, stride, pad_to=lambda g: fixed_hw)

    if policy == "none":
        return _assemble(sizes, [list(range(len(sizes)))], batch_size, policy, stride)
    if policy == "shape":
        keys = sorted({(_round_up(h, stride), _round_up(w, stride)) for h, w in sizes})
        groups = [[i for i, (h, w) in enumerate(sizes)
                   if (_round_up(h, stride), _round_up(w, stride)) == k] for k in keys]
        return _assemble(sizes, groups, batch_size, policy, stride)
    if policy == "orientation":
        land = [i for i, (h, w) in enumerate(sizes) if h <= w]
        port = [i for i, (h, w) in enumerate(sizes) if h > w]
        return _assemble(sizes, [land, port], batch_size, policy, stride)

    bins = aspect_bins(sizes, num_buckets)
    if shapes is None:
        groups = []
        for g in bins:
            groups.append(sorted(g, key=lambda i: (_round_up(sizes[i][0], stride),
                                                   _round_up(sizes[i][1], stride), i)))
        return _assemble(sizes, groups, batch_size, policy, stride)

    if isinstance(shapes, str):
        if shapes != "auto":
            raise ValueError(f"shapes must be 'auto' or a list of (H, W), got {shapes!r}")
        canon = auto_shapes(sizes, num_buckets, stride)
    else:
        canon = [(int(h), int(w)) for h, w in shapes]
        for h, w in canon:
            if h % stride or w % stride:
                raise ValueError(f"canonical shape {(h, w)} is not a multiple of stride {stride}")
    canon = sorted(set(canon), key=lambda s: (s[0] * s[1], s))
    sizes, assignment, resized = assign_canonical(sizes, canon)
    groups = [[i for i in range(len(sizes)) if assignment[i] == k] for k in range(len(canon))]
    plan = _assemble(sizes, groups, batch_size, policy, stride,
                     pad_to=lambda g: canon[assignment[g[0]]])
    plan.resized = resized
    return plan


def aspect_bins(sizes: Sequence[HW], num_bins: int) -> List[List[int]]:
    """Split indices into ``num_bins`` bins of equal count by ``log(w / h)``.

    Images with the same aspect never straddle two bins (a bin boundary moves past ties),
    so a bin can be empty or larger than ``len / num_bins``. Bins are in aspect order.
    """
    if num_bins < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_bins}")
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i][1] / sizes[i][0], i))
    n = len(order)
    bins: List[List[int]] = []
    start = 0
    for b in range(1, num_bins + 1):
        end = n if b == num_bins else max(start, round(n * b / num_bins))
        while 0 < end < n and _aspect(sizes[order[end]]) == _aspect(sizes[order[end - 1]]):
            end += 1  # keep equal aspects together
        bins.append(sorted(order[start:end]))
        start = end
    return [g for g in bins if g] or [[]]


def auto_shapes(sizes: Sequence[HW], k: int, stride: int) -> List[HW]:
    """At most ``k`` canonical shapes covering every image, minimising total padded area.

    The distinct stride-padded shapes are sorted by aspect; each canonical shape covers a
    contiguous run of them and is that run's ``(max H, max W)``. The cheapest split into at
    most ``k`` runs is found exactly by dynamic programming (the runs are few: tens).
    """
    counts = Counter((_round_up(h, stride), _round_up(w, stride)) for h, w in sizes)
    items = sorted(counts, key=lambda s: (s[1] / s[0], s))
    n = len(items)
    if n == 0:
        return []
    k = max(1, min(k, n))

    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for m in range(1, k + 1):
        for b in range(1, n + 1):
            mh = mw = cnt = 0
            for a in range(b - 1, m - 2, -1):  # run items[a:b], grown leftwards: O(n^2 k)
                mh, mw = max(mh, items[a][0]), max(mw, items[a][1])
                cnt += counts[items[a]]
                c = best[m - 1][a] + cnt * mh * mw
                if c < best[m][b]:
                    best[m][b], cut[m][b] = c, a
    m = min(range(1, k + 1), key=lambda j: (best[j][n], j))
    shapes, b = [], n
    while m > 0:
        a = cut[m][b]
        shapes.append((max(items[j][0] for j in range(a, b)), max(items[j][1] for j in range(a, b))))
        b, m = a, m - 1
    return shapes


def assign_canonical(sizes: Sequence[HW], canon: Sequence[HW]) -> Tuple[List[HW], List[int], List[int]]:
    """Give each image the smallest canonical shape that holds it.

    An image no shape holds goes to the shape of nearest aspect and shrinks to fit inside it
    (aspect kept).

    Returns:
        ``(new_sizes, shape_index_per_image, indices_shrunk)``.
    """
    new_sizes, assign, shrunk = [], [], []
    for i, (h, w) in enumerate(sizes):
        fits = [k for k, (ch, cw) in enumerate(canon) if h <= ch and w <= cw]
        if fits:
            k = fits[0]  # canon is sorted by area
            new_sizes.append((h, w))
        else:
            a = math.log(w / h)
            k = min(range(len(canon)), key=lambda j: (abs(math.log(canon[j][1] / canon[j][0]) - a), j))
            ch, cw = canon[k]
            s = min(ch / h, cw / w)
            new_sizes.append((max(1, min(ch, int(h * s))), max(1, min(cw, int(w * s)))))
            shrunk.append(i)
        assign.append(k)
    return new_sizes, assign, shrunk


def _aspect(hw: HW) -> float:
    return hw[1] / hw[0]


def _assemble(sizes: List[HW], groups: List[List[int]], batch_size: int, policy: str,
              stride: int, pad_to=None) -> BatchPlan:
    """Slice each group into batches; order batches by their first caller index."""
    batches: List[Batch] = []
    for g in groups:
        for s in range(0, len(g), batch_size):
            idx = tuple(g[s:s + batch_size])
            if pad_to is not None:
                shape = pad_to(idx)
            else:
                shape = (_round_up(max(sizes[i][0] for i in idx), stride),
                         _round_up(max(sizes[i][1] for i in idx), stride))
            content = sum(sizes[i][0] * sizes[i][1] for i in idx)
            batches.append(Batch(indices=idx, shape=shape, content_pixels=content))
    # Run order: by the earliest caller index in the batch, so results stream out roughly in
    # caller order whatever the grouping.
    batches.sort(key=lambda b: min(b.indices))
    return BatchPlan(sizes=list(sizes), batches=batches, policy=policy,
                     batch_size=batch_size, stride=stride)
