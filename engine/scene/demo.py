"""The built-in demo scene: four textured primitives sphere-traced from cameras on a sphere.

Everything about it is known, so later stages can measure against the truth: images (RGBA, alpha is
the supersampled coverage), Blender-dialect ``transforms_train.json`` / ``transforms_test.json`` (with a
real lens, ``lens="opencv"`` or ``"fisheye"``: the images are traced through the true distortion and the
files are in the nerfstudio dialect, which carries ``camera_model`` and its coefficients),
per-object masks ``masks/<object>/<image>.png``, ``geometry.json`` (the exact SDF parameters, read back
with ``primitives.load_geometry``) and an analytic mesh per object in ``meshes/<object>.ply``.
Shading is baked (Lambertian + ambient from a fixed light), so every view agrees on a point's colour.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.io.atomic import replace_folder, write_json_atomic
from recon.engine.io.images import write_image
from recon.engine.scene.camera import Camera, opengl_to_opencv
from recon.engine.io.mesh import write_mesh
from recon.engine.scene.primitives import (Geometry, SceneObject, load_geometry, object_mesh, scene_sdf)
from recon.engine.scene.undistort import pixel_directions

CAMERA_DISTANCE = 3.8
TEST_EVERY = 8
LIGHT = {"direction": [0.4, 0.3, 0.866], "ambient": 0.3, "diffuse": 0.7}
HIT_EPSILON = 1e-4
MAX_STEPS = 96
VIEWS_PER_BATCH = 8  # views sphere-traced together (about 1.2M rays at 128 px, 3x3 samples)
# Object layout: centres near the corners of a tetrahedron, so no two objects touch for any seed.
_CORNER = 0.42
_JITTER = 0.03
# Lenses of the demo: (camera model, coefficients). The focal length is the pinhole demo's in every case.
LENSES = {
    "pinhole": ("PINHOLE", {}),
    "opencv": ("OPENCV", {"k1": -0.3, "k2": 0.08, "p1": 0.002, "p2": -0.0015}),  # a phone-like barrel lens
    "fisheye": ("OPENCV_FISHEYE", {"k1": -0.25, "k2": 0.08, "k3": -0.02, "k4": 0.004}),
}


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation [3, 3] (from a random unit quaternion)."""
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def demo_geometry(seed: int = 0) -> Geometry:
    """The four demo objects; ``seed`` jitters their positions and picks their orientations."""
    rng = np.random.default_rng(seed)
    a = _CORNER
    specs = [
        ("sphere", "sphere", {"radius": 0.42}, (a, a, a),
         {"type": "stripes", "colors": [[0.90, 0.35, 0.20], [0.95, 0.85, 0.40]], "axis": [0.0, 0.0, 1.0],
          "period": 0.3}),
        ("box", "rounded_box", {"half_extents": [0.32, 0.32, 0.32], "radius": 0.08}, (a, -a, -a),
         {"type": "checker", "colors": [[0.20, 0.45, 0.85], [0.85, 0.90, 0.95]], "cell": 0.2, "sharpness": 3.0}),
        ("torus", "torus", {"major_radius": 0.38, "minor_radius": 0.13}, (-a, a, -a),
         {"type": "rings", "colors": [[0.25, 0.70, 0.30], [0.90, 0.90, 0.55]], "count": 6}),
        ("capsule", "capsule", {"half_length": 0.3, "radius": 0.16}, (-a, -a, a),
         {"type": "gradient", "colors": [[0.55, 0.25, 0.75], [0.95, 0.60, 0.75]], "axis": [0.0, 1.0, 0.0],
          "range": [-0.46, 0.46]}),
    ]
    objects = tuple(SceneObject(name=name, kind=kind, params=params,
                                center=np.asarray(corner) + rng.uniform(-_JITTER, _JITTER, 3),
                                rotation=_random_rotation(rng), texture=texture)
                    for name, kind, params, corner, texture in specs)
    for i, first in enumerate(objects):
        for second in objects[i + 1:]:
            gap = np.linalg.norm(first.center - second.center) - first.bounding_radius - second.bounding_radius
            assert gap > 0.05, f"{first.name} and {second.name} may touch"
    return Geometry(objects=objects, light=dict(LIGHT))


