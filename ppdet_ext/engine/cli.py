"""Shared argument handling for tools/*.py: ``-c config -o key=value ...``."""
import argparse
import sys

from .config import ConfigError, load_config


def parser(description, examples):
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + "\n".join(f"  {e}" for e in examples))
    p.add_argument("-c", "--config", required=True, help="config YAML (ppdet _BASE_ layout)")
    p.add_argument("-o", "--opt", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. -o epoch=2 TrainReader.batch_size=4")
    return p


def load(args):
    """Load the config named by ``args``; exit 2 with a message naming the key on error."""
    try:
        return load_config(args.config, args.opt)
    except ConfigError as e:
        sys.stderr.write(f"config error: {e}\n")
        sys.exit(2)
