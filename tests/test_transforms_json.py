"""transforms.json in its three dialects (Blender, instant-ngp, nerfstudio), on tiny generated folders."""
from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest

from recon.engine.errors import ReconError
from recon.engine.scene import load_scene
from recon.engine.scene.load import read_scene
from recon.engine.scene.transforms_json import detect_dialect
from test_scene_load import make_transforms_scene, write_image


def assert_poses(scene, poses) -> None:
    for frame, pose in zip(scene.frames, poses):
        np.testing.assert_allclose(frame.camera.world_to_camera, pose, atol=1e-12)


def rewrite(path, **changes) -> dict:
    """Apply ``changes`` to a transforms file (``frame0`` updates its first frame) and return the JSON."""
    meta = json.loads(path.read_text())
    meta["frames"][0].update(changes.pop("frame0", {}))
    meta.update(changes)
    path.write_text(json.dumps(meta))
    return meta


# --------------------------------------------------------------------------------------------------
# Blender / NeRF-synthetic


def test_blender_official_split_and_intrinsics(tmp_path):
    poses = make_transforms_scene(tmp_path, "blender", count=6, width=10, height=8, split=True)
    scene = read_scene(tmp_path)
    assert scene.source_format == "blender"
    # transforms_train.json holds views 3..5, transforms_test.json views 0..2.
    assert scene.train_indices == [0, 1, 2] and scene.test_indices == [3, 4, 5]
    assert [f.name for f in scene.frames] == [f"./train/r_{i}" for i in (3, 4, 5, 0, 1, 2)]
    assert scene.frames[0].image_path == tmp_path / "train" / "r_3.png"
    assert_poses(scene, poses[3:] + poses[:3])
    camera = scene.frames[0].camera
    assert (camera.width, camera.height, camera.model) == (10, 8, "PINHOLE")
    assert camera.fx == pytest.approx(5.0 / math.tan(0.45)) and camera.fy == camera.fx
    assert (camera.cx, camera.cy) == (5.0, 4.0)


def test_blender_single_file_holdout_and_extension(tmp_path):
    make_transforms_scene(tmp_path, "blender", count=5)
    (tmp_path / "train" / "r_1.png").rename(tmp_path / "train" / "r_1.jpg")
    scene = read_scene(tmp_path, test_every=2)
    assert scene.test_indices == [0, 2, 4] and scene.train_indices == [1, 3]
    assert scene.frames[1].image_path.name == "r_1.jpg"


@pytest.mark.parametrize("background", [(1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0.2, 0.5, 0.9)])
def test_blender_rgba_is_composited_on_background(tmp_path, background):
    make_transforms_scene(tmp_path, "blender", count=2)
    scene = load_scene(tmp_path, background=background, test_every=0)
    rgba = iio.imread(tmp_path / "train" / "r_1.png").astype(np.float32) / 255
    expected = rgba[..., :3] * rgba[..., 3:] + np.asarray(background, np.float32) * (1 - rgba[..., 3:])
    np.testing.assert_allclose(scene.load_image(1), expected, atol=1e-6)
    assert scene.load_image(1, keep_alpha=True).shape == (8, 10, 4)


# --------------------------------------------------------------------------------------------------
# instant-ngp


def test_ngp_intrinsics_distortion_and_per_frame_override(tmp_path):
    poses = make_transforms_scene(tmp_path, "instant-ngp", count=3,
                                  extra={"k1": 0.01, "k2": -0.002, "p1": 0.0005, "p2": 0.0})
    rewrite(tmp_path / "transforms.json", frame0={"fl_x": 11.0, "cx": 4.5})
    scene = read_scene(tmp_path)
    assert scene.source_format == "instant-ngp"
    assert_poses(scene, poses)
    first, second = scene.frames[0].camera, scene.frames[1].camera
    assert (first.fx, first.fy, first.cx, first.cy) == (11.0, 9.5, 4.5, 4.0)
    assert (second.fx, second.fy, second.cx, second.cy) == (9.0, 9.5, 5.0, 4.0)
    assert second.model == "OPENCV" and second.distortion == {"k1": 0.01, "k2": -0.002, "p1": 0.0005, "p2": 0.0}
    assert scene.aabb is None


@pytest.mark.parametrize("extra, lo, hi", [
    ({"aabb_scale": 4}, [-2 / 0.33] * 3, [2 / 0.33] * 3),
    ({"aabb_scale": 16, "scale": 0.5, "offset": [0.5, 0.0, 1.0]}, [-16.0, -15.0, -17.0], [16.0, 17.0, 15.0]),
])
def test_ngp_aabb(tmp_path, extra, lo, hi):
    """instant-ngp's box: p * scale + offset fills [0.5 - s/2, 0.5 + s/2]^3 for aabb_scale s."""
    make_transforms_scene(tmp_path, "instant-ngp", count=2, extra=extra)
    scene = read_scene(tmp_path)
    np.testing.assert_allclose(scene.aabb, [lo, hi])
    normalised = load_scene(tmp_path)
    np.testing.assert_allclose(normalised.normalization.to_original(normalised.aabb), [lo, hi])


