"""Fitting SMPL parameters to 3D joints, 2D keypoints or a scan, batched over frames.

Every fit minimises ``data + priors`` with batched Levenberg-Marquardt in stages, SMPLify style: stage 0
moves only the global orientation and translation to the torso; later stages free the body pose and shape.
3D fits let the prior weights shrink (``REFINE_PRIOR_SCALES``); 2D fits keep them (``KEYPOINT_PRIOR_SCALES``:
the CMU pose mixture, a shape prior that never fades), since keypoints leave depth and limb directions open.
Frames are independent unless ``smooth`` > 0 (temporal smoothness) or ``share_betas`` (one body shape for the
sequence): those sequences are then refined together with L-BFGS (``refine_sequence``). 2D and scan fits penalise
limb self-penetration (``penetration.py``) where the skeleton is SMPL's.

Units: 3D residuals are in millimetres and 2D residuals in pixels, so the default prior weights
mean the same thing in both.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.models.lbs import axis_angle_to_matrix, matrix_to_axis_angle, wrap_axis_angle
from recon.engine.models.smpl import SMPL
from recon.engine.smpl import priors
from recon.engine.smpl.penetration import LimbCapsules, model_capsules
from recon.engine.smpl.pose_prior import MixturePrior
from recon.engine.smpl.solver import levenberg_marquardt
from recon.engine.smpl.symmetry import LEG, mirror_pose


class PriorScale(NamedTuple):
    """One stage's multipliers of the pose and shape prior weights, its pose prior (the CMU mixture for 2D fits,
    where the data leave limb depth open; else L2 on the axis-angles: 3D targets pin the pose down and need not be
    everyday poses) and whether limb self-penetration is penalised (2D fits and scans; 3D joints may be any pose)."""

    pose: float
    shape: float
    mixture: bool = False
    penetration: bool = False


# 3D targets (joints, scans) pin the body down, so the priors may fade; 2D keypoints leave depth, limb
# directions and body size open, so the priors keep a weight that a reprojection gain within the keypoints'
# noise cannot buy off, and the shape prior never fades.
REFINE_PRIOR_SCALES = (PriorScale(1.0, 1.0), PriorScale(0.1, 0.1), PriorScale(0.01, 0.01))
SCAN_PRIOR_SCALES = tuple(s._replace(penetration=True) for s in REFINE_PRIOR_SCALES)
KEYPOINT_PRIOR_SCALES = tuple(PriorScale(pose, 1.0, True, True) for pose in (1.0, 0.3, 0.1))
SEQUENCE_SMOOTH = 1000.0  # the default ``smooth`` of keypoint sequences (rad^2 and m^2 of acceleration per frame)
KEYFRAME_STEP = 20  # a keypoint sequence searches headings on every 20th frame, then refines every frame
HEADINGS = 4  # starts per frame of a 2D fit, turned about the body's vertical axis by 360 / HEADINGS degrees
TORSO_JOINTS = ("pelvis", "left_hip", "right_hip", "spine1", "spine2", "spine3", "neck", "left_shoulder",
                "right_shoulder", "left_collar", "right_collar")
MM = 1000.0
SCAN_WEIGHT = 24.0
ICP_TOLERANCE = 1e-3  # a scan fit's stage ends when a round of fresh matches lowers no start's objective by more
ICP_MAX_ROUNDS = 4  # ... or after this many times ``iterations`` rounds


@dataclass
class FitConfig:
    """Options of ``recon smpl fit`` (each field becomes a command-line option)."""

    iterations: int = field(default=15, metadata={
        "help": "solver iterations per stage (scan fits: ICP rounds, continued up to 4x while still improving)"})
    pose_prior: float = field(default=100.0, metadata={
        "help": "weight of the CMU Gaussian-mixture pose prior of 2D fits (SMPL skeletons) in the first stage"})
    pose_l2: float = field(default=3000.0, metadata={
        "help": "weight of the L2 body-pose prior (3D fits, and skeletons the mixture does not cover), first stage"})
    shape_prior: float = field(default=100.0, metadata={"help": "weight of the L2 shape (betas) prior"})
    penetration: float = field(default=100.0, metadata={
        "help": "weight of the limb self-penetration penalty of 2D and scan fits (overlap of limb capsules, mm)"})
    bend_prior: float = field(default=1e4, metadata={"help": "weight of the knee/elbow bending-direction prior"})
    angle_prior: float = field(default=1e4, metadata={"help": "weight of the joint angle-limit prior"})
    smooth: float = field(default=0.0, metadata={
        "help": "weight of temporal smoothness: squared accelerations of the pose (rad) and translation (m) per "
                "frame (0: off; keypoint sequences default to 1000)"})
    share_betas: bool = field(default=False, metadata={"help": "one body shape for all frames"})
    sigma: float = field(default=100.0, metadata={"help": "Geman-McClure scale of 2D residuals, pixels"})
    min_confidence: float = field(default=0.1, metadata={"help": "keypoints below this confidence are ignored"})
    scan_points: int = field(default=2000, metadata={"help": "scan points used by the chamfer term"})


@dataclass
class PinholeCamera:
    """Intrinsics and world-to-camera pose (OpenCV: x right, y down, z forward)."""

    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray = field(default_factory=lambda: np.eye(4))  # [4, 4]

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Pixel coordinates [..., 2] of world ``points`` [..., 3]."""
        w2c = torch.as_tensor(self.world_to_camera, dtype=points.dtype, device=points.device)
        cam = points @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[..., 2:3].clamp_min(1e-6)
        return torch.cat([self.fx * cam[..., :1] / z + self.cx, self.fy * cam[..., 1:2] / z + self.cy], -1)


