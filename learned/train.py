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

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from common import cli
from common.cli import load_yaml
from common.config import REPO_ROOT, ConfigError, apply_overrides, config_to_dict, from_dict

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
    return parse_config(load_yaml(path), overrides, base_dir=Path(path).parent)


def run_training(cfg, out_dir: str | Path | None = None, *, fresh: bool = False, printer=print) -> dict[str, Any]:
    """Dispatch to the trainer of ``cfg.kind``."""
    return trainer_module(cfg.kind).run_training(cfg, out_dir, fresh=fresh, printer=printer)


def main(argv: Sequence[str] | None = None) -> int:
    ap = cli.parser("learned.train", description=__doc__.split("\n\n")[0])
    cli.add_config(ap, required=True, help="YAML config with 'kind: diffusion' (see configs/learned/)")
    cli.add_override(ap, help="config override, e.g. train.steps=2000 data.path=/data/faces (values parsed as YAML)")
    cli.add_out(ap, help="run directory (default: 'out' of the config)")
    cli.add_fresh(ap)
    cli.add_threads(ap)
    ap.add_argument("--dry-run", action="store_true", help="validate the config, print it resolved and exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cli.set_threads(args.threads)

    def work() -> None:
        cfg = load_config(args.config, args.override)
        if args.dry_run:
            print(json.dumps(config_to_dict(cfg), indent=2, default=str))
            return
        run_training(cfg, args.out, fresh=args.fresh)

    return cli.run(work, also=(ValueError,))  # ConfigError, and EncoderError / dataset errors: one line


if __name__ == "__main__":
    sys.exit(main())
