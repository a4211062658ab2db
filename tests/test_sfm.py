"""``recon sfm`` and ``recon fit`` on photos or a video: real photos against their COLMAP model, a demo-scene
video end to end, interruption and resume, and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from recon.apps.cli import main
from recon.engine.eval.poses import pose_errors
from recon.engine.scene.colmap import image_world_to_camera, read_model
from conftest import shared_path

PLUSH_STEP = 2  # every other photo: 49 of the 97
PLUSH_SHRINK = 2  # 504x378


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith("recon: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _poses(model_dir) -> dict[str, np.ndarray]:
    return {im.name: image_world_to_camera(im) for im in read_model(model_dir).images.values()}


@pytest.mark.slow
def test_plush_photos_match_colmap_and_resume(tmp_path, monkeypatch, capsys):
    """49 real photos at 504x378: interrupted at mapping, resumed without redoing features or matches; then
    >= 90% register and the poses agree with the COLMAP model shipped with the photos (2 degrees, 2% of
    the extent) after a similarity alignment."""
    import pycolmap

    import recon.engine.sfm.pipeline as pipeline

    plush = shared_path("plush")
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((plush / "images").iterdir())[::PLUSH_STEP]:
        with Image.open(path) as im:
            im.resize((im.width // PLUSH_SHRINK, im.height // PLUSH_SHRINK), Image.LANCZOS).save(
                photos / path.name, quality=95)
    count = len(list(photos.iterdir()))
    out = tmp_path / "scene"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "map_images", interrupted)
    assert main(["sfm", str(photos), "-o", str(out)]) == 130
    partial = tmp_path / ".scene.partial"
    assert not out.exists() and (partial / "database.db").is_file()
    monkeypatch.undo()

    calls = {"extract": 0, "match": 0}
    real_extract, real_match = pycolmap.extract_features, pycolmap.match_image_pairs

    def counting(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(pycolmap, "extract_features", counting("extract", real_extract))
    monkeypatch.setattr(pycolmap, "match_image_pairs", counting("match", real_match))
    capsys.readouterr()
    assert main(["sfm", str(photos), "-o", str(out)]) == 0
    assert calls == {"extract": 0, "match": 0}  # resumed from the database
    assert not partial.exists()
    printed = capsys.readouterr().out
    assert "images registered" in printed and "SIMPLE_RADIAL" in printed and "exhaustive" in printed

    report = json.loads((out / "sfm.json").read_text())["report"]
    assert len(report["images"]) == count
    assert len(report["registered"]) >= 0.9 * count, report["registered"]
    assert report["mean_reprojection_error"] < 1.5 and report["points"] > 1000
    unregistered = sorted(set(report["images"]) - set(report["registered"]))
    assert all(name in printed for name in unregistered)
    errors = pose_errors(_poses(out / "sparse" / "0"), _poses(plush / "sparse" / "0"))
    assert errors.compared == len(report["registered"])
    assert errors.rotation_max_deg < 2.0 and errors.centre_max < 0.02, errors

    from recon.engine.scene import load_scene

    scene = load_scene(out)
    camera = scene.frames[0].camera
    assert camera.model == "SIMPLE_RADIAL" and "k1" in camera.distortion
    assert (camera.width, camera.height) == (1008 // PLUSH_SHRINK, 756 // PLUSH_SHRINK)
    # The shipped model's focal length (827.06 px at 1008x756), halved.
    assert camera.fx == pytest.approx(827.06 / PLUSH_SHRINK, rel=0.02)

    # Another mapper on the same scene starts from its features and matches.
    assert main(["sfm", str(photos), "-o", str(out), "--mapper", "global"]) == 0
    assert calls == {"extract": 0, "match": 0}
    report = json.loads((out / "sfm.json").read_text())["report"]
    assert report["mapper"] == "global" and len(report["registered"]) >= 0.9 * count


@pytest.mark.slow
def test_demo_video_fit_end_to_end(tmp_path, monkeypatch, capsys):
    """An orbit of the demo scene rendered to MP4 with frames blurred on purpose: ``recon fit clip.mp4``
    runs SfM (dropping the blurred frames) and a short fit; ``recon info`` and a second fit reuse the scene."""
    from recon.engine.io.video import write_video
    from recon.engine.scene.demo_orbit import orbit_cameras, orbit_frames
    from test_sfm_parts import box_blur

    frames, resolution, target = 72, 256, 36  # windows of 2 frames, 10 degrees apart
    images = orbit_frames(frames, resolution)
    blurred = {16, 17, 41}  # a whole window (16, 17), and one frame of the window (40, 41)
    for i in blurred:
        images[i] = box_blur(images[i], 3)
    monkeypatch.chdir(tmp_path)
    write_video("clip.mp4", list(images), fps=12)
    argv = ["fit", "clip.mp4", "--frames", str(target), "--steps", "20", "--init-points", "500", "--seed", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "running structure from motion into runs/clip_sfm" in printed
    scene = tmp_path / "runs" / "clip_sfm"
    record = json.loads((scene / "sfm.json").read_text())["report"]
    kept = [f["index"] for f in record["video"]["frames"]]
    assert not blurred & set(kept)
    assert record["video"]["dropped"] == [16] or record["video"]["dropped"] == [17]
    assert len(kept) == target - 1
    assert len(record["registered"]) >= 0.9 * len(kept)
    assert record["mapper"] == "global"  # --mapper auto for a video; the incremental one misses the focal length
    truth = orbit_cameras(1, resolution)[0]
    (camera,) = record["cameras"]
    assert camera["params"][0] == pytest.approx(truth.fx, rel=0.05), camera
    runs = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("clip-")]
    assert len(runs) == 1 and (runs[0] / "metrics.json").is_file()
    assert json.loads((runs[0] / "config.json").read_text())["source"] == "runs/clip_sfm"

    assert main(["info", "clip.mp4", "--frames", str(target)]) == 0
    assert "made earlier and current" in capsys.readouterr().out
    assert main(["info", "clip.mp4"]) == 0  # --frames 200: that scene would not do
    assert "made from other options" in capsys.readouterr().out
    assert main(argv[:-6] + ["--steps", "2", "--init-points", "200", "-o", "runs/again"]) == 0
    assert "using the structure-from-motion scene runs/clip_sfm made earlier" in capsys.readouterr().out


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys, seed):
    rng = np.random.default_rng(seed)
    work = tmp_path / "work"
    work.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    one = tmp_path / "one"
    one.mkdir()
    Image.fromarray(rng.uniform(0, 255, (40, 50, 3)).astype(np.uint8)).save(one / "a.jpg")
    fake = tmp_path / "fake"
    fake.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(rng.uniform(0, 255, (40, 50, 3)).astype(np.uint8)).save(fake / name)
    (fake / "c.jpg").write_text("this is text, not a JPEG\n")
    video = tmp_path / "broken.mp4"
    video.write_bytes(rng.bytes(4096))
    cases = {
        empty: "no images",
        one: "only 1 usable image",
        fake: "only 2 usable images",
        video: "cannot decode the video",
        tmp_path / "missing": "no such file or folder",
        tmp_path / "notes.txt": "not a video",
    }
    (tmp_path / "notes.txt").write_text("hello\n")
    for source, reason in cases.items():
        assert main(["sfm", str(source), "-o", str(work / "scene")]) == 2
        line = _one_error_line(capsys)
        assert reason in line and str(source) in line, line
        assert list(work.iterdir()) == []  # no scene, no partial folder
    assert main(["sfm", str(fake), "-o", str(work / "scene")]) == 2
    assert "c.jpg (does not decode" in _one_error_line(capsys)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine\n")
    assert main(["sfm", str(fake), "-o", str(full)]) == 2
    assert "not empty" in _one_error_line(capsys) and list(full.iterdir()) == [full / "keep.txt"]


def test_info_and_help_describe_sfm(tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30)).save(photos / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert main(["info", "photos"]) == 0
    out = capsys.readouterr().out
    assert "folder of 3 photos" in out and "runs/photos_sfm" in out and "exhaustive matching" in out
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--matcher" in capsys.readouterr().out


def test_mixed_sizes_get_one_camera_each_with_exif_priors(tmp_path, seed):
    """Cameras are made per (size, focal prior): two sizes, and one size with and without an EXIF focal length."""
    import pycolmap

    from recon.engine.sfm.features import import_cameras
    from recon.engine.sfm.photos import Photo

    rng = np.random.default_rng(seed)
    photos = [Photo("a.jpg", 64, 48, 60.0, "a"), Photo("b.jpg", 64, 48, 60.0, "b"), Photo("c.jpg", 48, 64, None, "c"),
              Photo("d.jpg", 64, 48, None, "d")]
    for photo in photos:
        Image.fromarray(rng.uniform(0, 255, (photo.height, photo.width, 3)).astype(np.uint8)).save(tmp_path / photo.name)
    database = tmp_path / "database.db"
    pycolmap.Database.open(database).close()
    import_cameras(database, tmp_path, photos, "auto")
    import_cameras(database, tmp_path, photos, "auto")  # a rerun adds nothing
    db = pycolmap.Database.open(database)
    cameras = {c.camera_id: c for c in db.read_all_cameras()}
    by_name = {im.name: cameras[im.camera_id] for im in db.read_all_images()}
    db.close()
    assert len(cameras) == 3 and len(by_name) == 4
    assert by_name["a.jpg"].camera_id == by_name["b.jpg"].camera_id
    assert by_name["a.jpg"].model_name == "SIMPLE_RADIAL" and by_name["a.jpg"].has_prior_focal_length
    assert by_name["a.jpg"].focal_length == pytest.approx(60.0)
    assert (by_name["c.jpg"].width, by_name["c.jpg"].height) == (48, 64) and not by_name["c.jpg"].has_prior_focal_length
    assert by_name["d.jpg"].camera_id not in (by_name["a.jpg"].camera_id, by_name["c.jpg"].camera_id)


def test_unrelated_images_do_not_register(tmp_path, capsys, seed):
    """Photos of nothing in common: a one-line error with what to try; no scene, the features kept for a rerun."""
    rng = np.random.default_rng(seed)
    photos = tmp_path / "noise"
    photos.mkdir()
    for i in range(5):
        Image.fromarray(rng.uniform(0, 255, (60, 80, 3)).astype(np.uint8)).save(photos / f"{i}.png")
    assert main(["sfm", str(photos), "-o", str(tmp_path / "scene")]) == 2
    line = _one_error_line(capsys)
    assert "only 0 of 5 images registered" in line and "--mapper global" in line and "rerun resumes" in line
    assert not (tmp_path / "scene").exists() and (tmp_path / ".scene.partial" / "database.db").is_file()
