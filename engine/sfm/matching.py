"""Matching the planned image pairs (SIFT matches, then geometric verification) into the database.

Pairs go to pycolmap in chunks through a pair list, so the progress bar moves and a rerun skips the
pairs that an interrupted run already matched.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.engine.sfm.features import sift_device
from recon.engine.sfm.pairs import plan_pairs
from recon.engine.sfm.retrieval import similarity_matrix

CHUNKS = 40  # progress updates over a whole matching run
MIN_CHUNK = 50


def image_ids(database: Path) -> dict[str, int]:
    """COLMAP image id of every image name in ``database``."""
    import pycolmap

    db = pycolmap.Database.open(database)
    try:
        return {image.name: image.image_id for image in db.read_all_images()}
    finally:
        db.close()


def descriptors(database: Path, names: list[str]) -> list[np.ndarray]:
    """SIFT descriptors [M, 128] uint8 of each image in ``names``."""
    import pycolmap

    ids = image_ids(database)
    db = pycolmap.Database.open(database)
    try:
        return [np.asarray(db.read_descriptors(ids[name]).data) for name in names]
    finally:
        db.close()


def match_images(database: Path, names: list[str], matcher: str, work_dir: Path, *,
                 progress: bool = True) -> int:
    """Match the pairs ``matcher`` plans among ``names`` (in this order); returns the number of pairs."""
    import pycolmap
    from tqdm import tqdm

    similarity = None if matcher == "exhaustive" else similarity_matrix(descriptors(database, names))
    pairs = [(names[i], names[j]) for i, j in plan_pairs(matcher, len(names), similarity)]
    todo = _unmatched(database, pairs)
    chunk = max(MIN_CHUNK, -(-len(pairs) // CHUNKS))
    pair_list = work_dir / "pairs.txt"
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = -1
    with tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="matching", unit="pair", leave=False,
              disable=not progress) as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            pair_list.write_text("".join(f"{a} {b}\n" for a, b in part), encoding="utf-8")
            pairing = pycolmap.ImportedPairingOptions()
            pairing.match_list_path = pair_list
            pycolmap.match_image_pairs(database, matching_options=matching, pairing_options=pairing,
                                       device=sift_device())
            bar.update(len(part))
    pair_list.unlink(missing_ok=True)
    return len(pairs)


def _unmatched(database: Path, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs whose matches ``database`` does not hold yet."""
    import pycolmap

    ids = image_ids(database)
    db = pycolmap.Database.open(database)
    try:
        return [(a, b) for a, b in pairs if not db.exists_two_view_geometry(ids[a], ids[b])]
    finally:
        db.close()