def test_ngp_size_from_image_and_angle(tmp_path):
    make_transforms_scene(tmp_path, "instant-ngp", count=2, width=12, height=6)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    for key in ("w", "h", "fl_x", "fl_y", "cx", "cy"):
        del meta[key]
    meta["camera_angle_x"] = 1.0
    meta["aabb_scale"] = 1
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    camera = read_scene(tmp_path).frames[0].camera
    assert (camera.width, camera.height, camera.cx, camera.cy) == (12, 6, 6.0, 3.0)
    assert camera.fx == pytest.approx(6.0 / math.tan(0.5)) == camera.fy


# --------------------------------------------------------------------------------------------------
# nerfstudio


def write_point_ply(path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    from plyfile import PlyData, PlyElement

    vertex = np.empty(len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"),
                                       ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, name in enumerate("xyz"):
        vertex[name] = xyz[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        vertex[name] = rgb[:, i]
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))


def test_nerfstudio_fisheye_masks_points_and_split(tmp_path, seed):
    rng = np.random.default_rng(seed)
    xyz, rgb = rng.normal(size=(30, 3)).astype(np.float32), rng.integers(0, 256, (30, 3)).astype(np.uint8)
    write_point_ply(tmp_path / "sparse_pc.ply", xyz, rgb)
    poses = make_transforms_scene(tmp_path, "nerfstudio", count=4, extra={
        "camera_model": "OPENCV_FISHEYE", "k1": 0.03, "k2": 0.005, "k3": 0.0006, "k4": 0.0001,
        "ply_file_path": "sparse_pc.ply",
        "train_filenames": ["images/r_0.png", "images/r_2.png", "images/r_3.png"], "test_filenames": ["images/r_1.png"]})
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["frames"] = meta["frames"][::-1]  # nerfstudio sorts frames by file name
    meta["frames"][0].update({"w": 20, "h": 16, "fl_x": 18.0, "fl_y": 19.0, "cx": 10.0, "cy": 8.0,
                              "mask_path": "masks/r_3.png"})
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    write_image(tmp_path / "images" / "r_3.png", 20, 16)
    write_image(tmp_path / "masks" / "r_3.png", 20, 16, channels=1)
    scene = read_scene(tmp_path)
    assert scene.source_format == "nerfstudio"
    assert [f.image_path.name for f in scene.frames] == ["r_0.png", "r_1.png", "r_2.png", "r_3.png"]
    assert_poses(scene, poses)
    assert scene.train_indices == [0, 2, 3] and scene.test_indices == [1]
    cams = [f.camera for f in scene.frames]
    assert cams[0].model == "OPENCV_FISHEYE"
    assert cams[0].distortion == {"k1": 0.03, "k2": 0.005, "k3": 0.0006, "k4": 0.0001}
    assert (cams[0].width, cams[0].fx, cams[3].width, cams[3].height, cams[3].fy) == (10, 9.0, 20, 16, 19.0)
    assert scene.frames[3].mask_path == tmp_path / "masks" / "r_3.png" and scene.frames[0].mask_path is None
    np.testing.assert_array_equal(scene.points, xyz)
    np.testing.assert_array_equal(scene.point_colors, rgb)
    loaded = load_scene(tmp_path)
    assert loaded.load_mask(3).shape == (16, 20) and loaded.load_mask(0) is None


def test_nerfstudio_opencv_with_k3_and_pinhole(tmp_path):
    make_transforms_scene(tmp_path, "nerfstudio", count=2, extra={"k1": 0.1, "k3": 0.01})
    camera = read_scene(tmp_path).frames[0].camera
    assert camera.model == "FULL_OPENCV" and camera.distortion["k3"] == 0.01 and camera.distortion["k1"] == 0.1
    rewrite(tmp_path / "transforms.json", camera_model="PINHOLE", k1=0.0, k3=0.0)
    camera = read_scene(tmp_path).frames[0].camera
    assert camera.model == "PINHOLE" and camera.distortion == {}


# --------------------------------------------------------------------------------------------------
# Dialects and bad files


def test_detect_dialect(tmp_path):
    frames = [{"file_path": "a", "transform_matrix": np.eye(4).tolist()}]
    assert detect_dialect({"camera_angle_x": 0.7, "frames": frames}, tmp_path) == "blender"
    assert detect_dialect({"camera_angle_x": 0.7, "fl_x": 3, "frames": frames}, tmp_path) == "instant-ngp"
    assert detect_dialect({"frames": [{**frames[0], "fl_x": 3}]}, tmp_path) == "instant-ngp"
    assert detect_dialect({"fl_x": 3, "camera_model": "OPENCV", "frames": frames}, tmp_path) == "nerfstudio"
    with pytest.raises(ReconError, match="unknown transforms.json dialect"):
        detect_dialect({"frames": frames}, tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"frame0": {"transform_matrix": [[float("nan")] * 4] * 4}}, r"the transform_matrix of r_0.png is not a finite"),
    ({"frame0": {"transform_matrix": (2 * np.eye(4)).tolist()}}, r"r_0.png does not hold a rotation"),
    ({"camera_model": "EQUIRECTANGULAR"}, r"unsupported camera_model EQUIRECTANGULAR \(supported: SIMPLE_PINHOLE"),
    ({"frame0": {"fl_x": "wide"}}, r"bad camera values for r_0.png"),
    ({"frames": []}, r"no \"frames\" list"),
    ({"frames": [{}]}, r"frame 0 needs \"file_path\" and \"transform_matrix\""),
    ({"train_filenames": ["images/r_9.png"], "test_filenames": []}, r"train_filenames names images/r_9.png"),
])
def test_bad_transforms(tmp_path, change, message):
    make_transforms_scene(tmp_path, "nerfstudio", count=2)
    rewrite(tmp_path / "transforms.json", **change)
    with pytest.raises(ReconError, match=rf"transforms.json: .*{message}"):
        load_scene(tmp_path)


