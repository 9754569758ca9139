"""RT-DETRv2 slimming: fewer decoder layers at inference, and structured pruning with
weight transfer from the full model.

* **Truncation** (no retraining): ``eval_idx = k - 1`` runs decoder layers ``0..k-1`` and
  reads layer ``k-1``'s heads (RT-DETR trains every layer's heads, so each is a detector);
  ``convert_to_deploy()`` then drops the rest from the graph.
* **Pruning** (then fine-tune): a smaller model is built from the same config with
  ``ExtRTDETRDecoder.num_layers`` / ``dim_feedforward`` / ``nhead`` and
  ``ExtHybridEncoder.dim_feedforward`` / ``nhead`` overridden, and every parameter is copied
  from the full model: identical shapes as they are; decoder layer lists keep the first
  ``num_layers`` entries; FFN ``linear1``/``linear2`` keep the hidden channels with the
  largest L1 norm (``|W1[:, j]|_1 + |W2[j, :]|_1``), in their original order.
* **Attention heads**: ``enc_heads`` / ``dec_heads`` lower ``nhead`` of the AIFI encoder /
  of both decoder attentions and pin ``head_dim`` to the full model's, so every kept head
  keeps its trained size and only the attention width ``heads * head_dim`` shrinks. Each
  attention layer states which parameters are grouped by head (``head_layout()``): the
  columns of ``q_proj``/``k_proj``/``v_proj`` and rows of ``out_proj``
  (``ExtMultiHeadAttention``); for ``ExtMSDeformableAttention`` the ``value_proj`` columns,
  ``output_proj`` rows and the per-head ``sampling_offsets`` ``[heads, P, 2]`` /
  ``attention_weights`` ``[heads, P]`` outputs (head-major). The heads kept are those with
  the largest L1 norm over their q/k/v/out (value/output) weights, in their original order.
  Heads are independent up to the output projection, so the pruned layer equals the full
  one with the dropped heads' output-projection rows zeroed (tested).
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import paddle

from ppdet_ext.export.model_stats import count_macs
from ppdet_ext_deploy.compare import correlation, mean_abs_diff
from ppdet_ext_deploy.timing import interleave, spread

_ENCODER, _DECODER = "ExtHybridEncoder", "ExtRTDETRDecoder"


@dataclass(frozen=True)
class PruneSpec:
    """A slimmed RT-DETRv2 shape; ``None`` keeps the full model's value.

    Attributes:
        dec_layers: Decoder layers kept (the first ones).
        dec_ffn: Decoder FFN hidden width.
        enc_ffn: Encoder (AIFI) FFN hidden width.
        eval_idx: Inference-only truncation: last decoder layer run (no weight change).
        enc_heads: Encoder (AIFI) attention heads kept (head size unchanged).
        dec_heads: Decoder attention heads kept, self- and cross-attention (head size
            unchanged).
    """

    dec_layers: Optional[int] = None
    dec_ffn: Optional[int] = None
    enc_ffn: Optional[int] = None
    eval_idx: Optional[int] = None
    enc_heads: Optional[int] = None
    dec_heads: Optional[int] = None

    @property
    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in asdict(self).items() if v is not None]
        return ",".join(parts) or "full"

    @property
    def changes_weights(self) -> bool:
        """True when the spec changes the parameters (they must be transferred);
        ``eval_idx`` alone only truncates at inference."""
        return any(v is not None for k, v in asdict(self).items() if k != "eval_idx")

    def overrides(self, base_cfg: Optional[Mapping] = None) -> List[str]:
        """``-o`` style config overrides building the pruned architecture.

        Args:
            base_cfg: the full model's loaded config; needed for ``enc_heads`` /
                ``dec_heads``, whose overrides pin ``head_dim`` to the full model's.
        """
        o = []
        if self.dec_layers is not None:
            o.append(f"ExtRTDETRDecoder.num_layers={self.dec_layers}")
        if self.dec_ffn is not None:
            o.append(f"ExtRTDETRDecoder.dim_feedforward={self.dec_ffn}")
        if self.enc_ffn is not None:
            o.append(f"ExtHybridEncoder.dim_feedforward={self.enc_ffn}")
        if self.eval_idx is not None:
            o.append(f"ExtRTDETRDecoder.eval_idx={self.eval_idx}")
        for heads, module in ((self.enc_heads, _ENCODER), (self.dec_heads, _DECODER)):
            if heads is None:
                continue
            if base_cfg is None:
                raise ValueError("head pruning needs the full model's config (base_cfg)")
            full_heads, head_dim = attention_geometry(base_cfg, module)
            if not 0 < heads <= full_heads:
                raise ValueError(f"{module}.nhead: {heads} requested, the full model has "
                                 f"{full_heads}")
            o += [f"{module}.nhead={heads}", f"{module}.head_dim={head_dim}"]
        return o


def attention_geometry(cfg: Mapping, module: str) -> Tuple[int, int]:
    """``(nhead, head_dim)`` that ``module`` (``ExtHybridEncoder`` | ``ExtRTDETRDecoder``)
    is built with under the loaded ppdet config ``cfg``."""
    from ppdet_ext.modeling.rtdetr.attention import resolve_head_dim

    mod = cfg[module]
    hidden = cfg["hidden_dim"] if "hidden_dim" in cfg else mod["hidden_dim"]
    nhead = int(mod["nhead"])
    return nhead, resolve_head_dim(int(hidden), nhead, mod["head_dim"])


_FFN1 = re.compile(r"^(.*)\.linear1\.(weight|bias)$")
_FFN2 = re.compile(r"^(.*)\.linear2\.weight$")


def ffn_keep_indices(full_sd: Dict[str, np.ndarray], prefix: str, width: int) -> np.ndarray:
    """Hidden channels of the FFN at ``prefix`` to keep: top-``width`` by L1 norm, sorted."""
    w1 = full_sd[f"{prefix}.linear1.weight"]          # paddle Linear: [in, out]
    w2 = full_sd[f"{prefix}.linear2.weight"]          # [hidden, d_model]
    score = np.abs(w1).sum(axis=0) + np.abs(w2).sum(axis=1)
    return np.sort(np.argsort(-score, kind="stable")[:width])


def head_keep_indices(full_sd: Dict[str, np.ndarray], prefix: str, layout: Sequence[tuple],
                      heads: int) -> np.ndarray:
    """Heads of the attention layer at ``prefix`` to keep: top-``heads`` by the L1 norm of
    their slices of the scored parameters of ``layout`` (see ``head_layout()``), sorted."""
    first, axis0, width0, _ = layout[0]
    full_width = full_sd[f"{prefix}.{first}"].shape[axis0]
    if full_width % width0:
        raise ValueError(f"{prefix}.{first}: width {full_width} is not a multiple of the "
                         f"pruned head size {width0} (pin head_dim to the full model's)")
    full_heads = full_width // width0
    score = np.zeros(full_heads)
    for name, axis, width, scored in layout:
        if scored:
            w = np.moveaxis(np.abs(full_sd[f"{prefix}.{name}"]), axis, 0)
            score += w.reshape(full_heads, -1).sum(axis=1)
    return np.sort(np.argsort(-score, kind="stable")[:heads])


def _head_slices(full_sd: Dict[str, np.ndarray], small_model) -> Dict[str, Tuple[int, np.ndarray]]:
    """``{param name: (axis, kept indices)}`` for the head-grouped parameters of every
    attention layer of ``small_model`` (layers that define ``head_layout()``)."""
    rules = {}
    for prefix, layer in small_model.named_sublayers():
        if not hasattr(layer, "head_layout"):
            continue
        layout = layer.head_layout()
        if f"{prefix}.{layout[0][0]}" not in full_sd:
            continue  # reported as missing by transfer_weights
        keep = head_keep_indices(full_sd, prefix, layout, layer.num_heads)
        for name, axis, width, _ in layout:
            rules[f"{prefix}.{name}"] = (axis, (keep[:, None] * width + np.arange(width)).ravel())
    return rules


def transfer_weights(full_sd: Dict[str, np.ndarray], small_model) -> Dict[str, Any]:
    """Load ``full_sd`` (numpy state dict of the full model) into ``small_model``.

    Returns ``{"copied": n, "sliced": n, "missing": [...]}``; raises on a shape that no rule
    explains (so a silent partial load cannot happen).
    """
    small_sd = small_model.state_dict()
    new, sliced, missing = {}, 0, []
    keep_cache: Dict[str, np.ndarray] = {}
    head_rules = _head_slices(full_sd, small_model)
    for name, p in small_sd.items():
        shape = tuple(p.shape)
        if name not in full_sd:
            missing.append(name)
            continue
        src = full_sd[name]
        if tuple(src.shape) == shape:
            new[name] = src
            continue
        if name in head_rules:
            axis, idx = head_rules[name]
            new[name] = _checked(name, np.take(src, idx, axis=axis), shape)
            sliced += 1
            continue
        m1, m2 = _FFN1.match(name), _FFN2.match(name)
        prefix = (m1 or m2).group(1) if (m1 or m2) else None
        if prefix is None:
            raise ValueError(f"{name}: full {src.shape} vs pruned {shape}, no transfer rule")
        if prefix not in keep_cache:
            width = small_sd[f"{prefix}.linear1.bias"].shape[0]
            keep_cache[prefix] = ffn_keep_indices(full_sd, prefix, width)
        idx = keep_cache[prefix]
        if m1 and m1.group(2) == "weight":
            new[name] = _checked(name, src[:, idx], shape)
        elif m1:
            new[name] = _checked(name, src[idx], shape)
        else:
            new[name] = _checked(name, src[idx, :], shape)
        sliced += 1
    if missing:
        raise ValueError(f"pruned model has parameters the full one lacks: {missing[:5]}")
    small_model.set_state_dict({k: paddle.to_tensor(v) for k, v in new.items()})
    return {"copied": len(new) - sliced, "sliced": sliced, "missing": missing}


def _checked(name: str, value: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    if tuple(value.shape) != shape:
        raise ValueError(f"{name}: sliced to {value.shape}, pruned model wants {shape} "
                         "(attention: is head_dim pinned to the full model's?)")
    return value


def spec_overrides(config: str, spec: PruneSpec, extra_overrides: Sequence[str] = ()) -> List[str]:
    """``spec.overrides`` resolved against the full model's config (head sizes)."""
    from ppdet_ext.engine.config import load_config

    base = None
    if spec.enc_heads is not None or spec.dec_heads is not None:
        base, _ = load_config(config, list(extra_overrides))
    return spec.overrides(base)


