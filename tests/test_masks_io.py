"""The mask reader (engine/io/masks.py): formats, channels, bit depths, JPEG noise, stems, size errors."""
from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from recon.engine.edit.masks import load_view_masks
from recon.engine.errors import ReconError
from recon.engine.io.masks import mask_values, match_by_stem, read_mask


def _blobs(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random binary mask [H, W] of 1-4 discs."""
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), bool)
    for _ in range(rng.integers(1, 5)):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(3, max(height, width) / 3)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return mask


def _edge_band(mask: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour on the other side of the mask's edge (a band 2 pixels wide)."""
    band = np.zeros_like(mask)
    band[1:] |= mask[1:] != mask[:-1]
    band[:-1] |= mask[1:] != mask[:-1]
    band[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    band[:, :-1] |= mask[:, 1:] != mask[:, :-1]
    return band


@pytest.mark.parametrize("quality", [30, 50, 75, 95])
@pytest.mark.parametrize("colour", [False, True])
def test_jpeg_masks_survive_compression(tmp_path, seed, quality, colour):
    """Real JPEG compression (imageio) flips no pixel farther than one pixel from an edge.

    Measured over 300 random masks (seeds 0-299) at qualities 30-95, grey and RGB: no flipped pixel outside
    the band; flat areas three pixels from an edge deviate by up to 87 levels at quality 30 (38 at 75),
    which the 0.5 threshold (127.5 levels from either side) absorbs.
    """
    rng = np.random.default_rng(seed)
    truth = _blobs(rng, *rng.integers(20, 90, 2))
    data = (truth * 255).astype(np.uint8)
    if colour:
        data = np.repeat(data[..., None], 3, axis=-1)
    path = tmp_path / "a.jpg"
    iio.imwrite(path, data, quality=quality)
    assert not np.array_equal(iio.imread(path).reshape(data.shape), data)  # the file really is lossy
    got = read_mask(path)
    assert got.shape == truth.shape and got.dtype == bool
    assert not np.any((got != truth) & ~_edge_band(truth))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_masks_use_their_full_range(tmp_path, suffix):
    values = np.array([[0, 1000, 32767], [32768, 50000, 65535]], np.uint16)
    iio.imwrite(tmp_path / f"m{suffix}", values)
    assert np.allclose(mask_values(tmp_path / f"m{suffix}"), values / 65535.0, atol=1e-6)
    assert read_mask(tmp_path / f"m{suffix}").tolist() == [[False, False, False], [True, True, True]]
    assert read_mask(tmp_path / f"m{suffix}", threshold=0.7).tolist() == [[False, False, False], [False, True, True]]


def test_alpha_is_the_mask_when_it_is_not_all_opaque(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere: the colour says nothing
    rgba[1:3, 1:4, 3] = 255
    iio.imwrite(tmp_path / "cutout.png", rgba)
    assert np.array_equal(read_mask(tmp_path / "cutout.png"), rgba[..., 3] > 0)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    opaque[..., :3] = 0
    opaque[0, :2, 0] = 200  # a red mark on black, in an RGBA file with no transparency
    iio.imwrite(tmp_path / "opaque.png", opaque)
    assert read_mask(tmp_path / "opaque.png").sum() == 2 and read_mask(tmp_path / "opaque.png")[0, :2].all()
    la = np.stack([np.full((3, 3), 255, np.uint8), np.eye(3, dtype=np.uint8) * 255], -1)  # grey + alpha
    iio.imwrite(tmp_path / "la.png", la)
    assert np.array_equal(read_mask(tmp_path / "la.png"), np.eye(3, dtype=bool))


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp", ".jpg"])
def test_every_format_reads(tmp_path, seed, suffix):
    truth = _blobs(np.random.default_rng(seed), 24, 32)
    iio.imwrite(tmp_path / f"m{suffix}", (truth * 255).astype(np.uint8))
    got = read_mask(tmp_path / f"m{suffix}")
    assert not np.any((got != truth) & ~_edge_band(truth))


def test_zero_one_masks_only_when_lossless(tmp_path):
    ones = np.zeros((4, 4), np.uint8)
    ones[:2] = 1
    iio.imwrite(tmp_path / "m.png", ones)
    assert read_mask(tmp_path / "m.png").sum() == 8  # a 0/1 PNG
    iio.imwrite(tmp_path / "dark.jpg", ones * 3, quality=95)  # JPEG noise on black is not a 0/1 mask
    assert read_mask(tmp_path / "dark.jpg").sum() == 0


def test_match_by_stem_whatever_the_extensions(tmp_path):
    images = ["photos/a.jpg", "photos/b.JPG", "c.png", "d.tif"]
    files = [tmp_path / n for n in ("a.png", "b.JPG.png", "c.jpg", "d.tif.jpeg")]
    assert match_by_stem(files, images) == {0: files[0], 1: files[1], 2: files[2], 3: files[3]}
    with pytest.raises(ReconError, match="e.png: no image is named 'e'"):
        match_by_stem([tmp_path / "e.png"], images)
    with pytest.raises(ReconError, match="a second file for image a.jpg"):
        match_by_stem([tmp_path / "a.png", tmp_path / "a.jpg.png"], images)
    with pytest.raises(ReconError, match="ambiguous"):
        match_by_stem([tmp_path / "x.png"], ["x.jpg", "x.png"])


def test_size_mismatch_names_mask_and_image(tmp_path):
    iio.imwrite(tmp_path / "0000.jpg", np.full((5, 8), 255, np.uint8))
    image = tmp_path / "images" / "0000.png"
    with pytest.raises(ReconError) as err:
        load_view_masks(tmp_path, [image], [(8, 6)])
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "0000.jpg") in message and str(image) in message
    assert "8x5" in message and "8x6" in message


def test_jpeg_and_stem_masks_in_a_folder(tmp_path, seed):
    """A flat folder of RGB JPEG masks named ``<image>.jpg`` and ``<image name>.png`` is one binary label."""
    rng = np.random.default_rng(seed)
    truths = [_blobs(rng, 30, 40) for _ in range(3)]
    for name, truth in zip(("0000.jpg", "0001.png.jpg", "0002.jpeg"), truths):
        iio.imwrite(tmp_path / name, np.repeat((truth * 255).astype(np.uint8)[..., None], 3, -1), quality=60)
    masks = load_view_masks(tmp_path, ["0000.png", "0001.png", "0002.png"], [(40, 30)] * 3)
    assert masks.labels == ["selection"] and masks.view_indices == [0, 1, 2]
    for got, truth in zip(masks.masks[..., 0].numpy(), truths):
        assert set(np.unique(got)) <= {0.0, 1.0} and not np.any(((got > 0) != truth) & ~_edge_band(truth))


def test_mask_threshold_option_is_checked(tmp_path, capsys):
    from recon.apps.cli import main

    assert main(["edit", str(tmp_path), "--op", "select", "--masks", str(tmp_path), "-o", str(tmp_path / "out"),
                 "--mask-threshold", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--mask-threshold must be in (0, 1]" in err
