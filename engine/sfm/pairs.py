"""Which image pairs to match, as index pairs ``(i, j)`` with ``i < j`` into the images in name order.

* ``exhaustive``: every pair; the most robust, quadratic in the image count (the default up to
  ``EXHAUSTIVE_MAX_IMAGES`` photos).
* ``sequential``: for video frames, each frame with the next ``overlap`` ones and with those 2, 4, 8, ...
  frames ahead; plus loop closure: each frame with its ``LOOP_CANDIDATES`` most similar frames (by
  ``retrieval.similarity_matrix``) more than ``overlap`` frames away, so that an orbit closes on itself.
* ``retrieval``: for large photo sets, each photo with its ``RETRIEVAL_NEIGHBOURS`` most similar ones and
  with its ``RETRIEVAL_OVERLAP`` name-order neighbours (photos are usually named in the order taken).
"""
from __future__ import annotations

import itertools

import numpy as np

MATCHERS = ("auto", "exhaustive", "sequential", "retrieval")
EXHAUSTIVE_MAX_IMAGES = 100
SEQUENTIAL_OVERLAP = 10
LOOP_CANDIDATES = 3
RETRIEVAL_NEIGHBOURS = 25
RETRIEVAL_OVERLAP = 5


def choose_matcher(requested: str, kind: str, count: int) -> str:
    """The matcher for ``count`` images of a ``kind`` source (``video`` or ``photos``): ``requested`` unless
    ``auto``, which is sequential for video, exhaustive for up to ``EXHAUSTIVE_MAX_IMAGES`` photos, else
    retrieval."""
    if requested != "auto":
        return requested
    if kind == "video":
        return "sequential"
    return "exhaustive" if count <= EXHAUSTIVE_MAX_IMAGES else "retrieval"


def exhaustive_pairs(count: int) -> set[tuple[int, int]]:
    """Every pair of ``count`` images."""
    return set(itertools.combinations(range(count), 2))


def sequential_pairs(count: int, overlap: int, *, quadratic: bool = True) -> set[tuple[int, int]]:
    """Each image with the next ``overlap`` images, and (``quadratic``) with those 2^k ahead, k < overlap."""
    steps = set(range(1, overlap + 1)) | ({2 ** k for k in range(overlap)} if quadratic else set())
    return {(i, i + step) for i in range(count) for step in steps if i + step < count}


def similar_pairs(similarity: np.ndarray, neighbours: int, *, min_gap: int = 0) -> set[tuple[int, int]]:
    """Each image with its ``neighbours`` most similar images among those more than ``min_gap`` indices away
    (ties broken by index)."""
    count = len(similarity)
    pairs = set()
    index = np.arange(count)
    for i in range(count):
        allowed = np.abs(index - i) > min_gap
        candidates = index[allowed]
        if len(candidates) == 0:
            continue
        order = np.argsort(-similarity[i, candidates], kind="stable")[:neighbours]
        pairs.update((min(i, int(j)), max(i, int(j))) for j in candidates[order])
    return pairs


def plan_pairs(matcher: str, count: int, similarity: np.ndarray | None = None) -> list[tuple[int, int]]:
    """The sorted pairs ``matcher`` matches among ``count`` images (``similarity`` [count, count] is needed
    by ``sequential`` and ``retrieval``)."""
    if matcher == "exhaustive":
        pairs = exhaustive_pairs(count)
    elif matcher == "sequential":
        pairs = sequential_pairs(count, SEQUENTIAL_OVERLAP) | similar_pairs(similarity, LOOP_CANDIDATES,
                                                                             min_gap=SEQUENTIAL_OVERLAP)
    elif matcher == "retrieval":
        pairs = similar_pairs(similarity, RETRIEVAL_NEIGHBOURS) | sequential_pairs(count, RETRIEVAL_OVERLAP,
                                                                                   quadratic=False)
    else:
        raise ValueError(f"unknown matcher {matcher!r}")
    return sorted(pairs)
