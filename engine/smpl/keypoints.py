"""2D keypoint inputs: OpenPose BODY_25 and COCO-17 JSON as those tools write them, plus plain arrays.

``read_people`` returns every person of a file (or of a folder of per-frame OpenPose JSONs) as a
``Person``: a label, the ids the file gives it (COCO annotation ids, OpenPose index) and its
``Keypoints2D`` (``xy`` [F, K, 2] pixels, ``confidence`` [F, K], layout name) over the frames it appears in.
Who is who across frames: COCO ``track_id`` when present; else one person per image makes a single track;
else (OpenPose frames, COCO images with several people) the k-th person of each frame is track k, as those
files list them (OpenPose does not track people; run a tracker first when the order changes).
``read_keypoints`` keeps the most confident person only. ``to_smpl_joints`` maps a layout onto SMPL joints.

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


@dataclass
class Person:
    """One person of a keypoint file: ``label`` (for file names), ``ids`` (``coco_annotation_id`` per frame,
    ``openpose_index``, ``track_id``), ``frames`` (image ids or file names) and the ``keypoints``."""

    label: str
    ids: dict
    frames: list
    keypoints: Keypoints2D


def read_people(path: str | os.PathLike, layout: str = "auto", num_joints: int = 24) -> list[Person]:
    """Every person in a keypoint file or a folder of per-frame OpenPose JSONs (sorted by name), in file order.

    Files: OpenPose JSON (one frame, or a list of frames), COCO JSON (annotation file or results list), ``.npy``
    or a plain JSON array [F, K, 2|3] / [K, 2|3] (or ``{"keypoints": ...}``), which hold one person. ``layout``
    is ``auto`` (from the keypoint count: 17 COCO, 25 BODY_25, ``num_joints`` SMPL joints), ``coco17``,
    ``body25`` or ``smpl``.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise ReconError(f"{path}: the folder holds no .json keypoint files")
        return _openpose_people(path, [(f.name, _openpose_doc(f, _load_json(f))) for f in files], layout, num_joints)
    if not path.is_file():
        raise ReconError(f"{path}: keypoint file not found")
    if path.suffix == ".npy":
        return [_person(path, "person_0", {}, None, _load_npy(path), layout, num_joints)]
    doc = _load_json(path)
    if isinstance(doc, dict) and "people" in doc:  # OpenPose, one frame
        return _openpose_people(path, [(path.name, doc)], layout, num_joints)
    if isinstance(doc, list) and doc and isinstance(doc[0], dict) and "people" in doc[0]:  # OpenPose frames
        return _openpose_people(path, [(f"{path.name}[{i}]", _openpose_doc(path, d)) for i, d in enumerate(doc)],
                                layout, num_joints)
    if isinstance(doc, dict) and "annotations" in doc:  # COCO annotation file
        return _coco_people(path, doc["annotations"], layout, num_joints)
    if isinstance(doc, list) and doc and isinstance(doc[0], dict) and "keypoints" in doc[0]:  # COCO results
        return _coco_people(path, doc, layout, num_joints)
    if isinstance(doc, dict) and "keypoints" in doc:
        doc = doc["keypoints"]
    try:
        array = np.asarray(doc, dtype=np.float64)
    except (TypeError, ValueError):
        raise ReconError(f"{path}: not a keypoint file (expected OpenPose, COCO or a [frames, K, 3] array)") from None
    return [_person(path, "person_0", {}, None, array, layout, num_joints)]


def read_keypoints(path: str | os.PathLike, layout: str = "auto", num_joints: int = 24) -> Keypoints2D:
    """The keypoints of the most confident person of ``read_people`` (highest confidence sum per frame)."""
    people = read_people(path, layout, num_joints)
    return max(people, key=lambda p: float(p.keypoints.confidence.sum()) / len(p.frames)).keypoints


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReconError(f"{path}: cannot read keypoint JSON ({exc})") from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise ReconError(f"{path}: cannot read keypoint array ({exc})") from None