def look_at_origin(position: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world [4, 4] at ``position`` [3] looking at the origin with world +z up."""
    back = position / np.linalg.norm(position)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(back, right), back, position
    return c2w


def fibonacci_poses(views: int, distance: float, azimuth: float = 0.0) -> np.ndarray:
    """OpenGL camera-to-world matrices [views, 4, 4] spread evenly over a sphere around the origin."""
    z = 1.0 - (2.0 * np.arange(views) + 1.0) / views
    phi = azimuth + np.arange(views) * math.pi * (3.0 - math.sqrt(5.0))
    ring = np.sqrt(1.0 - z * z)
    positions = distance * np.stack([ring * np.cos(phi), ring * np.sin(phi), z], axis=1)
    return np.stack([look_at_origin(p) for p in positions])


def camera_angle_x(geometry: Geometry, distance: float) -> float:
    """Horizontal field of view (radians) that just holds the scene's bounding sphere, with a 2% margin."""
    radius = max(float(np.linalg.norm(o.center)) + o.bounding_radius for o in geometry.objects)
    return 2.0 * math.atan(1.02 * radius / math.sqrt(distance ** 2 - radius ** 2))


def blender_camera(c2w_opengl: np.ndarray, angle_x: float, resolution: int, lens: str = "pinhole") -> Camera:
    """The Camera a Blender-dialect loader builds: square pixels, principal point at the image centre; with
    the distortion of ``LENSES[lens]``."""
    focal = 0.5 * resolution / math.tan(0.5 * angle_x)
    model, distortion = LENSES[lens]
    return Camera(width=resolution, height=resolution, fx=focal, fy=focal, cx=0.5 * resolution,
                  cy=0.5 * resolution, world_to_camera=opengl_to_opencv(c2w_opengl), model=model,
                  distortion=dict(distortion))


def camera_rays(camera: Camera, supersample: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 ray origins and unit directions [H*s, W*s, 3] through ``supersample``^2 points per pixel.

    Sub-pixel (row-major) ``[y*s + j, x*s + i]`` passes through image point (x + (i + 0.5)/s, y + (j + 0.5)/s),
    through the camera's lens (exact inverse of its distortion).
    """
    s = supersample
    u = (torch.arange(camera.width * s, dtype=torch.float64) + 0.5) / s
    v = (torch.arange(camera.height * s, dtype=torch.float64) + 0.5) / s
    y, x = torch.meshgrid(v, u, indexing="ij")
    if camera.is_pinhole:
        local = torch.stack([(x - camera.cx) / camera.fx, (y - camera.cy) / camera.fy, torch.ones_like(x)], dim=-1)
    else:
        local = torch.from_numpy(pixel_directions(torch.stack([x, y], dim=-1).numpy(), camera))
    c2w = torch.from_numpy(camera.camera_to_world)
    directions = local @ c2w[:3, :3].T
    directions = directions / torch.linalg.norm(directions, dim=-1, keepdim=True)
    origins = c2w[:3, 3].expand_as(directions)
    return origins.float(), directions.float()


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: sphere tracing is thousands of small ops, and on a busy shared CPU the
    thread hand-offs cost more than they gain (64 views: 26 s on 1 thread, 282 s on 2, at load 10)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@_one_torch_thread()
def sphere_trace(geometry: Geometry, origins: torch.Tensor, directions: torch.Tensor, *,
                 max_steps: int = MAX_STEPS, epsilon: float = HIT_EPSILON) -> tuple[torch.Tensor, torch.Tensor]:
    """March rays (origins, unit directions [N, 3]) through the scene SDF.

    Returns the hit distance along each ray [N] and the object index hit [N] (-1 for a miss). Rays start
    where they first enter an object's bounding sphere (rays that enter none miss at once) and stop once
    the SDF is below ``epsilon``; rays still marching after ``max_steps`` (a few grazing ones) count as
    misses.
    """
    t, t_far = _bounding_sphere_span(geometry, origins, directions)
    index = torch.full(t.shape, -1, dtype=torch.long, device=t.device)
    active = torch.nonzero(t < t_far).squeeze(1)
    for _ in range(max_steps):
        if active.numel() == 0:
            break
        distance, nearest = scene_sdf(origins[active] + t[active, None] * directions[active], geometry.objects)
        hit = distance < epsilon
        index[active[hit]] = nearest[hit]
        t[active] += torch.where(hit, torch.zeros_like(distance), distance)
        active = active[~hit & (t[active] < t_far[active])]
    return t, index


def _bounding_sphere_span(geometry: Geometry, origins: torch.Tensor, directions: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where rays [N, 3] first enter and last leave the objects' bounding spheres, [N] each (enter >= leave:
    the ray meets no sphere)."""
    enter = torch.full(origins.shape[:1], math.inf, dtype=origins.dtype, device=origins.device)
    leave = torch.zeros_like(enter)
    for obj in geometry.objects:
        offset = origins - torch.as_tensor(obj.center, dtype=origins.dtype, device=origins.device)
        b = (offset * directions).sum(-1)
        disc = b * b - (offset * offset).sum(-1) + (obj.bounding_radius + 1e-3) ** 2
        root = disc.clamp(min=0.0).sqrt()
        meets = disc > 0
        enter = torch.where(meets, torch.minimum(enter, (-b - root).clamp(min=0.0)), enter)
        leave = torch.where(meets, torch.maximum(leave, -b + root), leave)
    return enter, leave


def shade(obj: SceneObject, points: torch.Tensor, light: dict) -> torch.Tensor:
    """Baked colour [N, 3] of world points [N, 3] on ``obj``: texture times (ambient + diffuse * n.l)."""
    points = points.detach().requires_grad_(True)
    with torch.enable_grad():
        (normals,) = torch.autograd.grad(obj.sdf(points).sum(), points)
    normals = torch.nn.functional.normalize(normals, dim=1)
    to_light = torch.nn.functional.normalize(torch.tensor(light["direction"], dtype=points.dtype), dim=0)
    lambert = light["ambient"] + light["diffuse"] * (normals @ to_light).clamp(min=0.0)
    return texture_albedo(obj.texture, obj.to_local(points.detach())) * lambert[:, None]


def texture_albedo(texture: dict, local: torch.Tensor) -> torch.Tensor:
    """Albedo [N, 3] of a smooth object-space texture at object coordinates [N, 3]."""
    kind = texture["type"]
    if kind == "stripes":
        axis = torch.tensor(texture["axis"], dtype=local.dtype)
        mix = 0.5 + 0.5 * torch.sin(2.0 * math.pi * (local @ axis) / texture["period"])
    elif kind == "checker":
        wave = torch.sin(math.pi * local / texture["cell"]).prod(dim=1)
        mix = 0.5 + 0.5 * torch.tanh(texture["sharpness"] * wave)
    elif kind == "rings":
        mix = 0.5 + 0.5 * torch.sin(texture["count"] * torch.atan2(local[:, 2], local[:, 0]))
    elif kind == "gradient":
        low, high = texture["range"]
        axis = torch.tensor(texture["axis"], dtype=local.dtype)
        mix = ((local @ axis - low) / (high - low)).clamp(0.0, 1.0)
    else:
        raise ValueError(f"unknown texture type {kind!r}")
    first, second = torch.tensor(texture["colors"], dtype=local.dtype)
    return first + mix[:, None] * (second - first)


def render_views(geometry: Geometry, cameras: list[Camera], supersample: int = 3
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Render views of one size together: straight-alpha RGBA float32 [V, H, W, 4] and per-object
    coverage float32 [V, K, H, W] (the fraction of each pixel's sub-samples that see object k)."""
    s, h, w, k = supersample, cameras[0].height, cameras[0].width, len(geometry.objects)
    rays = [camera_rays(c, s) for c in cameras]
    origins = torch.cat([o.reshape(-1, 3) for o, _ in rays])
    directions = torch.cat([d.reshape(-1, 3) for _, d in rays])
    t, index = sphere_trace(geometry, origins, directions)
    color = torch.zeros_like(origins)
    for i, obj in enumerate(geometry.objects):
        hits = torch.nonzero(index == i).squeeze(1)
        if hits.numel():
            color[hits] = shade(obj, origins[hits] + t[hits, None] * directions[hits], geometry.light)
    onehot = torch.nn.functional.one_hot(index + 1, k + 1)[:, 1:].float()  # [N, K]; misses are all zero
    coverage = onehot.reshape(-1, h, s, w, s, k).mean(dim=(2, 4))  # [V, H, W, K]
    alpha = coverage.sum(-1, keepdim=True)
    color_sum = (color * (index >= 0)[:, None]).reshape(-1, h, s, w, s, 3).sum(dim=(2, 4))
    rgb = color_sum / (alpha * s * s).clamp(min=1.0)
    rgba = torch.cat([rgb.clamp(0.0, 1.0), alpha], dim=-1)
    return rgba.numpy(), coverage.permute(0, 3, 1, 2).contiguous().numpy()


def object_masks(coverage: np.ndarray) -> np.ndarray:
    """Binary masks [K, H, W]: pixels at least half covered, given to the object covering most of them."""
    covered = coverage.sum(0) >= 0.5
    owner = coverage.argmax(0)
    return np.stack([covered & (owner == k) for k in range(len(coverage))])


def _check_output_folder(out: Path) -> None:
    """Refuse a file, or a non-empty folder that is not an earlier demo scene (which may be replaced)."""
    if out.exists() and not out.is_dir():
        raise ReconError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            load_geometry(out / "geometry.json")
        except ReconError:
            raise ReconError(f"{out}: folder is not empty and holds no earlier demo scene; "
                             "choose an empty or new folder") from None
        if Path.cwd().resolve().is_relative_to(out.resolve()):
            raise ReconError(f"{out}: replacing an earlier demo scene that holds the current folder; "
                             "run from outside it")


def write_demo_scene(out: str | os.PathLike, *, seed: int = 0, views: int = 64, resolution: int = 128,
                     supersample: int = 3, lens: str = "pinhole") -> Path:
    """Write the demo scene into ``out`` (built beside it, then renamed into place) and return its path.

    An existing ``out`` must be empty or an earlier demo scene, which is replaced as a whole. ``lens`` (a key
    of ``LENSES``) renders every view through that lens model.
    """
    out = Path(out)
    if seed < 0 or views < 2 or resolution < 8 or supersample < 1:
        raise ReconError(f"{out}: need seed >= 0, at least 2 views, a resolution of at least 8 pixels "
                         "and supersample >= 1")
    if lens not in LENSES:
        raise ReconError(f"{out}: unknown lens {lens!r}; choose one of {', '.join(LENSES)}")
    _check_output_folder(out)
    target = out.resolve()  # a name to build beside, also for "." or "scene/.."
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with _one_torch_thread():
            _write_scene_files(build, seed=seed, views=views, resolution=resolution, supersample=supersample,
                               lens=lens)
        replace_folder(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return out


def _write_scene_files(root: Path, *, seed: int, views: int, resolution: int, supersample: int,
                       lens: str = "pinhole") -> None:
    """Every file of the scene into the (new, empty) folder ``root``."""
    geometry = demo_geometry(seed)
    angle_x = camera_angle_x(geometry, CAMERA_DISTANCE)
    azimuth = float(np.random.default_rng([seed, 1]).uniform(0.0, 2.0 * math.pi))
    poses = fibonacci_poses(views, CAMERA_DISTANCE, azimuth)
    cameras = [blender_camera(c2w, angle_x, resolution, lens) for c2w in poses]
    names = [f"{i:04d}" for i in range(views)]
    for start in range(0, views, VIEWS_PER_BATCH):
        batch = slice(start, start + VIEWS_PER_BATCH)
        rgbas, coverages = render_views(geometry, cameras[batch], supersample)
        for name, rgba, coverage in zip(names[batch], rgbas, coverages):
            write_image(root / "images" / f"{name}.png", rgba)
            for obj, mask in zip(geometry.objects, object_masks(coverage)):
                write_image(root / "masks" / obj.name / f"{name}.png", mask.astype(np.float32))
    splits: dict[str, list] = {"train": [], "test": []}
    for i, (name, c2w) in enumerate(zip(names, poses)):
        split = "test" if i % TEST_EVERY == 0 else "train"
        splits[split].append({"file_path": f"./images/{name}", "transform_matrix": c2w.tolist()})
    header = {"camera_angle_x": angle_x} if lens == "pinhole" else _nerfstudio_intrinsics(cameras[0])
    for split, frames in splits.items():
        write_json_atomic(root / f"transforms_{split}.json", {**header, "frames": frames})
    for obj in geometry.objects:
        write_mesh(root / "meshes" / f"{obj.name}.ply", *object_mesh(obj))
    write_json_atomic(root / "geometry.json", geometry.to_dict(
        seed=seed, views=views, resolution=resolution, supersample=supersample, camera_distance=CAMERA_DISTANCE,
        lens=lens))


def _nerfstudio_intrinsics(camera: Camera) -> dict:
    """The nerfstudio transforms.json keys of ``camera``'s intrinsics and distortion."""
    return {"camera_model": camera.model, "fl_x": camera.fx, "fl_y": camera.fy, "cx": camera.cx, "cy": camera.cy,
            "w": camera.width, "h": camera.height, **camera.distortion}

