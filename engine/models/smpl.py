"""SMPL-family body models: reading the distributed model files and the differentiable ``SMPL`` module.

Model files hold the keys ``v_template`` [V, 3], ``shapedirs`` [V, 3, L] (any L), ``posedirs``
[V, 3, P] or [V * 3, P], ``J_regressor`` [J, V] (dense or sparse), ``weights`` [V, J],
``kintree_table`` [2, J] (first row: parent of each joint) and ``f`` [F, 3]. Neutral, male and
female models are just different files.

``.pkl`` files as distributed were pickled under Python 2 with chumpy arrays and a scipy sparse
joint regressor. They are read here without chumpy or scipy: a restricted unpickler maps those
classes to small stand-ins that keep the pickled state (the chumpy array lives in ``x``; a sparse
matrix in ``data``/``indices``/``indptr``/``shape``) and rebuilds dense numpy arrays from it.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recon.engine.errors import ReconError
from recon.engine.models.lbs import axis_angle_to_matrix, batch_rigid_transform, lbs

REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class _ChumpyArray:
    """Stand-in for a pickled ``chumpy`` object: keeps its state; the array value is ``x``."""

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"x": state}

    def to_numpy(self) -> np.ndarray:
        for key in ("x", "a", "_x"):
            if key in self.state:
                return _as_array(self.state[key])
        raise ValueError(f"chumpy object without an array value (keys {sorted(self.state)})")


class _SparseMatrix:
    """Stand-in for a pickled scipy ``csc_matrix``/``csr_matrix``; rebuilds the dense array."""

    compressed_axis = 1  # csc: indptr runs over columns

    def __setstate__(self, state: dict) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        data = np.asarray(self.state["data"], dtype=np.float64)
        indices = np.asarray(self.state["indices"], dtype=np.int64)
        indptr = np.asarray(self.state["indptr"], dtype=np.int64)
        shape = tuple(int(s) for s in self.state.get("_shape", self.state.get("shape")))
        dense = np.zeros(shape, dtype=np.float64)
        outer = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        if self.compressed_axis == 1:
            np.add.at(dense, (indices, outer), data)
        else:
            np.add.at(dense, (outer, indices), data)
        return dense


class _CsrMatrix(_SparseMatrix):
    compressed_axis = 0


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, (_ChumpyArray, _SparseMatrix)):
        return value.to_numpy()
    return np.asarray(value)


class _ModelUnpickler(pickle.Unpickler):
    """Loads numpy arrays, chumpy objects and scipy sparse matrices; refuses every other class."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"),
        ("copyreg", "__newobj__"), ("builtins", "object"), ("__builtin__", "object"),
        ("_codecs", "encode"),  # byte strings pickled by Python 3 at protocol 2
        ("builtins", "set"), ("__builtin__", "set"), ("builtins", "frozenset"), ("__builtin__", "frozenset"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "chumpy":
            return _ChumpyArray
        if module.startswith("scipy.sparse"):
            if name.startswith("csc"):
                return _SparseMatrix
            if name.startswith("csr"):
                return _CsrMatrix
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected class {module}.{name}")


def load_model_data(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an SMPL-family model file (``.pkl`` or ``.npz``) into dense numpy arrays.

    Returns ``v_template`` [V, 3], ``shapedirs`` [V, 3, L], ``posedirs`` [V, 3, P], ``J_regressor``
    [J, V], ``weights`` [V, J], ``kintree_table`` [2, J] (int64, root parent -1), ``f`` [F, 3] int64 and,
    when the file has them, ``joint_names`` [J].
    """
    path = Path(path)
    if not path.is_file():
        raise ReconError(f"{path}: body model file not found")
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as fh:
                raw = _ModelUnpickler(fh, encoding="latin1").load()
            if not isinstance(raw, dict):
                raise ReconError(f"{path}: not an SMPL model pickle (holds a {type(raw).__name__})")
        elif path.suffix == ".npz":
            raw = np.load(path, allow_pickle=False)
        else:
            raise ReconError(f"{path}: unknown body model format (expected .pkl or .npz)")
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise ReconError(f"{path}: body model lacks {', '.join(missing)}")
        data = {k: _as_array(raw[k]) for k in REQUIRED_KEYS}
        if "joint_names" in raw:
            data["joint_names"] = np.asarray(raw["joint_names"]).astype(str)
    except (pickle.UnpicklingError, ValueError, EOFError, zipfile.BadZipFile, OSError, KeyError) as exc:
        raise ReconError(f"{path}: cannot read body model ({exc})") from None
    return _check_model_data(path, data)


def _check_model_data(path: Path, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Normalise layouts and dtypes; raise ReconError naming ``path`` when the arrays do not fit together."""
    v = data["v_template"].astype(np.float64)
    n_verts = v.shape[0] if v.ndim == 2 else -1
    if v.ndim != 2 or v.shape[1] != 3:
        raise ReconError(f"{path}: v_template has shape {v.shape}, expected [V, 3]")
    shapedirs = data["shapedirs"].astype(np.float64)
    if shapedirs.ndim == 2:
        shapedirs = shapedirs[..., None]
    posedirs = data["posedirs"].astype(np.float64)
    if posedirs.ndim == 2 and posedirs.shape[0] == n_verts * 3:
        posedirs = posedirs.reshape(n_verts, 3, -1)
    kintree = data["kintree_table"].astype(np.int64)
    n_joints = kintree.shape[-1]
    parents = kintree[0].copy()
    parents[0] = -1  # the root's parent is stored as 2**32 - 1 in the distributed files
    weights = data["weights"].astype(np.float64)
    regressor = data["J_regressor"].astype(np.float64)
    faces = data["f"].astype(np.int64)
    expected = {
        "shapedirs": (shapedirs.shape[:2], (n_verts, 3)),
        "posedirs": (posedirs.shape, (n_verts, 3, 9 * (n_joints - 1))),
        "weights": (weights.shape, (n_verts, n_joints)),
        "J_regressor": (regressor.shape, (n_joints, n_verts)),
    }
    for key, (got, want) in expected.items():
        if tuple(got) != want:
            raise ReconError(f"{path}: {key} has shape {list(got)}, expected {list(want)}")
    if kintree.ndim != 2 or kintree.shape[0] != 2 or np.any(parents[1:] < 0) or np.any(parents[1:] >= np.arange(1, n_joints)):
        raise ReconError(f"{path}: kintree_table is not a tree with parents listed before children")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= n_verts:
        raise ReconError(f"{path}: f must be [F, 3] vertex indices below {n_verts}")
    kintree = np.stack([parents, kintree[1]])
    out = {"v_template": v, "shapedirs": shapedirs, "posedirs": posedirs, "J_regressor": regressor,
           "weights": weights, "kintree_table": kintree, "f": faces}
    if "joint_names" in data:
        out["joint_names"] = data["joint_names"]
    return out


class SMPL(nn.Module):
    """A skinned body model (SMPL layout) as a torch module with the model arrays as buffers.

    ``forward(betas [B, L], global_orient [B, 3], body_pose [B, 3 * (J - 1)], transl [B, 3])``
    returns ``(vertices [B, V, 3], joints [B, J, 3])``. Fewer betas than the model has are zero-padded.
    """

    def __init__(self, data: dict[str, np.ndarray], dtype: torch.dtype = torch.float32):
        super().__init__()
        as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
        self.register_buffer("v_template", as_t(data["v_template"]))
        self.register_buffer("shapedirs", as_t(data["shapedirs"]))
        n_pose = data["posedirs"].shape[-1]
        self.register_buffer("posedirs", as_t(np.asarray(data["posedirs"]).reshape(-1, n_pose).T))  # [P, V*3]
        self.register_buffer("J_regressor", as_t(data["J_regressor"]))
        self.register_buffer("weights", as_t(data["weights"]))
        self.register_buffer("parents", torch.as_tensor(np.asarray(data["kintree_table"])[0], dtype=torch.long))
        self.register_buffer("faces", torch.as_tensor(np.asarray(data["f"]), dtype=torch.long))
        # Joints depend on shape only through J_regressor @ shapedirs: precomputed for joint-only fits.
        self.register_buffer("j_template", self.J_regressor @ self.v_template)  # [J, 3]
        self.register_buffer("j_shapedirs", torch.einsum("jv,vkl->jkl", self.J_regressor, self.shapedirs))
        names = data.get("joint_names")
        self.joint_names = [str(n) for n in names] if names is not None else [f"joint_{j}" for j in range(self.num_joints)]

    @classmethod
    def from_file(cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> "SMPL":
        """Load a ``.pkl`` or ``.npz`` model file."""
        return cls(load_model_data(path), dtype=dtype)

    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[-1])

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def _pad_betas(self, betas: torch.Tensor) -> torch.Tensor:
        if betas.shape[-1] > self.num_betas:
            raise ReconError(f"{betas.shape[-1]} shape coefficients given, the model has {self.num_betas}")
        if betas.shape[-1] == self.num_betas:  # (pad runs through slow decompositions under forward-mode AD)
            return betas
        return torch.nn.functional.pad(betas, (0, self.num_betas - betas.shape[-1]))

    def forward(self, betas: torch.Tensor, global_orient: torch.Tensor, body_pose: torch.Tensor,
                transl: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed vertices [B, V, 3] and joints [B, J, 3]."""
        full_pose = torch.cat([global_orient, body_pose], dim=-1)
        vertices, joints = lbs(self._pad_betas(betas), full_pose, self.v_template, self.shapedirs, self.posedirs,
                               self.J_regressor, self.parents, self.weights)
        if transl is not None:
            vertices = vertices + transl[:, None]
            joints = joints + transl[:, None]
        return vertices, joints

    def joints(self, betas: torch.Tensor, global_orient: torch.Tensor, body_pose: torch.Tensor,
               transl: torch.Tensor | None = None) -> torch.Tensor:
        """Posed joints [B, J, 3] only (no skinning of the vertices): the cheap path for joint fitting."""
        batch = betas.shape[0]
        rest = self.rest_joints(betas)
        rot_mats = axis_angle_to_matrix(torch.cat([global_orient, body_pose], -1).reshape(batch, -1, 3))
        posed, _ = batch_rigid_transform(rot_mats, rest, self.parents)
        return posed if transl is None else posed + transl[:, None]

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """Rest-pose joints [B, J, 3] for shape coefficients ``betas`` [B, L]."""
        return self.j_template[None] + torch.einsum("bl,jkl->bjk", self._pad_betas(betas), self.j_shapedirs)
