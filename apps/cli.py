"""The ``recon`` command: one subcommand per module, each a thin shell over ``recon.engine``.

Errors in the user's input (``ReconError``) print as one line ``recon: error: ...`` with exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from recon import __version__
from recon.engine.errors import ReconError

SUBCOMMANDS = ("fit", "sfm", "render", "view", "export", "edit", "smpl", "info", "demo_scene")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every subcommand included (``recon <cmd> --help``)."""
    parser = argparse.ArgumentParser(
        prog="recon",
        description="Reconstruct 3D scenes from posed photos (3D Gaussians, NeRF, SDF), render, export and edit them.",
    )
    parser.add_argument("--version", action="version", version=f"recon {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"recon.apps.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for commands that relaunch themselves
    try:
        return int(args.run(args) or 0)
    except ReconError as exc:
        if os.environ.get("RANK", "0") == "0":  # in a distributed run every process meets the same error
            print(f"recon: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130


def one_line(message: str) -> str:
    """``message`` folded onto one line (a library's multi-line reason quoted in an error, say)."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
