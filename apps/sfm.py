"""``recon sfm SOURCE -o SCENE``: camera poses and sparse points from photos or a video (pycolmap)."""
from __future__ import annotations

import argparse
from pathlib import Path

from recon.apps.options import add_config_arguments, config_from_args


def add_sfm_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The structure-from-motion options (shared with ``recon fit``, which runs SfM on photos or a video)."""
    from recon.engine.sfm import SfmOptions

    add_config_arguments(parser, SfmOptions)


def sfm_options(args: argparse.Namespace):
    """The ``SfmOptions`` the user gave (defaults for the rest)."""
    from recon.engine.sfm import SfmOptions

    return config_from_args(SfmOptions, args)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sfm", help="structure from motion: a COLMAP scene folder from photos or a video",
        description="Find the camera poses and sparse 3D points of a folder of photos or a video with pycolmap "
                    "(SIFT, matching, incremental or global mapping) and write a COLMAP scene folder "
                    "(images/, sparse/0/) that every recon command reads. Video frames are chosen by sharpness. "
                    "An interrupted run resumes from its feature database when run again.")
    p.add_argument("source", help="folder of photos, or a video file (mp4, mov, ...)")
    p.add_argument("-o", "--output", required=True, help="scene folder to write (absent, empty, or an earlier "
                                                          "recon sfm scene, which is replaced)")
    p.add_argument("--verbose", action="store_true", help="show COLMAP's own log")
    add_sfm_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recon.engine.sfm import format_report, run_sfm

    report = run_sfm(args.source, args.output, sfm_options(args), verbose=args.verbose)
    print(format_report(report, args.output))
    return 0


def sfm_scene_for(source: Path, parent: Path, options) -> Path:
    """The scene folder ``recon fit`` uses for photos or a video: ``<parent>/<name>_sfm``, made by SfM now
    unless an earlier run there is current (same source content, same options)."""
    from recon.engine.sfm import format_report, run_sfm, scene_record, sfm_scene_dir, summary_line

    scene_dir = sfm_scene_dir(source, parent)
    report = scene_record(scene_dir, source, options)
    if report is not None:
        print(f"using the structure-from-motion scene {scene_dir} made earlier: {summary_line(report)}")
        return scene_dir
    print(f"{source}: no camera poses; running structure from motion into {scene_dir}")
    report = run_sfm(source, scene_dir, options)
    print(format_report(report, scene_dir))
    return scene_dir
