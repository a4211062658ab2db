"""``recon smpl``: the SMPL body model (synthetic test model, fitting)."""
from __future__ import annotations

import argparse

from recon.engine.errors import NotBuiltError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("smpl", help="fit an SMPL body model to 3D joints, 2D keypoints or scans",
                              description="SMPL body model tools.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("recon smpl is not built yet in this version of recon")
