"""``recon export RUN``: write a run as a 3DGS PLY or a mesh."""
from __future__ import annotations

import argparse

from recon.engine.errors import NotBuiltError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a run as a 3DGS PLY (--ply) or a mesh (--mesh)",
                              description="Export a fitted run in the scene's original coordinates.")
    p.add_argument("run_dir", help="run directory")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("recon export is not built yet in this version of recon")
