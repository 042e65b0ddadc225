"""Train a learned face generator: ``python -m learned.train --config configs/learned/NAME.yaml``.

The YAML's ``kind`` picks the trainer from a registry (``diffusion`` built in; a GAN trainer adds
itself with ``register_trainer("gan", "learned.gan.trainer")``). A trainer module provides:

- ``CONFIG_CLASS``: a dataclass with a ``kind`` field, validated by
  :func:`common.config.from_dict` (unknown keys and bad types are errors naming the key);
- ``resolve_paths(cfg, base_dirs) -> cfg``: make input paths absolute (cwd, config dir, repo root);
- ``run_training(cfg, out_dir=None, *, fresh=False, printer=print) -> dict``: train or resume into
  ``out_dir``, writing ``last.ckpt`` (atomic), ``checkpoint/`` (:mod:`learned.checkpoint`), sample grids,
  CSV logs and ``metrics.json``.

Rerunning the same command resumes from ``last.ckpt`` (e.g. after ``kill -9``); ``--override
train.steps=N`` extends a finished run; ``--fresh`` starts over.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from common.config import REPO_ROOT, ConfigError, apply_overrides, config_to_dict, from_dict
from common.errors import report

#: kind -> trainer module (see the module docstring for what it must define).
_TRAINERS: dict[str, str] = {
    "diffusion": "learned.diffusion.trainer",
    "gan": "learned.gan.trainer",
}


def register_trainer(kind: str, module: str) -> None:
    """Register the trainer module for configs with ``kind: <kind>``."""
    _TRAINERS[kind] = module


def known_trainers() -> list[str]:
    return sorted(_TRAINERS)


def trainer_module(kind: Any):
    if not isinstance(kind, str) or kind not in _TRAINERS:
        raise ConfigError(f"kind: unknown trainer {kind!r}; known kinds: {', '.join(known_trainers())}")
    return importlib.import_module(_TRAINERS[kind])


def parse_config(data: Mapping[str, Any], overrides: Sequence[str] = (), base_dir: str | Path | None = None,
                 resolve: bool = True):
    """Validate a raw mapping into the config dataclass of its ``kind``."""
    if not isinstance(data, Mapping):
        raise ConfigError("config: expected a mapping at the top level")
    data = apply_overrides(dict(data), list(overrides))
    if "kind" not in data:
        raise ConfigError(f"kind: required (one of {', '.join(known_trainers())})")
    mod = trainer_module(data["kind"])
    cfg = from_dict(mod.CONFIG_CLASS, data, "")
    if resolve:
        bases = ([Path(base_dir)] if base_dir is not None else []) + [REPO_ROOT]
        cfg = mod.resolve_paths(cfg, bases)
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] = ()):
    """Read a YAML learned-training config; relative paths resolve against the working directory,
    the config's directory, then the repository root."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_config(data, overrides, base_dir=path.parent)


def run_training(cfg, out_dir: str | Path | None = None, *, fresh: bool = False, printer=print) -> dict[str, Any]:
    """Dispatch to the trainer of ``cfg.kind``."""
    return trainer_module(cfg.kind).run_training(cfg, out_dir, fresh=fresh, printer=printer)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m learned.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="YAML config with 'kind: diffusion' (see configs/learned/)")
    ap.add_argument("--override", "-o", action="extend", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides, e.g. train.steps=2000 data.path=/data/faces (values parsed as YAML)")
    ap.add_argument("--out", default=None, help="run directory (default: 'out' of the config)")
    ap.add_argument("--fresh", action="store_true", help="discard the run state in --out and start over")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs)")
    ap.add_argument("--dry-run", action="store_true", help="validate the config, print it resolved and exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config, args.override)
        if args.dry_run:
            print(json.dumps(config_to_dict(cfg), indent=2, default=str))
            return 0
        run_training(cfg, args.out, fresh=args.fresh)
    except (ConfigError, FileNotFoundError) as e:
        return report(e, "config error")
    except ValueError as e:  # EncoderError, dataset errors: one line
        return report(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
