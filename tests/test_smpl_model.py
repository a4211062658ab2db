"""SMPL body model: forward pass against a direct per-vertex formula, gradients, and model file loading."""
from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import torch

from recon.engine.errors import ReconError
from recon.engine.models.lbs import axis_angle_to_matrix, wrap_axis_angle
from recon.engine.models.smpl import SMPL, load_model_data
from recon.engine.smpl.synthetic import JOINT_NAMES, PARENTS, make_test_model, write_test_model


@pytest.fixture(scope="module")
def model_data() -> dict[str, np.ndarray]:
    return make_test_model(num_betas=6, seed=3)


def _rotation_series(rot_vec: np.ndarray) -> np.ndarray:
    """exp of the skew matrix by its power series (independent of Rodrigues' closed form)."""
    x, y, z = rot_vec
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    out, term = np.eye(3), np.eye(3)
    for n in range(1, 30):
        term = term @ k / n
        out = out + term
    return out


def _direct_smpl(data, betas, pose, transl):
    """Per-vertex loops in float64, straight from the SMPL paper's equations."""
    v_t, sd, pd = data["v_template"], data["shapedirs"], data["posedirs"]
    n_verts, n_joints = len(v_t), data["weights"].shape[1]
    parents = data["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    v_shaped = np.array([v_t[i] + sd[i] @ betas for i in range(n_verts)])
    joints = data["J_regressor"] @ v_shaped
    rots = [_rotation_series(pose[3 * j:3 * j + 3]) for j in range(n_joints)]
    feat = np.concatenate([(rots[j] - np.eye(3)).ravel() for j in range(1, n_joints)])
    v_posed = np.array([v_shaped[i] + pd[i] @ feat for i in range(n_verts)])
    world = []
    for j in range(n_joints):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if j else 0)
        world.append(local if j == 0 else world[parents[j]] @ local)
    posed_joints = np.array([g[:3, 3] for g in world]) + transl
    verts = []
    for i in range(n_verts):
        acc = np.zeros(3)
        for j in range(n_joints):
            w = data["weights"][i, j]
            if w:
                acc += w * (world[j][:3, :3] @ (v_posed[i] - joints[j]) + world[j][:3, 3])
        verts.append(acc + transl)
    return np.array(verts), posed_joints


def test_synthetic_model_layout(model_data):
    assert model_data["posedirs"].shape == (len(model_data["v_template"]), 3, 207)
    assert model_data["weights"].shape[1] == 24 and list(model_data["joint_names"]) == list(JOINT_NAMES)
    np.testing.assert_allclose(model_data["weights"].sum(1), 1.0, atol=1e-12)
    assert model_data["kintree_table"][0, 0] == 2**32 - 1
    assert 200 < len(model_data["v_template"]) < 1000


def test_forward_matches_direct_formula(model_data, seed):
    model = SMPL(model_data, dtype=torch.float64)
    gen = np.random.default_rng(seed)
    batch = 2
    betas = gen.normal(size=(batch, 6))
    pose = gen.normal(size=(batch, 72)) * 0.5
    pose[1, 9:12] = 0.0  # an exact zero rotation
    transl = gen.normal(size=(batch, 3))
    t = lambda a: torch.as_tensor(a)  # noqa: E731
    verts, joints = model(t(betas), t(pose[:, :3]), t(pose[:, 3:]), t(transl))
    for b in range(batch):
        ref_v, ref_j = _direct_smpl(model_data, betas[b], pose[b], transl[b])
        np.testing.assert_allclose(verts[b].numpy(), ref_v, atol=1e-10)
        np.testing.assert_allclose(joints[b].numpy(), ref_j, atol=1e-10)
    joints_only = model.joints(t(betas), t(pose[:, :3]), t(pose[:, 3:]), t(transl))
    torch.testing.assert_close(joints_only, joints, atol=1e-12, rtol=0)


def test_fewer_betas_are_zero_padded(model_data):
    model = SMPL(model_data, dtype=torch.float64)
    pose = torch.zeros(1, 69, dtype=torch.float64)
    short, _ = model(torch.ones(1, 2, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64), pose)
    full, _ = model(torch.tensor([[1.0, 1.0, 0, 0, 0, 0]], dtype=torch.float64),
                    torch.zeros(1, 3, dtype=torch.float64), pose)
    torch.testing.assert_close(short, full)
    with pytest.raises(ReconError):
        model(torch.ones(1, 7, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64), pose)


