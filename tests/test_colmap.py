"""COLMAP models (binary and text round trips, all 7 camera models, bad files) and lens undistortion."""
from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest

from conftest import shared_path
from recon.engine.errors import ReconError
from recon.engine.scene.camera import Camera
from recon.engine.scene.colmap import (CAMERA_MODELS, ColmapCamera, ColmapImage, ColmapModel, ColmapPoints,
                                       camera_from_colmap, colmap_camera, qvec_to_rotmat, read_model,
                                       rotmat_to_qvec, write_model)
from recon.engine.scene.undistort import (distort_points, undistort_image, undistort_points,
                                          undistortion_map)

# Moderate lens distortion per model (fisheye coefficients act on the angle, not the radius).
DISTORTIONS = {
    "SIMPLE_PINHOLE": {}, "PINHOLE": {},
    "SIMPLE_RADIAL": {"k1": -0.2},
    "RADIAL": {"k1": -0.15, "k2": 0.03},
    "OPENCV": {"k1": -0.2, "k2": 0.05, "p1": 0.002, "p2": -0.003},
    "OPENCV_FISHEYE": {"k1": 0.05, "k2": -0.01, "k3": 0.002, "k4": -0.0005},
    "FULL_OPENCV": {"k1": -0.2, "k2": 0.05, "p1": 0.001, "p2": -0.002, "k3": 0.01, "k4": 0.05, "k5": 0.01,
                    "k6": 0.002},
}


def random_model(rng: np.random.Generator) -> ColmapModel:
    """One camera of every model, images with keypoints (some without 3D points, one with none), points."""
    cameras = {}
    for camera_id, (name, (_, params)) in enumerate(CAMERA_MODELS.items(), start=1):
        coefficients = len([p for p in params if p[0] in "kp"])
        values = np.concatenate([rng.uniform(100, 900, len(params) - coefficients), rng.normal(0, 0.05, coefficients)])
        cameras[camera_id] = ColmapCamera(camera_id, name, int(rng.integers(1, 5000)), int(rng.integers(1, 5000)),
                                          values)
    images = {}
    for image_id in (1, 2, 5, 9):
        q = rng.normal(size=4)
        count = 0 if image_id == 5 else int(rng.integers(1, 30))
        ids = rng.integers(-1, 40, count)
        images[image_id] = ColmapImage(image_id, q / np.linalg.norm(q), rng.normal(size=3), int(rng.integers(1, 8)),
                                       f"sub dir/img_{image_id}.jpg" if image_id == 9 else f"img_{image_id}.jpg",
                                       rng.uniform(0, 1000, (count, 2)), np.where(ids < 0, -1, ids))
    n = 12
    points = ColmapPoints(ids=rng.choice(10**6, n, replace=False).astype(np.int64), xyz=rng.normal(size=(n, 3)) * 5,
                          rgb=rng.integers(0, 256, (n, 3)).astype(np.uint8), errors=rng.uniform(0, 2, n),
                          tracks=[rng.integers(0, 99, (int(rng.integers(0, 6)), 2)).astype(np.uint32) for _ in range(n)])
    return ColmapModel(cameras, images, points)


def assert_models_equal(a: ColmapModel, b: ColmapModel) -> None:
    assert a.cameras.keys() == b.cameras.keys() and a.images.keys() == b.images.keys()
    for key, cam in a.cameras.items():
        other = b.cameras[key]
        assert (cam.model, cam.width, cam.height) == (other.model, other.width, other.height)
        np.testing.assert_array_equal(cam.params, other.params)
    for key, image in a.images.items():
        other = b.images[key]
        assert (image.name, image.camera_id) == (other.name, other.camera_id)
        for field in ("qvec", "tvec", "xys", "point3d_ids"):
            np.testing.assert_array_equal(getattr(image, field), getattr(other, field), err_msg=field)
    for field in ("ids", "xyz", "rgb", "errors"):
        np.testing.assert_array_equal(getattr(a.points, field), getattr(b.points, field), err_msg=field)
    assert len(a.points.tracks) == len(b.points.tracks)
    for ta, tb in zip(a.points.tracks, b.points.tracks):
        np.testing.assert_array_equal(ta.reshape(-1, 2), tb.reshape(-1, 2))


@pytest.mark.parametrize("binary", [True, False], ids=["bin", "txt"])
def test_model_round_trip(tmp_path, seed, binary):
    model = random_model(np.random.default_rng(seed))
    write_model(model, tmp_path, binary=binary)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.{'bin' if binary else 'txt'}"
                                                                for n in ("cameras", "images", "points3D"))
    assert_models_equal(model, read_model(tmp_path))


def test_binary_and_text_agree(tmp_path, seed):
    model = random_model(np.random.default_rng(seed))
    write_model(model, tmp_path / "bin", binary=True)
    write_model(read_model(tmp_path / "bin"), tmp_path / "txt", binary=False)
    write_model(read_model(tmp_path / "txt"), tmp_path / "bin2", binary=True)
    assert_models_equal(model, read_model(tmp_path / "txt"))
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        assert (tmp_path / "bin" / name).read_bytes() == (tmp_path / "bin2" / name).read_bytes()


