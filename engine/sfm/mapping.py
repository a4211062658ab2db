"""Camera poses and 3D points from the verified matches: COLMAP's incremental mapper or GLOMAP's global one.

Either may split the images into several models when the match graph falls apart; the largest (most
registered images) is the result, and the caller says how many there were.

``auto`` maps a video's frames globally and photos incrementally. On the demo orbit video (35 frames of
256 pixels, an ideal pinhole with f = 278.4 px) three incremental runs found f = 237.3, 276.7 and 272.8 px
(the focal length and SIMPLE_RADIAL's k traded off; one CI run found 207.7), three global runs 280.9,
280.5 and 278.9 px with k within 0.007: rotation averaging over the whole loop does not drift into the
trade-off that registering frame after frame can.
"""
from __future__ import annotations

import shutil
from pathlib import Path

MAPPERS = ("auto", "incremental", "global")


def choose_mapper(requested: str, kind: str) -> str:
    """The mapper ``auto`` stands for: ``global`` for a video's frames, ``incremental`` for photos."""
    if requested != "auto":
        return requested
    return "global" if kind == "video" else "incremental"


def map_images(database: Path, image_dir: Path, work_dir: Path, mapper: str, image_count: int, *,
               progress: bool = True) -> list:
    """Every model the mapper makes (``pycolmap.Reconstruction``), most registered images first."""
    import pycolmap
    from tqdm import tqdm

    scratch = work_dir / "mapping"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    with tqdm(total=image_count, desc="mapping", unit="image", leave=False, disable=not progress) as bar:
        if mapper == "incremental":
            options = pycolmap.IncrementalPipelineOptions()
            options.num_threads = -1

            def registered() -> None:
                if bar.n < bar.total:
                    bar.update(1)

            models = pycolmap.incremental_mapping(database, image_dir, scratch, options=options,
                                                  next_image_callback=registered)
        elif mapper == "global":
            options = pycolmap.GlobalPipelineOptions()
            options.num_threads = -1
            models = pycolmap.global_mapping(database, image_dir, scratch, options=options)
        else:
            raise ValueError(f"unknown mapper {mapper!r}")
        ordered = sorted(models.values(), key=lambda m: m.num_reg_images(), reverse=True)
        bar.update(max(0, (ordered[0].num_reg_images() if ordered else 0) - bar.n))
    shutil.rmtree(scratch, ignore_errors=True)
    return ordered
