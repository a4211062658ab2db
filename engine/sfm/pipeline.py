"""``run_sfm``: photos or a video in, a COLMAP scene folder out (``images/``, ``sparse/0/``).

Stages: intake (video frames or photos) -> cameras and SIFT features -> matching -> mapping -> the
largest model written as ``sparse/0`` (COLMAP binary, cameras with their lens distortion) with the report
``sfm.json`` and COLMAP's ``database.db`` beside it.

Everything is built in ``.<out>.partial`` beside ``out`` and renamed onto ``out`` at the end, so a killed
run leaves no half-written scene. A rerun with the same source and feature options resumes from that
folder: intake is not repeated, and COLMAP skips the features and pairs its database already holds.
Bad input removes the partial folder again; a mapping failure keeps it (its features serve the next try).
Rerunning into an earlier result of the same source and feature options (another ``--matcher`` or
``--mapper``) starts from that result's images and database in the same way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Literal

from recon.engine.errors import ReconError
from recon.engine.io.atomic import replace_folder, write_json_atomic
from recon.engine.sfm.features import extract_features, images_with_features, import_cameras, sift_device
from recon.engine.sfm.mapping import choose_mapper, map_images
from recon.engine.sfm.matching import match_images
from recon.engine.sfm.pairs import choose_matcher
from recon.engine.sfm.photos import Photo, intake_photos
from recon.engine.sfm.report import (RECORD_NAME, SfmReport, StageTimer, read_record, report_from_dict,
                                     write_record)
from recon.engine.sfm.source import SourceKind, photo_folder, sfm_kind, source_fingerprint, source_name
from recon.engine.train.options import option

MIN_IMAGES = 3
STATE_NAME = "intake.json"


@dataclass(frozen=True)
class SfmOptions:
    """How ``run_sfm`` works; each field is also a ``recon sfm`` / ``recon fit`` option."""

    frames: int = option(200, "video: keep about this many frames (the sharpest of each stretch)")
    matcher: Literal["auto", "exhaustive", "sequential", "retrieval"] = option(
        "auto", "image pairs to match: auto is sequential for video, exhaustive up to 100 photos, else retrieval")
    mapper: Literal["auto", "incremental", "global"] = option(
        "auto", "COLMAP's incremental mapper or the global one (GLOMAP): auto is global for video, else incremental")
    camera_model: Literal["auto", "SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV",
                          "FULL_OPENCV"] = option(
        "auto", "COLMAP camera model: auto is SIMPLE_RADIAL, or OPENCV for a camera shared by 50+ images")
    max_image_size: int = option(1600, "SIFT sees images downscaled to at most this many pixels on their "
                                       "longer side (the scene keeps full resolution)")

    def feature_key(self, kind: SourceKind) -> dict:
        """The options that decide intake and features: a partial run made with others is not resumed."""
        key = {"camera_model": self.camera_model, "max_image_size": self.max_image_size}
        return {**key, "frames": self.frames} if kind == "video" else key


def run_sfm(source: str | Path, out: str | Path, options: SfmOptions = SfmOptions(), *,
            progress: bool = True, verbose: bool = False) -> SfmReport:
    """Reconstruct cameras and sparse points from ``source`` (a folder of photos or a video) into ``out``.

    ``out`` must be absent, empty, or an earlier ``recon sfm`` scene (replaced once the new one is done).
    Raises ``ReconError`` for bad input (no usable images, an undecodable video, fewer than 3 usable
    images) and when fewer than half the images register.
    """
    source, out = Path(source), Path(out)
    kind = sfm_kind(source)
    _check_options(options)
    target = _check_output(out, source)
    fingerprint = source_fingerprint(source)
    key = {"fingerprint": fingerprint, "options": options.feature_key(kind)}
    partial = target.parent / f".{target.name}.partial"
    timer = StageTimer()
    with colmap_logging(verbose):
        state = _resumable_state(partial, key) or _earlier_result(target, partial, key)
        if state is None:
            state = {"key": key, **_intake(source, kind, partial, options, timer, progress)}
            write_json_atomic(partial / STATE_NAME, state)
        photos = [Photo(**p) for p in state["photos"]]
        database = partial / "database.db"
        image_dir = partial / "images"
        with timer("features"):
            _open_database(database)
            import_cameras(database, image_dir, photos, options.camera_model)
            names = [p.name for p in photos]
            extract_features(database, image_dir, names, max_image_size=options.max_image_size, progress=progress)
            with_features = images_with_features(database)
        usable = [name for name in names if name in with_features]
        if len(usable) < MIN_IMAGES:
            shutil.rmtree(partial, ignore_errors=True)
            raise ReconError(f"{source}: SIFT found features in only {len(usable)} of {len(names)} images "
                             f"(need at least {MIN_IMAGES})")
        matcher = choose_matcher(options.matcher, kind, len(usable))
        with timer("matching"):
            pairs = match_images(database, usable, matcher, partial, progress=progress)
        mapper = choose_mapper(options.mapper, kind)
        with timer("mapping"):
            try:
                reconstructions = map_images(database, image_dir, partial, mapper, len(usable),
                                             progress=progress)
            except (RuntimeError, ValueError) as exc:  # pycolmap's failed checks
                reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                raise ReconError(f"{source}: {mapper} mapping failed ({reason}); try "
                                 f"{_advice(kind, matcher, mapper)}") from None
        best = reconstructions[0] if reconstructions else None
        registered = sorted(best.images[i].name for i in best.reg_image_ids()) if best is not None else []
        if len(registered) < max(MIN_IMAGES, math.ceil(len(names) / 2)):
            raise ReconError(f"{source}: only {len(registered)} of {len(names)} images registered (at least half "
                             f"are needed); try {_advice(kind, matcher, mapper)}; the features are kept "
                             f"in {partial} and a rerun resumes from them")
        sparse = partial / "sparse" / "0"
        shutil.rmtree(partial / "sparse", ignore_errors=True)
        sparse.mkdir(parents=True)
        best.write(sparse)
        report = SfmReport(
            source=str(source), kind=kind, images=names, registered=registered, skipped=state["skipped"],
            points=int(best.num_points3D()), mean_reprojection_error=float(best.compute_mean_reprojection_error()),
            cameras=[{"model": c.model_name, "width": int(c.width), "height": int(c.height),
                      "params": [float(v) for v in c.params]} for _, c in sorted(best.cameras.items())],
            matcher=matcher, pairs=pairs, mapper=mapper,
            models=[int(m.num_reg_images()) for m in reconstructions],
            only_in_other_models=sorted({m.images[i].name for m in reconstructions[1:] for i in m.reg_image_ids()}
                                        - set(registered)),
            sift_device=_device_name(),
            stages={**state.get("stages", {}), **timer.stages}, video=state.get("video"))
        write_record(partial, report, fingerprint, asdict(options), intake=state)
        (partial / STATE_NAME).unlink()
    replace_folder(partial, target)
    return report


def scene_record(folder: Path, source: Path, options: SfmOptions) -> SfmReport | None:
    """The report of ``folder`` when it is a ``recon sfm`` scene of ``source`` as it is now, made with
    ``options``; None otherwise."""
    record = read_record(folder)
    if record is None or not (folder / "sparse" / "0").is_dir():
        return None
    if record.get("fingerprint") != source_fingerprint(source) or record.get("options") != asdict(options):
        return None
    return report_from_dict(record["report"])


def sfm_scene_dir(source: Path, parent: Path) -> Path:
    """Where ``recon fit`` keeps the SfM scene of ``source``: ``<parent>/<source name>_sfm``."""
    return parent / f"{source_name(source)}_sfm"


@contextlib.contextmanager
def colmap_logging(verbose: bool) -> Iterator[None]:
    """COLMAP's log on stderr only (never log files in /tmp), and only errors unless ``verbose``."""
    import pycolmap

    log = pycolmap.logging
    saved = (log.logtostderr, log.minloglevel)
    log.logtostderr = True
    log.minloglevel = 0 if verbose else 2
    try:
        yield
    finally:
        log.logtostderr, log.minloglevel = saved


