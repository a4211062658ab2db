"""2D keypoint inputs: OpenPose BODY_25 and COCO-17 JSON as those tools write them, plus plain arrays.

Every reader returns ``Keypoints2D``: ``xy`` [F, K, 2] pixels, ``confidence`` [F, K] and the layout
name, one frame per image. ``to_smpl_joints`` then maps a layout onto SMPL joint indices.

Mapping from SMPL joints (names in ``recon.engine.smpl.synthetic.JOINT_NAMES``) to each layout. Only
keypoints with an anatomical SMPL joint are used; the face (nose, eyes, ears) and the toes/heels
of BODY_25 have none (SMPL places them on mesh vertices of the real model, which differ per
model), so they are ignored. The hip keypoints of both detectors sit somewhat lower and wider than
the SMPL hip joints; fits of real detections carry that offset.

==============  =========  =========
SMPL joint      COCO-17    BODY_25
==============  =========  =========
pelvis          --         8 MidHip
left_hip        11         12 LHip
right_hip       12         9 RHip
left_knee       13         13 LKnee
right_knee      14         10 RKnee
left_ankle      15         14 LAnkle
right_ankle     16         11 RAnkle
neck            --         1 Neck
left_shoulder   5          5 LShoulder
right_shoulder  6          2 RShoulder
left_elbow      7          6 LElbow
right_elbow     8          3 RElbow
left_wrist      9          7 LWrist
right_wrist     10         4 RWrist
==============  =========  =========
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.smpl.synthetic import JOINT_NAMES

# layout -> {keypoint index: SMPL joint name}
SMPL_FROM_LAYOUT: dict[str, dict[int, str]] = {
    "coco17": {11: "left_hip", 12: "right_hip", 13: "left_knee", 14: "right_knee", 15: "left_ankle",
               16: "right_ankle", 5: "left_shoulder", 6: "right_shoulder", 7: "left_elbow", 8: "right_elbow",
               9: "left_wrist", 10: "right_wrist"},
    "body25": {8: "pelvis", 12: "left_hip", 9: "right_hip", 13: "left_knee", 10: "right_knee", 14: "left_ankle",
               11: "right_ankle", 1: "neck", 5: "left_shoulder", 2: "right_shoulder", 6: "left_elbow",
               3: "right_elbow", 7: "left_wrist", 4: "right_wrist"},
}
LAYOUT_SIZES = {"coco17": 17, "body25": 25}


@dataclass
class Keypoints2D:
    """Detected 2D keypoints: ``xy`` [F, K, 2] pixels, ``confidence`` [F, K] (0 = missing), ``layout``."""

    xy: np.ndarray
    confidence: np.ndarray
    layout: str


def read_keypoints(path: str | os.PathLike, layout: str = "auto", num_joints: int = 24) -> Keypoints2D:
    """Read 2D keypoints from OpenPose JSON, COCO JSON (results list or annotation file), ``.npy`` or a
    plain JSON array [F, K, 2|3] / [K, 2|3] (or ``{"keypoints": ...}``).

    ``layout`` is ``auto`` (from the keypoint count: 17 COCO, 25 BODY_25, ``num_joints`` SMPL joints),
    ``coco17``, ``body25`` or ``smpl``.
    """
    path = Path(path)
    if not path.is_file():
        raise ReconError(f"{path}: keypoint file not found")
    if path.suffix == ".npy":
        array = _load_npy(path)
    else:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ReconError(f"{path}: cannot read keypoint JSON ({exc})") from None
        array = _array_from_json(path, doc)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[-1] not in (2, 3):
        raise ReconError(f"{path}: keypoints have shape {list(array.shape)}, expected [frames, K, 2 or 3]")
    layout = _resolve_layout(path, layout, array.shape[1], num_joints)
    xy = array[..., :2].astype(np.float64)
    conf = array[..., 2].astype(np.float64) if array.shape[-1] == 3 else np.ones(array.shape[:2])
    if not np.all(np.isfinite(conf)):
        raise ReconError(f"{path}: keypoint confidences contain NaN or infinite values")
    bad = ~np.all(np.isfinite(xy), axis=-1) & (conf > 0)
    if bad.any():
        f, k = np.argwhere(bad)[0]
        raise ReconError(f"{path}: keypoint {k} of frame {f} is NaN or infinite (give confidence 0 for missing points)")
    xy = np.where(np.isfinite(xy), xy, 0.0)
    return Keypoints2D(xy=xy, confidence=conf, layout=layout)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise ReconError(f"{path}: cannot read keypoint array ({exc})") from None


def _array_from_json(path: Path, doc: object) -> np.ndarray:
    """Keypoints [F, K, 3] (or [F, K, 2]) from any of the supported JSON shapes."""
    if isinstance(doc, dict) and "people" in doc:  # OpenPose, one frame
        return _openpose_frame(path, doc)[None]
    if isinstance(doc, list) and doc and isinstance(doc[0], dict) and "people" in doc[0]:  # OpenPose frames
        return np.stack([_openpose_frame(path, d) for d in doc])
    if isinstance(doc, dict) and "annotations" in doc:  # COCO annotation file
        return _coco_entries(path, doc["annotations"])
    if isinstance(doc, list) and doc and isinstance(doc[0], dict) and "keypoints" in doc[0]:  # COCO results
        return _coco_entries(path, doc)
    if isinstance(doc, dict) and "keypoints" in doc:
        doc = doc["keypoints"]
    try:
        return np.asarray(doc, dtype=np.float64)
    except (TypeError, ValueError):
        raise ReconError(f"{path}: not a keypoint file (expected OpenPose, COCO or a [frames, K, 3] array)") from None


def _openpose_frame(path: Path, doc: dict) -> np.ndarray:
    """The most confident person of one OpenPose frame as [K, 3]."""
    people = [p for p in doc["people"] if p.get("pose_keypoints_2d")]
    if not people:
        raise ReconError(f"{path}: an OpenPose frame has no person with pose_keypoints_2d")
    arrays = [np.asarray(p["pose_keypoints_2d"], dtype=np.float64).reshape(-1, 3) for p in people]
    return max(arrays, key=lambda a: float(a[:, 2].sum()))


def _coco_entries(path: Path, entries: list) -> np.ndarray:
    """One person per image (the best scored or with most keypoints), frames ordered by ``image_id``."""
    best: dict[object, tuple[float, np.ndarray]] = {}
    for entry in entries:
        if "keypoints" not in entry:
            raise ReconError(f"{path}: a COCO entry has no 'keypoints'")
        kp = np.asarray(entry["keypoints"], dtype=np.float64).reshape(-1, 3)
        score = float(entry.get("score", entry.get("num_keypoints", (kp[:, 2] > 0).sum())))
        image = entry.get("image_id", len(best))
        if image not in best or score > best[image][0]:
            best[image] = (score, kp)
    if not best:
        raise ReconError(f"{path}: the COCO file has no keypoint entries")
    order = sorted(best) if all(isinstance(k, (int, float)) for k in best) else list(best)
    return np.stack([best[k][1] for k in order])


def _resolve_layout(path: Path, layout: str, count: int, num_joints: int) -> str:
    if layout == "auto":
        by_count = {17: "coco17", 25: "body25", num_joints: "smpl"}
        if count not in by_count:
            raise ReconError(f"{path}: {count} keypoints per frame; expected 17 (COCO), 25 (BODY_25) or "
                             f"{num_joints} (SMPL joints)")
        return by_count[count]
    expected = LAYOUT_SIZES.get(layout, num_joints)
    if count != expected:
        raise ReconError(f"{path}: {count} keypoints per frame, the {layout} layout has {expected}")
    return layout


def to_smpl_joints(keypoints: Keypoints2D, joint_names: list[str] | tuple[str, ...] = JOINT_NAMES
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Targets per SMPL joint: ``xy`` [F, J, 2] and ``confidence`` [F, J] (0 for joints with no keypoint)."""
    frames, n_joints = keypoints.xy.shape[0], len(joint_names)
    if keypoints.layout == "smpl":
        return keypoints.xy, keypoints.confidence
    xy = np.zeros((frames, n_joints, 2))
    conf = np.zeros((frames, n_joints))
    index = {name: j for j, name in enumerate(joint_names)}
    for k, name in SMPL_FROM_LAYOUT[keypoints.layout].items():
        if name in index:
            xy[:, index[name]] = keypoints.xy[:, k]
            conf[:, index[name]] = keypoints.confidence[:, k]
    return xy, conf
