"""The Python API behind ``tools/*.py``: train, evaluate, infer, export.

Each function takes a loaded config (``ppdet_ext.engine.config.load_config``) and plain
arguments, so tests and notebooks call exactly what the CLIs call.
"""
import json
import os

import numpy as np
import paddle
import paddle.distributed as dist

from ppdet.data.reader import BatchCompose, Compose
from ppdet.utils.logger import setup_logger

from ppdet_ext.data.epoch_loader import seed_everything
from ppdet_ext.data.image_io import ImageReadError, read_image
from ppdet_ext_deploy.imageio import list_images

from . import checkpoint
from .coco_json_eval import COCO_STAT_NAMES
from .config import dump_config
from .interrupt import StopRequest
from .trainer import DetTrainer

logger = setup_logger("ppdet_ext")



def run_dir(cfg):
    """``<save_dir>/<run name>``: where a run's checkpoints, logs and evaluations go."""
    return os.path.join(cfg.get("save_dir", "output"), cfg["filename"])


def export_dir(cfg):
    """``output_inference/<run name>``: ppdet's default export directory."""
    return os.path.join("output_inference", cfg["filename"])


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
    cfg.setdefault("vdl_log_dir", os.path.join(out, "vdl"))  # ppdet's default: ./vdl_log_dir
    if cfg.get("classwise"):  # ppdet would draw PR curves into the current directory
        cfg["classwise"] = False
        logger.info("classwise: per-class AP comes from tools/eval.py --classwise (written "
                    "under the run dir), not from evaluations during training")
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


def evaluate(cfg, user_cfg, *, weights, output_json=None, classwise=False, model=None):
    """COCO-evaluate ``weights``; writes and returns ``{"bbox": {AP: ..., ...}}``.

    Everything goes under ``cfg["output_eval"]`` (default ``<run dir>/eval``): ``bbox.json``,
    ``metrics.json``, ``config.yml`` and, with ``classwise`` (or ``classwise: true`` in the
    config), ppdet's per-category AP table (printed, and saved as ``classwise_ap.txt`` /
    ``.json``) and precision-recall curves (``bbox_pr_curve/``).
    With ``save_prediction_only: true`` only ``bbox.json`` is written (ppdet's meaning).

    Args:
        model: an already built model with its weights (``--slim_config``); ``weights``
            is then only recorded.
    """
    from . import coco_json_eval

    setup_device(cfg)
    out = run_dir(cfg)
    cfg.setdefault("output_eval", os.path.join(out, "eval"))
    os.makedirs(cfg["output_eval"], exist_ok=True)
    dump_config(user_cfg, os.path.join(cfg["output_eval"], "config.yml"))
    classwise = bool(classwise or cfg.get("classwise", False))
    cfg["classwise"] = False  # ours below: ppdet's draws into the current directory
    if model is not None:
        cfg["model"] = model  # ppdet's Trainer evaluates a pre-built model as given
    try:
        trainer = DetTrainer(cfg, mode="eval")
        trainer.load_weights(weights)
        trainer.evaluate()
    finally:
        cfg.pop("model", None)
    bbox_json = os.path.join(cfg["output_eval"], "bbox.json")
    if cfg.get("save_prediction_only"):
        logger.info(f"save_prediction_only: predictions in {bbox_json}, no evaluation")
        return {}
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
    if classwise and cfg.get("metric") == "COCO":
        ev = coco_json_eval.coco_eval(trainer.dataset.get_anno(), bbox_json) \
            if os.path.isfile(bbox_json) else None
        _classwise(ev, cfg["output_eval"])
    _write_metrics(cfg, weights, metrics, note, output_json)
    return metrics


def evaluate_json(cfg, user_cfg, *, classwise=False, output_json=None):
    """ppdet's ``--json_eval``: COCO-evaluate the ``bbox.json`` already in
    ``cfg["output_eval"]`` (default ``<run dir>/eval``) against the EvalDataset annotations,
    without running a model. Writes and returns ``{"bbox": {AP: ..., ...}}``."""
    from . import coco_json_eval

    out = cfg.setdefault("output_eval", os.path.join(run_dir(cfg), "eval"))
    bbox_json = os.path.join(out, "bbox.json")
    dump_config(user_cfg, os.path.join(out, "config.yml"))
    ev = coco_json_eval.coco_eval(cfg["EvalDataset"].get_anno(), bbox_json)
    metrics = {"bbox": coco_json_eval.stats(ev)}
    if classwise:
        _classwise(ev, out)
    _write_metrics(cfg, bbox_json, metrics, None if ev else "no detections: all stats 0",
                   output_json)
    return metrics


