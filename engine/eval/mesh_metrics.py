"""Mesh quality against a reference surface: Chamfer-L1, normal consistency and F-score.

Both surfaces are sampled uniformly by area (with face normals); distances are Euclidean nearest-neighbour
distances between the two samples, in the reference's units. Definitions follow Occupancy Networks:

* ``chamfer_l1`` = (mean accuracy distance + mean completeness distance) / 2;
* ``normal_consistency`` = mean |cos| between each sample's normal and its nearest neighbour's, both ways;
* ``fscore`` = harmonic mean of precision and recall at ``threshold`` = ``threshold_ratio`` (default 1%)
  of the reference bounding-box diagonal.
"""
from __future__ import annotations

import numpy as np
import torch


def sample_surface(vertices: torch.Tensor, faces: torch.Tensor, count: int, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` points [count, 3] uniform on the surface (vertices [V, 3], faces [F, 3]) and their unit normals."""
    tri = vertices[faces]  # [F, 3, 3]
    cross = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = cross.norm(dim=1)
    if float(area.sum()) <= 0:
        raise ValueError("the mesh has no area to sample")
    face = torch.multinomial(area, count, replacement=True, generator=generator)
    u, v = torch.rand(2, count, 1, generator=generator, dtype=vertices.dtype)
    flip = (u + v) > 1
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    t = tri[face]
    points = t[:, 0] + u * (t[:, 1] - t[:, 0]) + v * (t[:, 2] - t[:, 0])
    normals = cross[face] / area[face].clamp_min(1e-30)[:, None]
    return points, normals


def nearest_neighbours(query: torch.Tensor, points: torch.Tensor, chunk: int = 512
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [Q], index [Q]) of the nearest of ``points`` [P, 3] to each of ``query`` [Q, 3].

    The search runs as float32 matrix products; the chosen neighbour's distance is recomputed in the
    inputs' precision.
    """
    p32 = points.float()
    p_sq = (p32 * p32).sum(1)
    idx = []
    for q in query.split(chunk):
        q32 = q.float()
        idx.append(torch.argmin(p_sq[None, :] - 2.0 * q32 @ p32.T, dim=1))  # |q|^2 does not change the argmin
    index = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.int64)
    return (query - points[index]).norm(dim=1), index


def mesh_metrics(vertices: np.ndarray, faces: np.ndarray, ref_vertices: np.ndarray, ref_faces: np.ndarray, *,
                 samples: int = 20000, threshold_ratio: float = 0.01, seed: int = 0) -> dict[str, float]:
    """Chamfer-L1, normal consistency, precision/recall/F-score of a mesh against a reference mesh."""
    gen = torch.Generator().manual_seed(seed)
    as_t = lambda a, dt: torch.as_tensor(np.asarray(a), dtype=dt)
    ref_v = as_t(ref_vertices, torch.float64)
    pred_p, pred_n = sample_surface(as_t(vertices, torch.float64), as_t(faces, torch.int64), samples, gen)
    ref_p, ref_n = sample_surface(ref_v, as_t(ref_faces, torch.int64), samples, gen)
    acc, acc_idx = nearest_neighbours(pred_p, ref_p)  # prediction -> reference (accuracy / precision)
    comp, comp_idx = nearest_neighbours(ref_p, pred_p)  # reference -> prediction (completeness / recall)
    threshold = threshold_ratio * float((ref_v.max(0).values - ref_v.min(0).values).norm())
    precision = float((acc < threshold).double().mean())
    recall = float((comp < threshold).double().mean())
    normal_acc = (pred_n * ref_n[acc_idx]).sum(1).abs().mean()
    normal_comp = (ref_n * pred_n[comp_idx]).sum(1).abs().mean()
    return {
        "chamfer_l1": float(0.5 * (acc.mean() + comp.mean())),
        "normal_consistency": float(0.5 * (normal_acc + normal_comp)),
        "precision": precision,
        "recall": recall,
        "fscore": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
        "threshold": threshold,
    }
