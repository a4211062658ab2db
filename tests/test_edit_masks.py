"""Mask loading for tracing: layouts, label PNGs, size checks, errors; masks from a 3D box."""
from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from recon.engine.edit.masks import box_masks, load_view_masks
from recon.engine.errors import ReconError

NAMES = ["0000.png", "0001.png", "0002.png"]
SIZES = [(8, 6)] * 3


def test_flat_binary_masks_match_views_by_name(tmp_path):
    m = np.zeros((6, 8), np.uint8)
    m[1:3, 2:5] = 255
    iio.imwrite(tmp_path / "0002.png", m)
    iio.imwrite(tmp_path / "0000.png", np.zeros((6, 8), np.uint8))
    masks = load_view_masks(tmp_path, NAMES, SIZES)
    assert masks.view_indices == [0, 2] and masks.labels == ["selection"]
    assert masks.masks.shape == (2, 6, 8, 1)
    assert torch.equal(masks.masks[1, ..., 0], torch.from_numpy(m / 255.0).float())
    assert masks.masks[0].sum() == 0


def test_integer_label_masks_and_downsampling(tmp_path):
    labels = np.zeros((12, 16), np.uint8)
    labels[:6, :8] = 3
    labels[6:, 8:] = 7
    iio.imwrite(tmp_path / "0001.png", labels)  # twice the view size: area-averaged
    masks = load_view_masks(tmp_path, ["a/0000.jpg", "a/0001.jpg"], [(8, 6), (8, 6)])
    assert masks.labels == ["label3", "label7"] and masks.view_indices == [1]
    assert masks.masks[0, :3, :4, 0].min() == 1 and masks.masks[0, ..., 0].sum() == 12
    assert masks.masks[0, 3:, 4:, 1].min() == 1 and masks.masks[0, ..., 1].sum() == 12
    assert masks.label_index("label7") == 1
    with pytest.raises(ReconError, match="several labels"):
        masks.label_index(None)


def test_per_object_folders(tmp_path):
    for obj, rows in (("ball", slice(0, 2)), ("box", slice(3, 5))):
        (tmp_path / obj).mkdir()
        m = np.zeros((6, 8), np.uint8)
        m[rows] = 255
        iio.imwrite(tmp_path / obj / "0001.png", m)
    iio.imwrite(tmp_path / "ball" / "0000.png", np.full((6, 8), 255, np.uint8))
    masks = load_view_masks(tmp_path, NAMES, SIZES)
    assert masks.labels == ["ball", "box"] and masks.view_indices == [0, 1]
    assert masks.masks[0, ..., 1].sum() == 0  # no box file for view 0: empty there
    assert masks.masks[1, 3:5, :, 1].min() == 1 and masks.masks[1, ..., 1].sum() == 16


@pytest.mark.parametrize("case, message", [
    ("size", "does not match"), ("name", "no image is named"), ("empty", "empty"), ("none", "no mask images"), ("dir", "no such")])
def test_bad_masks_are_clear_errors(tmp_path, case, message):
    if case == "size":
        iio.imwrite(tmp_path / "0000.png", np.full((5, 8), 255, np.uint8))
    elif case == "name":
        iio.imwrite(tmp_path / "frame_9.png", np.full((6, 8), 255, np.uint8))
    elif case == "empty":
        iio.imwrite(tmp_path / "0000.png", np.zeros((6, 8), np.uint8))
    folder = tmp_path / "missing" if case == "dir" else tmp_path
    with pytest.raises(ReconError, match=message):
        load_view_masks(folder, NAMES, SIZES)


def test_box_masks_cover_the_projected_box():
    # Camera at the origin looking down +z; box around z = 5 spanning x, y in [-1, 1].
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[10.0, 0.0, 10.0], [0.0, 10.0, 10.0], [0.0, 0.0, 1.0]]])
    masks = box_masks(torch.tensor([-1.0, -1.0, 4.0]), torch.tensor([1.0, 1.0, 6.0]), viewmats, Ks, 20, 20)
    # The box front face z = 4 projects to |u - 10| <= 2.5; its back face to 1.67: union is the front face.
    ys, xs = torch.where(masks[0, ..., 0] > 0)
    assert xs.min() == 7 and xs.max() == 12 and ys.min() == 7 and ys.max() == 12
    behind = box_masks(torch.tensor([-1.0, -1.0, -6.0]), torch.tensor([1.0, 1.0, -4.0]), viewmats, Ks, 20, 20)
    assert behind.sum() == 0
