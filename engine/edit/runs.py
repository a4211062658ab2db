"""The run-directory side of editing: load a Gaussian run with its scene, trace a selection, write the edited run.

An edited run is a new run directory (the source is never written to): ``config.json`` (the source's
config plus an ``edit`` entry), one checkpoint holding the edited model (no optimiser state: it renders and
exports but does not resume a fit), ``selection.npz`` (the selection mapped onto the edited Gaussians) and
``log.txt``. It is built in a temporary folder beside the target and renamed into place.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.engine.edit.masks import ViewMasks, box_masks, load_view_masks
from recon.engine.io.masks import MASK_THRESHOLD
from recon.engine.edit.tracing import Selection, label_weights, save_selection, select, trace_totals
from recon.engine.errors import ReconError
from recon.engine.scene.camera import camera_matrices
from recon.engine.scene.scene import Scene
from recon.engine.train import rundir


@dataclass
class EditSource:
    """A Gaussian run loaded for editing: model, checkpoint state, config and its scene (normalised) as the run
    was fitted on it (distorted images undistorted), and ``captured``, the same scene as its files hold it
    (the cameras that took the photos, in whose pixels user masks and edited images are drawn)."""

    run_dir: Path
    model: Any  # GaussianModel
    state: dict[str, Any]
    config: dict[str, Any]
    scene: Scene
    captured: Scene | None = None  # None: the same as ``scene``

    @property
    def view_names(self) -> list[str]:
        """Image file names of every frame (masks and targets are matched against these)."""
        return [Path(f.image_path).name for f in (self.captured or self.scene).frames]

    @property
    def captured_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of every frame's photo."""
        return [(f.camera.width, f.camera.height) for f in (self.captured or self.scene).frames]

    def to_fitted(self, index: int, image: np.ndarray, mode: str = "bicubic") -> tuple[np.ndarray, np.ndarray | None]:
        """``image`` [H, W, C] drawn on view ``index``'s photo, resampled into the camera the run was fitted to
        (undistorted), and that view's valid mask [H', W'] (None: every pixel has a source)."""
        from recon.engine.scene.undistort import resample, undistortion_map, valid_region

        source, target = (self.captured or self.scene).frames[index].camera, self.scene.frames[index].camera
        if source is target or source.is_pinhole:
            return image, None
        where = undistortion_map(source, target)
        return resample(image, where, source, mode=mode), valid_region(where, source, target)

    @property
    def view_sizes(self) -> list[tuple[int, int]]:
        return [(f.camera.width, f.camera.height) for f in self.scene.frames]

    @property
    def photo_sizes(self) -> dict[tuple[int, int], tuple[int, int]]:
        """Each undistorted view size -> the size of the photos resampled into it (empty: none undistorted)."""
        from recon.engine.scene.undistorted import photo_sizes

        return {} if self.captured is None else photo_sizes(self.captured, self.scene)


def load_edit_source(run_dir: str | Path, device: torch.device, scene_dir: str | Path | None = None) -> EditSource:
    """Load a Gaussian run and its scene (from ``scene_dir``, else the folder the run was fitted on)."""
    from recon.engine.models.registry import load_run
    from recon.engine.scene.load import load_scene
    from recon.engine.scene.undistorted import scene_for_model

    run_dir = Path(run_dir)
    config = rundir.read_config(run_dir)
    model, state = load_run(run_dir, device)
    if state["kind"] != "gaussians":
        raise ReconError(f"{run_dir}: recon edit works on Gaussian runs, this one is a {state['kind']} run")
    source = scene_dir or state.get("source") or config.get("source")
    if source is None or not Path(source).is_dir():
        raise ReconError(f"{run_dir}: its scene folder {source} is gone; name it with --scene")
    fit_config = state.get("config", config)
    captured = load_scene(source, downscale=int(fit_config.get("downscale", 1)),
                          test_every=int(fit_config.get("test_every", 8)), background=tuple(model.background))
    scene, _ = scene_for_model(captured, "gaussians", str(fit_config.get("distortion", "correct")),
                               float(fit_config.get("max_fov", 120.0)))  # as the fit loaded it (load_fit_scene)
    return EditSource(run_dir=run_dir, model=model, state=state, config=config, scene=scene, captured=captured)


def activated(model: Any) -> dict[str, torch.Tensor]:
    """The rasterizer's inputs of a GaussianModel: means, quats, linear scales, opacities in [0, 1]."""
    p = {k: v.detach() for k, v in model.params.items()}
    return {"means": p["means"], "quats": p["quats"], "scales": torch.exp(p["scales"]),
            "opacities": torch.sigmoid(p["opacities"])}


