"""SMPL fitting: recovery of synthetic 3D joints, 2D keypoints and scans from a neutral start; bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.engine.errors import ReconError
from recon.engine.models.lbs import axis_angle_to_matrix
from recon.engine.models.smpl import SMPL
from recon.engine.smpl import priors
from recon.engine.smpl.fit import (FitConfig, FitResult, PinholeCamera, chamfer, fit_joints3d, fit_keypoints2d,
                                   fit_scan)
from recon.engine.smpl.penetration import model_capsules
from recon.engine.smpl.synthetic import make_test_model


@pytest.fixture(scope="module")
def model() -> SMPL:
    return SMPL(make_test_model())


def _random_params(frames: int, gen: torch.Generator, pose_std: float = 0.3, bend_std: float = 0.8,
                   betas_std: float = 0.8) -> dict[str, torch.Tensor]:
    """Plausible random parameters: knees and elbows bend the anatomical way, within the angle limit."""
    rnd = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    pose = rnd(frames, 69) * pose_std
    for joint, axis, sign in ((4, 0, 1.0), (5, 0, 1.0), (18, 1, -1.0), (19, 1, 1.0)):
        pose[:, 3 * (joint - 1) + axis] = sign * (rnd(frames).abs() * bend_std).clamp(max=1.9)
    return {"betas": rnd(frames, 10) * betas_std, "global_orient": rnd(frames, 3) * 0.5, "body_pose": pose,
            "transl": rnd(frames, 3) * 0.3}


def _body_params(model: SMPL, frames: int, gen: torch.Generator, torso: float = 1.0,
                 **spread: float) -> dict[str, torch.Tensor]:
    """``_random_params`` with the torso chain's rotations scaled by ``torso``, drawn again until no two limbs pass
    through each other, as no real body's do (1 draw in 10 at pose_std 0.1, 2 frames, crosses the shins; the fits
    rightly refuse such bodies)."""
    capsules = model_capsules(model)
    for _ in range(100):
        truth = _random_params(frames, gen, **spread)
        for name in TORSO_CHAIN:
            j = model.joint_names.index(name)
            truth["body_pose"][:, 3 * (j - 1):3 * j] *= torso
        with torch.no_grad():
            if float(capsules.overlaps(model.joints(**truth)).max()) == 0.0:
                return truth
    raise AssertionError(f"no body without self-penetration in 100 draws of {spread}")


TORSO_CHAIN = ("spine1", "spine2", "spine3", "neck", "left_collar", "right_collar")


def test_fit_joints3d_recovers_under_1mm(model, seed):
    gen = torch.Generator().manual_seed(seed)
    truth = _random_params(2, gen)
    with torch.no_grad():
        joints = model.joints(**truth).numpy()
    result = fit_joints3d(model, joints, FitConfig(iterations=10))
    mpjpe = np.linalg.norm(result.joints - joints, axis=-1).mean() * 1000
    assert mpjpe < 1.0, f"seed {seed}: MPJPE {mpjpe:.3f} mm"
    assert result.report["mpjpe_mm"] == pytest.approx(mpjpe, rel=1e-4)
    assert result.params["body_pose"].shape == (2, 69) and result.params["betas"].shape == (2, 10)
    # the returned parameters reproduce the returned joints
    with torch.no_grad():
        again = model.joints(**{k: torch.as_tensor(v, dtype=torch.float32) for k, v in result.params.items()})
    np.testing.assert_allclose(again.numpy(), result.joints, atol=1e-5)


def test_fit_joints3d_sequence_shared_betas_and_smoothing(model, seed):
    gen = torch.Generator().manual_seed(seed)
    truth = _random_params(3, gen, pose_std=0.1)
    truth["betas"] = truth["betas"][:1].expand(3, -1)
    truth["body_pose"] = truth["body_pose"][:1] + 0.05 * torch.arange(3.0)[:, None]  # slow motion
    truth["global_orient"] = truth["global_orient"][:1].expand(3, -1)
    with torch.no_grad():
        joints = model.joints(**truth).numpy()
    result = fit_joints3d(model, joints, FitConfig(iterations=8, share_betas=True, smooth=1e-3))
    assert np.ptp(result.params["betas"], axis=0).max() == 0.0
    assert result.report["mpjpe_mm"] < 2.0, f"seed {seed}: {result.report}"


def _rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = (axis_angle_to_matrix(torch.as_tensor(v, dtype=torch.float64)).numpy() for v in (a, b))
    return float(np.degrees(np.arccos(np.clip((np.trace(ra.T @ rb) - 1) / 2, -1, 1))))


def fit_keypoint_case(model: SMPL, seed: int) -> tuple[dict[str, torch.Tensor], PinholeCamera, np.ndarray, FitResult]:
    """test_fit_keypoints2d_recovers_under_2px's two frames fitted: the truth, camera, true keypoints [2, J, 2] and
    the fit of them with one wrong, low-confidence detection, which must be ignored."""
    gen = torch.Generator().manual_seed(seed)
    truth = _body_params(model, 2, gen, torso=0.25, pose_std=0.2)
    truth["global_orient"] = torch.tensor([np.pi, 0.0, 0.0]) + 0.2 * torch.randn(2, 3, generator=gen)
    truth["transl"] = torch.tensor([0.0, 0.2, 3.0]) + 0.1 * torch.randn(2, 3, generator=gen)
    camera = PinholeCamera(600.0, 600.0, 320.0, 240.0)
    with torch.no_grad():
        xy = camera.project(model.joints(**truth)).numpy()
    conf = np.ones(xy.shape[:2])
    xy_noisy = xy.copy()
    xy_noisy[0, 20] += 150.0
    conf[0, 20] = 0.05
    # Random poses of every joint are no human's: the default priors, made for real keypoints, would rightly
    # refuse to reproduce them, so the solver's reach is checked with the pose and shape priors weakened.
    return truth, camera, xy, fit_keypoints2d(model, xy_noisy, conf, camera, FitConfig(pose_prior=1.0, shape_prior=1.0))


def test_fit_keypoints2d_recovers_under_2px(model, seed):
    """Noise-free keypoints of the model itself (real motion is test_smpl_mocap.py's). Monocular fits are
    ambiguous in depth (a limb bent toward or away from the camera projects alike), so the truth is a person with
    a near-upright torso and freely posed limbs whose limbs do not pass through each other, and the orientation
    bound (75 degrees) checks the body faces the right way (a wrong facing is off by about 180), not its exact
    pose. Measured with the weakened priors below on seeds 7000-7059 and 1293651115 (122 frames; `python
    bench/smpl_accuracy.py keypoints2d --seeds 7000-7059 1293651115`): mean reprojection at most 0.73 px per seed
    (1.36 px in a frame), orientation at most 52 degrees off (all other seeds at most 40), joint angles at most
    2.00 rad. Seed 1293651115 drew limbs overlapping by 47 mm before the redraw, which the penetration penalty
    rightly refused to reproduce (2.02 px)."""
    truth, camera, xy, result = fit_keypoint_case(model, seed)
    with torch.no_grad():
        reproj = np.linalg.norm(camera.project(torch.as_tensor(result.joints)).numpy() - xy, axis=-1)
    assert reproj.mean() < 2.0, f"seed {seed}: mean reprojection {reproj.mean():.2f} px"
    assert result.report["reprojection_px"] < 2.0
    # sensible pose: facing the right way, knees/elbows bend anatomically, no extreme angles
    pose = torch.as_tensor(result.params["body_pose"])
    assert float(priors.bend(pose).abs().max()) < 0.05
    assert float(pose.abs().max()) < 2.1
    for f in range(2):
        angle = _rotation_angle_deg(result.params["global_orient"][f], truth["global_orient"][f].numpy())
        assert angle < 75.0, f"seed {seed}: frame {f} orientation off by {angle:.0f} degrees"


def fit_scan_case(model: SMPL, seed: int) -> tuple[np.ndarray, float, FitResult]:
    """test_fit_scan_recovers_the_body's scan fitted: per-vertex errors (mm), the neutral start's chamfer RMS (mm)
    and the fit."""
    gen = torch.Generator().manual_seed(seed)
    truth = _body_params(model, 1, gen, pose_std=0.1, bend_std=0.3, betas_std=0.4)
    truth["global_orient"] = torch.zeros(1, 3)
    with torch.no_grad():
        verts, _ = model(**truth)
        neutral = model.v_template - model.v_template.mean(0) + verts[0].mean(0)
        start = chamfer(neutral[None], verts)
    result = fit_scan(model, verts[0].numpy(), FitConfig(scan_points=600))
    per_vertex = np.linalg.norm(result.vertices[0] - verts[0].numpy(), axis=-1) * 1000
    return per_vertex, max(float(v.sqrt()) for v in start) * 1000, result


def test_fit_scan_recovers_the_body(model, seed):
    """A scan (the posed model's vertices) of a person facing +z with mildly bent limbs that do not pass through each
    other: the body must be recovered, the median vertex error under 10 mm and the mean under 15 mm (a body turned
    around is off by about 400 mm everywhere, the unposed body by 48-100 mm on average, shins swapped by 50-70 mm
    on average), and the reported chamfer RMS (nearest points both ways, so 15-26 mm on this 604-vertex model even
    when the fit is exact) under 30 mm, where the neutral starts are 38-187 mm.

    Measured with this code (`python bench/smpl_accuracy.py scan --seeds 3000-3099 663621181 4065054319
    441796484`): median vertex error at most 4.0 mm (typically 3.2 mm), mean at most 4.7 mm, chamfer RMS at most
    26.1 mm. Without the restart with the legs swapped, 7 of these 103 seeds had a mean above 15 mm: 6 ended with
    the legs in a wrong minimum, 18-70 mm (663621181: a knee bent in the scan ended bent in the other leg, the
    shins crossed, mean 51 mm), and on 3084 the turned-around body won over such a fit (median 163 mm). Before
    the solver retried rejected steps, the facing stage's correct start could stall altogether (CI seed
    441796484: median 195 mm). Not covered (registering such scans needs landmarks): knees and elbows bent past
    ~90 degrees, and random headings."""
    per_vertex, start_rms, result = fit_scan_case(model, seed)
    rms = max(result.report["model_to_scan_rms_mm"], result.report["scan_to_model_rms_mm"])
    assert np.median(per_vertex) < 10.0, f"seed {seed}: median vertex error {np.median(per_vertex):.1f} mm"
    assert per_vertex.mean() < 15.0, f"seed {seed}: mean vertex error {per_vertex.mean():.1f} mm, {result.report}"
    assert rms < 30.0 < start_rms, f"seed {seed}: start {start_rms:.1f} mm, {result.report}"
    assert float(np.linalg.norm(result.params["global_orient"])) <= np.pi + 1e-6  # canonical axis-angle


@pytest.mark.parametrize("case, match", [
    ("wrong_count", "20 joints per frame, the body model has 24"),
    ("nan", "NaN or infinite"),
    ("too_few", "frame 1 has only 2 usable joints"),
])
def test_bad_joint_input(model, case, match):
    joints = np.zeros((2, 24, 3))
    conf = np.ones((2, 24))
    if case == "wrong_count":
        joints = joints[:, :20]
        conf = conf[:, :20]
    elif case == "nan":
        joints[0, 3, 1] = np.nan
    else:
        conf[1, 2:] = 0.0
    with pytest.raises(ReconError, match=match):
        fit_joints3d(model, joints, FitConfig(iterations=1), confidence=conf, name="J.npy")


def test_bad_keypoint_and_scan_input(model):
    camera = PinholeCamera(500.0, 500.0, 100.0, 100.0)
    with pytest.raises(ReconError, match="K.json: frame 0 has only 3 usable joints"):
        conf = np.zeros((1, 24))
        conf[0, :3] = 1.0
        fit_keypoints2d(model, np.zeros((1, 24, 2)), conf, camera, FitConfig(iterations=1), name="K.json")
    with pytest.raises(ReconError, match="S.ply: scan points contain NaN"):
        fit_scan(model, np.full((50, 3), np.nan), FitConfig(iterations=1), name="S.ply")
