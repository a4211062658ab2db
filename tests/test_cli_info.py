"""``recon info``: bad scene folders stop with one line and exit code 2; real data is described."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from recon.apps.cli import main
from test_scene_load import make_colmap_scene, make_transforms_scene, write_image


def run_info(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["info", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# Each case breaks a small scene folder and names the error the user must see (file and problem).
def size_mismatch(root: Path) -> None:
    make_colmap_scene(root, width=16, height=12)
    write_image(root / "images" / "view_02.png", 17, 12)


def unknown_camera_model(root: Path) -> None:
    make_colmap_scene(root)
    (root / "sparse" / "0" / "cameras.bin").write_bytes(struct.pack("<QIiQQ4d", 1, 1, 7, 16, 12, 14, 8, 6, 0.1))


def unknown_camera_model_json(root: Path) -> None:
    make_transforms_scene(root, "nerfstudio", extra={"camera_model": "OMNIDIRECTIONALSTEREO_L"})


def empty_model(root: Path) -> None:
    make_colmap_scene(root)
    (root / "sparse" / "0" / "images.bin").write_bytes(b"")


def model_without_images(root: Path) -> None:
    make_colmap_scene(root)
    (root / "sparse" / "0" / "images.bin").write_bytes(struct.pack("<Q", 0))


def unreadable_model(root: Path) -> None:
    make_colmap_scene(root)
    (root / "sparse" / "0" / "cameras.bin").write_bytes(os.urandom(7))


def truncated_model(root: Path) -> None:
    make_colmap_scene(root)
    path = root / "sparse" / "0" / "points3D.bin"
    path.write_bytes(path.read_bytes()[:-3])


def nan_pose_colmap(root: Path) -> None:
    make_colmap_scene(root, binary=False)
    path = root / "sparse" / "0" / "images.txt"
    lines = path.read_text().splitlines()
    fields = lines[4].split()
    fields[5] = "nan"
    lines[4] = " ".join(fields)
    path.write_text("\n".join(lines) + "\n")


def inf_pose_json(root: Path) -> None:
    make_transforms_scene(root, "blender")
    path = root / "transforms_train.json"
    meta = json.loads(path.read_text())
    meta["frames"][2]["transform_matrix"][1][3] = float("inf")
    path.write_text(json.dumps(meta))


def no_format(root: Path) -> None:
    """Neither a scene nor photos (a folder of photos is for structure from motion: tests/test_sfm.py)."""
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("not a scene\n")


def no_images_left(root: Path) -> None:
    make_transforms_scene(root, "instant-ngp", count=3)
    for path in (root / "images").iterdir():
        path.unlink()


BAD_INPUTS = [
    (size_mismatch, "images/view_02.png: image is 17x12 but its camera is 16x12"),
    (unknown_camera_model, "sparse/0/cameras.bin: unsupported camera model FOV (supported: SIMPLE_PINHOLE, PINHOLE,"),
    (unknown_camera_model_json, "transforms.json: unsupported camera_model OMNIDIRECTIONALSTEREO_L"),
    (empty_model, "sparse/0/images.bin: the file is empty"),
    (model_without_images, "sparse/0/images.bin: the model has no registered images"),
    (unreadable_model, "sparse/0/cameras.bin: truncated or corrupt COLMAP binary file"),
    (truncated_model, "sparse/0/points3D.bin: truncated or corrupt COLMAP binary file"),
    (nan_pose_colmap, "sparse/0/images.txt: image view_01.png has a non-finite or zero pose"),
    (inf_pose_json, "transforms_train.json: the transform_matrix of r_2.png is not a finite 4x4"),
    (no_format, ": no scene found (looked for a COLMAP model in sparse/0"),
    (no_images_left, ": none of its 3 images exist (first: "),
]


@pytest.mark.parametrize("breaker, message", BAD_INPUTS, ids=[b.__name__ for b, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, breaker, message):
    root = tmp_path / "scene"
    breaker(root)
    code, out, err = run_info(capsys, root)
    assert code == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"recon: error: {root}"), err
    assert message in err, err
    assert "Traceback" not in err


def test_missing_folder(tmp_path, capsys):
    code, out, err = run_info(capsys, tmp_path / "nowhere")
    assert (code, out, err) == (2, "", f"recon: error: {tmp_path / 'nowhere'}: no such folder\n")


def test_console_script_warns_once_for_missing_images(tmp_path):
    """Through the installed command: the info on stdout, one warning line on stderr."""
    make_colmap_scene(tmp_path, count=6)
    for i in (1, 4, 5, 6):
        (tmp_path / "images" / f"view_{i:02d}.png").unlink()
    result = subprocess.run([str(Path(sys.executable).with_name("recon")), "info", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"recon: warning: {tmp_path}: skipping 4 of 6 frames whose image is missing: ")
    assert "view_01.png" in result.stderr and "..." in result.stderr
    assert "images          2 (2 train, 0 test)" in result.stdout


def test_info_lists_the_scene(tmp_path, capsys):
    make_transforms_scene(tmp_path, "instant-ngp", count=4, extra={"aabb_scale": 2})
    code, out, err = run_info(capsys, tmp_path, "--test-every", "2")
    assert (code, err) == (0, "")
    rows = {line[:16].strip(): line[16:] for line in out.splitlines()}  # labels are padded to 16 columns
    assert rows["format"] == "instant-ngp"
    assert rows["images"] == "4 (2 train, 2 test)"
    assert rows["resolution"] == "10x8 (4)"
    assert rows["camera models"] == "PINHOLE (4)"
    assert rows["intrinsics"] == "fx 9, fy 9.5, cx 5, cy 4"
    assert rows["scene box"].startswith("x [-3.03, 3.03]")
    assert "(original coordinates)" in rows["camera centres"]


# --------------------------------------------------------------------------------------------------
# Real data


def test_info_lego(capsys):
    code, out, err = run_info(capsys, shared_path("lego"))
    assert (code, err) == (0, "")
    assert "format          blender" in out
    assert "images          100 (87 train, 13 test)" in out
    assert "resolution      400x400 (100)" in out
    assert "intrinsics      fx 555.556, fy 555.556, cx 200, cy 200" in out
    assert "points          none" in out


def test_info_plush_binary_and_text_models_agree(capsys):
    code, binary, err = run_info(capsys, shared_path("plush"))
    assert (code, err) == (0, "")
    code, text, err = run_info(capsys, shared_path("plush", "sparse_txt", "0"))
    assert (code, err) == (0, "")
    assert "format          colmap" in binary and "points          12,653" in binary
    assert "camera models   SIMPLE_RADIAL (97)" in binary
    assert "intrinsics      fx 827.058, fy 827.058, cx 504, cy 378, k1 0.02465" in binary
    # Everything but the folder name is the same for the binary and the text model.
    assert binary.splitlines()[1:] == text.splitlines()[1:]


def test_info_plush_downscaled(capsys):
    code, out, _ = run_info(capsys, shared_path("plush"), "--downscale", "8", "--test-every", "0")
    assert code == 0
    assert "resolution      126x94 (97) (downscale 8)" in out
    assert "images          97 (97 train, 0 test)" in out


def test_camera_centres_are_reported_in_original_coordinates(capsys):
    root = shared_path("lego")
    code, out, _ = run_info(capsys, root)
    meta = json.loads((root / "transforms_train.json").read_text())
    centres = np.array([frame["transform_matrix"] for frame in meta["frames"]])[:, :3, 3]
    line = next(line for line in out.splitlines() if line.startswith("camera centres"))
    expected = "  ".join(f"{a} [{lo:.4g}, {hi:.4g}]" for a, lo, hi in zip("xyz", centres.min(0), centres.max(0)))
    assert expected in line


def test_info_says_how_distorted_cameras_are_handled(capsys):
    code, out, _ = run_info(capsys, shared_path("plush"), "--downscale", "8")
    assert code == 0
    assert "distortion      gaussians undistort the images once" in out
    assert ("undistorted     SIMPLE_RADIAL 126x94 (97 frames) -> pinhole 126x94, field of view 62.7 x 49.1 deg, "
            "keeps 100.0% of the pixels") in out
    code, _, err = run_info(capsys, shared_path("plush"), "--downscale", "8", "--max-fov", "180")
    assert code != 0 and "--max-fov must be between 1 and 180 degrees" in err and "Traceback" not in err