def build(config: str, spec: PruneSpec, *, weights: Optional[str] = None,
          full_sd: Optional[Dict[str, np.ndarray]] = None, extra_overrides: Sequence[str] = ()):
    """Build the ``spec`` model of ``config``; weights from ``full_sd`` (pruning) or
    ``weights`` (a checkpoint of exactly this shape). Returns ``(model, cfg, transfer)``."""
    from ppdet.core.workspace import create
    from ppdet.utils.checkpoint import load_weight

    from ppdet_ext.engine.config import load_config

    overrides = spec_overrides(config, spec, extra_overrides)
    cfg, _ = load_config(config, list(extra_overrides) + overrides)
    model = create(cfg["architecture"])
    info: Dict[str, Any] = {}
    if full_sd is not None:
        info = transfer_weights(full_sd, model)
    elif weights:
        load_weight(model, weights)
    model.eval()
    return model, cfg, info


def params_of(model) -> int:
    return sum(int(np.prod(p.shape)) for n, p in model.named_parameters()
               if not n.endswith(("_mean", "_variance")))


def macs_of(model, hw: Tuple[int, int]) -> int:
    """Conv + matmul multiply-accumulates of the deploy forward at ``[1, 3, H, W]``."""
    return count_macs(model, hw[0], hw[1])


