"""3D Gaussian splats: raw parameters, activations, initialisation, rendering, checkpoints and 3DGS PLY.

Parameters are stored raw, as in the 3DGS code: ``means`` [N, 3], ``quats`` [N, 4] (w, x, y, z, any
norm), log ``scales`` [N, 3], logit ``opacities`` [N], SH coefficients ``sh0`` [N, 1, 3] and ``shN``
[N, K - 1, 3] with K = (sh_degree + 1) ** 2. Coordinates are the scene's normalised ones; PLY export
undoes the normalisation.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.engine.render.cameras import camera_from_dict, camera_to_dict
from recon.engine.scene.camera import Camera, camera_matrices
from recon.engine.scene.scene import Normalization

SH_C0 = 0.28209479177387814  # Y_0^0: colour = SH_C0 * sh0 + 0.5
PARAM_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [N, 3, 3] from quaternions [N, 4] (w, x, y, z; normalised here)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*quats.shape[:-1], 3, 3)


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """Degree-0 SH coefficient of a colour in [0, 1] (inverse of ``SH_C0 * c + 0.5``)."""
    return (rgb - 0.5) / SH_C0


def knn_mean_distance(points: torch.Tensor, k: int = 3, chunk: int = 4096) -> torch.Tensor:
    """Mean distance of each point [N, 3] to its ``k`` nearest other points -> [N] (chunked, O(N^2) time).

    Memory stays at ``chunk * N`` distances; a point set smaller than k + 1 uses what it has.
    """
    n = points.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return torch.ones(n, device=points.device, dtype=points.dtype)
    out = torch.empty(n, device=points.device, dtype=points.dtype)
    for start in range(0, n, chunk):
        block = points[start:start + chunk]
        d2 = torch.cdist(block, points).square_()
        d2[torch.arange(block.shape[0]), torch.arange(start, start + block.shape[0])] = float("inf")
        out[start:start + chunk] = d2.topk(k, dim=1, largest=False).values.clamp_min(0).sqrt().mean(1)
    return out


class GaussianModel:
    """A set of 3D Gaussians with SH colours, rendered by ``recon.kernels.splatting``.

    Attributes:
        params: the raw parameters by name (``PARAM_NAMES``), leaf tensors the optimiser updates.
        sh_degree: the largest SH degree stored; ``active_sh_degree`` is the one rendered.
        normalization: the scene normalisation the coordinates are in (PLY export undoes it).
        cameras: optional ``{"train": [Camera], "test": [Camera]}`` so a run renders without its scene.
        background: default RGB background in [0, 1].
    """

    kind = "gaussians"

    def __init__(self, params: dict[str, torch.Tensor], *, sh_degree: int, active_sh_degree: int | None = None,
                 normalization: Normalization | None = None, cameras: dict[str, list[Camera]] | None = None,
                 background: tuple[float, float, float] = (1.0, 1.0, 1.0), antialiased: bool = False):
        self.params = {name: torch.nn.Parameter(params[name].detach().clone().float()) for name in PARAM_NAMES}
        self.sh_degree = sh_degree
        self.active_sh_degree = sh_degree if active_sh_degree is None else active_sh_degree
        self.normalization = normalization or Normalization()
        self.cameras = cameras or {"train": [], "test": []}
        self.background = tuple(float(c) for c in background)
        self.antialiased = antialiased

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_points(cls, points: torch.Tensor, colors: torch.Tensor, *, sh_degree: int = 3,
                    init_opacity: float = 0.1, init_scale: float = 1.0, **kwargs: Any) -> "GaussianModel":
        """Initialise from points [N, 3] with colours [N, 3] in [0, 1] (the 3DGS initialisation).

        Scales are the mean distance to the 3 nearest neighbours (times ``init_scale``), rotations the
        identity, opacities ``init_opacity``, SH DC the point colour and higher SH zero.
        """
        points = points.float()
        n = points.shape[0]
        dist = knn_mean_distance(points).clamp_min(1e-7)
        k = (sh_degree + 1) ** 2
        params = {
            "means": points,
            "quats": torch.tensor([1.0, 0.0, 0.0, 0.0], device=points.device).repeat(n, 1),
            "scales": torch.log(dist * init_scale)[:, None].repeat(1, 3),
            "opacities": torch.full((n,), math.log(init_opacity / (1.0 - init_opacity)), device=points.device),
            "sh0": rgb_to_sh0(colors.float().to(points.device))[:, None, :],
            "shN": torch.zeros(n, k - 1, 3, device=points.device),
        }
        return cls(params, sh_degree=sh_degree, active_sh_degree=0, **kwargs)

    @property
    def num_gaussians(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    # ----------------------------------------------------------------- rendering
    def rasterize(self, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int, *,
                  background: torch.Tensor | None = None, mode: str = "rgb",
                  absgrad: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Render into cameras ``viewmats`` [C, 4, 4], ``Ks`` [C, 3, 3]; returns rasterize's (image, alpha, info)."""
        from recon.kernels import rasterize

        p = self.params
        colors = torch.cat([p["sh0"], p["shN"]], dim=1)
        return rasterize(p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]), colors,
                         viewmats, Ks, width, height, sh_degree=self.active_sh_degree, background=background,
                         mode=mode, antialiased=self.antialiased, absgrad=absgrad)

    def render(self, camera: Camera, *, background: Any = None) -> dict[str, torch.Tensor]:
        """Render one camera -> ``rgb`` [H, W, 3], ``depth`` [H, W, 1] (expected depth), ``alpha`` [H, W, 1]."""
        viewmats, Ks = camera_matrices([camera], self.device)
        bg = torch.as_tensor(self.background if background is None else background, dtype=torch.float32,
                             device=self.device)
        with torch.no_grad():
            image, alpha, _ = self.rasterize(viewmats, Ks, camera.width, camera.height, background=bg,
                                             mode="rgb+depth")
        depth = image[0, ..., 3:] / alpha[0].clamp_min(1e-8)
        return {"rgb": image[0, ..., :3].clamp(0, 1), "depth": depth, "alpha": alpha[0]}

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything ``from_checkpoint`` needs under the checkpoint's ``model`` key."""
        return {
            "params": {k: v.detach() for k, v in self.params.items()},
            "sh_degree": self.sh_degree,
            "active_sh_degree": self.active_sh_degree,
            "background": list(self.background),
            "antialiased": self.antialiased,
            "cameras": {split: [camera_to_dict(c) for c in cams] for split, cams in self.cameras.items()},
        }

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> "GaussianModel":
        """Rebuild from a checkpoint dict (``model`` plus ``normalization``)."""
        m = state["model"]
        return cls({k: v.to(device) for k, v in m["params"].items()}, sh_degree=m["sh_degree"],
                   active_sh_degree=m["active_sh_degree"],
                   normalization=Normalization.from_dict(state["normalization"]),
                   cameras={split: [camera_from_dict(d) for d in cams] for split, cams in m["cameras"].items()},
                   background=tuple(m["background"]), antialiased=m.get("antialiased", False))

    # ----------------------------------------------------------------- 3DGS PLY
    def to_splats(self):
        """Raw parameters in the scene's original coordinates, as ``SplatArrays`` for ``write_splat_ply``.

        Only the active SH degree is written (coefficients above it have not been trained).
        """
        from recon.engine.io.ply import SplatArrays

        p = {k: v.detach().cpu().numpy() for k, v in self.params.items()}
        norm = self.normalization
        rest = (self.active_sh_degree + 1) ** 2 - 1
        return SplatArrays(means=norm.to_original(p["means"]).astype(np.float32), sh0=p["sh0"],
                           shN=p["shN"][:, :rest], opacities=p["opacities"],
                           scales=(p["scales"] - math.log(norm.scale)).astype(np.float32), quats=p["quats"],
                           antialiased=self.antialiased)

    @classmethod
    def from_splats(cls, splats, normalization: Normalization | None = None,
                    device: str | torch.device = "cpu", **kwargs: Any) -> "GaussianModel":
        """Build from ``SplatArrays`` in original coordinates, moved into ``normalization``'s coordinates."""
        norm = normalization or Normalization()
        params = {
            "means": norm.to_normalized(splats.means.astype(np.float64)),
            "quats": splats.quats, "scales": splats.scales + math.log(norm.scale),
            "opacities": splats.opacities, "sh0": splats.sh0, "shN": splats.shN,
        }
        params = {k: torch.as_tensor(np.asarray(v, dtype=np.float32), device=device) for k, v in params.items()}
        return cls(params, sh_degree=splats.sh_degree, normalization=norm, **kwargs)

    def save_ply(self, path: str | Path) -> None:
        """Write the INRIA 3DGS PLY in original coordinates (atomically)."""
        from recon.engine.io.ply import write_splat_ply

        write_splat_ply(path, self.to_splats())

    @classmethod
    def load_ply(cls, path: str | Path, normalization: Normalization | None = None,
                 device: str | torch.device = "cpu", **kwargs: Any) -> "GaussianModel":
        """Read a 3DGS PLY (recon's or another tool's) into normalised coordinates."""
        from recon.engine.io.ply import read_splat_ply

        return cls.from_splats(read_splat_ply(path), normalization, device, **kwargs)

