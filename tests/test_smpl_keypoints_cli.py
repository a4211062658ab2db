"""SMPL keypoint readers (OpenPose BODY_25, COCO-17, arrays) and the ``recon smpl`` command."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recon.apps.cli import main
from recon.engine.errors import ReconError
from recon.engine.models.smpl import SMPL
from recon.engine.smpl.fit import PinholeCamera
from recon.engine.smpl.keypoints import SMPL_FROM_LAYOUT, read_keypoints, to_smpl_joints
from recon.engine.smpl.synthetic import JOINT_NAMES


def test_openpose_body25_picks_most_confident_person_and_maps_joints(tmp_path):
    gen = np.random.default_rng(0)
    strong = np.concatenate([gen.uniform(0, 500, (25, 2)), np.full((25, 1), 0.9)], 1)
    weak = np.concatenate([gen.uniform(0, 500, (25, 2)), np.full((25, 1), 0.2)], 1)
    strong[0, 2] = 0.0  # a missing keypoint (OpenPose writes zeros)
    doc = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": weak.ravel().tolist()},
                                      {"person_id": [-1], "pose_keypoints_2d": strong.ravel().tolist()}]}
    (tmp_path / "frame_keypoints.json").write_text(json.dumps(doc))
    kp = read_keypoints(tmp_path / "frame_keypoints.json")
    assert kp.layout == "body25" and kp.xy.shape == (1, 25, 2)
    xy, conf = to_smpl_joints(kp)
    for k, name in SMPL_FROM_LAYOUT["body25"].items():
        np.testing.assert_allclose(xy[0, JOINT_NAMES.index(name)], strong[k, :2])
    assert conf[0, JOINT_NAMES.index("head")] == 0.0  # no keypoint for it


def test_coco_results_one_person_per_image_in_image_order(tmp_path):
    entries = []
    for image_id in (7, 3):
        kp = np.zeros((17, 3))
        kp[:, 0], kp[:, 2] = image_id, 2.0
        entries.append({"image_id": image_id, "category_id": 1, "keypoints": kp.ravel().tolist(), "score": 0.9})
    (tmp_path / "coco.json").write_text(json.dumps(entries))
    kp = read_keypoints(tmp_path / "coco.json")
    assert kp.layout == "coco17" and kp.xy.shape == (2, 17, 2)
    assert kp.xy[0, 0, 0] == 3 and kp.xy[1, 0, 0] == 7
    xy, conf = to_smpl_joints(kp)
    assert conf[0, JOINT_NAMES.index("left_knee")] == 2.0 and conf[0, JOINT_NAMES.index("pelvis")] == 0.0


def test_people_of_coco_and_openpose_files(tmp_path):
    """Who is who: COCO annotation ids in one image, track ids across images, one person per image as one track,
    the k-th OpenPose person of every frame of a folder (frames without one skipped)."""
    from recon.engine.smpl.keypoints import read_people

    def ann(i, image, x, **extra):
        kp = np.zeros((17, 3))
        kp[:, 0], kp[:, 2] = x, 2.0
        return {"id": i, "image_id": image, "keypoints": kp.ravel().tolist(), **extra}

    (tmp_path / "one.json").write_text(json.dumps({"annotations": [ann(9, 1, 10.0), ann(4, 1, 20.0)]}))
    people = read_people(tmp_path / "one.json")
    assert [p.label for p in people] == ["person_4", "person_9"]  # annotation id order
    assert people[0].ids["coco_annotation_id"] == [4] and people[0].keypoints.xy[0, 0, 0] == 20.0
    (tmp_path / "video.json").write_text(json.dumps({"annotations": [ann(1, 3, 1.0), ann(2, 1, 2.0), ann(3, 2, 3.0)]}))
    (track,) = read_people(tmp_path / "video.json")
    assert track.frames == [1, 2, 3] and list(track.keypoints.xy[:, 0, 0]) == [2.0, 3.0, 1.0]
    tracked = [ann(1, 1, 1.0, track_id=5), ann(2, 1, 2.0, track_id=6), ann(3, 2, 3.0, track_id=5)]
    (tmp_path / "tracks.json").write_text(json.dumps({"annotations": tracked}))
    people = read_people(tmp_path / "tracks.json")
    assert [(p.label, p.frames) for p in people] == [("track_5", [1, 2]), ("track_6", [1])]
    folder = tmp_path / "frames"
    folder.mkdir()
    for f, count in enumerate((2, 1, 2)):
        people_doc = [{"pose_keypoints_2d": [float(10 * f + k)] * 75} for k in range(count)]
        (folder / f"f{f}_keypoints.json").write_text(json.dumps({"people": people_doc}))
    first, second = read_people(folder)
    assert first.ids == {"openpose_index": 0} and first.frames == ["f0_keypoints.json", "f1_keypoints.json",
                                                                   "f2_keypoints.json"]
    assert second.frames == ["f0_keypoints.json", "f2_keypoints.json"] and second.keypoints.xy[1, 0, 0] == 21.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReconError, match="empty: the folder holds no .json keypoint files"):
        read_people(tmp_path / "empty")


def test_keypoint_errors(tmp_path):
    (tmp_path / "k.json").write_text(json.dumps([[1.0, 2.0, 1.0]] * 13))
    with pytest.raises(ReconError, match=r"k.json: 13 keypoints per frame; expected 17"):
        read_keypoints(tmp_path / "k.json")
    bad = [[1.0, 2.0, 1.0]] * 17
    bad[4] = [float("nan"), 1.0, 0.8]
    (tmp_path / "nan.json").write_text(json.dumps(bad))
    with pytest.raises(ReconError, match=r"nan.json: keypoint 4 of frame 0 is NaN"):
        read_keypoints(tmp_path / "nan.json")
    with pytest.raises(ReconError, match="not found"):
        read_keypoints(tmp_path / "absent.json")
    (tmp_path / "open.json").write_text(json.dumps({"people": []}))
    with pytest.raises(ReconError, match="no person"):
        read_keypoints(tmp_path / "open.json")


def _posed(model: SMPL) -> tuple[torch.Tensor, torch.Tensor]:
    pose = torch.zeros(1, 69)
    pose[0, 9] = 0.5  # left knee bent
    return model(torch.zeros(1, 10), torch.tensor([[np.pi, 0.0, 0.0]]), pose, torch.tensor([[0.0, 0.1, 3.0]]))


def test_cli_make_model_and_fit_joints3d(tmp_path, capsys):
    assert main(["smpl", "make-test-model", str(tmp_path / "m.npz")]) == 0
    model = SMPL.from_file(tmp_path / "m.npz")
    with torch.no_grad():
        _, joints = _posed(model)
    np.save(tmp_path / "j.npy", joints[0].numpy())
    out = tmp_path / "out"
    assert main(["smpl", "fit", "--model", str(tmp_path / "m.npz"), "--joints3d", str(tmp_path / "j.npy"),
                 "-o", str(out), "--iterations", "6", "--mesh-format", "obj"]) == 0
    params = np.load(out / "params.npz")
    assert params["betas"].shape == (1, 10) and params["global_orient"].shape == (1, 3)
    assert params["body_pose"].shape == (1, 69) and params["transl"].shape == (1, 3)
    np.testing.assert_allclose(json.loads((out / "params.json").read_text())["transl"], params["transl"])
    report = json.loads((out / "report.json").read_text())
    assert report["mpjpe_mm"] < 1.0
    assert (out / "meshes" / "frame_0000.obj").read_text().count("\nf ") == len(model.faces)
    assert "mpjpe_mm" in capsys.readouterr().out


def test_cli_fit_keypoints2d_with_image_overlay(tmp_path):
    from recon.engine.io.images import read_image, write_image

    main(["smpl", "make-test-model", str(tmp_path / "m.npz")])
    model = SMPL.from_file(tmp_path / "m.npz")
    camera = PinholeCamera(300.0, 300.0, 80.0, 60.0)
    with torch.no_grad():
        _, joints = _posed(model)
    xy = camera.project(joints)[0].numpy()
    (tmp_path / "k.json").write_text(json.dumps({"keypoints": np.concatenate([xy, np.ones((24, 1))], 1).tolist()}))
    (tmp_path / "cam.json").write_text(json.dumps({"fx": 300, "fy": 300, "cx": 80, "cy": 60}))
    write_image(tmp_path / "img.png", np.zeros((120, 160, 3), np.float32))
    out = tmp_path / "out"
    assert main(["smpl", "fit", "--model", str(tmp_path / "m.npz"), "--keypoints2d", str(tmp_path / "k.json"),
                 "--camera", str(tmp_path / "cam.json"), "--image", str(tmp_path / "img.png"), "-o", str(out),
                 "--pose-prior", "1", "--shape-prior", "1"]) == 0  # arms out is a rare pose for the prior
    report = json.loads((out / "report.json").read_text())
    assert report["reprojection_px"] < 2.0
    assert report["camera"]["source"].startswith("camera file") and report["camera"]["fx"] == 300
    overlay = read_image(out / "overlay_0000.png")
    assert overlay.shape == (120, 160, 3) and 0.02 < (overlay.sum(-1) > 0.1).mean() < 0.9
    assert (out / "meshes" / "frame_0000.ply").is_file()


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    main(["smpl", "make-test-model", str(tmp_path / "m.npz")])
    np.save(tmp_path / "j.npy", np.zeros((2, 17, 3)))
    code = main(["smpl", "fit", "--model", str(tmp_path / "m.npz"), "--joints3d", str(tmp_path / "j.npy"),
                 "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "recon: error:" in err and "j.npy: 17 joints per frame, the body model has 24" in err
    assert not (tmp_path / "out" / "params.npz").exists()
    (tmp_path / "k.json").write_text(json.dumps([[1.0, 2.0, 1.0]] * 24))
    code = main(["smpl", "fit", "--model", str(tmp_path / "m.npz"), "--keypoints2d", str(tmp_path / "k.json"),
                 "-o", str(tmp_path / "out")])
    assert code == 2 and "need --camera, or --image" in capsys.readouterr().err


# imageio probes every plugin on an unreadable file, its deprecated DICOM one included
@pytest.mark.filterwarnings("ignore:The legacy `DICOM` plugin:DeprecationWarning")
def test_cli_bad_image_writes_no_outputs(tmp_path, capsys):
    main(["smpl", "make-test-model", str(tmp_path / "m.npz")])
    (tmp_path / "k.json").write_text(json.dumps([[[80.0, 60.0, 1.0]] * 24] * 2))  # two frames
    (tmp_path / "cam.json").write_text(json.dumps({"fx": 300, "fy": 300, "cx": 80, "cy": 60}))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    base = ["smpl", "fit", "--model", str(tmp_path / "m.npz"), "--keypoints2d", str(tmp_path / "k.json"),
            "--camera", str(tmp_path / "cam.json"), "-o", str(tmp_path / "out"), "--iterations", "2"]
    code = main(base + ["--image", str(tmp_path / "broken.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "broken.png" in err
    assert not (tmp_path / "out").exists()
    from recon.engine.io.images import write_image

    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / name, np.zeros((120, 160, 3), np.float32))
    code = main(base + ["--image", *(str(tmp_path / n) for n in ("a.png", "b.png", "c.png"))])
    assert code == 2 and "3 images given for 2 frames" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_camera_from_exif_or_image_size(tmp_path):
    """Without --camera the focal length comes from EXIF (35 mm equivalent: 26 mm on a 4:3 photo is the diagonal
    times 26 / 43.27) or, lacking it, is the larger image side; the report says which."""
    from PIL import Image

    from recon.engine.smpl.io import camera_for_image

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 26
    Image.new("RGB", (640, 480)).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    Image.new("RGB", (640, 480)).save(tmp_path / "plain.png")
    camera, source = camera_for_image(tmp_path / "phone.jpg")
    assert source == "exif" and camera.fx == pytest.approx(800 * 26 / np.hypot(36, 24), rel=1e-6)
    assert (camera.cx, camera.cy) == (320, 240)
    camera, source = camera_for_image(tmp_path / "plain.png")
    assert source == "default" and camera.fx == 640
    main(["smpl", "make-test-model", str(tmp_path / "m.npz")])
    (tmp_path / "k.json").write_text(json.dumps([[[320.0 + 3 * j, 100.0 + 10 * j, 1.0] for j in range(24)]]))
    out = tmp_path / "out"
    assert main(["smpl", "fit", "--model", str(tmp_path / "m.npz"), "--keypoints2d", str(tmp_path / "k.json"),
                 "--image", str(tmp_path / "phone.jpg"), "-o", str(out), "--iterations", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["camera"]["source"].startswith("EXIF focal length") and (out / "overlay_0000.png").is_file()
