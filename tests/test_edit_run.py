"""``recon edit`` end to end on a tiny demo scene fitted on the CPU (one fit shared by the module).

The figures each test measures are printed (run with ``-s`` to see them); the floors sit below what the
tiny fit reaches, far above what a broken tracer or editor gives.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from recon.apps.cli import main
from recon.engine.models.registry import load_run
from recon.engine.scene.primitives import load_geometry, surface_distance
from recon.engine.train.metrics import psnr

OBJECT = "sphere"
VISIBLE = 0.05  # Gaussians at least this opaque are the ones precision and recall are judged on


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path]:
    """(demo scene folder, run directory) of a tiny Gaussian fit."""
    from recon.engine.scene.demo import write_demo_scene
    from recon.engine.train.gaussians import CONFIG, fit

    root = tmp_path_factory.mktemp("edit")
    scene = write_demo_scene(root / "demo", views=12, resolution=32, supersample=2)
    run = root / "run"
    fit(scene, CONFIG(steps=100, init_points=600, max_gaussians=1500, sh_degree=0, test_every=6, checkpoint_every=1000),
        run,
        resume=False, device=torch.device("cpu"))
    return scene, run


def _checkpoint_digest(run: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted((run / "checkpoints").iterdir()))).hexdigest()


def _object_truth(model, scene: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Per Gaussian: lies nearest the traced object's surface [N] bool; visibly opaque [N] bool."""
    geometry = load_geometry(scene / "geometry.json")
    means = model.normalization.to_original(model.params["means"].detach().double().numpy())
    _, index = surface_distance(torch.as_tensor(means, dtype=torch.float32), geometry)
    target = [o.name for o in geometry.objects].index(OBJECT)
    return index == target, torch.sigmoid(model.params["opacities"].detach()) >= VISIBLE


def _renders(run: Path) -> list[torch.Tensor]:
    """Renders of every other train view."""
    model, _ = load_run(run)
    return [model.render(camera)["rgb"] for camera in model.cameras["train"][::2]]


def _object_mask_views(scene: Path) -> list[np.ndarray]:
    """The traced object's true masks [H, W] (bool) of every other train view, as ``_renders`` takes them."""
    from recon.engine.scene.load import load_scene

    frames = load_scene(scene, test_every=6).train_frames[::2]
    return [iio.imread(scene / "masks" / OBJECT / Path(f.image_path).name) > 127 for f in frames]


