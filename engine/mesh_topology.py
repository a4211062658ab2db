"""Triangle-mesh topology: connected components (and a filter on their area), watertightness and
self-intersections, in numpy/torch (no open3d needed).

Meshes are vertices [V, 3] and faces [F, 3] int64. Definitions:

* components: faces connected through shared vertices (marching cubes shares the vertex of each crossed
  grid edge, so its surfaces connect this way); a component's size is its surface area;
* watertight: every undirected edge is used by exactly two faces (no boundary edge, used once; no
  non-manifold edge, used three or more times);
* self-intersection: two faces that share no edge cross each other. Pairs sharing no vertex intersect
  when an edge of one crosses the other's interior; pairs sharing one vertex when the edge opposite it in
  one crosses the other (any other contact would make them coplanar). An edge crosses a face when its
  ends lie strictly on either side of the face's plane and the crossing point lies in the (closed) face,
  decided by signs of float64 orientation determinants and each hit confirmed in exact rational arithmetic
  (float64 got near-touching faces of a Spot export wrong: 15 pairs, none real); so a face whose corner only
  touches another, and coplanar overlaps, are not counted. open3d's ``get_self_intersecting_triangles`` counts those too: on
  marching-cubes meshes of 60 noise grids (the set of docs/benchmarks.md) it flagged 6 meshes, every
  flagged pair one of faces with corners (numerically) on each other's plane, and this check none.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


# ----------------------------------------------------------------------------- components
def face_components(faces: np.ndarray, n_vertices: int) -> tuple[np.ndarray, int]:
    """(component label [F] in 0..count-1, count) of faces connected through shared vertices."""
    faces_t = torch.as_tensor(np.asarray(faces, dtype=np.int64))
    if len(faces_t) == 0:
        return np.zeros(0, np.int64), 0
    parent = torch.arange(n_vertices, dtype=torch.int64)
    flat = faces_t.reshape(-1)
    while True:  # min-label propagation with pointer jumping: O(log) rounds on meshes
        low = parent[faces_t].amin(1).repeat_interleave(3)
        new = parent.clone()
        new.scatter_reduce_(0, flat, low, "amin")
        new.scatter_reduce_(0, parent[flat], low, "amin")  # hook the old roots too
        while True:
            jumped = new[new]
            if torch.equal(jumped, new):
                break
            new = jumped
        if torch.equal(new, parent):
            break
        parent = new
    roots = parent[faces_t[:, 0]]
    _, labels = torch.unique(roots, return_inverse=True)
    return labels.numpy(), int(labels.max()) + 1


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area [F] of each face (float64)."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def component_areas(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(component label [F], area [K] of each of the K components)."""
    labels, count = face_components(faces, len(vertices))
    return labels, np.bincount(labels, weights=face_areas(vertices, faces), minlength=count)


def keep_components(vertices: np.ndarray, faces: np.ndarray, min_fraction: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The mesh without components whose area is below ``min_fraction`` of the largest's; unused
    vertices are dropped and faces renumbered (their order and winding are kept)."""
    if len(faces) == 0:
        return vertices, faces
    labels, areas = component_areas(vertices, faces)
    keep = (areas >= min_fraction * areas.max())[labels]
    kept = np.asarray(faces)[keep]
    used = _unique_counts(kept.reshape(-1))[0]
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    return np.asarray(vertices)[used], remap[kept]


def _unique_counts(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, their counts) of an int64 array, by sorting (numpy 2.4's hash-based
    ``np.unique`` took 12 s on 1.8M values where a sort takes 0.5 s)."""
    codes = np.sort(codes)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, np.int64)
    return codes[starts], np.diff(np.r_[starts, len(codes)])


# ----------------------------------------------------------------------------- edges
def edge_use_counts(faces: np.ndarray) -> np.ndarray:
    """How many faces use each distinct undirected edge [E]."""
    f = np.asarray(faces, dtype=np.int64)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = _unique_counts(edges[:, 0] * (int(f.max()) + 1) + edges[:, 1])
    return counts


