"""Shared argument handling for the training-side tools (``tools/train.py``, ``eval.py``,
``infer.py``, ``export_model.py``, ...): ppdet's ``-c config -o key=value`` and
``--slim_config``, ppdet's flag names (snake_case; ``--draw-threshold`` is accepted for
``--draw_threshold``), ppdet's ``--flag True`` spelling of switches, and ppdet flags we do
not support stopping with a message instead of being ignored.
"""
import argparse
import sys

from .config import ConfigError, load_config, parse_overrides

TRUE = ("true", "yes", "1", "on")
FALSE = ("false", "no", "0", "off", "none")


def parse_bool(text):
    """``True``/``false``/``1``/``no``... -> bool (ppdet writes ``--use_vdl True``; unlike
    ``type=bool``, ``False`` means False)."""
    value = str(text).strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    """Accepts ``--some-flag`` for a ``--some_flag`` option (one spelling in ``--help``)."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args([self._snake(a) for a in args], namespace)

    def _snake(self, arg):
        if not arg.startswith("--") or "-" not in arg[2:].split("=", 1)[0]:
            return arg
        name, eq, value = arg.partition("=")
        snake = "--" + name[2:].replace("-", "_")
        if name not in self._option_string_actions and snake in self._option_string_actions:
            return snake + eq + value
        return arg


class _Unsupported(argparse.Action):
    def __init__(self, option_strings, dest, reason="", **kwargs):
        self.reason = reason
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is not supported: {self.reason}")


def parser(description, examples, *, slim=True, unsupported=None):
    """An argument parser with ``-c``, ``-o`` (and ``--slim_config``) and runnable examples.

    Args:
        slim: add ``--slim_config``.
        unsupported: ``{"--flag": "why"}``: ppdet flags this tool refuses (exit 2, message).
    """
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    if unsupported:
        epilog += "\n\nppdet flags not supported here:\n" + "\n".join(
            f"  {flag}: {why}" for flag, why in unsupported.items())
    p = _Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog=epilog)
    p.add_argument("-c", "--config", required=True, help="config YAML (ppdet _BASE_ layout)")
    p.add_argument("-o", "--opt", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. -o epoch=2 TrainReader.batch_size=4")
    if slim:
        p.add_argument("--slim_config", default=None,
                       help="ppdet slim config (slim: QAT | PTQ | Pruner | UnstructuredPruner; "
                            "ppdet's layout or configs/slim/)")
    for flag, why in (unsupported or {}).items():
        p.add_argument(flag, action=_Unsupported, reason=why)
    return p


def add_switch(p, flag, help):
    """A switch that also takes ppdet's spelling with a value: ``--use_vdl``,
    ``--use_vdl True``, ``--use_vdl=false``."""
    p.add_argument(flag, nargs="?", const=True, default=False, type=parse_bool,
                   metavar="BOOL", help=help)


def slim_config(args):
    """The parsed ``--slim_config`` (``ppdet_ext.slim.ppdet_slim_config.SlimConfig``, with
    the ``-o`` overrides of its block applied) or None."""
    path = getattr(args, "slim_config", None)
    if not path:
        return None
    if getattr(args, "_slim", None) is None:
        from ppdet_ext.slim.ppdet_slim_config import read_slim_config, split_overrides
        slim_over, args._model_opt = split_overrides(parse_overrides(args.opt))
        args._slim = read_slim_config(path, slim_over)
    return args._slim


def slim_model(args, cfg):
    """For eval/infer: the ``--slim_config`` model with ``cfg["weights"]`` loaded, or None
    (no slim config, or one that leaves the architecture as is); exit 2 on a bad one."""
    slim = slim_config(args)
    if slim is None:
        return None
    from ppdet_ext.slim import slim_runs
    try:
        return slim_runs.model_for(cfg, slim, cfg["weights"])
    except ConfigError as e:
        fail(e)


def load(args):
    """Load the config named by ``args`` (with ``--slim_config``'s model keys merged over it,
    ``-o`` on top, and the run named after the slim config, as ppdet does); exit 2 with a
    one-line message naming the file and key on error."""
    try:
        slim = slim_config(args)
        if slim is None:
            return load_config(args.config, args.opt)
        return load_config(args.config, args._model_opt, layers=[(slim.path, slim.model_keys)],
                           name=slim.name)
    except ConfigError as e:
        fail(e)


def fail(message):
    """Print ``config error: <message>`` and exit 2."""
    sys.stderr.write(f"config error: {message}\n")
    sys.exit(2)