def _check_options(options: SfmOptions) -> None:
    if options.frames < MIN_IMAGES:
        raise ReconError(f"--frames must be at least {MIN_IMAGES}, got {options.frames}")
    if options.max_image_size < 64:
        raise ReconError(f"--max-image-size must be at least 64 pixels, got {options.max_image_size}")


def _check_output(out: Path, source: Path) -> Path:
    """The resolved output folder; it must be absent, empty or an earlier ``recon sfm`` scene."""
    target = out.resolve()
    if out.exists() and not out.is_dir():
        raise ReconError(f"{out}: exists and is not a folder")
    if target == source.resolve() or (source.is_dir() and target == photo_folder(source.resolve())):
        raise ReconError(f"{out}: the output folder must not be the source folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORD_NAME).is_file():
        raise ReconError(f"{out}: folder is not empty and holds no earlier recon sfm scene; "
                         "choose an empty or new folder")
    return target


def _resumable_state(partial: Path, key: dict) -> dict | None:
    """The intake state of an interrupted run of the same source and options, else None (a stale or
    unfinished partial folder is cleared)."""
    try:
        state = json.loads((partial / STATE_NAME).read_text(encoding="utf-8"))
        if state.get("key") == key:
            return state
    except (OSError, ValueError):
        pass
    shutil.rmtree(partial, ignore_errors=True)
    return None


def _earlier_result(target: Path, partial: Path, key: dict) -> dict | None:
    """Seed ``partial`` from an earlier result in ``target`` made from the same source with the same feature
    options (its images, hard-linked where possible, and its database: features and matched pairs are
    reused when only the matcher or mapper changed); returns its intake state, or None."""
    record = read_record(target)
    state = record.get("intake") if record else None
    if not state or state.get("key") != key or not (target / "database.db").is_file():
        return None
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copytree(target / "images", partial / "images", copy_function=_link_or_copy)
    shutil.copy2(target / "database.db", partial / "database.db")
    write_json_atomic(partial / STATE_NAME, state)
    return state


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _intake(source: Path, kind: SourceKind, partial: Path, options: SfmOptions, timer: StageTimer,
            progress: bool) -> dict:
    """Frames or photos into ``partial/images``: the state to resume from (photos, skipped inputs, video
    facts, stage time). Bad input removes ``partial`` and raises."""
    partial.mkdir(parents=True)
    try:
        if kind == "video":
            with timer("frames"):
                state = _video_intake(source, partial / "images", options, progress)
        else:
            with timer("photos"):
                photos, skipped = intake_photos(photo_folder(source), partial / "images", progress=progress)
            state = {"photos": [dataclasses.asdict(p) for p in photos], "skipped": skipped}
            _check_photo_count(source, photos, skipped)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if skipped := state["skipped"]:
        logging.getLogger("recon.sfm").warning(
            "recon: warning: %s: skipping %d file(s): %s", source, len(skipped), "; ".join(skipped))
    return {**state, "stages": dict(timer.stages)}


def _video_intake(source: Path, image_dir: Path, options: SfmOptions, progress: bool) -> dict:
    from recon.engine.sfm.frames import extract_frames, window_size

    info, frames, dropped = extract_frames(source, image_dir, options.frames, progress=progress)
    if len(frames) < MIN_IMAGES:
        raise ReconError(f"{source}: only {len(frames)} sharp frame(s) in {info.frame_count} "
                         f"(need at least {MIN_IMAGES}); try a longer video or a higher --frames")
    photos = [Photo(f.name, info.width, info.height, None, f"frame {f.index}") for f in frames]
    video = {**dataclasses.asdict(info), "window": window_size(info.frame_count, options.frames),
             "dropped": dropped, "frames": [dataclasses.asdict(f) for f in frames]}
    return {"photos": [dataclasses.asdict(p) for p in photos], "skipped": [], "video": video}


def _check_photo_count(source: Path, photos: list[Photo], skipped: list[str]) -> None:
    if len(photos) >= MIN_IMAGES:
        return
    found = f"only {len(photos)} usable image{'s' if len(photos) != 1 else ''}" if photos or skipped else "no images"
    left_out = f"; skipped: {'; '.join(skipped[:5])}" if skipped else ""
    raise ReconError(f"{source}: {found} (structure from motion needs at least {MIN_IMAGES} overlapping "
                     f"photos){left_out}")


def _open_database(database: Path) -> None:
    """Create ``database`` (COLMAP's schema) unless it exists."""
    import pycolmap

    pycolmap.Database.open(database).close()


def _advice(kind: SourceKind, matcher: str, mapper: str) -> str:
    tips = []
    if matcher != "exhaustive":
        tips.append("--matcher exhaustive")
    tips.append("--mapper global" if mapper == "incremental" else "--mapper incremental")
    tips.append("a slower, steadier camera move or a higher --frames" if kind == "video"
                else "photos that overlap more (every part of the scene in 3 or more photos)")
    return ", ".join(tips)


def _device_name() -> str:
    import pycolmap

    return "the GPU where present (CUDA build of pycolmap)" if sift_device() == pycolmap.Device.auto else "the CPU"
