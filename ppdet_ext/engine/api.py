"""The Python API behind ``tools/*.py``: train, evaluate, infer, export.

Each function takes a loaded config (``ppdet_ext.engine.config.load_config``) and plain
arguments, so tests and notebooks call exactly what the CLIs call.
"""
import glob
import json
import os

import numpy as np
import paddle
import paddle.distributed as dist

from ppdet.core.workspace import create
from ppdet.data.reader import BatchCompose, Compose
from ppdet.utils.logger import setup_logger

from ppdet_ext.data.epoch_loader import seed_everything
from ppdet_ext.data.image_io import ImageReadError, read_image
from ppdet_ext_deploy.imageio import list_images

from . import checkpoint
from .config import dump_config
from .interrupt import StopRequest
from .trainer import DetTrainer

logger = setup_logger("ppdet_ext")

COCO_STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl",
                   "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def run_dir(cfg):
    return os.path.join(cfg.get("save_dir", "output"), cfg["filename"])


def setup_device(cfg):
    """Use the GPU when asked for and present; otherwise CPU (with a notice)."""
    want_gpu = bool(cfg.get("use_gpu", False))
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if want_gpu and not has_gpu:
        logger.info("use_gpu requested but this Paddle build/machine has no CUDA GPU: using CPU")
    cfg["use_gpu"] = want_gpu and has_gpu
    paddle.set_device("gpu" if cfg["use_gpu"] else "cpu")


def _run_seed(explicit, cfg, position):
    """The run's seed: a resumed run keeps its checkpoint's; else ``--seed``, the config's
    ``seed``, else 0. Fixed by default: the same command trains the same weights, and
    every rank of a distributed run must agree on it."""
    if position is not None and position.seed is not None:
        if explicit is not None and int(explicit) != position.seed:
            logger.warning(f"--seed {explicit} ignored: the run being resumed has seed "
                           f"{position.seed}")
        return position.seed
    for seed in (explicit, cfg.get("seed")):
        if seed is not None:
            return int(seed)
    return 0


def train(cfg, user_cfg, *, validate=False, resume=None, amp=False, use_vdl=False, seed=None):
    """Train with ppdet's Trainer (+ our callbacks). Returns the trainer.

    Deterministic: batch order, augmentation and per-step randomness follow from the
    seed, so a run resumed from any checkpoint ends with the weights the uninterrupted
    run reaches (docs/training.md). Ctrl-C / SIGTERM write a checkpoint and raise
    ``TrainingInterrupted``; a checkpoint that cannot be written raises ``CheckpointError``.

    Args:
        resume: checkpoint path (without suffix), or ``"auto"`` for the newest complete
            one in the run dir (starts afresh if there is none).
        seed: run seed; default the config's ``seed``, else 0 (a resumed run always
            keeps the seed stored in its checkpoint). Written to the run's ``config.yml``.
    """
    setup_device(cfg)
    if dist.get_world_size() > 1:
        dist.init_parallel_env()
    cfg["amp"] = bool(amp or cfg.get("amp", False))
    cfg["use_vdl"] = bool(use_vdl or cfg.get("use_vdl", False))
    out = run_dir(cfg)
    cfg.setdefault("output_eval", os.path.join(out, "eval"))
    if dist.get_rank() == 0 and os.path.isdir(out):
        checkpoint.remove_stale_temp_files(out)
    if resume == "auto":
        resume = checkpoint.find_resume_checkpoint(out)
        if resume is None:
            logger.info(f"--resume auto: no checkpoint in {out}, starting fresh")
    if resume:
        resume = checkpoint.base_path(resume)
    position = checkpoint.read_position(resume) if resume else None
    seed = _run_seed(seed, cfg, position)
    logger.info(f"seed {seed}")
    if dist.get_rank() == 0:
        dump_config({**user_cfg, "seed": seed}, os.path.join(out, "config.yml"))
    seed_everything(seed)  # model initialisation
    # fresh parameter and optimizer-state names (conv2d_0.w_0_velocity_0, ...) even if a
    # model was built earlier in this process: resume matches optimizer state by name
    with paddle.utils.unique_name.guard():
        trainer = DetTrainer(cfg, mode="train", seed=seed)
        if resume:
            position = trainer.resume(resume)
            logger.info(f"resumed from {resume} at epoch {position.epoch} "
                        f"step {position.step}")
        elif cfg.get("pretrain_weights"):
            trainer.load_weights(cfg["pretrain_weights"])
        with StopRequest() as stop:
            trainer.stop_request = stop
            trainer.train(validate)
    return trainer


