"""The backend interface every inference engine implements, and the shape range it is told."""
from __future__ import annotations

import abc
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Tuple

import numpy as np

from ..meta import ExportMeta

Shape4 = Tuple[int, int, int, int]


@dataclass(frozen=True)
class ShapeRange:
    """Input shapes ``[B, 3, H, W]`` a backend will see: one range covering them all.

    Engines that specialise on shapes (TensorRT dynamic-shape profiles) build from this;
    the others ignore it. ``opt`` is the shape fed to the most images.
    """

    min: Shape4
    opt: Shape4
    max: Shape4

    @classmethod
    def from_shapes(cls, shapes: Iterable[Tuple[int, int, int]]) -> "ShapeRange":
        """From ``(B, H, W)`` batch shapes (e.g. ``BatchPlan.shapes()`` keys)."""
        shapes = list(shapes)
        if not shapes:
            raise ValueError("no shapes to build a range from")
        images = Counter()
        for b, h, w in shapes:
            images[(b, h, w)] += b
        opt = max(sorted(images), key=lambda s: images[s])
        lo = tuple(min(s[k] for s in shapes) for k in range(3))
        hi = tuple(max(s[k] for s in shapes) for k in range(3))
        return cls(min=(lo[0], 3, lo[1], lo[2]), opt=(opt[0], 3, opt[1], opt[2]),
                   max=(hi[0], 3, hi[1], hi[2]))

    def covers(self, other: "ShapeRange") -> bool:
        """True when every shape of ``other`` lies inside this range."""
        return all(a <= b for a, b in zip(self.min, other.min)) and \
            all(a >= b for a, b in zip(self.max, other.max))

    def union(self, other: "ShapeRange") -> "ShapeRange":
        return ShapeRange(min=tuple(map(min, self.min, other.min)), opt=self.opt,
                          max=tuple(map(max, self.max, other.max)))


class Backend(abc.ABC):
    """An inference engine loaded from an export directory.

    Subclasses take keyword-only options (the ``options`` of their row in
    ``deploy/formats.py``) and must not import training code.
    """

    def __init__(self, meta: ExportMeta):
        self.meta = meta

    def prepare(self, shape_range: ShapeRange) -> None:
        """Called before inference with every input shape the run will feed.

        Shape-specialising engines (TensorRT) build or rebuild here; the default ignores it.
        """

    @abc.abstractmethod
    def infer(self, image: np.ndarray) -> List[np.ndarray]:
        """Run the graph.

        Args:
            image: ``float32 [B, 3, H, W]``, preprocessed and padded.

        Returns:
            Outputs in ``meta.output_names`` order, each with leading axis ``B``.
        """

    def describe(self) -> Dict[str, Any]:
        """Settings worth recording next to a benchmark number."""
        return {}

    def close(self) -> None:
        """Release engine resources."""
