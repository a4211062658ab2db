"""The parts of structure from motion that need no mapping: frame selection, photo intake (EXIF orientation
and focal length), camera grouping, pair planning and retrieval."""
from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
from PIL import Image

from recon.engine.sfm.features import camera_groups, camera_model_for
from recon.engine.sfm.frames import extract_frames, laplacian_variance, probe_video, select_sharp
from recon.engine.sfm.pairs import (EXHAUSTIVE_MAX_IMAGES, SEQUENTIAL_OVERLAP, choose_matcher, plan_pairs,
                                    sequential_pairs, similar_pairs)
from recon.engine.sfm.photos import FULL_FRAME_DIAGONAL_MM, Photo, intake_photos
from recon.engine.sfm.retrieval import similarity_matrix
from recon.engine.sfm.source import source_kind


def box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """A (2 radius + 1)^2 box blur of [H, W, C] by summed shifts (edges replicated)."""
    padded = np.pad(image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    out = np.zeros(image.shape, dtype=np.float64)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out += padded[dy:dy + image.shape[0], dx:dx + image.shape[1]]
    return out / (2 * radius + 1) ** 2


def _texture(rng: np.random.Generator, height: int = 48, width: int = 64) -> np.ndarray:
    return (rng.uniform(0, 255, size=(height, width, 3))).astype(np.uint8)


def test_sharpness_ranks_blur(seed):
    rng = np.random.default_rng(seed)
    sharp = _texture(rng)
    scores = [laplacian_variance(box_blur(sharp, r).astype(np.uint8)) if r else laplacian_variance(sharp)
              for r in (0, 1, 2, 4)]
    assert scores == sorted(scores, reverse=True) and scores[-1] < 0.05 * scores[0]
    assert laplacian_variance(np.full((20, 30, 3), 128, np.uint8)) == 0.0


def test_select_sharp_keeps_window_best_and_drops_blurred_windows():
    scores = np.full(40, 100.0) + np.arange(40) % 3  # every window of 4 has a clear best
    scores[8:12] = 10.0  # a whole window blurred: its best is far below the neighbourhood
    scores[21] = 5.0  # one blurred frame in a window of sharp ones: simply not the best
    kept, dropped = select_sharp(scores, 4)
    assert dropped == [8]
    assert kept == [2, 5, 14, 17, 20, 26, 29, 32, 38]  # first of equal maxima
    assert 21 not in kept
    # Window 1: every frame is a window; the isolated blurred frames go by the neighbourhood rule.
    kept, dropped = select_sharp(scores, 1)
    assert set(dropped) == {8, 9, 10, 11, 21} and len(kept) == 35


def test_video_frames_respect_rotation_and_skip_blur(tmp_path, seed):
    """A 64x32 clip stored with a 90-degree display rotation comes out 32x64, upright; blurred frames are
    left out and the rest are traced back by index."""
    import imageio_ffmpeg

    from recon.engine.io.video import write_video

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(12):
        frame = np.zeros((32, 64, 3), np.uint8)
        frame[:, :32] = 255  # a bright left half: after rotation by 90 degrees it is at the bottom or top
        frame[8:24, 8:56] = _texture(rng, 16, 48)
        frames.append(box_blur(frame, 3).astype(np.uint8) if i in (4, 5) else frame)
    plain = tmp_path / "plain.mp4"
    write_video(plain, [f / 255.0 for f in frames], fps=6)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", str(plain),
                    "-c", "copy", str(rotated)], check=True)
    info = probe_video(rotated)
    assert (info.width, info.height, info.rotation, info.fps, info.frame_count) == (32, 64, 90, 6.0, 12)
    info, kept, dropped = extract_frames(rotated, tmp_path / "frames", target=6, progress=False)
    # Windows of 2 frames; the window of frames 4 and 5 (both blurred) gives nothing.
    assert [f.index // 2 for f in kept] == [0, 1, 3, 4, 5] and [i // 2 for i in dropped] == [2]
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f.name for f in kept]
    assert kept[1].name == f"frame_{kept[1].index:05d}.jpg" and kept[1].time == pytest.approx(kept[1].index / 6)
    image = np.asarray(Image.open(tmp_path / "frames" / kept[0].name))
    assert image.shape == (64, 32, 3)
    rows = image.mean(axis=(1, 2))
    assert abs(rows[:8].mean() - rows[-8:].mean()) > 100  # the bright half is now a top or bottom band