def evaluate(cfg, user_cfg, *, weights, output_json=None):
    """COCO-evaluate ``weights``; writes and returns ``{"bbox": {AP: ..., ...}}``."""
    setup_device(cfg)
    out = run_dir(cfg)
    cfg.setdefault("output_eval", os.path.join(out, "eval"))
    os.makedirs(cfg["output_eval"], exist_ok=True)
    dump_config(user_cfg, os.path.join(cfg["output_eval"], "config.yml"))
    trainer = DetTrainer(cfg, mode="eval")
    trainer.load_weights(weights)
    trainer.evaluate()
    metrics = {}
    for key, stats in trainer.last_metric_results.items():
        stats = np.asarray(stats, dtype=float).ravel().tolist()
        names = COCO_STAT_NAMES if len(stats) == len(COCO_STAT_NAMES) else \
                [f"stat{i}" for i in range(len(stats))]
        metrics[key] = dict(zip(names, stats))
    note = None
    if not metrics and cfg.get("metric") == "COCO":
        # ppdet's COCOMetric skips scoring when there are no detections at all; that is
        # an AP of 0, which we report rather than an empty result
        note = "no detections above the score threshold: all COCO stats are 0"
        logger.warning(note)
        metrics["bbox"] = {name: 0.0 for name in COCO_STAT_NAMES}
    output_json = output_json or os.path.join(cfg["output_eval"], "metrics.json")
    with open(output_json, "w") as f:
        json.dump({"weights": weights, "metrics": metrics, "note": note}, f, indent=2)
    logger.info(f"metrics written to {output_json}")
    return metrics


class _Predictor:
    """Dygraph predictor over the config's TestReader transforms, one image at a time."""

    def __init__(self, cfg, weights):
        from ppdet_ext.export import build_model
        reader = cfg["TestReader"]
        ops = [t for t in reader["sample_transforms"] if "Decode" not in t]
        self.sample_tf = Compose(ops, num_classes=cfg.get("num_classes", 80))
        self.batch_tf = BatchCompose(reader.get("batch_transforms") or [],
                                     num_classes=cfg.get("num_classes", 80))
        self.model = build_model(cfg, weights)

    def __call__(self, rgb):
        h, w = rgb.shape[:2]
        sample = {"image": rgb, "h": h, "w": w, "im_id": np.array([0]),
                  "im_shape": np.array([h, w], np.float32),
                  "scale_factor": np.array([1.0, 1.0], np.float32)}
        batch = self.batch_tf([self.sample_tf(sample)])
        inputs = {k: paddle.to_tensor(np.asarray(v)) for k, v in batch.items()
                  if k in ("image", "im_shape", "scale_factor")}
        with paddle.no_grad():
            out = self.model(inputs)
        return out["bbox"].numpy(), int(out["bbox_num"].numpy()[0])


def infer(cfg, *, weights, inputs, output_dir, threshold=0.5):
    """Detect on images, draw boxes, write ``results.json``; bad files are reported and
    skipped. Returns ``(results, errors)``."""
    from ppdet_ext.export.metadata import labels as label_names
    from ppdet_ext.utils.draw import draw_detections
    setup_device(cfg)
    os.makedirs(output_dir, exist_ok=True)
    names, cat_ids = label_names(cfg)
    predictor = _Predictor(cfg, weights)
    results, errors = [], []
    for path in list_images(inputs, require=False):  # unknown paths are kept, reported below
        try:
            rgb = read_image(path)
            bbox, n = predictor(rgb)
        except ImageReadError as e:
            logger.error(f"skipped {e}")
            errors.append({"file": path, "problem": e.reason})
            continue
        except Exception as e:  # a model failure on one image must not lose the others
            logger.error(f"skipped {path}: inference failed: {e}")
            errors.append({"file": path, "problem": f"inference failed: {e}"})
            continue
        dets = [{"class_id": int(c), "label": names[int(c)], "category_id": cat_ids[int(c)],
                 "score": float(s), "bbox_xyxy": [float(v) for v in box]}
                for c, s, *box in bbox[:n] if s >= threshold]
        out_path = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".jpg")
        draw_detections(rgb, dets, out_path)
        results.append({"file": path, "output": out_path, "detections": dets})
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({"results": results, "errors": errors}, f, indent=2)
    logger.info(f"{len(results)} images written to {output_dir}, {len(errors)} skipped")
    return results, errors


def export(cfg, user_cfg, *, weights, output_dir, input_shape=None, batch_size=-1,
           with_postprocess=False):
    from ppdet_ext.export import export_model
    paddle.set_device("cpu")
    meta = export_model(cfg, output_dir, weights=weights, input_shape=input_shape,
                        batch_size=batch_size, with_postprocess=with_postprocess)
    dump_config(user_cfg, os.path.join(output_dir, "config.yml"))
    logger.info(f"exported to {output_dir} (input {meta['input_shape']})")
    return meta