def _openpose_doc(path: Path, doc: object) -> dict:
    if not isinstance(doc, dict) or not isinstance(doc.get("people"), list):
        raise ReconError(f"{path}: not an OpenPose keypoint file (no 'people' list)")
    return doc


def _openpose_people(path: Path, frames: list[tuple[str, dict]], layout: str, num_joints: int) -> list[Person]:
    """Track k = the k-th person with ``pose_keypoints_2d`` of every frame (frames without one are skipped)."""
    tracks: dict[int, list[tuple[str, np.ndarray]]] = {}
    for name, doc in frames:
        people = [p for p in doc["people"] if p.get("pose_keypoints_2d")]
        for k, person in enumerate(people):
            tracks.setdefault(k, []).append((name, _entry_array(path, person["pose_keypoints_2d"])))
    if not tracks:
        raise ReconError(f"{path}: no person with pose_keypoints_2d in any OpenPose frame")
    return [_person(path, f"person_{k}", {"openpose_index": k}, [n for n, _ in rows],
                    _stack(path, [a for _, a in rows]), layout, num_joints) for k, rows in sorted(tracks.items())]


def _coco_people(path: Path, entries: list, layout: str, num_joints: int) -> list[Person]:
    """People of COCO entries: by ``track_id``; else one track when every image has one person; else by rank
    within each image (annotation id order, else file order). Frames are ordered by ``image_id``."""
    rows = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "keypoints" not in entry:
            raise ReconError(f"{path}: a COCO entry has no 'keypoints'")
        rows.append((entry.get("image_id", i), entry.get("id", i), entry))
    if not rows:
        raise ReconError(f"{path}: the COCO file has no keypoint entries")
    images = sorted({r[0] for r in rows}, key=lambda v: (not isinstance(v, (int, float)), v if isinstance(v, (int, float)) else str(v)))
    per_image = {img: sorted([r for r in rows if r[0] == img], key=lambda r: r[1]) for img in images}
    if all("track_id" in r[2] for r in rows):
        keys = sorted({r[2]["track_id"] for r in rows})
        members = {k: [r for img in images for r in per_image[img] if r[2]["track_id"] == k] for k in keys}
        label = lambda k: f"track_{k}"  # noqa: E731
    elif all(len(v) == 1 for v in per_image.values()):
        members, label = {0: [v[0] for v in per_image.values()]}, (lambda k: f"person_{rows[0][1]}" if len(images) == 1 else "person_0")
    else:
        most = max(len(v) for v in per_image.values())
        members = {k: [per_image[img][k] for img in images if len(per_image[img]) > k] for k in range(most)}
        label = (lambda k: f"person_{members[k][0][1]}") if len(images) == 1 else (lambda k: f"person_{k}")
    people = []
    for k, group in members.items():
        ids = {"coco_annotation_id": [r[2]["id"] for r in group]} if all("id" in r[2] for r in group) else {}
        if "track_id" in group[0][2]:
            ids["track_id"] = group[0][2]["track_id"]
        arrays = [_entry_array(path, r[2]["keypoints"]) for r in group]
        people.append(_person(path, label(k), ids, [r[0] for r in group], _stack(path, arrays), layout, num_joints))
    return people


def _entry_array(path: Path, values: object) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1, 3)
    except (TypeError, ValueError):
        raise ReconError(f"{path}: keypoints must be flat lists of x, y, confidence triples") from None


def _stack(path: Path, arrays: list[np.ndarray]) -> np.ndarray:
    if len({a.shape for a in arrays}) != 1:
        raise ReconError(f"{path}: frames have different keypoint counts ({sorted({len(a) for a in arrays})})")
    return np.stack(arrays)


def _person(path: Path, label: str, ids: dict, frames: list | None, array: np.ndarray, layout: str,
            num_joints: int) -> Person:
    """A ``Person`` from keypoints [F, K, 2|3] (or [K, 2|3]), checked."""
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
    frames = list(range(len(array))) if frames is None else frames
    return Person(label, ids, frames, Keypoints2D(xy=xy, confidence=conf, layout=layout))


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
