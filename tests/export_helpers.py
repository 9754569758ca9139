"""Export a test model from the repository root (dataset paths in configs are repo-relative)
with ppdet's global config reset before and after."""
import os

from conftest import REPO


def export_in_repo(config, out, *, model=None, seed=0, prepare=None):
    """Export ``model`` (default: a fresh one built from ``config`` after
    ``paddle.seed(seed)``, then passed to ``prepare``) into ``out``; returns ``out``."""
    import paddle
    from ppdet_ext.engine.config import load_config
    from ppdet_ext.export import build_model, export_model
    from ppdet_ext.registry import reset_global_config

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        reset_global_config()
        cfg, _ = load_config(config)
        if model is None:
            paddle.seed(seed)
            model = build_model(cfg)
            if prepare is not None:
                prepare(model)
        export_model(cfg, out, model=model)
    finally:
        reset_global_config()
        os.chdir(cwd)
    return out