@dataclass
class FitResult:
    """Fitted parameters (numpy, one row per frame), posed vertices/joints and residual report."""

    params: dict[str, np.ndarray]
    vertices: np.ndarray  # [F, V, 3]
    joints: np.ndarray  # [F, J, 3]
    report: dict

    def rows(self, start: int, stop: int) -> "FitResult":
        """Frames ``start:stop`` of a fit whose frames were independent, with their own report (the per-frame
        entries sliced, their means and maxima recomputed)."""
        report = {k: v for k, v in self.report.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
        for key, values in self.report.items():
            if key.endswith("_per_frame"):
                part = values[start:stop]
                report[key] = part
                base = key[:-len("_per_frame")]
                report[base] = float(max(part) if base.startswith("max_") else np.mean(part))
        report["frames"] = stop - start
        return FitResult({k: v[start:stop] for k, v in self.params.items()}, self.vertices[start:stop],
                         self.joints[start:stop], report)


class _Layout:
    """How the parameters of F independent frames pack into the solver's rows ``x`` [F, P]:
    ``[betas | global_orient | body_pose | transl]`` per row."""

    def __init__(self, model: SMPL, frames: int):
        self.frames, self.num_betas, self.num_pose = frames, model.num_betas, 3 * (model.num_joints - 1)
        self.motion = 6 + self.num_pose  # orient, pose, transl per frame

    def zeros(self, model: SMPL) -> torch.Tensor:
        return model.v_template.new_zeros(self.frames, self.num_betas + self.motion)

    def unpack(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``betas`` [N, L], ``global_orient`` [N, 3], ``body_pose`` [N, P], ``transl`` [N, 3] for ``x`` [N, W]
        (any number N of rows: the solver stacks copies of the frames)."""
        betas, rows = x[:, :self.num_betas], x[:, self.num_betas:]
        return {"betas": betas, "global_orient": rows[:, :3], "body_pose": rows[:, 3:3 + self.num_pose],
                "transl": rows[:, 3 + self.num_pose:]}

    def pack(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([params["betas"], params["global_orient"], params["body_pose"], params["transl"]], -1)

    def pose_columns(self) -> torch.Tensor:
        """Bool [P]: the columns of ``x`` holding global orientation and translation (stage 0)."""
        free = torch.zeros(self.num_betas + self.motion, dtype=torch.bool)
        free[self.num_betas:self.num_betas + 3] = True
        free[-3:] = True
        return free


_BODY_PRIORS: "weakref.WeakKeyDictionary[SMPL, tuple]" = weakref.WeakKeyDictionary()


def _body_priors(model: SMPL) -> tuple[MixturePrior | None, LimbCapsules | None]:
    """The pose mixture and limb capsules of ``model`` (None where its skeleton is not SMPL's), cached: every fit
    calls this first, outside the solver's forward-mode transform (where buffers cannot be read as numpy)."""
    key = (model.v_template.device, model.v_template.dtype)
    cached = _BODY_PRIORS.get(model)
    if cached is None or cached[0] != key:
        cached = (key, MixturePrior.for_model(model.joint_names, key[1], key[0]), model_capsules(model))
        _BODY_PRIORS[model] = cached
    return cached[1], cached[2]


def _prior_residuals(params: dict[str, torch.Tensor], model: SMPL, config: FitConfig,
                     scale: PriorScale) -> torch.Tensor:
    """Per-frame prior residuals [F, R] at the stage's prior weights ``scale``."""
    pose = params["body_pose"]
    mixture, capsules = _body_priors(model)
    out = [(scale.pose * config.pose_prior) ** 0.5 * mixture.residuals(pose) if mixture is not None and scale.mixture
           else (scale.pose * config.pose_l2) ** 0.5 * priors.pose_l2(pose),
           (scale.shape * config.shape_prior) ** 0.5 * priors.shape_l2(params["betas"]),
           config.bend_prior ** 0.5 * priors.bend(pose, model.joint_names),
           config.angle_prior ** 0.5 * priors.angle_limit(pose)]
    if capsules is not None and config.penetration > 0 and scale.penetration:
        out.append(config.penetration ** 0.5 * MM * capsules.overlaps(_posed_joints(model, params)))
    return torch.cat(out, -1)


def _solve(layout: _Layout, x: torch.Tensor, model: SMPL, config: FitConfig,
           data: Callable[[dict[str, torch.Tensor]], torch.Tensor],
           schedule: tuple[PriorScale, ...] = REFINE_PRIOR_SCALES) -> torch.Tensor:
    """The stages after stage 0: every parameter free, prior weights shrinking; ``data`` gives [F, R]."""
    for scale in schedule:
        x = levenberg_marquardt(lambda z: _all_residuals(layout, z, model, config, data, scale), x, config.iterations)
    return x


def _all_residuals(layout: _Layout, x: torch.Tensor, model: SMPL, config: FitConfig,
                   data: Callable[[dict[str, torch.Tensor]], torch.Tensor], scale: PriorScale) -> torch.Tensor:
    """Residual rows [G', R] (data, then priors) for ``x`` [G', W]."""
    params = layout.unpack(x)
    return torch.cat([data(params), _prior_residuals(params, model, config, scale)], -1)


def refine_sequence(model: SMPL, x: torch.Tensor, config: FitConfig,
                    data: Callable[[dict[str, torch.Tensor]], torch.Tensor], scale: PriorScale) -> torch.Tensor:
    """Fitted frames ``x`` [F, P] refined together: one shape for all frames (``share_betas``; the frames' mean to
    start) and temporal smoothness (``smooth``), with L-BFGS on the whole sequence's objective (the frames
    couple, so the per-row Levenberg-Marquardt solver does not apply; its dense Jacobian would have F * P columns)."""
    layout = _Layout(model, x.shape[0])
    start = layout.unpack(x.detach())
    betas = start["betas"].mean(0, keepdim=True) if config.share_betas else start["betas"]
    variables = [v.clone().requires_grad_(True) for v in (betas, start["global_orient"], start["body_pose"],
                                                           start["transl"])]
    optimiser = torch.optim.LBFGS(variables, lr=1.0, max_iter=10 * config.iterations, history_size=50,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def params_of() -> dict[str, torch.Tensor]:
        return {"betas": variables[0].expand(x.shape[0], -1), "global_orient": variables[1],
                "body_pose": variables[2], "transl": variables[3]}

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        params = params_of()
        cost = torch.cat([data(params), _prior_residuals(params, model, config, scale)], -1).pow(2).sum()
        if config.smooth > 0 and x.shape[0] > 1:
            # the global orientation as a matrix: its axis-angle jumps where the angle passes pi (people facing
            # the camera are turned by about pi), which would read as a huge acceleration
            orient = axis_angle_to_matrix(params["global_orient"]).reshape(-1, 9)
            motion = torch.cat([orient, params["body_pose"], params["transl"]], -1)
            cost = cost + config.smooth * priors.temporal(motion).pow(2).sum()
        cost.backward()
        return cost

    optimiser.step(closure)
    with torch.no_grad():
        return layout.pack(params_of())


def _couples(config: FitConfig, frames: int) -> bool:
    return frames > 1 and (config.share_betas or config.smooth > 0)


def _tile(values: torch.Tensor, rows: int) -> torch.Tensor:
    """``values`` [F, ...] repeated along dim 0 to ``rows`` (the solver stacks copies of the frames)."""
    return values.repeat(rows // values.shape[0], *([1] * (values.dim() - 1)))


def _torso_mask(model: SMPL, device: torch.device) -> torch.Tensor:
    return torch.tensor([name in TORSO_JOINTS for name in model.joint_names], device=device, dtype=torch.float32)


def _check_targets(name: str, values: np.ndarray, confidence: np.ndarray, model: SMPL, min_conf: float,
                   min_joints: int) -> None:
    if values.shape[1] != model.num_joints:
        raise ReconError(f"{name}: {values.shape[1]} joints per frame, the body model has {model.num_joints}")
    usable = ((confidence >= min_conf) & np.all(np.isfinite(values), -1)).sum(-1)
    if np.any(usable < min_joints):
        frame = int(np.argmin(usable))
        raise ReconError(f"{name}: frame {frame} has only {int(usable[frame])} usable joints "
                         f"(confidence >= {min_conf}); at least {min_joints} are needed")


def _kabsch(source: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Rotation [3, 3] best mapping centred ``source`` [N, 3] onto centred ``target`` [N, 3]."""
    w = weight[:, None] / weight.sum()
    a = source - (w * source).sum(0)
    b = target - (w * target).sum(0)
    u, _, vt = np.linalg.svd((w * a).T @ b)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def _finish(layout: _Layout, x: torch.Tensor, model: SMPL) -> FitResult:
    with torch.no_grad():
        params = layout.unpack(_wrap_orientation(layout, x))
        vertices, joints = model(params["betas"], params["global_orient"], params["body_pose"], params["transl"])
    return FitResult(params={k: v.detach().cpu().numpy().astype(np.float64) for k, v in params.items()},
                     vertices=vertices.cpu().numpy(), joints=joints.cpu().numpy(), report={})


def _posed_joints(model: SMPL, params: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.joints(params["betas"], params["global_orient"], params["body_pose"], params["transl"])


def _stage0(model: SMPL, x: torch.Tensor, config: FitConfig,
            data: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> torch.Tensor:
    """Orientation and translation only, frames independent; ``x`` [F, P] in the independent layout."""
    layout = _Layout(model, x.shape[0])
    x = levenberg_marquardt(lambda z: data(layout.unpack(z)), x, config.iterations, free=layout.pose_columns())
    return _wrap_orientation(layout, x)


def _wrap_orientation(layout: _Layout, x: torch.Tensor) -> torch.Tensor:
    """``x`` with every global orientation's angle in [0, pi] (same rotations; see ``wrap_axis_angle``)."""
    params = layout.unpack(x)
    return layout.pack({**params, "global_orient": wrap_axis_angle(params["global_orient"])})


def fit_joints3d(model: SMPL, joints: np.ndarray, config: FitConfig, confidence: np.ndarray | None = None,
                 name: str = "joints") -> FitResult:
    """Fit to 3D joints ``joints`` [F, J, 3] (metres, the model's joint order); ``confidence`` [F, J]
    weighs them (0 ignores a joint; NaN joints need confidence 0)."""
    _body_priors(model)
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim == 2:
        joints = joints[None]
    if joints.ndim != 3 or joints.shape[-1] != 3:
        raise ReconError(f"{name}: joints have shape {list(joints.shape)}, expected [frames, joints, 3]")
    conf = np.ones(joints.shape[:2]) if confidence is None else np.asarray(confidence, dtype=np.float64)
    if np.any(~np.isfinite(joints).all(-1) & (conf > 0)):
        raise ReconError(f"{name}: joints contain NaN or infinite values")
    _check_targets(name, joints, conf, model, config.min_confidence, 3)
    as_t = lambda a: torch.as_tensor(a, dtype=model.v_template.dtype, device=model.v_template.device)  # noqa: E731
    weight = as_t(np.where(conf >= config.min_confidence, conf, 0.0))
    target = as_t(np.nan_to_num(joints))
    torso = weight * _torso_mask(model, weight.device)
    torso = torch.where((torso > 0).sum(-1, keepdim=True) >= 3, torso, weight)

    def residual(params: dict[str, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        pred = _posed_joints(model, params)
        w, tgt = _tile(w, pred.shape[0]), _tile(target, pred.shape[0])
        return (w.sqrt()[..., None] * MM * (pred - tgt)).reshape(pred.shape[0], -1)

    x = _init_from_torso(model, target, torso)
    x = _stage0(model, x, config, lambda q: residual(q, torso))
    layout = _Layout(model, joints.shape[0])
    x = _solve(layout, x, model, config, lambda q: residual(q, weight))
    if _couples(config, joints.shape[0]):
        x = refine_sequence(model, x, config, lambda q: residual(q, weight), REFINE_PRIOR_SCALES[-1])
    result = _finish(layout, x, model)
    err = np.linalg.norm(result.joints - joints, axis=-1) * MM  # [F, J] mm
    used = conf >= config.min_confidence
    per_frame = [float(e[u].mean()) for e, u in zip(err, used)]
    result.report = {"mode": "joints3d", "frames": len(per_frame), "mpjpe_mm": float(np.mean(per_frame)),
                     "max_joint_error_mm": float(err[used].max()), "mpjpe_mm_per_frame": per_frame}
    return result


def _init_from_torso(model: SMPL, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Closed-form (Kabsch) global orientation and translation aligning the rest torso joints to
    ``target`` [F, J, 3] with ``weight`` [F, J]; returns x [F, P] (independent layout)."""
    layout = _Layout(model, target.shape[0])
    x = layout.zeros(model)
    rest = model.rest_joints(layout.unpack(x)["betas"]).cpu().numpy()
    tgt, w_all = target.cpu().numpy(), weight.cpu().numpy()
    params = layout.unpack(x)
    for f in range(layout.frames):
        w = w_all[f]
        rot = _kabsch(rest[f], tgt[f], w)
        centre_rest = (w[:, None] * rest[f]).sum(0) / w.sum()
        centre_tgt = (w[:, None] * tgt[f]).sum(0) / w.sum()
        root = rest[f, 0]
        # posed = R (x - root) + root + transl sends the rest centre to the target centre
        params["transl"][f] = torch.as_tensor(centre_tgt - rot @ (centre_rest - root) - root)
        params["global_orient"][f] = matrix_to_axis_angle(torch.as_tensor(rot))
    return layout.pack(params)


def robust_residuals(diff: torch.Tensor, sigma: float) -> torch.Tensor:
    """Residual vectors [..., D] whose squared norm is the Geman-McClure cost sigma^2 r^2 / (sigma^2 + r^2)
    of ``diff`` [..., D] (r = |diff|), the robust reprojection cost of SMPLify."""
    sq = diff.pow(2).sum(-1, keepdim=True)
    return diff * sigma / torch.sqrt(sigma**2 + sq)


def fit_keypoints2d(model: SMPL, xy: np.ndarray, confidence: np.ndarray, camera: PinholeCamera,
                    config: FitConfig, name: str = "keypoints") -> FitResult:
    """Fit to 2D keypoints ``xy`` [F, J, 2] pixels in the model's joint order with ``confidence`` [F, J].

    The body translation plays the role of the camera translation (the camera stays where given).
    Two starts per frame, facing the camera and facing away, are fitted; the better is kept.
    """
    _body_priors(model)
    xy = np.asarray(xy, dtype=np.float64)
    conf = np.asarray(confidence, dtype=np.float64)
    if xy.ndim != 3 or xy.shape[-1] != 2 or conf.shape != xy.shape[:2]:
        raise ReconError(f"{name}: keypoints have shape {list(xy.shape)}, expected [frames, joints, 2]")
    _check_targets(name, xy, conf, model, config.min_confidence, 4)
    as_t = lambda a: torch.as_tensor(a, dtype=model.v_template.dtype, device=model.v_template.device)  # noqa: E731
    frames = xy.shape[0]
    used = conf >= config.min_confidence
    weight = as_t(np.where(used, conf, 0.0))
    target = as_t(np.where(used[..., None], xy, 0.0))
    torso = weight * _torso_mask(model, weight.device)
    torso = torch.where((torso > 0).sum(-1, keepdim=True) >= 2, torso, weight)

    def residual(params: dict[str, torch.Tensor], w: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        proj = camera.project(_posed_joints(model, params))
        w, tgt = _tile(w, proj.shape[0]), _tile(tgt, proj.shape[0])
        return (w.sqrt()[..., None] * robust_residuals(proj - tgt, config.sigma)).reshape(proj.shape[0], -1)

    # HEADINGS starts per frame (rows h * F + f: facing the camera, then turned by a quarter turn at a time) go
    # through every stage, as SMPLify does with its two facings; each frame keeps the start with the lowest final
    # objective, priors included, which settles the monocular front/back ambiguity. Sequences are then refined
    # as a whole (one shape, smooth motion).
    # A sequence runs this on its key frames only (every KEYFRAME_STEP-th and the last); every frame then starts
    # from its nearest key frame's fit and the whole sequence is refined together.
    coupled = _couples(config, frames)
    keys = np.unique(np.r_[np.arange(0, frames, KEYFRAME_STEP), frames - 1]) if coupled else np.arange(frames)
    key_used = used[keys]
    starts = _init_facing_camera(model, np.where(key_used[..., None], xy[keys], np.nan), camera)
    key_torso, key_weight, key_target = torso[keys], weight[keys], target[keys]
    starts = _stage0(model, starts, config, lambda q: residual(q, key_torso, key_target))
    key_data = lambda q: residual(q, key_weight, key_target)  # noqa: E731
    layout = _Layout(model, starts.shape[0])
    x = _solve(layout, starts, model, config, key_data, KEYPOINT_PRIOR_SCALES)
    with torch.no_grad():
        cost = _all_residuals(layout, x, model, config, key_data, KEYPOINT_PRIOR_SCALES[-1]).pow(2).sum(-1)
    best = cost.reshape(HEADINGS, len(keys)).argmin(0)
    x = x.reshape(HEADINGS, len(keys), -1)[best, torch.arange(len(keys))]
    layout = _Layout(model, frames)
    if coupled:  # in-between frames: the nearest key frame's pose, the translation interpolated
        nearest = torch.as_tensor(np.abs(np.arange(frames)[:, None] - keys[None]).argmin(1))
        start = _Layout(model, frames).unpack(x[nearest].clone())
        key_transl = _Layout(model, len(keys)).unpack(x)["transl"].cpu().numpy()
        start["transl"] = torch.as_tensor(np.stack([np.interp(np.arange(frames), keys, key_transl[:, d])
                                                    for d in range(3)], -1)).to(x)
        start["betas"] = start["betas"].mean(0, keepdim=True).expand(frames, -1)
        # each frame on its own first (rows independent, the shape held): L-BFGS on the coupled sequence is slow to
        # move a frame out of a start whose limbs are in another phase of the motion
        all_data = lambda q: residual(q, weight, target)  # noqa: E731
        no_betas = torch.ones(layout.num_betas + layout.motion, dtype=torch.bool)
        no_betas[:layout.num_betas] = False
        x = levenberg_marquardt(lambda z: _all_residuals(layout, z, model, config, all_data, KEYPOINT_PRIOR_SCALES[-1]),
                                layout.pack(start), config.iterations, free=no_betas)
        x = refine_sequence(model, x, config, all_data, KEYPOINT_PRIOR_SCALES[-1])
    result = _finish(layout, x, model)
    with torch.no_grad():
        proj = camera.project(torch.as_tensor(result.joints)).numpy()
    err = np.linalg.norm(proj - xy, axis=-1)
    per_frame = [float(e[u].mean()) for e, u in zip(err, used)]
    max_per_frame = [float(e[u].max()) for e, u in zip(err, used)]
    result.report = {"mode": "keypoints2d", "frames": frames, "reprojection_px": float(np.mean(per_frame)),
                     "max_reprojection_px": max(max_per_frame), "reprojection_px_per_frame": per_frame,
                     "max_reprojection_px_per_frame": max_per_frame, "shared_betas": bool(_couples(config, frames)
                                                                                          and config.share_betas),
                     "smooth": config.smooth if _couples(config, frames) else 0.0}
    return result


def _init_facing_camera(model: SMPL, xy: np.ndarray, camera: PinholeCamera) -> torch.Tensor:
    """Starts x [HEADINGS * F, P] (rows h * F + f): facing the camera, then turned about the vertical axis by
    360 / HEADINGS degrees at a time, each with the translation that puts the visible joints' centre on their
    keypoints' centre at the depth where the model's torso length matches the observed one (SMPLify's camera
    initialisation), in the mixture's mean pose where the model has one. ``xy`` [F, J, 2], NaN = unused."""
    frames = xy.shape[0]
    w2c = np.asarray(camera.world_to_camera, dtype=np.float64)
    rot_wc = w2c[:3, :3]
    flip_x = np.diag([1.0, -1.0, -1.0])  # model y up, facing +z  ->  camera y down, facing the camera
    layout = _Layout(model, HEADINGS * frames)
    x = layout.zeros(model)
    params = layout.unpack(x)
    mixture, _ = _body_priors(model)
    if mixture is not None:  # start from the mixture's mean pose (arms down, as people stand), as SMPLify does
        params["body_pose"][:] = mixture.mean_pose()
    with torch.no_grad():
        rest = _posed_joints(model, {k: v[:1] for k, v in params.items()})[0].cpu().numpy()  # at the origin
    index = {n: j for j, n in enumerate(model.joint_names)}
    for k in range(HEADINGS):
        angle = 2 * np.pi * k / HEADINGS
        turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
        rot = rot_wc.T @ flip_x @ turn
        for f in range(frames):
            used = np.isfinite(xy[f]).all(-1)
            depth = _depth_from_torso(rest, xy[f], used, index, camera)
            centre_px, centre_rest = xy[f][used].mean(0), rest[used].mean(0)
            ray = np.array([(centre_px[0] - camera.cx) / camera.fx, (centre_px[1] - camera.cy) / camera.fy, 1.0])
            world_centre = rot_wc.T @ (ray * depth - w2c[:3, 3])
            params["transl"][k * frames + f] = torch.as_tensor(world_centre - rot @ (centre_rest - rest[0]) - rest[0])
            params["global_orient"][k * frames + f] = matrix_to_axis_angle(torch.as_tensor(rot))
    return layout.pack(params)


def _depth_from_torso(rest: np.ndarray, xy: np.ndarray, used: np.ndarray, index: dict[str, int],
                      camera: PinholeCamera) -> float:
    """Depth at which the model's shoulder-to-hip length projects to the observed one (else the spread)."""
    pairs = [("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("neck", "pelvis")]
    ratios = []
    for a, b in pairs:
        ia, ib = index.get(a), index.get(b)
        if ia is not None and ib is not None and used[ia] and used[ib]:
            px = np.linalg.norm(xy[ia] - xy[ib])
            if px > 1e-3:
                ratios.append(np.linalg.norm(rest[ia] - rest[ib]) / px)
    if not ratios:  # no torso pair visible: compare overall spreads
        px = np.linalg.norm(xy[used] - xy[used].mean(0), axis=-1).mean()
        ratios.append(np.linalg.norm(rest[used] - rest[used].mean(0), axis=-1).mean() / max(px, 1e-3))
    return float(np.mean(ratios)) * 0.5 * (camera.fx + camera.fy)


def _surface_samples(per_face: int, seed: int = 0) -> torch.Tensor:
    """Fixed barycentric weights [per_face, 3] for sampling points on every face."""
    gen = torch.Generator().manual_seed(seed)
    u, v = torch.rand(per_face, generator=gen), torch.rand(per_face, generator=gen)
    flip = u + v > 1
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    return torch.stack([1 - u - v, u, v], -1)


def model_surface_points(vertices: torch.Tensor, faces: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Vertices [B, V, 3] plus barycentric samples ``bary`` [S, 3] on every face: [B, V + F * S, 3]."""
    corners = vertices[:, faces]  # [B, F, 3, 3]
    samples = torch.einsum("sk,bfkd->bfsd", bary, corners).reshape(vertices.shape[0], -1, 3)
    return torch.cat([vertices, samples], 1)


def chamfer(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared nearest-neighbour distances a->b and b->a, each [B], of ``a`` [B, N, 3], ``b`` [B, M, 3]."""
    d = torch.cdist(a, b).pow(2)
    return d.min(2).values.mean(1), d.min(1).values.mean(1)


def _icp_residuals(points: torch.Tensor, scan: torch.Tensor, to_scan: torch.Tensor,
                   to_model: torch.Tensor) -> torch.Tensor:
    """Chamfer residuals [G', R] (mm) for fixed correspondences: model ``points`` [G', N, 3] minus their
    matched scan points, and matched model points minus each scan point (``scan`` [M, 3]); ``to_scan``
    [G, N] and ``to_model`` [G, M] index the matches of G rows, tiled over stacked copies. Each direction
    is weighted as ``SCAN_WEIGHT`` joints, so the prior weights mean the same as in the joint fits."""
    rows = points.shape[0]
    to_scan, to_model = _tile(to_scan, rows), _tile(to_model, rows)
    forward = points - scan[to_scan]  # [G', N, 3]
    backward = torch.gather(points, 1, to_model[..., None].expand(-1, -1, 3)) - scan  # [G', M, 3]
    return MM * SCAN_WEIGHT**0.5 * torch.cat([forward.reshape(rows, -1) / points.shape[1] ** 0.5,
                                              backward.reshape(rows, -1) / scan.shape[0] ** 0.5], -1)


def _opposite_facings(global_orient: torch.Tensor, cost: torch.Tensor) -> tuple[int, int]:
    """Rows of the cheapest start and of the cheapest one facing the other way (the model faces +z; y is up);
    when every start faces the same way, the one turned furthest from the cheapest."""
    forward = axis_angle_to_matrix(global_orient)[:, :, 2]  # [G, 3] the body's forward direction
    yaw = torch.atan2(forward[:, 0], forward[:, 2])
    best = int(torch.argmin(cost))
    alignment = torch.cos(yaw - yaw[best])
    opposite = alignment < 0
    if bool(opposite.any()):
        return best, int(torch.argmin(torch.where(opposite, cost, torch.inf)))
    return best, int(torch.argmin(alignment))


def fit_scan(model: SMPL, points: np.ndarray, config: FitConfig, name: str = "scan", seed: int = 0) -> FitResult:
    """Fit one body to a scan's points [N, 3] (metres, y up) with a symmetric chamfer distance plus priors.

    ICP style: nearest-neighbour matches both ways are fixed for two Levenberg-Marquardt iterations,
    then recomputed, round after round until a round lowers the objective by less than ``ICP_TOLERANCE``
    (relative; at most ``ICP_MAX_ROUNDS * iterations`` rounds per stage). Stage 0 tries four headings about
    the vertical axis (orientation and translation only); the best start of each facing (towards +z and away)
    is refined. After the first refining stage each also restarts with its legs swapped (each leg's rotations
    mirrored onto the other), and the lowest final objective of the four is kept.
    """
    _body_priors(model)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 10:
        raise ReconError(f"{name}: a scan needs at least 10 points [N, 3] (got shape {list(points.shape)})")
    if not np.all(np.isfinite(points)):
        raise ReconError(f"{name}: scan points contain NaN or infinite values")
    rng = np.random.default_rng(seed)
    if len(points) > config.scan_points:
        points = points[rng.choice(len(points), config.scan_points, replace=False)]
    scan = torch.as_tensor(points, dtype=model.v_template.dtype, device=model.v_template.device)
    bary = _surface_samples(1, seed).to(scan)

    def surface(params: dict[str, torch.Tensor]) -> torch.Tensor:
        verts, _ = model(params["betas"], params["global_orient"], params["body_pose"], params["transl"])
        return model_surface_points(verts, model.faces, bary)

    def icp(layout: _Layout, x: torch.Tensor, scale: PriorScale | None, free: torch.Tensor | None) -> torch.Tensor:
        previous = None
        for _ in range(ICP_MAX_ROUNDS * config.iterations):
            with torch.no_grad():
                d = torch.cdist(surface(layout.unpack(x)), scan[None].expand(x.shape[0], -1, -1))
                to_scan, to_model = d.argmin(2), d.argmin(1)

            def residuals(z: torch.Tensor) -> torch.Tensor:
                params = layout.unpack(z)
                data = _icp_residuals(surface(params), scan, to_scan, to_model)
                if scale is None:
                    return data
                return torch.cat([data, _prior_residuals(params, model, config, scale)], -1)

            with torch.no_grad():
                cost = residuals(x).pow(2).sum(-1)
            if previous is not None and bool((previous - cost <= ICP_TOLERANCE * previous).all()):
                break
            previous = cost
            x = levenberg_marquardt(residuals, x, 2, free=free)
        return x

    headings = _Layout(model, 4)
    params = headings.unpack(headings.zeros(model))
    root = model.j_template[0]
    for k in range(4):
        params["global_orient"][k, 1] = 0.5 * np.pi * k
        rot = axis_angle_to_matrix(params["global_orient"][k])
        params["transl"][k] = scan.mean(0) - rot @ (model.v_template.mean(0) - root) - root
    x = _wrap_orientation(headings, icp(headings, headings.pack(params), None, headings.pose_columns()))
    with torch.no_grad():
        to_scan, to_model = chamfer(surface(headings.unpack(x)), scan[None].expand(4, -1, -1))
    # A body and its half-turn fit a scan's outline almost equally, and the four starts settle into those two
    # facings; the best of each facing goes through every stage and the lowest final objective, priors
    # included, wins. Nearest-neighbour matches can also hang each shin on the other leg's (a knee bent in the
    # scan ends up bent in the other leg, the shins crossed): a copy with the legs swapped starts from the
    # right side of that minimum.
    layout, x = _Layout(model, 1), x[list(_opposite_facings(headings.unpack(x)["global_orient"], to_scan + to_model))]
    x = icp(layout, x, SCAN_PRIOR_SCALES[0], None)
    params = layout.unpack(x)
    swapped = mirror_pose(params["body_pose"], model.joint_names, LEG)
    x = torch.cat([x, layout.pack({**params, "body_pose": swapped})])
    for scale in SCAN_PRIOR_SCALES[1:]:
        x = icp(layout, x, scale, None)
    with torch.no_grad():
        params = layout.unpack(x)
        to_scan, to_model = chamfer(surface(params), scan[None].expand(x.shape[0], -1, -1))
        priors_cost = _prior_residuals(params, model, config, SCAN_PRIOR_SCALES[-1]).pow(2).sum(-1)
        best = int(torch.argmin(SCAN_WEIGHT * MM**2 * (to_scan + to_model) + priors_cost))
    x, to_scan, to_model = x[best:best + 1], to_scan[best], to_model[best]
    result = _finish(layout, x, model)
    result.report = {"mode": "scan", "frames": 1, "scan_points": int(len(points)),
                     "model_to_scan_rms_mm": float(to_scan.sqrt() * MM),
                     "scan_to_model_rms_mm": float(to_model.sqrt() * MM)}
    return result
