"""SMPL fits of keypoints the model did not make: real CMU motion (../shared/data/mocap) retargeted to the body,
seen by a realistic camera 3-8 m away, with 2-5 px noise and missing joints; several people; a 60-frame video.

Bounds come from measurements over many seeds (numbers in each docstring; commands in docs/smpl.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mocap_scenes import keypoint_scene, random_camera, write_camera, write_openpose_sequence
from recon.apps.cli import main
from recon.engine.models.smpl import SMPL
from recon.engine.smpl.fit import FitConfig, _body_priors, fit_keypoints2d
from recon.engine.smpl.keypoints import SMPL_FROM_LAYOUT
from recon.engine.smpl.mocap import read_bvh, retarget
from recon.engine.smpl.pose_prior import MixturePrior
from recon.engine.smpl.symmetry import mirror_pose
from recon.engine.smpl.synthetic import make_test_model, write_test_model
from conftest import shared_path


@pytest.fixture(scope="module")
def model() -> SMPL:
    return SMPL(make_test_model())


def _truth_joints(model: SMPL, scene) -> np.ndarray:
    with torch.no_grad():
        return model.joints(**{k: v.to(model.v_template.dtype) for k, v in scene.truth.items()}).numpy()


def _pelvis_aligned_mpjpe_mm(fit: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean joint error [F] (mm) of joints [F, J, 3] after moving both pelvises to the origin."""
    return np.linalg.norm((fit - fit[:, :1]) - (truth - truth[:, :1]), axis=-1).mean(-1) * 1000


def test_retarget_keeps_the_bvh_bone_directions(model):
    """Every retargeted limb bone points where the BVH's bone points, frame by frame (rest poses differ: 10_01's
    arms hang down, 12_03's legs splay), and the walk's root path keeps its length scaled by the leg ratio."""
    from recon.engine.smpl.mocap import _match_joints, rest_positions, world_rotations

    for clip in ("02_02", "10_01", "12_03"):
        bvh = read_bvh(shared_path("mocap", f"{clip}.bvh"))
        params = retarget(bvh, model.j_template.double().numpy(), model.parents.numpy(), model.joint_names)
        frames = len(bvh.motion)
        world, root = world_rotations(bvh)
        positions = np.zeros((frames, len(bvh.names), 3))
        for j, parent in enumerate(bvh.parents):
            positions[:, j] = root if parent < 0 else positions[:, parent] + world[:, parent] @ bvh.offsets[j]
        t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
        model64 = model.double()
        joints = model64.joints(torch.zeros(frames, model.num_betas, dtype=torch.float64), t(params["global_orient"]),
                                t(params["body_pose"]), t(params["transl"])).numpy()
        model.float()
        match = _match_joints(bvh, model.joint_names)
        for child in ("left_knee", "left_ankle", "right_knee", "right_ankle", "left_elbow", "left_wrist",
                      "right_elbow", "right_wrist"):
            j = model.joint_names.index(child)
            parent = int(model.parents[j])
            ours = joints[:, j] - joints[:, parent]
            theirs = positions[:, match[j]] - positions[:, match[parent]]
            cos = (ours * theirs).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(theirs, axis=-1)
            assert cos.min() > 1 - 1e-9, f"{clip} {child}: bone off by {np.degrees(np.arccos(cos.min())):.3f} deg"
        assert rest_positions(bvh).shape == (len(bvh.names), 3)


