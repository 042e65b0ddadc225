"""``python -m engine render ...`` (same as ``python -m engine.render ...``)."""
from __future__ import annotations

import sys

USAGE = "usage: python -m engine render [--help] --ids N [options]   (see python -m engine render --help)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "render":
        from .render import main as render_main

        return render_main(rest)
    print(f"error: unknown command {cmd!r}; {USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