def test_gradients_match_finite_differences(model_data, seed):
    """Directional derivatives of a random linear read-out of vertices and joints, central differences."""
    model = SMPL(model_data, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    inputs = [rnd(2, 6), torch.zeros(2, 3, dtype=torch.float64), 0.4 * rnd(2, 69), rnd(2, 3)]
    inputs[2][1, :6] = 0.0  # zero rotations: the singular point of Rodrigues' formula
    readout_v, readout_j = rnd(2, model.num_vertices, 3), rnd(2, 24, 3)

    def scalar(args):
        v, j = model(*args)
        return (v * readout_v).sum() + (j * readout_j).sum()

    leaves = [t.clone().requires_grad_(True) for t in inputs]
    grads = torch.autograd.grad(scalar(leaves), leaves)
    for _ in range(3):
        direction = [rnd(*t.shape) for t in inputs]
        eps = 1e-6
        plus = scalar([t + eps * d for t, d in zip(inputs, direction)])
        minus = scalar([t - eps * d for t, d in zip(inputs, direction)])
        numeric = (plus - minus) / (2 * eps)
        analytic = sum((g * d).sum() for g, d in zip(grads, direction))
        assert abs(float(numeric - analytic)) < 1e-6 * max(1.0, abs(float(analytic)))


def test_rodrigues_small_angles_and_gradient_at_zero():
    vec = torch.tensor([[0.0, 0.0, 0.0], [1e-5, -2e-5, 3e-6], [0.3, -1.2, 2.0]], dtype=torch.float64)
    ref = np.stack([_rotation_series(v) for v in vec.numpy()])
    np.testing.assert_allclose(axis_angle_to_matrix(vec).numpy(), ref, atol=1e-14)
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(zero)[0, 1].backward()  # d R01 / d r = (0, 0, -1) at zero
    np.testing.assert_allclose(zero.grad.numpy(), [0.0, 0.0, -1.0], atol=1e-12)


def test_wrap_axis_angle_keeps_the_rotation_with_angle_at_most_pi(seed):
    gen = torch.Generator().manual_seed(seed)
    vec = torch.randn(500, 3, generator=gen, dtype=torch.float64) * 5.0
    edge = torch.tensor([[0.0, 0.0, 0.0], [0.0, np.pi, 0.0], [0.0, 2 * np.pi - 1e-3, 0.0], [3 * np.pi, 0.0, 0.0]],
                        dtype=torch.float64)
    vec = torch.cat([vec, edge])
    wrapped = wrap_axis_angle(vec)
    np.testing.assert_allclose(axis_angle_to_matrix(wrapped).numpy(), axis_angle_to_matrix(vec).numpy(), atol=1e-12)
    assert float(wrapped.norm(dim=-1).max()) <= np.pi + 1e-12
    small = vec.norm(dim=-1) <= np.pi
    assert torch.equal(wrapped[small], vec[small])  # already canonical: untouched
    np.testing.assert_allclose(wrapped[-2].numpy(), [0.0, -1e-3, 0.0], atol=1e-12)  # nearly a full turn: tiny


def _write_chumpy_pickle(path, data, sparse_format: str) -> None:
    """Pickle ``data`` the way the distributed SMPL .pkl files are: chumpy ``Ch`` arrays and a scipy
    sparse joint regressor. chumpy is not installed, so a stand-in module is injected while pickling."""
    sparse = pytest.importorskip("scipy.sparse")
    chumpy, chumpy_ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:  # what chumpy's pickled state looks like: the array lives in ``x``
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy_ch.Ch = Ch
    chumpy.ch = chumpy_ch
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": chumpy_ch})
    try:
        matrix = {"csc": sparse.csc_matrix, "csr": sparse.csr_matrix}[sparse_format](data["J_regressor"])
        obj = {"v_template": Ch(data["v_template"]), "shapedirs": Ch(data["shapedirs"]),
               "posedirs": data["posedirs"], "J_regressor": matrix, "weights": Ch(data["weights"]),
               "kintree_table": data["kintree_table"], "f": data["f"], "bs_type": "lrotmin", "bs_style": "lbs"}
        path.write_bytes(pickle.dumps(obj, protocol=2))
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module


@pytest.mark.parametrize("sparse_format", ["csc", "csr"])
def test_chumpy_pickle_loads_like_npz(tmp_path, model_data, sparse_format):
    _write_chumpy_pickle(tmp_path / "model.pkl", model_data, sparse_format)
    assert b"chumpy.ch" in (tmp_path / "model.pkl").read_bytes()
    assert "chumpy" not in sys.modules
    from_pkl = load_model_data(tmp_path / "model.pkl")
    write_test_model(tmp_path / "model.npz", num_betas=6, seed=3)
    from_npz = load_model_data(tmp_path / "model.npz")
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f"):
        np.testing.assert_array_equal(from_pkl[key], from_npz[key], err_msg=key)
    assert from_npz["kintree_table"][0, 0] == -1 and list(from_npz["kintree_table"][0, 1:]) == list(PARENTS[1:])


def test_flat_posedirs_and_any_number_of_betas(tmp_path):
    data = make_test_model(num_betas=3)
    data["posedirs"] = data["posedirs"].reshape(-1, 207)  # [V * 3, 207]
    np.savez(tmp_path / "flat.npz", **data)
    model = SMPL.from_file(tmp_path / "flat.npz")
    assert model.num_betas == 3 and model.posedirs.shape == (207, 3 * model.num_vertices)


def test_bad_model_files(tmp_path, model_data):
    with pytest.raises(ReconError, match="not found"):
        load_model_data(tmp_path / "absent.npz")
    partial = {k: v for k, v in model_data.items() if k != "weights"}
    np.savez(tmp_path / "partial.npz", **partial)
    with pytest.raises(ReconError, match=r"partial.npz: body model lacks weights"):
        load_model_data(tmp_path / "partial.npz")
    wrong = dict(model_data, weights=model_data["weights"][:, :10])
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(ReconError, match=r"wrong.npz: weights has shape"):
        load_model_data(tmp_path / "wrong.npz")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"f": types.SimpleNamespace()}, protocol=2))
    with pytest.raises(ReconError, match=r"evil.pkl: cannot read body model \(unexpected class types"):
        load_model_data(tmp_path / "evil.pkl")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ReconError, match="junk.npz: cannot read body model"):
        load_model_data(tmp_path / "junk.npz")
