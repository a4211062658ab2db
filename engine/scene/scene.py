"""The one scene type: frames (image + camera), sparse points, train/test split and normalisation.

Loaders (COLMAP, transforms.json, the demo scene) produce a ``Scene`` in the data's original world
coordinates; ``Scene.normalized()`` moves and scales it so that camera centres lie in the unit sphere
around the origin. Every model trains in normalised coordinates and exports undo it with
``Normalization.to_original``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.scene.camera import Camera, focus_point


@dataclass(frozen=True)
class Frame:
    """One image with its camera; ``mask_path`` is an optional per-image foreground mask, ``valid_path`` an
    optional mask of the pixels that hold image content (an undistorted image's pixels with a source)."""

    name: str
    image_path: Path
    camera: Camera
    mask_path: Path | None = None
    valid_path: Path | None = None


@dataclass(frozen=True)
class Normalization:
    """``x_normalized = (x_original - center) * scale``; distances scale by ``scale``."""

    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0

    def to_normalized(self, points: np.ndarray) -> np.ndarray:
        """Map original points [..., 3] into normalised coordinates."""
        return (np.asarray(points) - self.center) * self.scale

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map normalised points [..., 3] back into the data's original coordinates."""
        return np.asarray(points) / self.scale + self.center

    def world_to_camera(self, world_to_camera: np.ndarray) -> np.ndarray:
        """The pose [4, 4] that sees normalised points as the original pose saw the originals."""
        out = np.array(world_to_camera, dtype=np.float64, copy=True)
        out[:3, 3] = self.scale * (out[:3, :3] @ self.center + out[:3, 3])
        return out

    def to_dict(self) -> dict:
        return {"center": [float(c) for c in self.center], "scale": float(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(center=np.asarray(d["center"], dtype=np.float64), scale=float(d["scale"]))


def split_indices(count: int, test_every: int) -> tuple[list[int], list[int]]:
    """Hold out every ``test_every``-th frame (indices 0, n, 2n, ...) as in the 3DGS papers.

    ``test_every <= 0`` trains on every frame and tests on none.
    """
    if test_every <= 0:
        return list(range(count)), []
    test = [i for i in range(count) if i % test_every == 0]
    train = [i for i in range(count) if i % test_every != 0]
    return train, test


@dataclass
class Scene:
    """Frames with cameras, optional sparse points, a split and a normalisation.

    Attributes:
        root: the folder the scene was loaded from.
        source_format: ``colmap``, ``blender``, ``instant-ngp``, ``nerfstudio`` or ``demo``.
        frames: every usable frame, in a stable order (sorted by name for COLMAP).
        train_indices, test_indices: indices into ``frames``.
        points: sparse points [N, 3] float32 or None; point_colors: [N, 3] uint8 or None.
        normalization: how the stored coordinates relate to the original ones.
        background: RGB in [0, 1] used to composite RGBA images.
        aabb: optional scene box [2, 3] (min, max) in the stored coordinates.
        downscale: the factor images are loaded at (1, 2, 4 or 8).
    """

    root: Path
    source_format: str
    frames: list[Frame]
    train_indices: list[int]
    test_indices: list[int]
    points: np.ndarray | None = None
    point_colors: np.ndarray | None = None
    normalization: Normalization = field(default_factory=Normalization)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    aabb: np.ndarray | None = None
    downscale: int = 1

    @property
    def name(self) -> str:
        return self.root.resolve().name

    @property
    def train_frames(self) -> list[Frame]:
        return [self.frames[i] for i in self.train_indices]

    @property
    def test_frames(self) -> list[Frame]:
        return [self.frames[i] for i in self.test_indices]

    @property
    def camera_centers(self) -> np.ndarray:
        """Camera centres [F, 3] in the stored coordinates."""
        return np.stack([f.camera.center for f in self.frames]) if self.frames else np.zeros((0, 3))

    @property
    def extent(self) -> float:
        """1.1 times the largest distance of a camera centre from their mean (the 3DGS scene extent)."""
        centers = self.camera_centers
        if len(centers) == 0:
            return 1.0
        radius = float(np.linalg.norm(centers - centers.mean(0), axis=1).max())
        return 1.1 * radius if radius > 0 else 1.0

    def normalized(self) -> "Scene":
        """This scene moved and scaled so that camera centres fit in the unit sphere around the origin.

        The origin goes to the point the cameras look at (``focus_point``) for inward-looking captures,
        else to the mean camera centre.

        Loaders return scenes in original coordinates; calling this on a normalised scene returns it.
        """
        if not self.frames:
            raise ReconError(f"{self.root}: the scene has no frames")
        if self.normalization.scale != 1.0 or np.any(self.normalization.center != 0):
            return self
        centers = self.camera_centers
        focus = focus_point([f.camera for f in self.frames])
        center = centers.mean(0) if focus is None else focus
        radius = float(np.linalg.norm(centers - center, axis=1).max())
        norm = Normalization(center=center, scale=1.0 / radius if radius > 0 else 1.0)
        frames = [replace(f, camera=f.camera.with_pose(norm.world_to_camera(f.camera.world_to_camera)))
                  for f in self.frames]
        points = None if self.points is None else norm.to_normalized(self.points).astype(np.float32)
        aabb = None if self.aabb is None else norm.to_normalized(self.aabb)
        return replace(self, frames=frames, points=points, normalization=norm, aabb=aabb)

    def load_image(self, index: int, *, keep_alpha: bool = False) -> np.ndarray:
        """Frame ``index``'s image as float32 [H, W, 3] in [0, 1] (RGBA composited on ``background``).

        With ``keep_alpha`` an RGBA image comes back as [H, W, 4] with straight (not premultiplied)
        colour. Images are resized to the camera's size when no downscaled copy exists on disk.
        """
        from recon.engine.io.images import read_image  # imported here: images pull in imageio

        frame = self.frames[index]
        image = read_image(frame.image_path, size=(frame.camera.width, frame.camera.height))
        if image.shape[-1] == 4 and not keep_alpha:
            rgb, alpha = image[..., :3], image[..., 3:]
            image = rgb * alpha + np.asarray(self.background, dtype=np.float32) * (1.0 - alpha)
        return image

    def load_mask(self, index: int) -> np.ndarray | None:
        """Frame ``index``'s foreground mask as float32 [H, W] in [0, 1], or None."""
        from recon.engine.io.images import read_image

        frame = self.frames[index]
        if frame.mask_path is None:
            return None
        mask = read_image(frame.mask_path, size=(frame.camera.width, frame.camera.height))
        return mask[..., 0]

    def load_valid(self, index: int) -> np.ndarray | None:
        """Frame ``index``'s valid-pixel mask as float32 [H, W] in {0, 1}, or None when every pixel is valid.

        Undistorted images (``undistorted.undistort_scene``) have one: their pixels with no source pixel are
        0 and count neither in a fit's loss nor in its metrics.
        """
        from recon.engine.io.images import read_image

        frame = self.frames[index]
        if frame.valid_path is None:
            return None
        return (read_image(frame.valid_path)[..., 0] >= 0.5).astype(np.float32)