def evaluate_settings(config: str, weights: str, specs: Sequence[PruneSpec], images: Sequence[np.ndarray],
                      *, rounds: int = 3, hw: Tuple[int, int] = (256, 256)) -> List[Dict[str, Any]]:
    """Params, GMACs, dygraph CPU latency (interleaved medians) and output agreement with
    the full model (score correlation, mean |box| difference in px) per setting."""
    from ppdet.utils.checkpoint import load_weight  # noqa: F401

    full, _, _ = build(config, PruneSpec(), weights=weights)
    full_sd = {k: v.numpy() for k, v in full.state_dict().items()}
    full.convert_to_deploy()
    models = [("full", full, {})]
    for s in specs:
        if not s.changes_weights:
            m, _, info = build(config, s, weights=weights)
        else:
            m, _, info = build(config, s, full_sd=full_sd)
        m.convert_to_deploy()
        models.append((s.label, m, info))
    xs = [paddle.to_tensor(x) for x in images]
    outs = {}
    with paddle.no_grad():
        for label, m, _ in models:
            outs[label] = [[o.numpy() for o in m.export_raw(x)] for x in xs]
    by_label = {label: m for label, m, _ in models}

    def seconds_per_image(label, _round):
        t = time.perf_counter()
        for x in xs:
            by_label[label].export_raw(x)
        return (time.perf_counter() - t) / len(xs)

    with paddle.no_grad():
        times = interleave(list(by_label), seconds_per_image, rounds)
    full_s = spread(times["full"])["median"]
    rows = []
    ref = outs["full"]

    def flat(per_image, k):  # output k of every image, concatenated
        return np.concatenate([o[k].ravel() for o in per_image])

    for label, m, info in models:
        median_s = spread(times[label])["median"]
        rows.append({"setting": label, "params": params_of(m), "gmacs": macs_of(m, hw) / 1e9,
                     "latency_ms": 1e3 * median_s, "latency_vs_full": median_s / full_s,
                     "score_corr_vs_full": correlation(flat(outs[label], 0), flat(ref, 0)),
                     "box_mad_px_vs_full": mean_abs_diff(flat(outs[label], 1), flat(ref, 1)),
                     "transfer": {k: v for k, v in info.items() if k != "missing"}})
    return rows


def save_pruned(config: str, weights: str, spec: PruneSpec, out_path: str) -> Dict[str, Any]:
    """Build the pruned model with transferred weights and save ``out_path.pdparams``
    (the ``pretrain_weights`` of a fine-tune run with ``spec.overrides()``)."""
    full, _, _ = build(config, PruneSpec(), weights=weights)
    full_sd = {k: v.numpy() for k, v in full.state_dict().items()}
    small, _, info = build(config, spec, full_sd=full_sd)
    paddle.save(small.state_dict(), out_path + ".pdparams")
    overrides = spec_overrides(config, spec)
    return {"spec": asdict(spec), "overrides": overrides, "params": params_of(small),
            "params_full": params_of(full), **{k: v for k, v in info.items() if k != "missing"}}
