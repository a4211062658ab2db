"""Camera poses and 3D points from the verified matches: COLMAP's incremental mapper or GLOMAP's global one.

Either may split the images into several models when the match graph falls apart; the largest (most
registered images) is the result, and the caller says how many there were.
"""
from __future__ import annotations

import shutil
from pathlib import Path

MAPPERS = ("incremental", "global")


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