def test_binary_layout_matches_colmap(tmp_path):
    """Byte layout of cameras.bin as COLMAP writes it: count u64, then id u32, model i32, w u64, h u64, params f64."""
    model = ColmapModel({3: ColmapCamera(3, "SIMPLE_RADIAL", 640, 480, np.array([500.0, 320.0, 240.0, 0.1]))}, {},
                        ColmapPoints())
    write_model(model, tmp_path)
    assert (tmp_path / "cameras.bin").read_bytes() == struct.pack("<QIiQQ4d", 1, 3, 2, 640, 480, 500, 320, 240, 0.1)
    assert (tmp_path / "points3D.bin").read_bytes() == struct.pack("<Q", 0)


@pytest.mark.parametrize("model", list(CAMERA_MODELS))
def test_camera_conversion_round_trip(model):
    f = {"fx": 510.0, "fy": 510.0 if model.startswith("SIMPLE") or model == "RADIAL" else 497.0}
    camera = Camera(width=640, height=480, cx=319.5, cy=241.0, model=model, distortion=DISTORTIONS[model], **f)
    entry = colmap_camera(camera, 7)
    assert len(entry.params) == len(CAMERA_MODELS[model][1])
    back = camera_from_colmap(entry)
    assert back == replace(camera, world_to_camera=back.world_to_camera)
    assert set(back.distortion) == {p for p in CAMERA_MODELS[model][1] if p[0] in "kp"}