def _classwise(ev, out_dir):
    from . import coco_json_eval

    if ev is None:
        logger.warning("classwise: no detections, no per-category table")
        return
    _, text = coco_json_eval.write_classwise(ev, out_dir)
    logger.info(f"per-category bbox AP:\n{text}\n(table and PR curves in {out_dir})")


def _write_metrics(cfg, source, metrics, note, output_json=None):
    output_json = output_json or os.path.join(cfg["output_eval"], "metrics.json")
    with open(output_json, "w") as f:
        json.dump({"weights": source, "metrics": metrics, "note": note}, f, indent=2)
    logger.info(f"metrics written to {output_json}")


class _Predictor:
    """Dygraph predictor over the config's TestReader transforms, one image at a time."""

    def __init__(self, cfg, weights, model=None):
        from ppdet_ext.export import build_model
        reader = cfg["TestReader"]
        ops = [t for t in reader["sample_transforms"] if "Decode" not in t]
        self.sample_tf = Compose(ops, num_classes=cfg.get("num_classes", 80))
        self.batch_tf = BatchCompose(reader.get("batch_transforms") or [],
                                     num_classes=cfg.get("num_classes", 80))
        self.model = model if model is not None else build_model(cfg, weights)

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


def _coco_image_ids(cfg, paths):
    """``image_id`` per path for ``bbox.json``: the COCO id when the file name is listed in
    the TestDataset/EvalDataset annotation file, else the position in ``paths`` (ppdet's
    ImageFolder ids)."""
    by_name = {}
    for key in ("EvalDataset", "TestDataset"):
        try:
            with open(cfg[key].get_anno()) as f:
                by_name.update({im["file_name"]: int(im["id"]) for im in json.load(f)["images"]})
        except Exception:  # no dataset, no file, or not a COCO file: positions it is
            continue
    return [by_name.get(os.path.basename(p), i) for i, p in enumerate(paths)]


def infer(cfg, *, weights, inputs, output_dir, threshold=0.5, save_results=False,
          visualize=True, model=None):
    """Detect on images; bad files are reported and skipped. Returns ``(results, errors)``.

    Writes into ``output_dir``: ``results.json`` (per file: detections with score >=
    ``threshold``, class, label, COCO category id, xyxy box), the images with boxes drawn
    (``visualize``), and with ``save_results`` ppdet's ``bbox.json`` (every detection:
    ``image_id``, ``category_id``, ``bbox`` xywh, ``score``; ids from
    :func:`_coco_image_ids`).

    Args:
        model: an already built model with its weights (``--slim_config``).
    """
    from ppdet_ext.export.metadata import labels as label_names
    from ppdet_ext.utils.draw import draw_detections
    setup_device(cfg)
    os.makedirs(output_dir, exist_ok=True)
    names, cat_ids = label_names(cfg)
    predictor = _Predictor(cfg, weights, model)
    paths = list_images(inputs, require=False)  # unknown paths are kept, reported below
    image_ids = _coco_image_ids(cfg, paths) if save_results else []
    results, errors, coco = [], [], []
    for i, path in enumerate(paths):
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
        valid = [(int(c), float(sc), [float(v) for v in box]) for c, sc, *box in bbox[:n]
                 if int(c) >= 0]
        dets = [{"class_id": c, "label": names[c], "category_id": cat_ids[c], "score": sc,
                 "bbox_xyxy": box} for c, sc, box in valid if sc >= threshold]
        if save_results:
            coco += [{"image_id": image_ids[i], "category_id": cat_ids[c], "score": sc,
                      "bbox": [x1, y1, x2 - x1, y2 - y1]} for c, sc, (x1, y1, x2, y2) in valid]
        item = {"file": path, "detections": dets}
        if visualize:
            item["output"] = os.path.join(output_dir,
                                          os.path.splitext(os.path.basename(path))[0] + ".jpg")
            draw_detections(rgb, dets, item["output"])
        results.append(item)
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({"results": results, "errors": errors}, f, indent=2)
    if save_results:
        with open(os.path.join(output_dir, "bbox.json"), "w") as f:
            json.dump(coco, f)
    logger.info(f"{len(results)} images done ({output_dir}), {len(errors)} skipped")
    return results, errors


def export(cfg, user_cfg, *, weights, output_dir, input_shape=None, batch_size=-1,
           with_postprocess=False, model=None):
    """Export into ``output_dir`` (docs/export_format.md); ``model``: an already built model
    with its weights (``--slim_config``). Returns the ``infer_cfg.yml`` dict."""
    from ppdet_ext.export import export_model
    paddle.set_device("cpu")
    meta = export_model(cfg, output_dir, weights=weights, input_shape=input_shape,
                        batch_size=batch_size, with_postprocess=with_postprocess, model=model)
    dump_config(user_cfg, os.path.join(output_dir, "config.yml"))
    logger.info(f"exported to {output_dir} (input {meta['input_shape']})")
    return meta
