"""Which images look alike: bag-of-visual-words similarity learnt from the images' own SIFT descriptors.

COLMAP's retrieval (vocabulary-tree matching, loop detection) needs a vocabulary trained on other data and
fetched at run time. Here the vocabulary comes from the set itself: k-means on a sample of its descriptors,
then per image a tf-idf weighted histogram of visual words, L2-normalised, so that the similarity of two
images is the dot product of their histograms (1 for identical word statistics, 0 for no word in common).
That ranks candidate pairs well enough for geometric verification to sort out the rest.
"""
from __future__ import annotations

import numpy as np

PER_IMAGE = 1000  # descriptors per image used for retrieval (a random subset)
TRAIN_SAMPLES = 50_000
KMEANS_ITERATIONS = 10


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """Cluster centres [k, D] of unit-length float32 ``points`` [N, D] (Lloyd's algorithm from random
    points; an empty cluster restarts at a random point)."""
    centres = points[rng.choice(len(points), size=k, replace=False)].copy()
    for _ in range(iterations):
        labels = nearest_word(points, centres)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, points)
        counts = np.bincount(labels, minlength=k)
        empty = counts == 0
        centres = np.where(empty[:, None], points[rng.choice(len(points), size=k)], sums / np.maximum(counts, 1)[:, None])
    return centres


def nearest_word(points: np.ndarray, centres: np.ndarray, batch: int = 16_384) -> np.ndarray:
    """Index [N] of the nearest centre (Euclidean) of each point [N, D]."""
    half_norms = 0.5 * (centres * centres).sum(1)
    return np.concatenate([np.argmax(points[i:i + batch] @ centres.T - half_norms, axis=1)
                           for i in range(0, len(points), batch)]) if len(points) else np.zeros(0, dtype=np.int64)


def similarity_matrix(descriptors: list[np.ndarray], *, seed: int = 0) -> np.ndarray:
    """Image similarity [N, N] in [0, 1] from each image's SIFT descriptors [M_i, 128] (any dtype).

    The vocabulary has ``clip(samples / 50, 16, 1024)`` words; images without descriptors have similarity 0
    to every image.
    """
    rng = np.random.default_rng(seed)
    subsets = []
    for d in descriptors:
        d = np.asarray(d, dtype=np.float32).reshape(-1, 128)
        if len(d) > PER_IMAGE:
            d = d[rng.choice(len(d), size=PER_IMAGE, replace=False)]
        subsets.append(d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12))
    pooled = np.concatenate(subsets) if subsets else np.zeros((0, 128), dtype=np.float32)
    n = len(descriptors)
    if len(pooled) < 16:
        return np.eye(n)
    train = pooled[rng.choice(len(pooled), size=min(TRAIN_SAMPLES, len(pooled)), replace=False)]
    centres = kmeans(train, int(np.clip(len(train) // 50, 16, 1024)), rng)
    counts = np.zeros((n, len(centres)))
    for i, d in enumerate(subsets):
        np.add.at(counts[i], nearest_word(d, centres), 1.0)
    document_frequency = (counts > 0).sum(0)
    idf = np.log(n / np.maximum(document_frequency, 1))
    weights = counts / np.maximum(counts.sum(1, keepdims=True), 1.0) * idf
    weights /= np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-12)
    return weights @ weights.T
