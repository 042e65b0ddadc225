"""The flags every synthface command shares, declared once, and the one way a command ends.

Commands (``python -m engine.render``, ``engine.judge``, ``training.train``, ``training.benchmark``,
``learned.train``, ``learned.evaluate``) build their parser with :func:`parser` and add the shared
flags with the ``add_*`` helpers, so each flag has one spelling and one meaning everywhere:

* ``--config YAML``: the command's config file (:func:`load_yaml` reads it: a missing file, bad YAML or
  a top level that is not a mapping is a :class:`~common.errors.ConfigError` naming the file);
* ``-o/--override KEY=VALUE``: dotted overrides (``phases.0.steps=100``, ``identity.mode=fitted``),
  values parsed as YAML; repeatable, and several may follow one flag (``--override a=1 b=2``); applied
  with :func:`common.config.apply_overrides`;
* ``--out DIR``, ``--fresh``, ``--threads N`` (:func:`set_threads`), ``-q/--quiet``.

:func:`run` runs a command's work and turns errors into the exit-code convention of
:mod:`common.errors`: a :class:`~common.errors.SynthfaceError` (or one of ``also``) is one line on
stderr (``config error: ...`` for a :class:`~common.errors.ConfigError`) and its exit code (2: bad
input), Ctrl-C is 130.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from .config import apply_overrides, from_dict
from .errors import EXIT_INTERRUPTED, EXIT_OK, ConfigError, SynthfaceError, report

__all__ = ["parser", "add_config", "add_override", "add_out", "add_fresh", "add_threads", "add_quiet", "set_threads",
           "load_yaml", "load_config", "run"]


def parser(prog: str, description: str | None = None, **kwargs: Any) -> argparse.ArgumentParser:
    """An ``argparse`` parser for ``python -m <prog>``."""
    return argparse.ArgumentParser(prog=f"python -m {prog}", description=description, **kwargs)


def add_config(p: argparse.ArgumentParser, help: str = "YAML config file", required: bool = False) -> None:
    p.add_argument("--config", required=required, default=None, metavar="YAML", help=help)


def add_override(p: argparse.ArgumentParser, help: str = "config override, e.g. a.b=1 (value parsed as YAML)") -> None:
    p.add_argument("--override", "-o", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help=help + "; repeatable, several may follow one flag")


def add_out(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    p.add_argument("--out", default=default, metavar="DIR", help=help)


def add_fresh(p: argparse.ArgumentParser, help: str = "discard the run state in --out and start over") -> None:
    p.add_argument("--fresh", action="store_true", help=help)


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch.set_num_threads (CPU runs)")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` when ``n`` is given (``--threads``)."""
    if n:
        import torch

        torch.set_num_threads(int(n))


def load_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping in YAML file ``path`` (an empty file: ``{}``); errors are :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"cannot read {what} {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level, got {type(data).__name__}")
    return data


def load_config(cls: type, path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """Dataclass ``cls`` from YAML file ``path`` with dotted ``overrides`` applied first."""
    return from_dict(cls, apply_overrides(load_yaml(path), overrides), "")


def run(work: Callable[[], int | None], prefix: str = "error", also: tuple[type[BaseException], ...] = (),
        interrupted: str = "interrupted") -> int:
    """Run a command's ``work``; return its exit code (``None``: 0). A :class:`SynthfaceError` or an
    exception of ``also`` is printed as one line ``<prefix>: <message>`` (exit code 2 unless the error
    says otherwise); Ctrl-C prints ``interrupted`` and returns 130."""
    try:
        rc = work()
    except (SynthfaceError, *also) as e:
        return report(e, "config error" if isinstance(e, ConfigError) else prefix)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if rc is None else int(rc)
