"""Interleaved timing: run every setting once per round, rounds one after the other.

On a shared machine the load drifts during a benchmark; timing setting A for a while and then
setting B puts the drift into the A/B ratio. Interleaving (round-robin: A, B, C, A, B, C, ...)
makes a slow spell hit every setting alike, so ratios are taken within a round and the spread
over rounds shows how far a single number can be trusted. The sweep (``deploy/benchmark.py``)
and the INT8 comparison (``ppdet_ext/slim/compare.py``) time through here.
"""
from __future__ import annotations

import statistics
from typing import Any, Callable, Dict, Hashable, List, Mapping, Sequence, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def interleave(keys: Sequence[K], run: Callable[[K, int], T], rounds: int) -> Dict[K, List[T]]:
    """``run(key, round)`` for every key in each of ``rounds`` rounds, keys in the given order
    within a round; returns each key's results in round order."""
    out: Dict[K, List[T]] = {k: [] for k in keys}
    for rnd in range(rounds):
        for k in keys:
            out[k].append(run(k, rnd))
    return out


def spread(values: Sequence[float]) -> Dict[str, float]:
    """``median``, ``min`` and ``max`` of a setting's per-round values (NaN when empty)."""
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def median_run(runs: Sequence[Mapping[str, Any]], by: str) -> Mapping[str, Any]:
    """The run at index ``len // 2`` of ``runs`` sorted by ``by``: a run that happened (for an
    even count the upper of the two middle runs), so all its numbers belong together."""
    return sorted(runs, key=lambda r: r[by])[len(runs) // 2]


def round_ratios(values: Sequence[float], reference: Sequence[float]) -> List[float]:
    """``values[i] / reference[i]`` per round (0.0 where the reference is 0)."""
    return [v / r if r else 0.0 for v, r in zip(values, reference)]