def _views_by_size(source: EditSource, indices: list[int]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, index in enumerate(indices):
        groups.setdefault(source.view_sizes[index], []).append(i)
    return groups


def trace_view_masks(source: EditSource, masks: ViewMasks, label: str | None, threshold: float) -> Selection:
    """Trace ``masks`` onto the run's Gaussians and select those of ``label`` at ``threshold``."""
    label_index = masks.label_index(label)
    params = activated(source.model)
    device = params["means"].device
    cameras = [source.scene.frames[i].camera for i in masks.view_indices]
    viewmats, Ks = camera_matrices(cameras, device)
    totals = torch.zeros(params["means"].shape[0], len(masks.labels) + 1, device=device)
    for (width, height), members in _views_by_size(source, masks.view_indices).items():
        members_t = torch.tensor(members)
        totals += trace_totals(**params, viewmats=viewmats[members_t], Ks=Ks[members_t], width=width, height=height,
                               masks=masks.masks[members_t], antialiased=source.model.antialiased)
    weights, seen = label_weights(totals)
    selected = select(weights, seen, label_index, threshold)
    return Selection(masks.labels, weights.cpu(), seen.cpu(), selected.cpu(), masks.labels[label_index], threshold)


def masks_from_folder(source: EditSource, folder: str | Path, threshold: float = MASK_THRESHOLD) -> ViewMasks:
    """Masks read from ``folder`` for the run's views, binarised at ``threshold`` (see ``masks.load_view_masks``),
    drawn on the photos and resampled (nearest) into the undistorted cameras of a run fitted on distorted ones."""
    photos = (source.captured or source.scene).frames
    masks = load_view_masks(folder, [f.image_path for f in photos], source.captured_sizes, threshold)
    if source.captured is None or all(f.camera.is_pinhole for f in photos):
        return masks
    resampled = [source.to_fitted(v, m.numpy(), mode="nearest")[0] for v, m in zip(masks.view_indices, masks.masks)]
    return replace(masks, masks=torch.from_numpy(np.stack(resampled)))


def masks_from_box(source: EditSource, box: tuple[float, ...]) -> ViewMasks:
    """Silhouettes of a box (xmin, ymin, zmin, xmax, ymax, zmax, original coordinates) in every train view."""
    lo, hi = np.asarray(box[:3], dtype=np.float64), np.asarray(box[3:], dtype=np.float64)
    if len(box) != 6 or not np.all(hi > lo):
        raise ReconError(f"--box needs xmin,ymin,zmin,xmax,ymax,zmax with each max above its min, got {box}")
    norm = source.scene.normalization
    lo_n, hi_n = (torch.tensor(norm.to_normalized(v), dtype=torch.float32) for v in (lo, hi))
    indices = list(source.scene.train_indices)
    sizes = {source.view_sizes[i] for i in indices}
    if len(sizes) != 1:
        raise ReconError(f"{source.scene.root}: --box needs views of one size, found {sorted(sizes)}")
    (width, height), = sizes
    viewmats, Ks = camera_matrices([source.scene.frames[i].camera for i in indices])
    masks = box_masks(lo_n, hi_n, viewmats, Ks, width, height)
    if not bool(masks.any()):
        raise ReconError(f"--box {','.join(map(str, box))}: the box is outside every view")
    return ViewMasks(view_indices=indices, masks=masks, labels=["box"])


def write_edited_run(source: EditSource, out_dir: str | Path, params: dict[str, torch.Tensor],
                     selection: Selection, edit: dict[str, Any]) -> Path:
    """Write a new run directory holding ``params`` (raw Gaussian parameters) and its ``selection``."""
    from recon.engine.models.gaussians import GaussianModel

    out_dir = Path(out_dir)
    if out_dir.resolve() == source.run_dir.resolve():
        raise ReconError(f"{out_dir}: the edited run must go to a new folder, not the source run")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ReconError(f"{out_dir}: already exists and is not an empty folder")
    model = source.model
    edited = GaussianModel(params, sh_degree=model.sh_degree, active_sh_degree=model.active_sh_degree,
                           normalization=model.normalization, cameras=model.cameras, background=model.background,
                           antialiased=model.antialiased)
    state = {key: source.state[key] for key in ("kind", "step", "normalization", "config", "source")
             if key in source.state}
    state["model"] = edited.state_dict()
    state["edit"] = {**edit, "from": str(source.run_dir)}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        rundir.write_config(build, {**source.config, "edit": state["edit"]})
        rundir.save_checkpoint(build, state)
        save_selection(build, selection)
        rundir.log_line(build, f"edit {edit.get('op')} of {source.run_dir}: {edited.num_gaussians} Gaussians")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(build, out_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return out_dir


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_targets(source: EditSource, folder: str | Path, device: torch.device) -> list[tuple[Any, torch.Tensor]]:
    """Edited images in ``folder`` matched to the run's views by file stem: (camera, RGB [H, W, 3]) each.

    An image larger than its view by an integer factor is area-averaged down; RGBA is composited on the
    run's background.
    """
    from recon.engine.io.images import read_image, resize_image, size_factor

    folder = Path(folder)
    if not folder.is_dir():
        raise ReconError(f"{folder}: no such folder of edited images")
    by_stem = {Path(name).stem: i for i, name in enumerate(source.view_names)}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ReconError(f"{folder}: no PNG or JPEG images")
    views = []
    for path in files:
        if path.stem not in by_stem:
            raise ReconError(f"{path}: no view of the run is named {path.stem!r}")
        index = by_stem[path.stem]
        camera, (width, height) = source.scene.frames[index].camera, source.captured_sizes[index]
        photo = (source.captured or source.scene).frames[index].image_path
        image = read_image(path)
        if size_factor(path, (image.shape[1], image.shape[0]), photo, (width, height)) > 1:
            image = resize_image(image, (width, height))
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        if image.shape[-1] == 4:
            background = np.asarray(source.model.background, dtype=np.float32)
            image = image[..., :3] * image[..., 3:] + background * (1.0 - image[..., 3:])
        image, valid = source.to_fitted(index, image[..., :3])
        image = np.clip(image, 0.0, 1.0)  # bicubic overshoot
        if valid is not None:  # pixels with no source pixel ask for what the run renders there now: no pull
            with torch.no_grad():
                current = source.model.render(camera, background=source.model.background)["rgb"].cpu().numpy()
            image = np.where(valid[..., None], image, current)
        views.append((camera, torch.as_tensor(np.ascontiguousarray(image[..., :3], dtype=np.float32), device=device)))
    return views
