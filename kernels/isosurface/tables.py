"""Marching-cubes case tables, derived here from a face-consistent construction (not copied).

Cube corner ``c`` (0..7) sits at offset ``(c & 1, c >> 1 & 1, c >> 2 & 1)`` along axes (0, 1, 2); bit ``c``
of a case index is set when that corner is inside. Edge ``e = 4 * axis + k`` runs along ``axis`` from the
``k``-th corner (in increasing corner order) whose ``axis`` bit is 0.

For each case the surface's boundary on every cube face is a set of segments between edge crossings; a
face with two diagonal inside corners (an ambiguous face) always separates the inside corners. The rule
depends only on the face's own corners, so two cells sharing a face draw the same segments there: with
one vertex per grid edge this makes closed surfaces watertight. The segments of a case chain into loops,
oriented as the boundary of the inside part of the cube's surface, and each loop is triangulated without
a diagonal between two crossings of one face (so no mesh edge is shared by more than two triangles).
Triangles wind counter-clockwise seen from outside, i.e. their normals point out of the inside region.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np

CORNER_OFFSETS = np.array([[c & 1, c >> 1 & 1, c >> 2 & 1] for c in range(8)], dtype=np.int64)  # [8, 3]


def _edges() -> list[tuple[int, int]]:
    """(start corner, axis) of the 12 cube edges, in edge-index order."""
    return [(c, axis) for axis in range(3) for c in range(8) if not c >> axis & 1]


EDGES = _edges()
EDGE_START_OFFSET = np.array([CORNER_OFFSETS[c] for c, _ in EDGES], dtype=np.int64)  # [12, 3]
EDGE_AXIS = np.array([axis for _, axis in EDGES], dtype=np.int64)  # [12]


def _edge_index(a: int, b: int) -> int:
    """The edge between corners ``a`` and ``b`` (which differ in one bit)."""
    start, axis = min(a, b), (a ^ b).bit_length() - 1
    return EDGES.index((start, axis))


def _faces() -> list[tuple[np.ndarray, list[int]]]:
    """(outward normal [3], 4 corners in cyclic order) for the 6 cube faces."""
    faces = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for side in (0, 1):
            normal = np.zeros(3)
            normal[axis] = 2 * side - 1
            ring = [(side << axis) | (du << u) | (dv << v) for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1))]
            faces.append((normal, ring))
    return faces


def _face_segments(case: int, normal: np.ndarray, ring: list[int]) -> list[tuple[int, int]]:
    """Oriented segments (edge a -> edge b) of the surface's boundary on one face."""
    inside = [bool(case >> c & 1) for c in ring]
    crossings = [i for i in range(4) if inside[i] != inside[(i + 1) % 4]]  # ring edge i joins ring[i], ring[i+1]
    if not crossings:
        return []
    if len(crossings) == 2:
        pairs = [(crossings[0], crossings[1], ring[inside.index(True)])]
    else:  # ambiguous face: cut off each inside corner separately
        pairs = [((i - 1) % 4, i, ring[i]) for i in range(4) if inside[i]]
    midpoint = lambda i: (CORNER_OFFSETS[ring[i]] + CORNER_OFFSETS[ring[(i + 1) % 4]]) / 2.0
    segments = []
    for i, j, inside_corner in pairs:
        a, b = midpoint(i), midpoint(j)
        # Boundary orientation of the inside region: the inside lies on the left, seen from outside.
        if np.dot(np.cross(normal, b - a), CORNER_OFFSETS[inside_corner] - a) < 0:
            i, j = j, i
        segments.append((_edge_index(ring[i], ring[(i + 1) % 4]), _edge_index(ring[j], ring[(j + 1) % 4])))
    return segments


def _loops(segments: list[tuple[int, int]]) -> list[list[int]]:
    """Chain oriented segments into closed loops of edge indices, each starting at its smallest edge."""
    successor = dict(segments)
    loops, seen = [], set()
    for start in sorted(successor):
        if start in seen:
            continue
        loop, e = [], start
        while e not in seen:
            seen.add(e)
            loop.append(e)
            e = successor[e]
        loops.append(loop)
    return loops


def _shares_face(a: int, b: int, faces: list[tuple[np.ndarray, list[int]]]) -> bool:
    for _, ring in faces:
        ring_edges = {_edge_index(ring[i], ring[(i + 1) % 4]) for i in range(4)}
        if a in ring_edges and b in ring_edges:
            return True
    return False


def _triangulations(poly: list[int]):
    """Every triangulation of polygon ``poly`` (as lists of vertex triples), in a fixed order."""
    if len(poly) < 3:
        yield []
        return
    first, last = poly[0], poly[-1]
    for k in range(1, len(poly) - 1):
        for left in _triangulations(poly[: k + 1]):
            for right in _triangulations(poly[k:]):
                yield [(first, poly[k], last)] + left + right


def _edge_midpoint(edge: int) -> np.ndarray:
    return EDGE_START_OFFSET[edge] + 0.5 * np.eye(3)[EDGE_AXIS[edge]]


def _area(tris: list[tuple[int, int, int]]) -> float:
    """Total area of triangles placed on edge midpoints."""
    p = lambda e: _edge_midpoint(e)
    return sum(float(np.linalg.norm(np.cross(p(b) - p(a), p(c) - p(a)))) for a, b, c in tris) / 2.0


def _triangulate(loop: list[int], faces) -> list[tuple[int, int, int]]:
    """The smallest-area triangulation of ``loop`` none of whose diagonals joins two crossings of one face.

    Minimal area (on edge midpoints) keeps the triangles of long, non-planar loops from folding over
    each other; ties go to the first in enumeration order.
    """
    n = len(loop)
    best, best_area = None, float("inf")
    for tris in _triangulations(loop):
        ok = True
        for tri in tris:
            for a, b in itertools.combinations(tri, 2):
                ia, ib = loop.index(a), loop.index(b)
                adjacent = (ia - ib) % n in (1, n - 1)
                if not adjacent and _shares_face(a, b, faces):
                    ok = False
        area = _area(tris) if ok else float("inf")
        if area < best_area - 1e-9:
            best, best_area = tris, area
    if best is None:
        raise AssertionError(f"no valid triangulation of loop {loop}")  # never reached for the 256 cases
    return best


def _case_triangles(case: int, faces) -> list[tuple[int, int, int]]:
    segments = [s for normal, ring in faces for s in _face_segments(case, normal, ring)]
    tris = [t for loop in _loops(segments) for t in _triangulate(loop, faces)]
    # The loop orientation yields clockwise triangles seen from outside (checked on case 1, one inside
    # corner at the origin); reversing them makes normals point out of the inside region.
    return [(a, c, b) for a, b, c in tris]


@functools.lru_cache(maxsize=None)
def triangle_table() -> tuple[np.ndarray, np.ndarray]:
    """(triangles [256, MAX_TRIANGLES, 3] int64 edge indices padded with -1, counts [256] int64)."""
    faces = _faces()
    cases = [_case_triangles(case, faces) for case in range(256)]
    max_tris = max(len(t) for t in cases)
    table = np.full((256, max_tris, 3), -1, dtype=np.int64)
    counts = np.zeros(256, dtype=np.int64)
    for case, tris in enumerate(cases):
        counts[case] = len(tris)
        if tris:
            table[case, : len(tris)] = tris
    return table, counts
