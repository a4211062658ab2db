"""Normalisation: inward-looking captures are centred on their focus point, exports undo it exactly."""
import numpy as np

from recon.engine.scene.camera import Camera, focus_point
from recon.engine.scene.scene import Frame, Normalization, Scene


def _look_at(center: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = target - center
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0]) if abs(z[2]) < 0.99 else np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([x, y, z])
    w2c[:3, 3] = -w2c[:3, :3] @ center
    return w2c


def _hemisphere_scene(rng, target):
    dirs = rng.normal(size=(20, 3))
    dirs[:, 2] = np.abs(dirs[:, 2]) + 0.2  # upper hemisphere only, like NeRF-synthetic
    centers = target + 4.0 * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    frames = [Frame(f"{i}.png", None, Camera(32, 24, 30, 30, 16, 12, _look_at(c, target))) for i, c in enumerate(centers)]
    points = target + rng.normal(scale=0.3, size=(50, 3))
    return Scene(root=None, source_format="test", frames=frames, train_indices=list(range(20)), test_indices=[],
                 points=points.astype(np.float32)), centers


def test_hemisphere_capture_is_centred_on_its_target(seed):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=3)
    scene, centers = _hemisphere_scene(rng, target)
    norm = scene.normalized()
    np.testing.assert_allclose(norm.normalization.center, target, atol=1e-6)
    assert np.linalg.norm(norm.camera_centers, axis=1).max() <= 1.0 + 1e-9
    # Exports undo it: stored points and camera centres map back to the originals.
    np.testing.assert_allclose(norm.normalization.to_original(norm.points), scene.points, atol=1e-5)
    np.testing.assert_allclose(norm.normalization.to_original(norm.camera_centers), centers, atol=1e-9)
    # A pose still sees a point where it saw it before normalisation (projection unchanged).
    cam0, cam1 = scene.frames[0].camera, norm.frames[0].camera
    p = np.append(scene.points[0], 1.0)
    q = np.append(norm.points[0], 1.0)
    a, b = cam0.world_to_camera @ p, cam1.world_to_camera @ q
    np.testing.assert_allclose(a[:2] / a[2], b[:2] / b[2], atol=1e-5)


def test_parallel_axes_have_no_focus_point():
    cameras = [Camera(32, 24, 30, 30, 16, 12, _translation(x, y)) for x, y in [(0, 0), (1, 0), (2, 0), (0, 1)]]
    assert focus_point(cameras) is None


def _translation(x: float, y: float) -> np.ndarray:
    w2c = np.eye(4)
    w2c[:3, 3] = [-x, -y, 0.0]
    return w2c


def test_normalization_dict_round_trip():
    n = Normalization(center=np.array([1.0, -2.0, 3.0]), scale=0.25)
    m = Normalization.from_dict(n.to_dict())
    np.testing.assert_allclose(m.to_original(n.to_normalized(np.ones(3))), np.ones(3))
