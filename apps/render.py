"""``recon render RUN``: novel views of a fitted run (or of a 3DGS PLY) to video or PNGs."""
from __future__ import annotations

import argparse

from recon.engine.errors import NotBuiltError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="render novel views of a run to MP4 or PNGs",
                              description="Render a fitted run along a camera path.")
    p.add_argument("run_dir", help="run directory (or a 3DGS .ply with --scene)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("recon render is not built yet in this version of recon")