def test_tracing_selects_the_object(fitted, tmp_path, capsys):
    scene, run = fitted
    # True masks of a subset of the views only: every other image.
    subset = tmp_path / "masks"
    subset.mkdir()
    for path in sorted((scene / "masks" / OBJECT).iterdir())[::2]:
        (subset / path.name).write_bytes(path.read_bytes())
    before = _checkpoint_digest(run)
    assert main([ "edit", str(run), "--op", "select", "--masks", str(subset), "-o", str(tmp_path / "sel")]) == 0
    assert _checkpoint_digest(run) == before  # the source run is untouched
    selection = np.load(tmp_path / "sel" / "selection.npz")
    selected = torch.from_numpy(selection["selected"])
    model, _ = load_run(run)
    on_object, visible = _object_truth(model, scene)
    chosen, truth = selected & visible, on_object & visible & torch.from_numpy(selection["seen"])
    precision = float((chosen & truth).sum() / chosen.sum().clamp_min(1))
    recall = float((chosen & truth).sum() / truth.sum().clamp_min(1))
    with capsys.disabled():
        print(f"\ntracing {OBJECT} from {len(list(subset.iterdir()))} views: {int(chosen.sum())} visible Gaussians "
              f"selected, precision {precision:.3f}, recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.75, (precision, recall)


def test_box_selection(fitted, tmp_path, capsys):
    scene, run = fitted
    sphere = next(o for o in load_geometry(scene / "geometry.json").objects if o.name == OBJECT)
    box = np.concatenate([sphere.bounds[0] - 0.05, sphere.bounds[1] + 0.05])
    assert main(["edit", str(run), "--op", "select", "--box=" + ",".join(f"{v:.4f}" for v in box), "-o",
                 str(tmp_path / "sel")]) == 0
    selection = np.load(tmp_path / "sel" / "selection.npz")
    model, _ = load_run(run)
    on_object, visible = _object_truth(model, scene)
    chosen = torch.from_numpy(selection["selected"]) & visible
    truth = on_object & visible & torch.from_numpy(selection["seen"])
    precision = float((chosen & truth).sum() / chosen.sum().clamp_min(1))
    recall = float((chosen & truth).sum() / truth.sum().clamp_min(1))
    with capsys.disabled():
        print(f"\nbox around {OBJECT}: precision {precision:.3f}, recall {recall:.3f}")
    # Precision is what the tiny fit left in the box, so it follows the fit's random draws: over fit seeds 0-8
    # it measured 0.90-1.00 before split noise became keyed by Gaussian identity (2026-12-01) and 0.83-1.00 after
    # (means 0.948 and 0.952); the floor sits below both.
    assert precision >= 0.8 and recall >= 0.75, (precision, recall)
    far = ",".join(["5", "5", "5", "6", "6", "6"])  # empty space: nothing selected, nothing to delete
    assert main(["edit", str(run), "--op", "delete", "--box", far, "-o", str(tmp_path / "none")]) == 2
    assert "selection is empty" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_delete_and_extract(fitted, tmp_path, capsys):
    scene, run = fitted
    masks = str(scene / "masks")
    assert main(["edit", str(run), "--op", "delete", "--masks", masks, "--label", OBJECT, "-o",
                 str(tmp_path / "del")]) == 0
    assert main(["edit", str(run), "--op", "extract", "--selection", str(tmp_path / "del"), "-o",
                 str(tmp_path / "bad")]) == 2  # a selection made for another Gaussian count is refused
    assert main(["edit", str(run), "--op", "extract", "--masks", masks, "--label", OBJECT, "-o",
                 str(tmp_path / "ext")]) == 0
    source, deleted, extracted = (load_run(r)[0] for r in (run, tmp_path / "del", tmp_path / "ext"))
    assert deleted.num_gaussians + extracted.num_gaussians == source.num_gaussians
    # Delete: renders of the rest change little away from the object (its mask grown by 2 pixels).
    masks_true = _object_mask_views(scene)
    before, after = _renders(run), _renders(tmp_path / "del")
    away = [torch.from_numpy(~_grow(m, 2)) for m in masks_true]
    kept_psnr = float(np.mean([psnr(b[m], a[m]) for b, a, m in zip(before, after, away)]))
    object_psnr = float(np.mean([psnr(b[~m], a[~m]) for b, a, m in zip(before, after, away)]))
    # Extract: only the object remains, nothing is drawn away from it.
    on_object, visible = _object_truth(extracted, scene)
    share = float((on_object & visible).sum() / visible.sum().clamp_min(1))
    alpha_away = float(np.mean([extracted.render(c)["alpha"][..., 0][m].mean()
                                for c, m in zip(extracted.cameras["train"][::2], away)]))
    with capsys.disabled():
        print(f"\ndelete {OBJECT}: PSNR before/after away from it {kept_psnr:.1f} dB, on it {object_psnr:.1f} dB; "
              f"extract: {share:.3f} of visible Gaussians on the object, mean alpha away from it {alpha_away:.4f}")
    assert kept_psnr >= 30.0 and object_psnr < 20.0
    assert share >= 0.9 and alpha_away < 0.05


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    grown = mask.copy()
    for _ in range(pixels):
        grown[1:] |= grown[:-1].copy()
        grown[:-1] |= grown[1:].copy()
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
    return grown


def test_transform_and_recolor_through_the_cli(fitted, tmp_path):
    scene, run = fitted
    masks = str(scene / "masks")
    assert main(["edit", str(run), "--op", "transform", "--masks", masks, "--label", OBJECT, "--translate",
                 "0.5,0,0", "-o", str(tmp_path / "moved")]) == 0
    source, moved = load_run(run)[0], load_run(tmp_path / "moved")[0]
    selected = torch.from_numpy(np.load(tmp_path / "moved" / "selection.npz")["selected"])
    shift = moved.normalization.to_original(moved.params["means"].detach().double().numpy()) - \
        source.normalization.to_original(source.params["means"].detach().double().numpy())
    assert np.allclose(shift[selected.numpy()], [0.5, 0.0, 0.0], atol=1e-4)  # in original units
    assert np.abs(shift[~selected.numpy()]).max() == 0
    assert main(["edit", str(run), "--op", "recolor", "--selection", str(tmp_path / "moved"), "--hue", "120", "-o",
                 str(tmp_path / "hue")]) == 0
    assert main(["edit", str(run), "--op", "recolor", "--masks", masks, "--label", OBJECT, "-o",
                 str(tmp_path / "none")]) == 2  # neither --color nor --hue


def test_an_edited_run_refuses_fit_resume_in_one_line(fitted, tmp_path, capsys):
    scene, run = fitted
    assert main(["edit", str(run), "--op", "recolor", "--color", "1,0,0", "--box=-9,-9,-9,9,9,9", "-o",
                 str(tmp_path / "red")]) == 0
    capsys.readouterr()
    before = _checkpoint_digest(tmp_path / "red")
    assert main(["fit", str(scene), "-o", str(tmp_path / "red"), "--resume", "--steps", "200"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this is an edited run" in err
    assert _checkpoint_digest(tmp_path / "red") == before


def test_finetune_keeps_the_rest_bit_identical(fitted, tmp_path, capsys):
    scene, run = fitted
    masks = str(scene / "masks")
    assert main(["edit", str(run), "--op", "recolor", "--masks", masks, "--label", OBJECT, "--color", "0.9,0.1,0.1",
                 "-o", str(tmp_path / "red")]) == 0
    red = load_run(tmp_path / "red")[0]
    targets = tmp_path / "targets"
    targets.mkdir()
    source, _ = load_run(run)
    from recon.engine.scene.load import load_scene
    frames = load_scene(scene, test_every=6).train_frames[:3]
    for frame in frames:
        iio.imwrite(targets / f"{Path(frame.image_path).stem}.png",
                    (red.render(frame.camera)["rgb"].numpy() * 255 + 0.5).astype(np.uint8))
    assert main(["edit", str(run), "--op", "finetune", "--masks", masks, "--label", OBJECT, "--targets",
                 str(targets), "--steps", "12", "--densify-start", "4", "--densify-stop", "10", "--densify-every", "5",
                 "--lr-sh0", "0.25", "-o", str(tmp_path / "tuned")]) == 0
    tuned = load_run(tmp_path / "tuned")[0]
    before_sel = torch.from_numpy(np.load(tmp_path / "red" / "selection.npz")["selected"])
    after_sel = torch.from_numpy(np.load(tmp_path / "tuned" / "selection.npz")["selected"])
    for name, value in source.params.items():
        assert torch.equal(tuned.params[name][~after_sel], value[~before_sel].detach()), name
    # Error to the targets where they differ from the source's renders.
    targets_rgb = [red.render(f.camera)["rgb"] for f in frames]
    changed = [(source.render(f.camera)["rgb"] - t).abs().amax(-1) > 0.05 for f, t in zip(frames, targets_rgb)]
    errors = [np.mean([float((model.render(f.camera)["rgb"] - t).abs()[c].mean())
                       for f, t, c in zip(frames, targets_rgb, changed)]) for model in (source, tuned)]
    means = [m.params["means"].detach() for m in (source, tuned)]
    drift = float((means[1][after_sel].mean(0) - means[0][before_sel].mean(0)).norm())
    with capsys.disabled():
        print(f"\nfinetune toward red {OBJECT}: mean abs error to targets where they changed {errors[0]:.4f} -> {errors[1]:.4f}, "
              f"selection centre drift {drift:.4f} (normalised units), "
              f"{int(before_sel.sum())} -> {int(after_sel.sum())} selected Gaussians")
    assert errors[1] < 0.6 * errors[0] and drift < 0.05


@pytest.mark.parametrize("case, message", [("size", "does not match"), ("name", "no image is named"), ("empty", "empty")])
def test_bad_masks_exit_2(fitted, tmp_path, capsys, case, message):
    scene, run = fitted
    folder = tmp_path / "masks"
    folder.mkdir()
    shape = (31, 32) if case == "size" else (32, 32)
    name = "nothing.png" if case == "name" else "0001.png"
    iio.imwrite(folder / name, np.full(shape, 0 if case == "empty" else 255, np.uint8))
    assert main(["edit", str(run), "--op", "delete", "--masks", str(folder), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recon: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_jpeg_masks_select_what_png_masks_select(fitted, tmp_path, capsys):
    """The object's masks as RGB JPEGs (named ``<stem>.jpg`` and ``<image name>.jpg``) select what the PNGs do."""
    scene, run = fitted
    jpegs = tmp_path / "jpeg"
    jpegs.mkdir()
    for i, path in enumerate(sorted((scene / "masks" / OBJECT).iterdir())):
        grey = iio.imread(path)
        name = f"{path.stem}.jpg" if i % 2 else f"{path.name}.jpg"  # 0000.png.jpg, 0001.jpg, ...
        iio.imwrite(jpegs / name, np.repeat(grey[..., None], 3, -1), quality=60)
    for name, masks in (("png", scene / "masks" / OBJECT), ("jpg", jpegs)):
        assert main(["edit", str(run), "--op", "select", "--masks", str(masks), "-o", str(tmp_path / name)]) == 0
    png, jpg = (np.load(tmp_path / name / "selection.npz")["selected"] for name in ("png", "jpg"))
    assert main(["edit", str(run), "--op", "delete", "--masks", str(jpegs), "-o", str(tmp_path / "del")]) == 0
    left = load_run(tmp_path / "del")[0].num_gaussians
    differ = int((png != jpg).sum())
    with capsys.disabled():
        print(f"\nJPEG masks select {int(jpg.sum())} Gaussians, PNG masks {int(png.sum())}, {differ} differ; "
              f"delete leaves {left}")
    # JPEG noise flips mask pixels only at edges: at most a few Gaussians on the threshold change sides.
    assert left == int((~jpg).sum()) and differ <= max(2, 0.05 * png.sum())
