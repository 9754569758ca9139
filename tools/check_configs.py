"""Check config files without training: each is read like tools/train.py reads it (_BASE_
chain, ppdet's !Tags) and every key is checked; slim configs (a `slim:` key) are checked as
--slim_config files. Files that define no `architecture` and no `slim` (partial _BASE_
files) are skipped. Prints one line per failing file and a summary; exit 1 if any failed.
"""
import ppdet_ext  # noqa: F401  (first: registers modules, applies stack fixes)

import argparse
import collections
import os
import re
import sys

from ppdet_ext.engine.config import ConfigError, load_yaml_with_base, validate

EXAMPLES = """examples:
  python tools/check_configs.py configs
  python tools/check_configs.py ../PaddleDetection/configs --out docs/results/ppdet_configs_check.md
"""


def config_files(paths):
    """YAML files under ``paths`` (files or folders), ``_base_`` folders excluded."""
    out = []
    for path in paths:
        if os.path.isfile(path):
            out.append(path)
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d != "_base_")
            out += [os.path.join(folder, f) for f in sorted(files) if f.endswith((".yml", ".yaml"))]
    return out


def check(path):
    """``"ok"``, ``"skipped"`` or the error message for one file."""
    variables = set()
    try:
        cfg = load_yaml_with_base(path, variables)
        if "slim" in cfg:
            from ppdet_ext.slim.ppdet_slim_config import read_slim_config
            slim = read_slim_config(path)
            validate(slim.model_keys, source=path, variables=variables)
            return "ok"
        if "architecture" not in cfg:
            return "skipped"
        validate(cfg, source=path, variables=variables)
        return "ok"
    except ConfigError as e:
        return str(e)


def _kind(message):
    """An error message without the file and its specifics, for grouping."""
    text = message.split(": ", 1)[-1]
    return re.sub(r"\s*\(did you mean.*|: \S+ takes .*|; known: .*", "", text)[:100]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="config files or folders")
    p.add_argument("--out", default=None, help="also write a Markdown summary here")
    args = p.parse_args(argv)
    results = {f: check(f) for f in config_files(args.paths)}
    failed = {f: r for f, r in results.items() if r not in ("ok", "skipped")}
    for f, r in failed.items():
        print(f"FAIL {r}")
    counts = collections.Counter("ok" if r == "ok" else "skipped" if r == "skipped" else "failed"
                                 for r in results.values())
    summary = (f"{len(results)} files: {counts['ok']} ok, {counts['failed']} failed, "
               f"{counts['skipped']} skipped (no architecture/slim key)")
    print(summary)
    if args.out:
        kinds = collections.Counter(_kind(r) for r in failed.values())
        lines = [f"Command: `python tools/check_configs.py {' '.join(args.paths)}`", "",
                 summary, "", "| failures | reason |", "|---|---|"]
        lines += [f"| {n} | {k.replace('|', '/')} |" for k, n in kinds.most_common()]
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
