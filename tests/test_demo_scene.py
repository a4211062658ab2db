"""The procedural demo scene: determinism, Blender-dialect files, masks, true geometry and meshes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.engine.errors import ReconError
from recon.engine.io.images import read_image
from recon.engine.scene.demo import demo_geometry, sphere_trace, write_demo_scene
from recon.engine.io.mesh import write_mesh
from recon.engine.scene.primitives import (SceneObject, load_geometry, object_mesh, surface_distance)

VIEWS, RESOLUTION = 10, 40


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    return write_demo_scene(tmp_path_factory.mktemp("demo") / "scene", seed=5, views=VIEWS, resolution=RESOLUTION)


def _frames(root: Path) -> list[tuple[str, dict, float]]:
    """(split, frame, camera_angle_x) of every frame in the transforms files."""
    out = []
    for split in ("train", "test"):
        data = json.loads((root / f"transforms_{split}.json").read_text())
        out += [(split, frame, data["camera_angle_x"]) for frame in data["frames"]]
    return out


def _pixel_rays(c2w: np.ndarray, angle_x: float, size: int, pixels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres [N, 2] (x, y) of a Blender-dialect camera (OpenGL c2w, looks down -z)."""
    focal = 0.5 * size / math.tan(0.5 * angle_x)
    x = (pixels[:, 0] + 0.5 - 0.5 * size) / focal
    y = (pixels[:, 1] + 0.5 - 0.5 * size) / focal
    local = np.stack([x, -y, -np.ones_like(x)], axis=1)
    directions = local @ c2w[:3, :3].T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    origins = np.broadcast_to(c2w[:3, 3], directions.shape)
    return torch.tensor(origins, dtype=torch.float32), torch.tensor(directions, dtype=torch.float32)


def test_blender_dialect_files(scene_dir):
    frames = _frames(scene_dir)
    assert len(frames) == VIEWS
    names = sorted(Path(f["file_path"]).name for _, f, _ in frames)
    assert names == [f"{i:04d}" for i in range(VIEWS)]
    for split, frame, angle_x in frames:
        assert frame["file_path"].startswith("./images/") and not frame["file_path"].endswith(".png")
        assert (split == "test") == (int(Path(frame["file_path"]).name) % 8 == 0)
        assert 0.3 < angle_x < 1.5
        image = read_image(scene_dir / (frame["file_path"] + ".png"))
        assert image.shape == (RESOLUTION, RESOLUTION, 4)


def test_cameras_look_at_origin_from_a_sphere(scene_dir):
    for _, frame, _ in _frames(scene_dir):
        c2w = np.asarray(frame["transform_matrix"])
        rotation, position = c2w[:3, :3], c2w[:3, 3]
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        assert 3.5 <= np.linalg.norm(position) <= 4.0
        forward = -rotation[:, 2]  # OpenGL cameras look down their -z axis
        np.testing.assert_allclose(forward, -position / np.linalg.norm(position), atol=1e-9)
        assert rotation[2, 1] > 0.0  # image up points towards world +z


def test_masks_partition_the_covered_pixels(scene_dir):
    geometry = load_geometry(scene_dir / "geometry.json")
    for _, frame, _ in _frames(scene_dir):
        name = Path(frame["file_path"]).name
        alpha = read_image(scene_dir / "images" / f"{name}.png")[..., 3]
        masks = np.stack([read_image(scene_dir / "masks" / n / f"{name}.png")[..., 0] for n in geometry.names])
        assert masks.shape[1:] == alpha.shape
        assert set(np.unique(masks)) <= {0.0, 1.0}
        assert masks.sum(0).max() <= 1.0  # one object per pixel
        np.testing.assert_array_equal(masks.sum(0) > 0, alpha > 0.5)
    assert 0.0 < alpha.mean() < 0.6 and alpha[0].max() == 0.0  # objects in view, a transparent border


def test_deterministic_for_a_seed(tmp_path, seed):
    seed = seed % 1000
    first = write_demo_scene(tmp_path / "a", seed=seed, views=3, resolution=16)
    second = write_demo_scene(tmp_path / "b", seed=seed, views=3, resolution=16)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert len(files) == 3 * 5 + 2 + 4 + 1
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    other = write_demo_scene(tmp_path / "c", seed=seed + 1, views=3, resolution=16)
    assert (other / "geometry.json").read_bytes() != (first / "geometry.json").read_bytes()