def test_invalid_json_and_missing_focal(tmp_path):
    make_transforms_scene(tmp_path, "blender", count=2)
    path = tmp_path / "transforms_train.json"
    meta = json.loads(path.read_text())
    path.write_text(path.read_text()[:-5])
    with pytest.raises(ReconError, match=r"transforms_train.json: invalid JSON \("):
        load_scene(tmp_path)
    meta["fl_y"] = 5.0  # instant-ngp keys, but no fl_x / camera_angle_x
    del meta["camera_angle_x"]
    path.write_text(json.dumps(meta))
    with pytest.raises(ReconError, match=r"transforms_train.json: no focal length for r_0.png"):
        load_scene(tmp_path)


def test_nerfstudio_masks_in_any_format_reach_the_gaussian_trainer(tmp_path, seed):
    """``mask_path`` masks as RGB JPEG (twice the image size) and 16-bit PNG; a size mismatch names both files."""
    import torch

    from recon.engine.train.distributed import Group
    from recon.engine.train.gaussians import CONFIG, _train_views

    rng = np.random.default_rng(seed)
    make_transforms_scene(tmp_path, "nerfstudio", count=4, width=20, height=16)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    half = np.zeros((16, 20), bool)
    half[:, :10] = True  # left half: no JPEG edge noise survives a 2x area average into a 0.5 decision
    jpeg = np.repeat(np.repeat(half, 2, 0), 2, 1)
    (tmp_path / "masks").mkdir()
    colour = np.zeros((32, 40, 3), np.uint8)
    colour[jpeg] = (rng.integers(150, 256), 0, 0)  # a red mask on black
    iio.imwrite(tmp_path / "masks" / "r_1.png.jpg", colour, quality=70)
    sixteen = (rng.random((16, 20)) * 65535).astype(np.uint16)
    iio.imwrite(tmp_path / "masks" / "r_2.png", sixteen)
    meta["frames"][1]["mask_path"] = "masks/r_1.png.jpg"
    meta["frames"][2]["mask_path"] = "masks/r_2.png"
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene(tmp_path, test_every=0)
    assert scene.load_mask(0) is None
    np.testing.assert_array_equal(scene.load_mask(1) >= 0.5, half)
    np.testing.assert_array_equal(scene.load_mask(2), (sixteen / 65535.0 >= 0.5).astype(np.float32))
    np.testing.assert_array_equal(scene.load_mask(2, 0.8), (sixteen / 65535.0 >= 0.8).astype(np.float32))

    views = _train_views(scene, CONFIG(mask_threshold=0.8, init_points=10), Group(0, 1, torch.device("cpu")))
    fetched = views.store.fetch([0, 2])
    assert fetched[0][1] is None
    np.testing.assert_array_equal(fetched[1][1][..., 0].numpy(), (sixteen / 65535.0 >= 0.8).astype(np.float32))

    iio.imwrite(tmp_path / "masks" / "r_2.png", sixteen[:, :19])
    with pytest.raises(ReconError) as err:
        load_scene(tmp_path, test_every=0).load_mask(2)
    assert "\n" not in str(err.value) and "masks/r_2.png" in str(err.value) and "images/r_2.png" in str(err.value)