def _jpeg_with_exif(path, width, height, *, orientation=None, focal_35mm=None, rng=None):
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 4, : width // 4] = (255, 0, 0)  # a red top-left corner marks the stored orientation
    if rng is not None:
        pixels[height // 2:, :] = rng.uniform(0, 255, (height - height // 2, width, 3)).astype(np.uint8)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if focal_35mm is not None:
        exif.get_ifd(0x8769)[0xA405] = focal_35mm
    image.save(path, quality=95, exif=exif.tobytes())


def test_photo_intake_orientation_focal_and_skips(tmp_path, seed):
    rng = np.random.default_rng(seed)
    src = tmp_path / "photos"
    src.mkdir()
    _jpeg_with_exif(src / "a upright.jpg", 80, 60, focal_35mm=26, rng=rng)
    _jpeg_with_exif(src / "b_turned.jpg", 80, 60, orientation=6, focal_35mm=26, rng=rng)  # shot holding the phone upright
    _jpeg_with_exif(src / "c_plain.jpg", 80, 60, rng=rng)
    (src / "d_text.jpg").write_text("not an image\n")
    (src / "notes.txt").write_text("hello\n")
    good = src / "c_plain.jpg"
    (src / "e_truncated.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (src / ".DS_Store").write_bytes(b"\0")
    photos, skipped = intake_photos(src, tmp_path / "images", progress=False)
    assert [p.name for p in photos] == ["a_upright.jpg", "b_turned.jpg", "c_plain.jpg"]
    assert [s.split(" (")[0] for s in skipped] == ["d_text.jpg", "e_truncated.jpg", "notes.txt"]
    assert "does not decode" in skipped[0] and "not a supported image" in skipped[2]
    upright, turned, plain = photos
    expected = 26 * math.hypot(80, 60) / FULL_FRAME_DIAGONAL_MM
    assert upright.focal == pytest.approx(expected) and turned.focal == pytest.approx(expected)
    assert plain.focal is None
    assert (upright.width, upright.height, upright.rotated) == (80, 60, False)
    assert (turned.width, turned.height, turned.rotated) == (60, 80, True)
    assert (tmp_path / "images" / "a_upright.jpg").read_bytes() == (src / "a upright.jpg").read_bytes()
    stored = Image.open(tmp_path / "images" / "b_turned.jpg")
    assert stored.size == (60, 80) and stored.getexif().get(0x0112, 1) == 1
    # Orientation 6 turns the image 90 degrees clockwise: the stored top-left (red) corner ends top-right,
    # the stored top-right (black) one bottom-right.
    pixels = np.asarray(stored).astype(int)
    assert pixels[5, -5, 0] > 200 and pixels[5, -5, 1] < 60 and pixels[-5, -5].max() < 60


def test_camera_groups_by_size_and_focal():
    photos = [Photo("a", 80, 60, 50.0, "a"), Photo("b", 60, 80, 50.0, "b"), Photo("c", 80, 60, 50.02, "c"),
              Photo("d", 80, 60, None, "d"), Photo("e", 80, 60, 70.0, "e"), Photo("f", 80, 60, None, "f")]
    assert [[p.name for p in g] for g in camera_groups(photos)] == [["a", "c"], ["b"], ["d", "f"], ["e"]]
    assert camera_model_for("auto", 49) == "SIMPLE_RADIAL" and camera_model_for("auto", 50) == "OPENCV"
    assert camera_model_for("RADIAL", 3) == "RADIAL"


def test_pair_plans():
    n = 30
    assert choose_matcher("auto", "video", 500) == "sequential"
    assert choose_matcher("auto", "photos", EXHAUSTIVE_MAX_IMAGES) == "exhaustive"
    assert choose_matcher("auto", "photos", EXHAUSTIVE_MAX_IMAGES + 1) == "retrieval"
    assert choose_matcher("exhaustive", "video", 500) == "exhaustive"
    assert len(plan_pairs("exhaustive", n)) == n * (n - 1) // 2
    seq = sequential_pairs(n, 3)
    assert (0, 1) in seq and (0, 3) in seq and (0, 4) in seq and (0, 5) not in seq  # 4 = 2^2 < 2^3
    assert all(i < j < n for i, j in seq)
    similarity = np.eye(n)
    similarity[0, n - 1] = similarity[n - 1, 0] = 0.9  # the orbit closes: the last frame looks like the first
    similarity[5, 6] = similarity[6, 5] = 0.95  # neighbours: within the overlap, not a loop candidate
    loops = similar_pairs(similarity, 1, min_gap=SEQUENTIAL_OVERLAP)
    assert (0, n - 1) in loops and all(j - i > SEQUENTIAL_OVERLAP for i, j in loops)
    planned = plan_pairs("sequential", n, similarity)
    assert (0, n - 1) in planned and planned == sorted(set(planned))
    assert set(plan_pairs("retrieval", n, similarity)) >= {(0, n - 1), (5, 6), (0, 1)}


def test_retrieval_finds_images_of_the_same_place(seed):
    """Three 'places', each with its own descriptor clusters; images of one place rank each other first."""
    rng = np.random.default_rng(seed)
    places = [rng.uniform(0, 255, size=(40, 128)) for _ in range(3)]
    descriptors, labels = [], []
    for image in range(12):
        place = image % 3
        centres = places[place][rng.choice(40, size=300)]
        descriptors.append(np.clip(centres + rng.normal(0, 6, centres.shape), 0, 255).astype(np.uint8))
        labels.append(place)
    similarity = similarity_matrix(descriptors, seed=seed)
    labels = np.array(labels)
    for i in range(12):
        others = np.argsort(-similarity[i])[1:4]
        assert np.all(labels[others] == labels[i]), (i, others)


def test_source_kinds(tmp_path):
    (tmp_path / "clip.MP4").write_bytes(b"")
    assert source_kind(tmp_path / "clip.MP4") == "video"
    photos = tmp_path / "photos"
    photos.mkdir()
    assert source_kind(photos) is None
    (photos / "a.JPG").write_bytes(b"")
    assert source_kind(photos) == "photos"
    (photos / "transforms.json").write_text("{}")
    assert source_kind(photos) is None  # a scene already
    dataset = tmp_path / "dataset"
    (dataset / "images").mkdir(parents=True)
    (dataset / "images" / "a.png").write_bytes(b"")
    assert source_kind(dataset) == "photos"
