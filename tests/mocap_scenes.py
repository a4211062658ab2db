"""Test scenes made from real human motion: CMU clips (../shared/data/mocap) retargeted to a body model, seen
by a realistic camera 3-8 m away, as noisy 2D keypoints with some joints missing (what a detector gives)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from recon.engine.models.smpl import SMPL
from recon.engine.smpl.fit import PinholeCamera
from recon.engine.smpl.keypoints import SMPL_FROM_LAYOUT
from recon.engine.smpl.mocap import read_bvh, retarget
from conftest import shared_path

CLIPS = ("02_02", "10_01", "12_03")  # 03_03 repeats 02_02 (rounded, one channel zeroed)
WIDTH, HEIGHT = 1920, 1080
DETECTED = tuple(sorted(set(SMPL_FROM_LAYOUT["body25"].values())))  # the 14 joints OpenPose BODY_25 gives


@lru_cache(maxsize=8)
def _clip(name: str, rest: bytes, parents: tuple[int, ...], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    bvh = read_bvh(shared_path("mocap", f"{name}.bvh"))
    return retarget(bvh, np.frombuffer(rest).reshape(-1, 3), parents, names)


def clip_poses(model: SMPL, name: str) -> dict[str, np.ndarray]:
    """``global_orient`` [F, 3], ``body_pose`` [F, 69], ``transl`` [F, 3] of a CMU clip on ``model``."""
    rest = model.j_template.detach().cpu().double().numpy()
    return _clip(name, rest.tobytes(), tuple(int(p) for p in model.parents), tuple(model.joint_names))


@dataclass
class Scene:
    """Truth parameters (torch, F rows), the camera, keypoints ``xy`` [F, J, 2] and ``confidence`` [F, J]."""

    truth: dict[str, torch.Tensor]
    camera: PinholeCamera
    xy: np.ndarray
    confidence: np.ndarray
    noise_px: float


def _yaw(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def random_camera(rng: np.random.Generator) -> PinholeCamera:
    """A 1920x1080 camera with a focal length of 1200-2200 px (35-77 degrees across), principal point near the centre."""
    focal = rng.uniform(1200, 2200)
    return PinholeCamera(focal, focal, WIDTH / 2 + rng.uniform(-20, 20), HEIGHT / 2 + rng.uniform(-20, 20))


def keypoint_scene(model: SMPL, rng: np.random.Generator, frames: int = 1, betas_std: float = 0.7,
                   stride: int = 4, camera: PinholeCamera | None = None, max_overlap_mm: float = 1.0) -> Scene:
    """A person doing a random CMU clip (``frames`` frames ``stride`` apart from a random start) with random betas,
    turned to a random heading, its pelvis 3-8 m from the camera (``random_camera`` unless given) and inside the
    frame; BODY_25-like keypoints with 2-5 px Gaussian noise, 0-3 joints missing per frame. Poses whose limb
    capsules overlap by more than ``max_overlap_mm`` on this body (retargeting onto other proportions can push a
    hand into the trunk) are drawn again, so a fit can be asked not to self-penetrate."""
    from recon.engine.smpl.penetration import model_capsules

    capsules = model_capsules(model)
    while True:
        name = CLIPS[rng.integers(len(CLIPS))]
        clip = clip_poses(model, name)
        start = rng.integers(0, len(clip["body_pose"]) - (frames - 1) * stride)
        rows = start + stride * np.arange(frames)
        pose = torch.as_tensor(clip["body_pose"][rows], dtype=model.v_template.dtype)
        with torch.no_grad():
            joints = model.joints(torch.zeros(frames, model.num_betas), torch.zeros(frames, 3), pose)
        if capsules is None or float(capsules.overlaps(joints).max()) * 1000 <= max_overlap_mm:
            break
    camera = random_camera(rng) if camera is None else camera
    focal = camera.fx
    turn = np.diag([1.0, -1.0, -1.0]) @ _yaw(rng.uniform(0, 2 * np.pi))  # y up -> camera y down, random heading
    f64 = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    from recon.engine.models.lbs import axis_angle_to_matrix, matrix_to_axis_angle

    orient = matrix_to_axis_angle(f64(turn) @ axis_angle_to_matrix(f64(clip["global_orient"][rows])))
    path = (clip["transl"][rows] - clip["transl"][rows[0]]) @ turn.T  # the clip's own motion, turned
    depth = rng.uniform(3.0, 8.0)
    betas = f64(rng.normal(0, betas_std, (1, model.num_betas))).expand(frames, -1)
    rest_root = model.rest_joints(betas[:1].to(model.v_template.dtype))[0, 0].double()
    zero = torch.zeros(frames, 3, dtype=torch.float64)
    truth = {"betas": betas, "global_orient": orient, "body_pose": f64(clip["body_pose"][rows]), "transl": zero}
    for _ in range(20):  # a pelvis position that keeps every joint in the frame
        lateral = rng.uniform(-0.3, 0.3, 2) * depth * np.array([WIDTH, HEIGHT]) / focal
        truth["transl"] = f64(np.array([lateral[0], lateral[1], depth]) + path) - rest_root
        xy = _project(model, truth, camera)
        if xy[..., 0].min() > 10 and xy[..., 0].max() < WIDTH - 10 and xy[..., 1].min() > 10 and xy[..., 1].max() < HEIGHT - 10:
            break
    noise = rng.uniform(2.0, 5.0)
    detected = np.array([n in DETECTED for n in model.joint_names])
    conf = np.tile(detected.astype(np.float64), (frames, 1))
    for f in range(frames):
        conf[f, rng.choice(np.nonzero(detected)[0], rng.integers(0, 4), replace=False)] = 0.0
    xy = xy + rng.normal(0, noise, xy.shape)
    return Scene(truth, camera, np.where(conf[..., None] > 0, xy, 0.0), conf, noise)


def _project(model: SMPL, params: dict[str, torch.Tensor], camera: PinholeCamera) -> np.ndarray:
    dtype = model.v_template.dtype
    with torch.no_grad():
        joints = model.joints(**{k: v.to(dtype) for k, v in params.items()})
        return camera.project(joints.double()).numpy()


def write_camera(camera: PinholeCamera, path: Path) -> Path:
    """``camera``'s intrinsics as the JSON file ``recon smpl fit --camera`` reads."""
    path.write_text(json.dumps({"fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy}))
    return path


def write_openpose_sequence(scene: Scene, joint_names: tuple[str, ...] | list[str], folder: Path) -> Path:
    """``scene``'s keypoints as a folder of per-frame OpenPose BODY_25 JSONs (one person, confidence 0.8)."""
    body25 = {name: k for k, name in SMPL_FROM_LAYOUT["body25"].items()}
    folder.mkdir()
    for f in range(len(scene.xy)):
        kp = np.zeros((25, 3))
        for j, name in enumerate(joint_names):
            if name in body25 and scene.confidence[f, j] > 0:
                kp[body25[name]] = (*scene.xy[f, j], 0.8)
        people = [{"person_id": [-1], "pose_keypoints_2d": kp.ravel().tolist()}]
        (folder / f"clip_{f:012d}_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))
    return folder