def test_pose_prior_prefers_real_motion_to_random_poses(model):
    """The shipped mixture gives CMU poses a far lower cost than random axis-angles of 0.2 rad (measured medians 3-7
    against 170), and a mirrored pose costs about what the pose does (the clips were mirrored when fitting)."""
    prior = MixturePrior.for_model(model.joint_names, torch.float64, "cpu")
    bvh = read_bvh(shared_path("mocap", "12_03.bvh"))
    pose = retarget(bvh, model.j_template.double().numpy(), model.parents.numpy(), model.joint_names)["body_pose"]
    real = prior.cost(torch.as_tensor(pose)).numpy()
    mirrored = prior.cost(mirror_pose(torch.as_tensor(pose), model.joint_names)).numpy()
    rand = prior.cost(0.2 * torch.randn(500, 69, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert np.median(real) < 15 and np.median(rand.numpy()) > 100
    assert abs(np.median(mirrored) - np.median(real)) < 0.25 * np.median(real) + 1


def test_fit_real_motion_keypoints_of_two_people(model, seed):
    """Two people from CMU clips in one 1920x1080 photo (focal 1200-2200 px, each 3-8 m away, BODY_25 keypoints
    with 2-5 px noise, 0-3 joints missing, betas ~ N(0, 0.3): about 3% in size on this model, the spread of adult
    heights), fitted together. Each fit: pelvis depth within DEPTH_BOUND, pelvis-aligned MPJPE (all 24 joints)
    under MPJPE_BOUND_MM, every beta within 2.5 standard deviations, no limb capsules overlapping by over 2 mm.

    Measured on 420 people (`python bench/smpl_accuracy.py photos --seeds 5000-5139`, three per photo;
    docs/smpl.md): depth error median 2.7%, 95th percentile 8.8%, 99th 11.3%, worst 21.4%; MPJPE median 64 mm,
    95th percentile 146 mm, worst 367 mm; betas at most 0.81; overlaps at most 0.04 mm. A monocular fit cannot
    tell a bigger person farther away, and at 8 m with 5 px of noise the torso's length in pixels is uncertain
    by several per cent, so the depth error follows the size spread and the noise: 2 of the 420 were above 15%
    (seed 5043: 15.5% with the pose right, MPJPE 89 mm). The worst (seed 5119, person 1: 21.4%, 367 mm) kicks a
    leg out away from the camera with the standing ankle and the pelvis undetected: the fit is turned 72 degrees,
    its ankles 0.8-1.2 m off. The bounds sit above those, so the test fails on a lost person, not on the known
    tail."""
    rng = np.random.default_rng(seed)
    camera = random_camera(rng)
    scenes = [keypoint_scene(model, rng, camera=camera, betas_std=0.3) for _ in range(2)]
    xy = np.concatenate([s.xy for s in scenes])
    conf = np.concatenate([s.confidence for s in scenes])
    result = fit_keypoints2d(model, xy, conf, camera, FitConfig())
    _, capsules = _body_priors(model)
    for k, scene in enumerate(scenes):
        truth = _truth_joints(model, scene)
        fit = result.joints[k:k + 1]
        depth_error = abs(fit[0, 0, 2] - truth[0, 0, 2]) / truth[0, 0, 2]
        mpjpe = _pelvis_aligned_mpjpe_mm(fit, truth)[0]
        overlap = float(capsules.overlaps(torch.as_tensor(fit)).max()) * 1000
        where = f"seed {seed}, person {k} at {truth[0, 0, 2]:.1f} m, noise {scene.noise_px:.1f} px"
        assert depth_error < DEPTH_BOUND, f"{where}: pelvis depth off by {100 * depth_error:.1f}%"
        assert mpjpe < MPJPE_BOUND_MM, f"{where}: pelvis-aligned MPJPE {mpjpe:.0f} mm"
        assert np.abs(result.params["betas"][k]).max() < 2.5, f"{where}: betas {result.params['betas'][k]}"
        assert overlap < 2.0, f"{where}: limbs overlap by {overlap:.1f} mm"


DEPTH_BOUND = 0.25
MPJPE_BOUND_MM = 450.0


def _coco_entry(scene, annotation_id: int, image_id: int) -> dict:
    """A COCO person annotation (17 keypoints, visibility 2 or 0) from a scene's SMPL-joint keypoints."""
    names = {name: k for k, name in SMPL_FROM_LAYOUT["coco17"].items()}
    from recon.engine.smpl.synthetic import JOINT_NAMES

    kp = np.zeros((17, 3))
    for j, name in enumerate(JOINT_NAMES):
        if name in names and scene.confidence[0, j] > 0:
            kp[names[name]] = (*scene.xy[0, j], 2)
    return {"id": annotation_id, "image_id": image_id, "category_id": 1, "keypoints": kp.ravel().tolist(),
            "num_keypoints": int((kp[:, 2] > 0).sum())}


def test_cli_fits_every_person_of_a_coco_file(tmp_path, seed):
    """A COCO annotation file with three people in one image gives one folder per person (named by annotation id)
    with its parameters and mesh, and report.json maps each to its annotation id. Each folder holds that person:
    its joints project onto that annotation's keypoints (noise-free here) closer than onto any other's and within
    REPROJECTION_BOUND_PX, and its pelvis stands at that person's depth (3, 5.5 or 8 m) within 30%. Measured on
    seeds 9000-9059 (the test in a loop; 180 people): own keypoints at most 5.7 px away (the 3 m person, 8
    iterations), depth 21% off once (9013: 6.34 m for 8 m), which the old 20% bound failed. ``--person 1`` fits
    only the second."""
    rng = np.random.default_rng(seed)
    model_path = tmp_path / "m.npz"
    write_test_model(model_path)
    model = SMPL.from_file(model_path)
    camera = random_camera(rng)
    scenes = [keypoint_scene(model, rng, camera=camera, betas_std=0.3) for _ in range(3)]
    ids = [101, 205, 309]
    for scene, depth in zip(scenes, (3.0, 5.5, 8.0)):  # move each person to its depth along its own ray
        pelvis = _truth_joints(model, scene)[0, 0]
        scene.truth["transl"] = scene.truth["transl"] + torch.as_tensor(pelvis * (depth / pelvis[2] - 1))
        with torch.no_grad():
            proj = camera.project(model.joints(**{k: v.float() for k, v in scene.truth.items()}).double()).numpy()
        scene.xy = np.where(scene.confidence[..., None] > 0, proj, 0.0)
    doc = {"images": [{"id": 7, "width": 1920, "height": 1080}],
           "annotations": [_coco_entry(s, i, 7) for s, i in zip(scenes, ids)]}
    (tmp_path / "people.json").write_text(json.dumps(doc))
    write_camera(camera, tmp_path / "cam.json")
    out = tmp_path / "out"
    base = ["smpl", "fit", "--model", str(model_path), "--keypoints2d", str(tmp_path / "people.json"),
            "--camera", str(tmp_path / "cam.json"), "--iterations", "8"]
    assert main(base + ["-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [p["coco_annotation_id"] for p in report["people"]] == [[i] for i in ids]
    for k, (person, scene, depth) in enumerate(zip(report["people"], scenes, (3.0, 5.5, 8.0))):
        folder = out / person["folder"]
        assert person["folder"] == f"person_{person['coco_annotation_id'][0]}"
        params = np.load(folder / "params.npz")
        assert params["betas"].shape == (1, 10) and (folder / "meshes" / "frame_0000.ply").is_file()
        with torch.no_grad():
            joints = model.joints(**{k: torch.as_tensor(v, dtype=torch.float32) for k, v in params.items()})[0]
        pixels = camera.project(joints.double()).numpy()
        errors = [np.linalg.norm(pixels - other.xy[0], axis=-1)[scene.confidence[0] > 0].mean() for other in scenes]
        where = f"seed {seed}: {person['folder']}"
        assert errors[k] == min(errors) < REPROJECTION_BOUND_PX, f"{where}: {errors} px"
        assert abs(float(joints[0, 2]) - depth) < 0.3 * depth, f"{where} at {float(joints[0, 2]):.2f} m"
    assert main(base + ["-o", str(tmp_path / "one"), "--person", "1"]) == 0
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    assert one["person"] == "person_205" and (tmp_path / "one" / "params.npz").is_file()
    assert main(base + ["-o", str(tmp_path / "bad"), "--person", "3"]) == 2


REPROJECTION_BOUND_PX = 20.0


@pytest.mark.slow
def test_cli_fits_a_60_frame_openpose_sequence_with_one_shape(tmp_path, seed):
    """A folder of 60 OpenPose BODY_25 JSONs (a CMU clip at 60 fps, 2-5 px noise, 0-3 joints missing per frame)
    fits as one track: every frame has the same betas, and on average over the frames the pelvis depth is within
    15% and the pelvis-aligned MPJPE under SEQUENCE_BOUND_MM. Measured on seeds 101-123 (20-30 s each on
    this machine; `python bench/smpl_accuracy.py sequence --seeds 101-123`): depth error mean
    1.0-6.9% (worst frame 15.0%), MPJPE mean 34-111 mm (worst frame 326 mm); see docs/smpl.md."""
    rng = np.random.default_rng(seed)
    model_path = tmp_path / "m.npz"
    write_test_model(model_path)
    model = SMPL.from_file(model_path)
    scene = keypoint_scene(model, rng, frames=60, stride=2, betas_std=0.3)
    folder = write_openpose_sequence(scene, model.joint_names, tmp_path / "frames")
    cam = write_camera(scene.camera, tmp_path / "cam.json")
    out = tmp_path / "out"
    assert main(["smpl", "fit", "--model", str(model_path), "--keypoints2d", str(folder), "--camera", str(cam),
                 "-o", str(out)]) == 0
    params = np.load(out / "params.npz")
    report = json.loads((out / "report.json").read_text())
    assert params["betas"].shape == (60, 10) and np.ptp(params["betas"], axis=0).max() == 0.0
    assert report["shared_betas"] and report["smooth"] > 0 and len(report["frame_names"]) == 60
    with torch.no_grad():
        fit = model.joints(**{k: torch.as_tensor(v, dtype=torch.float32) for k, v in params.items()}).numpy()
    truth = _truth_joints(model, scene)
    depth_error = np.abs(fit[:, 0, 2] - truth[:, 0, 2]) / truth[:, 0, 2]
    mpjpe = _pelvis_aligned_mpjpe_mm(fit, truth)
    assert depth_error.mean() < 0.15, f"seed {seed}: pelvis depth off by {100 * depth_error.mean():.1f}% on average"
    assert mpjpe.mean() < SEQUENCE_BOUND_MM, f"seed {seed}: mean pelvis-aligned MPJPE {mpjpe.mean():.0f} mm"
    assert len(list((out / "meshes").glob("*.ply"))) == 60


SEQUENCE_BOUND_MM = 200.0


def test_makehuman_body_model_fits_real_motion(tmp_path, seed):
    """The CC0 MakeHuman body built into the SMPL layout: a T-pose in metres (arms level, 1.69 m tall), skinning
    weights summing to 1, faces on the body only; and it fits a CMU keypoint scene through the command line with
    pelvis depth within DEPTH_BOUND, betas within 2.5 and pelvis-aligned MPJPE under MAKEHUMAN_MPJPE_MM. Measured
    on this body (`python bench/smpl_accuracy.py makehuman --seeds 8000-8226`, one person each, the library call
    the command line makes; see docs/smpl.md): 227 people, depth error median 5.0%, 95th percentile 12.8%, worst
    18.9% (4 above 15%, so the old 15% bound failed about one run in 60); MPJPE median 84 mm, 95th percentile
    150 mm, worst 213 mm (seed 8002 gave 375 mm, a limb chain mirrored in depth, before the solver retried
    rejected steps); betas at most 0.87. Its depth errors run higher than the synthetic body's: its betas are
    generic size directions, not a learned shape space."""
    source = shared_path("makehuman")
    path = tmp_path / "mh.npz"
    assert main(["smpl", "make-makehuman-model", str(path), "--source", str(source)]) == 0
    model = SMPL.from_file(path)
    joints = model.j_template.numpy()
    index = model.joint_names.index
    for side in ("left", "right"):
        arm = joints[index(f"{side}_wrist")] - joints[index(f"{side}_shoulder")]
        assert abs(arm[1]) < 0.01 and abs(arm[2]) < 0.01 and abs(arm[0]) > 0.4  # level, along x
    height = np.ptp(model.v_template.numpy()[np.unique(model.faces.numpy())][:, 1])
    assert 1.6 < height < 1.8
    np.testing.assert_allclose(model.weights.sum(1).numpy(), 1.0, atol=1e-5)
    rng = np.random.default_rng(seed)
    scene = keypoint_scene(model, rng, betas_std=0.3)
    (tmp_path / "k.json").write_text(json.dumps(np.concatenate([scene.xy[0], scene.confidence[0, :, None]], 1).tolist()))
    write_camera(scene.camera, tmp_path / "cam.json")
    out = tmp_path / "out"
    assert main(["smpl", "fit", "--model", str(path), "--keypoints2d", str(tmp_path / "k.json"), "--camera",
                 str(tmp_path / "cam.json"), "-o", str(out)]) == 0
    params = np.load(out / "params.npz")
    with torch.no_grad():
        fit = model.joints(**{k: torch.as_tensor(v, dtype=torch.float32) for k, v in params.items()}).numpy()
    truth = _truth_joints(model, scene)
    assert abs(fit[0, 0, 2] - truth[0, 0, 2]) / truth[0, 0, 2] < DEPTH_BOUND, f"seed {seed}: depth {fit[0, 0, 2]:.2f} m"
    assert np.abs(params["betas"]).max() < 2.5
    assert _pelvis_aligned_mpjpe_mm(fit, truth)[0] < MAKEHUMAN_MPJPE_MM


MAKEHUMAN_MPJPE_MM = 500.0
