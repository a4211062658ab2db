"""What ``recon fit`` / ``recon info`` would do with photos or a video: ``describe_sfm_source``."""
from __future__ import annotations

from pathlib import Path

from recon.engine.sfm.features import camera_model_for
from recon.engine.sfm.mapping import choose_mapper
from recon.engine.sfm.pairs import choose_matcher
from recon.engine.sfm.pipeline import SfmOptions, scene_record
from recon.engine.sfm.report import read_record, summary_line
from recon.engine.sfm.source import IMAGE_SUFFIXES, photo_folder, source_kind


def describe_sfm_source(source: Path, scene_dir: Path, options: SfmOptions = SfmOptions()) -> str:
    """Rows describing ``source`` (photos or a video, which must be one) and the SfM that ``recon fit``
    runs into ``scene_dir`` first, or the earlier result there that it reuses."""
    kind = source_kind(source)
    if kind == "video":
        from recon.engine.sfm.frames import probe_video, window_size

        info = probe_video(source)
        window = window_size(info.frame_count, options.frames)
        count = -(-info.frame_count // window)
        what = (f"video, {info.width}x{info.height}, {info.fps:.4g} fps, {info.frame_count} frames, "
                f"{info.duration:.1f} s, rotation {info.rotation}")
        intake = f"keep the sharpest frame of every {window} (about {count} frames), "
    elif kind == "photos":
        folder = photo_folder(source)
        count = sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        what = f"folder of {count} photos{f' in {folder}' if folder != source else ''}"
        intake = ""
    else:
        raise ValueError(f"{source} is neither photos nor a video")
    rows = [("source", f"{source} ({what}; no camera poses)")]
    report = scene_record(scene_dir, source, options)
    if report is not None:
        rows.append(("sfm scene", f"{scene_dir}, made earlier and current: {summary_line(report)}; "
                                  "recon fit uses it as it is"))
    else:
        if read_record(scene_dir) is not None:
            rows.append(("sfm scene", f"{scene_dir} was made from other options or an earlier state of the source; "
                                      "recon fit redoes it"))
        matcher = choose_matcher(options.matcher, kind, count)
        rows.append(("recon fit", f"first runs structure from motion into {scene_dir}: {intake}{matcher} matching, "
                                  f"{choose_mapper(options.mapper, kind)} mapping, camera model {camera_model_for(options.camera_model, count)} "
                                  "(see recon sfm --help); then fits the scene"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
