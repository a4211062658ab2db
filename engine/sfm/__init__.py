"""Structure from motion with pycolmap: photos or a video in, a COLMAP scene folder out.

One file a stage: ``source`` (what the input is), ``frames`` (video frames by sharpness), ``photos``
(EXIF orientation and focal prior), ``features`` (cameras and SIFT), ``retrieval`` and ``pairs`` (which
pairs to match), ``matching``, ``mapping``, ``report``; ``pipeline`` runs them.
"""
from recon.engine.sfm.pipeline import SfmOptions, run_sfm, scene_record, sfm_scene_dir
from recon.engine.sfm.report import SfmReport, format_report, summary_line
from recon.engine.sfm.source import source_kind

__all__ = ["SfmOptions", "SfmReport", "run_sfm", "scene_record", "sfm_scene_dir", "format_report", "summary_line",
           "source_kind"]