def test_quaternion_round_trip(seed):
    rng = np.random.default_rng(seed)
    for q in rng.normal(size=(50, 4)):
        q = q / np.linalg.norm(q) * np.sign(q[0])
        R = qvec_to_rotmat(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(rotmat_to_qvec(R), q, atol=1e-12)
    # A 90-degree turn about z maps x to y.
    c = np.sqrt(0.5)
    np.testing.assert_allclose(qvec_to_rotmat([c, 0, 0, c]) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_rigs_and_frames_files_are_ignored(tmp_path, seed):
    model = random_model(np.random.default_rng(seed))
    write_model(model, tmp_path)
    (tmp_path / "rigs.bin").write_bytes(b"\x01\x02\x03")
    (tmp_path / "frames.bin").write_bytes(b"garbage")
    assert_models_equal(model, read_model(tmp_path))


# --------------------------------------------------------------------------------------------------
# Bad files


@pytest.mark.parametrize("model_id, name", [(7, "FOV"), (8, "SIMPLE_RADIAL_FISHEYE"), (10, "THIN_PRISM_FISHEYE"),
                                            (99, "id 99")])
def test_unsupported_model_binary(tmp_path, model_id, name):
    (tmp_path / "cameras.bin").write_bytes(struct.pack("<QIiQQ3d", 1, 1, model_id, 64, 48, 50, 32, 24))
    (tmp_path / "images.bin").write_bytes(struct.pack("<Q", 0))
    with pytest.raises(ReconError, match=rf"cameras.bin: unsupported camera model {name} \(supported: SIMPLE_PINHOLE"):
        read_model(tmp_path)


@pytest.mark.parametrize("cut", [1, 9, 30, -1])
def test_truncated_binary(tmp_path, seed, cut):
    write_model(random_model(np.random.default_rng(seed)), tmp_path)
    data = (tmp_path / "images.bin").read_bytes()
    (tmp_path / "images.bin").write_bytes(data[:cut])
    with pytest.raises(ReconError, match=r"images.bin: truncated or corrupt COLMAP binary file"):
        read_model(tmp_path)


def test_trailing_bytes_and_empty_files(tmp_path, seed):
    write_model(random_model(np.random.default_rng(seed)), tmp_path)
    with open(tmp_path / "points3D.bin", "ab") as fh:
        fh.write(b"\0\0\0")
    with pytest.raises(ReconError, match=r"points3D.bin: cannot parse \(3 bytes left after the last entry\)"):
        read_model(tmp_path)
    (tmp_path / "cameras.bin").write_bytes(b"")
    with pytest.raises(ReconError, match=r"cameras.bin: the file is empty"):
        read_model(tmp_path)


@pytest.mark.parametrize("cameras, images, message", [
    ("# comment\n1 FOV 64 48 50 50 32 24 0.1\n", "", r"cameras.txt: unsupported camera model FOV \(supported:"),
    ("1 PINHOLE 64 48 50 50 32\n", "", r"cameras.txt: cannot parse \(camera 1: PINHOLE takes 4 parameters, found 3\)"),
    ("1 PINHOLE 0 48 50 50 32 24\n", "", r"cameras.txt: camera 1 has an invalid size or parameters \(0x48"),
    ("1 PINHOLE 64 48 50 50 32 24\n", "1 1 0 0 0 0 0 0 2 a.png\n\n",
     r"images.txt: image a.png uses camera 2, which cameras.txt does not define"),
    ("1 PINHOLE 64 48 50 50 32 24\n", "1 1 0 0 0 0 0 one 1 a.png\n\n", r"images.txt: cannot parse \("),
])
def test_bad_text_model(tmp_path, cameras, images, message):
    (tmp_path / "cameras.txt").write_text(cameras)
    (tmp_path / "images.txt").write_text(images)
    with pytest.raises(ReconError, match=message):
        read_model(tmp_path)


# --------------------------------------------------------------------------------------------------
# Real data


def test_plush_binary_and_text_models_agree():
    binary = read_model(shared_path("plush", "sparse", "0"))
    text = read_model(shared_path("plush", "sparse_txt", "0"))
    assert len(binary.images) == 97 and len(binary.points.ids) == 12653
    assert binary.cameras[1].model == "SIMPLE_RADIAL" and binary.cameras[1].params[0] == pytest.approx(827.0575, abs=1e-3)
    for key, cam in binary.cameras.items():
        a, b = camera_from_colmap(cam), camera_from_colmap(text.cameras[key])
        assert (a.model, a.width, a.height, a.fx, a.fy, a.cx, a.cy, a.distortion) == \
            (b.model, b.width, b.height, b.fx, b.fy, b.cx, b.cy, b.distortion)
    for key, image in binary.images.items():
        np.testing.assert_allclose(image.qvec, text.images[key].qvec, rtol=1e-15)
        np.testing.assert_allclose(image.tvec, text.images[key].tvec, rtol=1e-15)
    np.testing.assert_allclose(binary.points.xyz, text.points.xyz, rtol=1e-15)


# --------------------------------------------------------------------------------------------------
# Undistortion


def distorting_camera(model: str, width: int = 64, height: int = 48) -> Camera:
    return Camera(width=width, height=height, fx=50.0, fy=53.0, cx=width / 2 - 0.3, cy=height / 2 + 0.4,
                  model=model, distortion=DISTORTIONS[model])


@pytest.mark.parametrize("model", list(CAMERA_MODELS))
def test_points_distort_undistort_round_trip(model, seed):
    camera = distorting_camera(model)
    rng = np.random.default_rng(seed)
    pixels = rng.uniform([0, 0], [camera.width, camera.height], (200, 2))
    distorted = distort_points(pixels, camera)
    np.testing.assert_allclose(undistort_points(distorted, camera), pixels, atol=1e-8)
    np.testing.assert_allclose(distort_points(undistort_points(pixels, camera), camera), pixels, atol=1e-8)
    moved = np.abs(distorted - pixels).max()
    assert moved > 1.0 if DISTORTIONS[model] else moved < 1e-9


def test_undistort_points_known_value():
    """SIMPLE_RADIAL: a normalised point (0.5, 0) distorts to 0.5 (1 + k 0.25)."""
    camera = Camera(width=100, height=100, fx=100.0, fy=100.0, cx=50.0, cy=50.0, model="SIMPLE_RADIAL",
                    distortion={"k1": -0.2})
    np.testing.assert_allclose(distort_points(np.array([[100.0, 50.0]]), camera), [[50 + 50 * 0.95, 50.0]])
    np.testing.assert_allclose(undistort_points(np.array([[97.5, 50.0]]), camera), [[100.0, 50.0]], atol=1e-9)


@pytest.mark.parametrize("model", [m for m, d in DISTORTIONS.items() if d])
def test_image_distort_undistort_round_trip(model):
    """A smooth pattern seen through the lens, undistorted, matches the pinhole view of the same pattern."""
    camera = distorting_camera(model)
    pattern = lambda uv: 0.5 + 0.5 * np.sin(uv[..., 0] / 6.0) * np.cos(uv[..., 1] / 5.0)  # noqa: E731
    u, v = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    pinhole_pixels = np.stack([u, v], axis=-1)
    distorted = np.stack([pattern(undistort_points(pinhole_pixels, camera))] * 2, axis=-1)  # [H, W, 2]
    undistorted, pinhole = undistort_image(distorted, camera)
    assert pinhole.model == "PINHOLE" and pinhole.distortion == {} and pinhole.fx == camera.fx
    assert undistorted.shape == distorted.shape and undistorted.dtype == np.float32
    truth = pattern(pinhole_pixels)
    inner = (slice(6, -6), slice(6, -6))
    assert np.abs(undistorted[..., 1] - truth)[inner].max() < 0.01  # resampling error only
    assert np.abs(distorted[..., 0] - truth)[inner].max() > 0.05  # the lens really moved the pattern
    # Pixels whose source lies outside the distorted image are zero.
    outside = np.any((undistortion_map(camera) < 0) | (undistortion_map(camera) > [camera.width, camera.height]), -1)
    assert np.all(undistorted[outside] == 0)


def test_undistort_pinhole_is_identity(seed):
    image = np.random.default_rng(seed).random((6, 8, 3)).astype(np.float32)
    out, camera = undistort_image(image, Camera(width=8, height=6, fx=5.0, fy=5.0, cx=4.0, cy=3.0))
    np.testing.assert_array_equal(out, image)
