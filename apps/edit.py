"""``recon edit RUN``: edit a Gaussian scene by 2D masks."""
from __future__ import annotations

import argparse

from recon.engine.errors import NotBuiltError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("edit", help="edit a Gaussian run by 2D masks (delete, extract, recolor, finetune)",
                              description="Select Gaussians by tracing 2D masks and edit them.")
    p.add_argument("run_dir", help="run directory of a Gaussian fit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise NotBuiltError("recon edit is not built yet in this version of recon")
