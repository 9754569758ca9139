"""What a weight conversion did: every tensor mapped, dropped (and why), left over or missing."""
import collections
from dataclasses import dataclass, field
from typing import List, Tuple

__all__ = ['ConversionReport']


@dataclass
class ConversionReport:
    """Outcome of converting one checkpoint onto one model.

    ``ok`` is true only when every source tensor was mapped or deliberately dropped,
    every target tensor received a value, and no shape differs.
    """
    source: str
    layout: str
    entry: str = ''
    applied: collections.Counter = field(default_factory=collections.Counter)
    steps: dict = field(default_factory=dict)          # transform -> description
    dropped: List[Tuple[str, str]] = field(default_factory=list)
    unmapped: List[Tuple[str, tuple]] = field(default_factory=list)
    missing: List[Tuple[str, tuple]] = field(default_factory=list)
    mismatched: List[Tuple[str, str, tuple, tuple]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    num_mapped: int = 0

    @property
    def ok(self):
        return not (self.unmapped or self.missing or self.mismatched)

    def lines(self):
        """Human-readable report, one fact per line."""
        out = [f"source: {self.source} (layout {self.layout}"
               + (f", entry '{self.entry}'" if self.entry else '') + ')',
               f"mapped: {self.num_mapped} target tensors"]
        for key, text in self.steps.items():
            n = self.applied.get(key, 0)
            out.append(f"  {'applied' if n else 'not needed'}: {text}" + (f" ({n})" if n else ''))
        reasons = collections.Counter(r for _, r in self.dropped)
        for reason, n in sorted(reasons.items()):
            out.append(f"dropped {n}: {reason}")
        out += [f"note: {n}" for n in self.notes]
        out += [f"UNMAPPED source tensor: {n} {list(s)}" for n, s in self.unmapped]
        out += [f"MISSING target tensor: {n} {list(s)}" for n, s in self.missing]
        out += [f"SHAPE MISMATCH: {a} {list(sa)} -> {b} {list(sb)}"
                for a, b, sa, sb in self.mismatched]
        out.append('result: ' + ('OK, every tensor mapped' if self.ok else
                                 f"FAILED ({len(self.unmapped)} unmapped, {len(self.missing)} "
                                 f"missing, {len(self.mismatched)} shape mismatches)"))
        return out