# ----------------------------------------------------------------------------- self-intersections
def _orient(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Signed volume (times 6) of tetrahedron abcd; positive when d is on the side of abc's normal."""
    return (torch.linalg.cross(b - a, c - a) * (d - a)).sum(-1)


def segments_cross_triangles(p: torch.Tensor, q: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Whether segment pq [N, 3], its ends strictly on either side of the triangle's plane, meets the
    (closed) triangle [N, 3, 3]. [N] bool"""
    a, b, c = tri.unbind(1)
    d1, d2 = _orient(a, b, c, p), _orient(a, b, c, q)
    s1, s2, s3 = _orient(p, q, a, b), _orient(p, q, b, c), _orient(p, q, c, a)
    same = ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))
    return (d1 * d2 < 0) & same


def _candidate_pairs(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Face pairs [P, 2] (i < j) whose bounding boxes overlap, found through a uniform grid."""
    n = len(lo)
    cell = float(np.median((hi - lo).max(1)))  # measured fastest of 0.75-2x on marching-cubes meshes
    if not cell > 0:
        cell = float((hi.max(0) - lo.min(0)).max()) or 1.0
    origin = lo.min(0)
    c0 = np.floor((lo - origin) / cell).astype(np.int64)
    c1 = np.floor((hi - origin) / cell).astype(np.int64)
    span = c1 - c0 + 1
    per_face = span.prod(1)
    face = np.repeat(np.arange(n), per_face)
    # offsets of each face's cells within its span, in x-major order
    local = np.arange(len(face)) - np.repeat(np.cumsum(per_face) - per_face, per_face)
    sy, sz = span[face, 1], span[face, 2]
    cells = c0[face] + np.stack([local // (sy * sz), (local // sz) % sy, local % sz], 1)
    dims = cells.max(0) + 1
    key = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    order = np.argsort(key, kind="stable")
    key, face = key[order], face[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)]
    group_end = np.repeat(ends, ends - starts)
    after = group_end - np.arange(len(key)) - 1  # members after each entry in its cell
    first = np.repeat(np.arange(len(key)), after)
    second = first + 1 + np.arange(len(first)) - np.repeat(np.cumsum(after) - after, after)
    a, b = face[first], face[second]
    code, _ = _unique_counts(np.minimum(a, b) * n + np.maximum(a, b))  # a pair met in several cells counts once
    pairs = np.stack([code // n, code % n], 1)
    overlap = np.all((lo[pairs[:, 0]] <= hi[pairs[:, 1]]) & (lo[pairs[:, 1]] <= hi[pairs[:, 0]]), axis=1)
    return pairs[overlap]


def _straddling(vt: torch.Tensor, part: torch.Tensor, fa: torch.Tensor, fb: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs whose faces each have corners (not shared with the other) on both sides of, or on, the
    other's plane: the others cannot cross (Moller's early rejection)."""
    keep = torch.ones(len(part), dtype=torch.bool)
    for one, other in ((fa, fb), (fb, fa)):
        a, b, c = vt[other].unbind(1)
        normal = torch.linalg.cross(b - a, c - a)  # [n, 3]
        side = ((vt[one] - a[:, None]) * normal[:, None]).sum(-1)  # [n, 3]
        free = ~(one[:, :, None] == other[:, None, :]).any(2)
        keep &= ~(((side > 0) | ~free).all(1) | ((side < 0) | ~free).all(1))
    return part[keep], fa[keep], fb[keep]


def self_intersecting_pairs(vertices: np.ndarray, faces: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """Pairs of faces [P, 2] (i < j, sharing no edge) that cross each other (see the module docstring)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if len(f) < 2:
        return np.zeros((0, 2), np.int64)
    tri = v[f]
    pairs = _candidate_pairs(tri.min(1), tri.max(1))
    shared = (f[pairs[:, 0], :, None] == f[pairs[:, 1], None, :])  # [P, 3, 3]
    pairs = pairs[shared.sum((1, 2)) <= 1]
    vt, ft = torch.from_numpy(v), torch.from_numpy(f)
    hits = []
    for part in torch.from_numpy(pairs).split(chunk):
        fa, fb = ft[part[:, 0]], ft[part[:, 1]]
        part, fa, fb = _straddling(vt, part, fa, fb)
        crossed = torch.zeros(len(part), dtype=torch.bool)
        for one, other in ((fa, fb), (fb, fa)):
            in_other = (one[:, :, None] == other[:, None, :]).any(2)  # [n, 3] corner shared with the other face
            for k in range(3):
                i, j = k, (k + 1) % 3
                free = ~(in_other[:, i] | in_other[:, j])
                if bool(free.any()):
                    sel = free.nonzero()[:, 0]
                    crossed[sel] |= segments_cross_triangles(vt[one[sel, i]], vt[one[sel, j]], vt[other[sel]])
        hits.append(part[crossed])
    found = torch.cat(hits).numpy() if hits else np.zeros((0, 2), np.int64)
    # float64 signs of near-zero determinants can be wrong (near-touching faces): confirm each hit exactly
    return found[[_crosses_exactly(v, f[a], f[b]) for a, b in found]] if len(found) else found


def _crosses_exactly(v: np.ndarray, fa: np.ndarray, fb: np.ndarray) -> bool:
    """The crossing test of two faces (vertex indices [3] each) in exact rational arithmetic."""
    from fractions import Fraction

    def orient(a, b, c, d):
        ab, ac, ad = [[y - x for x, y in zip(a, p)] for p in (b, c, d)]
        return ((ab[1] * ac[2] - ab[2] * ac[1]) * ad[0] + (ab[2] * ac[0] - ab[0] * ac[2]) * ad[1]
                + (ab[0] * ac[1] - ab[1] * ac[0]) * ad[2])

    corners = {i: [Fraction(float(x)) for x in v[i]] for i in (*fa, *fb)}
    for one, other in ((fa, fb), (fb, fa)):
        a, b, c = (corners[i] for i in other)
        for k in range(3):
            i, j = one[k], one[(k + 1) % 3]
            if i in other or j in other:
                continue
            p, q = corners[i], corners[j]
            s = (orient(p, q, a, b), orient(p, q, b, c), orient(p, q, c, a))
            if orient(a, b, c, p) * orient(a, b, c, q) < 0 and (min(s) >= 0 or max(s) <= 0):
                return True
    return False


# ----------------------------------------------------------------------------- report
@dataclass(frozen=True)
class MeshReport:
    """What ``mesh_report`` measures of a mesh."""

    vertices: int
    faces: int
    components: int
    boundary_edges: int  # used by one face
    nonmanifold_edges: int  # used by three or more faces
    intersecting_pairs: int  # pairs of faces that cross (sharing no edge)
    intersecting_faces: int  # faces in any such pair

    @property
    def watertight(self) -> bool:
        return self.boundary_edges == 0 and self.nonmanifold_edges == 0

    def summary(self) -> str:
        """One line for logs."""
        water = "watertight" if self.watertight else (
            f"not watertight ({self.boundary_edges} boundary, {self.nonmanifold_edges} non-manifold edges)")
        crossing = "no self-intersections" if self.intersecting_pairs == 0 else (
            f"{self.intersecting_pairs} self-intersecting face pairs ({self.intersecting_faces} faces)")
        return (f"{self.vertices} vertices, {self.faces} faces, {self.components} "
                f"component{'s' if self.components != 1 else ''}, {water}, {crossing}")


def mesh_report(vertices: np.ndarray, faces: np.ndarray) -> MeshReport:
    """Components, watertightness and self-intersections of a mesh."""
    counts = edge_use_counts(faces) if len(faces) else np.zeros(0, np.int64)
    crossing = self_intersecting_pairs(vertices, faces)
    return MeshReport(vertices=len(vertices), faces=len(faces), components=face_components(faces, len(vertices))[1],
                      boundary_edges=int((counts == 1).sum()), nonmanifold_edges=int((counts > 2).sum()),
                      intersecting_pairs=len(crossing), intersecting_faces=len(_unique_counts(crossing.reshape(-1))[0]))