def test_retraced_pixels_hit_the_true_surface(scene_dir):
    """Rays through fully covered pixels hit the object of the mask, on its zero set, at the analytic
    depth for the sphere; rays through empty pixels miss."""
    geometry = load_geometry(scene_dir / "geometry.json")
    sphere = geometry.objects[geometry.names.index("sphere")]
    checked_sphere = 0
    for _, frame, angle_x in _frames(scene_dir)[:4]:
        name = Path(frame["file_path"]).name
        alpha = read_image(scene_dir / "images" / f"{name}.png")[..., 3]
        owner = np.stack([read_image(scene_dir / "masks" / n / f"{name}.png")[..., 0]
                          for n in geometry.names]).argmax(0)
        ys, xs = np.nonzero(alpha == 1.0)
        ey, ex = np.nonzero(alpha == 0.0)
        pixels = np.concatenate([np.stack([xs, ys], 1), np.stack([ex, ey], 1)[::7]])
        origins, directions = _pixel_rays(np.asarray(frame["transform_matrix"]), angle_x, RESOLUTION, pixels)
        t, index = sphere_trace(geometry, origins, directions)
        full = len(xs)
        np.testing.assert_array_equal(index[:full].numpy(), owner[ys, xs])
        assert (index[full:] == -1).all()
        points = origins[:full] + t[:full, None] * directions[:full]
        distance, nearest = surface_distance(points, geometry)
        assert distance.max() < 2e-4
        np.testing.assert_array_equal(nearest.numpy(), owner[ys, xs])
        # Independent check on the sphere: the analytic nearest ray-sphere intersection.
        on_sphere = index[:full] == geometry.names.index("sphere")
        o, d = origins[:full][on_sphere].double(), directions[:full][on_sphere].double()
        oc = o - torch.as_tensor(sphere.center)
        b = (oc * d).sum(1)
        t_true = -b - torch.sqrt(b * b - (oc * oc).sum(1) + sphere.params["radius"] ** 2)
        # Sphere tracing stops short of the surface by at most about epsilon / cos(incidence).
        normal = torch.nn.functional.normalize(oc + t_true[:, None] * d, dim=1)
        gap = (t_true - t[:full][on_sphere].double()) * (normal * d).sum(1).abs()
        assert gap.max() < 2e-4 and gap.min() > -1e-5
        checked_sphere += int(on_sphere.sum())
    assert checked_sphere > 0


def _edges(faces: np.ndarray) -> np.ndarray:
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def test_meshes_are_watertight_outward_and_on_the_surface(scene_dir):
    from plyfile import PlyData

    geometry = load_geometry(scene_dir / "geometry.json")
    for obj in geometry.objects:
        ply = PlyData.read(str(scene_dir / "meshes" / f"{obj.name}.ply"))
        vertices = np.stack([ply["vertex"][c] for c in "xyz"], 1).astype(np.float64)
        normals = np.stack([ply["vertex"][c] for c in ("nx", "ny", "nz")], 1).astype(np.float64)
        faces = np.stack(ply["face"]["vertex_indices"]).astype(np.int64)
        assert np.abs(obj.sdf(torch.tensor(vertices)).numpy()).max() < 1e-5, obj.name
        directed, counts = np.unique(_edges(faces), axis=0, return_counts=True)
        assert counts.max() == 1, obj.name  # no edge used twice in one direction ...
        reverse = {tuple(e) for e in directed[:, ::-1]}
        assert all(tuple(e) in reverse for e in directed), obj.name  # ... and each edge has its twin
        a, b, c = (vertices[faces[:, k]] for k in range(3))
        face_normals = np.cross(b - a, c - a)
        assert (np.einsum("ij,ij->i", face_normals, normals[faces].sum(1)) > 0).all(), obj.name
        volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
        assert volume == pytest.approx(_analytic_volume(obj), rel=0.02), obj.name
        bounds = np.asarray(json.loads((scene_dir / "geometry.json").read_text())["objects"][
            geometry.names.index(obj.name)]["bounds"])
        assert (vertices.min(0) >= bounds[0] - 1e-6).all() and (vertices.max(0) <= bounds[1] + 1e-6).all()
        np.testing.assert_allclose(vertices.min(0), bounds[0], atol=5e-3)
        np.testing.assert_allclose(vertices.max(0), bounds[1], atol=5e-3)


def _analytic_volume(obj: SceneObject) -> float:
    p = obj.params
    if obj.kind == "sphere":
        return 4.0 / 3.0 * math.pi * p["radius"] ** 3
    if obj.kind == "capsule":
        return 4.0 / 3.0 * math.pi * p["radius"] ** 3 + math.pi * p["radius"] ** 2 * 2 * p["half_length"]
    if obj.kind == "torus":
        return 2.0 * math.pi ** 2 * p["major_radius"] * p["minor_radius"] ** 2
    e, r = obj.inflated_box()  # box + 3 pairs of face slabs + 12 quarter-cylinder edges + 8 sphere corners
    return (8 * e.prod() + 2 * r * 4 * (e[0] * e[1] + e[1] * e[2] + e[0] * e[2])
            + math.pi * r ** 2 * 2 * e.sum() + 4.0 / 3.0 * math.pi * r ** 3)


