"""Kept for its old command line; the harness is ``python -m bench`` (see bench/cli.py).

    .venv/bin/python bench/bench_server.py                                  # our server @1,4,16 + engine @1
    .venv/bin/python bench/bench_server.py --url http://host:port --concurrency 1 4 16 64
    .venv/bin/python bench/bench_server.py --skip-in-process

Every other ``python -m bench`` option passes through (``--all``, ``--targets``, ``--tiny``...).
"""

from __future__ import annotations

import sys
from pathlib import Path


def translate(argv: list[str]) -> list[str]:
    """The old flags in terms of the harness's: --skip-in-process drops the engine target."""
    if "--skip-in-process" not in argv:
        return argv
    argv = [a for a in argv if a != "--skip-in-process"]
    if "--targets" in argv or "--all" in argv:
        return argv
    return [*argv, "--targets", "url" if "--url" in argv else "tgi-course"]


if __name__ == "__main__":
    # Run as a script, this folder is on sys.path, not the repository root that holds the package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.cli import main

    sys.exit(main(translate(sys.argv[1:])))