def test_surface_distance_is_exact_along_normals(seed):
    geometry = demo_geometry(seed % 1000)
    generator = torch.Generator().manual_seed(seed)
    for k, obj in enumerate(geometry.objects):
        vertices, _, normals = object_mesh(obj, edge_length=0.1)
        offset = torch.rand(len(vertices), 1, generator=generator, dtype=torch.float64) * 0.04 - 0.02
        points = torch.tensor(vertices) + offset * torch.tensor(normals)
        distance, index = surface_distance(points, geometry)
        assert (index == k).all(), obj.name
        np.testing.assert_allclose(distance.numpy(), offset.abs()[:, 0].numpy(), atol=1e-9)
        signed = obj.sdf(points)
        np.testing.assert_allclose(signed.numpy(), offset[:, 0].numpy(), atol=1e-9)


def test_objects_are_apart_and_within_the_unit_box():
    for seed in range(50):
        geometry = demo_geometry(seed)
        assert len(geometry.objects) == 4
        assert (np.abs(geometry.bounds) <= 1.0).all(), seed


def test_refuses_a_foreign_folder_and_replaces_an_earlier_scene(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ReconError, match="foreign"):
        write_demo_scene(foreign, views=2, resolution=8)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ReconError, match="not a folder"):
        write_demo_scene(a_file, views=2, resolution=8)

    scene = write_demo_scene(tmp_path / "scene", seed=1, views=2, resolution=8)
    (scene / "stale.txt").write_text("from an earlier run")
    write_demo_scene(scene, seed=2, views=3, resolution=8)
    assert not (scene / "stale.txt").exists()
    assert json.loads((scene / "geometry.json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "foreign", "scene"]  # no temporary left


def test_writes_into_an_empty_current_folder_but_does_not_replace_it(tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    write_demo_scene(".", views=2, resolution=8)
    assert (here / "geometry.json").is_file() and Path.cwd().samefile(here)
    with pytest.raises(ReconError, match="holds the current folder"):
        write_demo_scene(".", views=2, resolution=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_load_geometry_names_the_file_on_bad_input(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ReconError, match="missing.json"):
        load_geometry(missing)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ReconError, match="other.json: not a recon geometry"):
        load_geometry(other)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"format": "recon-demo-geometry", "objects": [{"name": "x", "type": "cone"}]}))
    with pytest.raises(ReconError, match="broken.json: bad object"):
        load_geometry(broken)


def test_mesh_ply_round_trip(tmp_path):
    from plyfile import PlyData

    obj = SceneObject("t", "torus", {"major_radius": 0.5, "minor_radius": 0.2}, np.zeros(3))
    vertices, faces, normals = object_mesh(obj, edge_length=0.2)
    write_mesh(tmp_path / "t.ply", vertices, faces, normals)
    ply = PlyData.read(str(tmp_path / "t.ply"))
    np.testing.assert_array_equal(np.stack(ply["face"]["vertex_indices"]), faces)
    np.testing.assert_allclose(np.stack([ply["vertex"][c] for c in "xyz"], 1), vertices, atol=1e-6)


def test_loads_as_a_demo_scene_with_consistent_cameras(scene_dir):
    """The scene loader reads the files as a Blender-dialect demo scene; surface points the pixels see
    project back onto those pixels through the loaded, normalised cameras."""
    from recon.engine.scene.load import load_scene

    scene = load_scene(scene_dir)
    assert scene.source_format == "demo"
    assert sorted(f.image_path.name for f in scene.test_frames) == ["0000.png", "0008.png"]
    assert len(scene.train_frames) == VIEWS - 2
    geometry = load_geometry(scene_dir / "geometry.json")
    angle_x = json.loads((scene_dir / "transforms_train.json").read_text())["camera_angle_x"]
    for split, frame, _ in _frames(scene_dir)[:3]:
        loaded = next(f for f in scene.frames if f.image_path.stem == Path(frame["file_path"]).name)
        alpha = read_image(loaded.image_path)[..., 3]
        ys, xs = np.nonzero(alpha == 1.0)
        origins, directions = _pixel_rays(np.asarray(frame["transform_matrix"]), angle_x, RESOLUTION,
                                          np.stack([xs, ys], 1))
        t, index = sphere_trace(geometry, origins, directions)
        assert (index >= 0).all()
        points = scene.normalization.to_normalized((origins + t[:, None] * directions).double().numpy())
        camera = loaded.camera
        in_camera = points @ camera.world_to_camera[:3, :3].T + camera.world_to_camera[:3, 3]
        projected = in_camera @ camera.K.T
        pixels = projected[:, :2] / projected[:, 2:]
        np.testing.assert_allclose(pixels, np.stack([xs, ys], 1) + 0.5, atol=1e-3)
