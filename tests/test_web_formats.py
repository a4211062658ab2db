"""Web splat formats (.splat, SPZ, PlayCanvas compressed PLY): exact layouts, quantisation bounds, axis
conventions, render round trips within stated PSNR floors, and refusal of bad files."""
from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from recon.apps.cli import main
from recon.engine.errors import ReconError
from recon.engine.io import compressed_ply, dot_splat, spz
from recon.engine.io.ply import SplatArrays
from recon.engine.io.splat_codec import SH_C0, sigmoid
from recon.engine.io.splat_files import read_splats, write_splats
from recon.engine.models.gaussians import GaussianModel
from recon.engine.render.paths import look_at
from recon.engine.scene.camera import Camera
from recon.engine.train.metrics import psnr

SUFFIX = {"ply": ".ply", "compressed": ".compressed.ply", "splat": ".splat", "spz": ".spz"}
# Render round-trip floors (dB) on random scenes with SH (degree-0 scenes for .splat, which stores no SH). Over
# seeds 0..199: compressed PLY min 35.3 / median 45.8, SPZ 32.4 / 34.9, .splat 37.1 / 45.8 dB. The low tail is
# not quantisation error (bounded per attribute below) but depth order: two splats at nearly the same depth can
# swap after positions are quantised, which changes a few dozen pixels a lot (seed 73: attributes within their
# steps, 61 of 7680 pixels off by more than 0.05; quantised positions alone: 35.6 dB). The floors sit below that
# tail; gross errors (axes, SH signs, scale or opacity encodings) give far less.
PSNR_FLOOR = {"ply": 100.0, "compressed": 33.0, "spz": 30.0, "splat": 35.0}


def scene_splats(rng: np.random.Generator, n: int, degree: int) -> SplatArrays:
    """A blob of Gaussians such as a fit makes: small scales, mixed opacities, moderate SH."""
    k = (degree + 1) ** 2
    f32 = np.float32
    return SplatArrays(means=(0.4 * rng.normal(size=(n, 3))).astype(f32),
                       sh0=(0.8 * rng.normal(size=(n, 1, 3))).astype(f32),
                       shN=(0.15 * rng.normal(size=(n, k - 1, 3))).astype(f32),
                       opacities=rng.normal(1.0, 1.5, size=n).astype(f32),
                       scales=rng.normal(-3.2, 0.4, size=(n, 3)).astype(f32),
                       quats=rng.normal(size=(n, 4)).astype(f32))


def ring(count: int, size: tuple[int, int] = (48, 40)) -> list[Camera]:
    cams = []
    for i in range(count):
        t = 2 * np.pi * i / count
        eye = np.array([1.6 * np.cos(t), 1.6 * np.sin(t), 0.5])
        cams.append(Camera(width=size[0], height=size[1], fx=50.0, fy=50.0, cx=size[0] / 2, cy=size[1] / 2,
                           world_to_camera=look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0]))))
    return cams


def render_all(splats: SplatArrays, cameras: list[Camera]) -> torch.Tensor:
    model = GaussianModel.from_splats(splats, background=(0.0, 0.0, 0.0))
    return torch.stack([model.render(c)["rgb"] for c in cameras])


@pytest.mark.parametrize("fmt", ["ply", "compressed", "spz", "splat"])
def test_render_round_trip_within_floor(tmp_path, seed, fmt):
    rng = np.random.default_rng(seed)
    splats = scene_splats(rng, 3000, 0 if fmt == "splat" else 3)
    path = tmp_path / f"s{SUFFIX[fmt]}"
    write_splats(path, splats, fmt)
    back = read_splats(path)
    assert len(back) == len(splats) and back.sh_degree == splats.sh_degree
    cameras = ring(4)
    value = psnr(render_all(back, cameras), render_all(splats, cameras)).item()
    print(f"{fmt}: {value:.2f} dB")
    assert value >= PSNR_FLOOR[fmt], f"{fmt}: {value:.2f} dB"


def test_splat_record_layout(tmp_path):
    """One Gaussian, bytes checked field by field; records sorted by size times opacity."""
    splats = SplatArrays(means=np.array([[1.0, -2.0, 3.5], [0.0, 0.0, 0.0]], np.float32),
                         sh0=np.array([[[0.0, 1.0, -1.0]], [[0.0, 0.0, 0.0]]], np.float32),
                         shN=np.zeros((2, 3, 3), np.float32),
                         opacities=np.array([0.0, 0.0], np.float32),
                         scales=np.log(np.array([[0.1, 0.2, 0.3], [0.01, 0.01, 0.01]], np.float32)),
                         quats=np.array([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], np.float32))
    data = dot_splat.encode_splat(splats)
    assert len(data) == 64
    x, y, z, sx, sy, sz = struct.unpack_from("<6f", data, 0)
    assert (x, y, z) == (1.0, -2.0, 3.5)
    np.testing.assert_allclose([sx, sy, sz], [0.1, 0.2, 0.3], rtol=1e-6)
    assert list(data[24:28]) == [128, round(255 * (0.5 + SH_C0)), round(255 * (0.5 - SH_C0)), 128]
    assert list(data[28:32]) == [255, 128, 128, 128]  # w = 1 -> 1 * 128 + 128 clipped to 255
    assert list(data[32 + 28:64]) == [128, 128, 128, 255]  # the small Gaussian comes second
    back = dot_splat.decode_splat(data)
    assert back.shN.shape == (2, 0, 3)


def test_spz_header_axes_and_rotation_code():
    """SPZ stores right-up-back axes: y and z of positions and quaternions flip; rotations as smallest three."""
    c = math.sqrt(0.5)
    splats = SplatArrays(means=np.array([[1.0, 2.0, -3.0]], np.float32), sh0=np.zeros((1, 1, 3), np.float32),
                         shN=np.zeros((1, 3, 3), np.float32), opacities=np.zeros(1, np.float32),
                         scales=np.full((1, 3), -2.0, np.float32),
                         quats=np.array([[c, 0.0, c, 0.0]], np.float32),  # w, x, y, z: 90 degrees about y
                         antialiased=True)
    raw = gzip.decompress(spz.encode_spz(splats))
    magic, version, n, degree, bits, flags, reserved = struct.unpack_from("<IIIBBBB", raw)
    assert (magic, version, n, degree, bits, flags, reserved) == (0x5053474E, 3, 1, 1, 12, 1, 0)
    fixed = [int.from_bytes(raw[16 + 3 * i:19 + 3 * i], "little", signed=True) for i in range(3)]
    assert fixed == [4096, -2 * 4096, 3 * 4096]
    assert raw[25] == 128 and list(raw[26:29]) == [128] * 3  # alpha 0.5; colour 0 -> 127.5 -> 128
    assert list(raw[29:32]) == [round((-2 + 10) * 16)] * 3
    # x, y, z, w = (0, -c, 0, c) after the flip; the largest is y (index 1; ties keep the first) and it is
    # negative, so all flip: kept x, z, w = (0, 0, -c) -> sign bit on w's field, magnitude 511.
    code = int.from_bytes(raw[32:36], "little")
    assert (code >> 30, (code >> 20) & 0x3FF, (code >> 10) & 0x3FF, code & 0x3FF) == (1, 0, 0, 0x200 | 511)
    assert len(raw) == 36 + 9
    back = spz.decode_spz(spz.encode_spz(splats))
    np.testing.assert_allclose(back.means, splats.means, atol=2 ** -12)
    assert back.antialiased
    q = back.quats[0] / np.linalg.norm(back.quats[0])
    assert abs(abs(float(q @ splats.quats[0])) - 1.0) < 1e-5


def test_spz_sh_flips_match_the_sh_basis(seed):
    """Flipping y and z of every direction equals flipping the signs SPZ's converter applies to each coefficient."""
    from recon.kernels.splatting.reference import sh_basis

    dirs = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(seed)), dim=1)
    flipped = dirs * torch.tensor([1.0, -1.0, -1.0])
    basis, basis_flipped = sh_basis(dirs, 3), sh_basis(flipped, 3)
    signs = torch.cat([torch.ones(1), torch.as_tensor(spz.SH_FLIPS, dtype=torch.float32)])
    torch.testing.assert_close(basis_flipped, basis * signs, atol=1e-5, rtol=1e-5)


def test_spz_quantisation_bounds(seed):
    rng = np.random.default_rng(seed)
    splats = scene_splats(rng, 500, 3)
    limit = 127.5 / (spz.COLOR_SCALE * 255.0)  # colours are bytes of f_dc * 0.15 * 255 + 127.5
    splats.sh0[0, 0] = [2.0 * limit, -2.0 * limit, 0.0]  # beyond the range: saturates
    back = spz.decode_spz(spz.encode_spz(splats))
    assert np.abs(back.means - splats.means).max() <= 0.5 * 2 ** -12 + 1e-6
    assert np.abs(back.scales - splats.scales).max() <= 0.5 / 16 + 1e-6
    assert np.abs(sigmoid(back.opacities) - sigmoid(splats.opacities)).max() <= 0.5 / 255 + 1e-6
    # |f_dc| up to 3.33 is representable: 4.2 of this blob's standard deviations, so one draw in 20 has values
    # beyond it too (seed 426: 3.35).
    assert np.abs(back.sh0 - np.clip(splats.sh0, -limit, limit)).max() <= 0.5 / (0.15 * 255) + 1e-5
    steps = np.where(np.arange(15) < 3, 8, 16)[None, :, None]
    assert (np.abs(back.shN - splats.shN) <= (steps / 2 + 0.5) / 128 + 1e-6).all()


def test_spz_reads_version_2():
    """Version 2 keeps x, y, z of the quaternion as bytes (w >= 0 derived); recon reads it."""
    c = math.sqrt(0.5)
    splats = SplatArrays(means=np.zeros((1, 3), np.float32), sh0=np.zeros((1, 1, 3), np.float32),
                         shN=np.zeros((1, 0, 3), np.float32), opacities=np.zeros(1, np.float32),
                         scales=np.zeros((1, 3), np.float32), quats=np.array([[c, c, 0.0, 0.0]], np.float32))
    raw = bytearray(gzip.decompress(spz.encode_spz(splats)))
    raw[4] = 2  # version
    v2 = bytes(raw[:16 + 9 + 1 + 3 + 3]) + bytes([round(c * 127.5 + 127.5), 128, 128])  # x, -y, -z of (c, 0, 0)
    back = spz.decode_spz(gzip.compress(v2))
    np.testing.assert_allclose(back.quats[0], [c, c, 0.0, 0.0], atol=0.01)


def test_compressed_ply_layout_and_bounds(tmp_path, seed):
    from plyfile import PlyData

    rng = np.random.default_rng(seed)
    splats = scene_splats(rng, 600, 1)
    path = tmp_path / "s.compressed.ply"
    compressed_ply.write_compressed_ply(path, splats)
    ply = PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["chunk", "vertex", "sh"]
    assert len(ply["chunk"].data) == 3 and len(ply["vertex"].data) == 600
    assert [p.name for p in ply["vertex"].properties] == list(compressed_ply.VERTEX_FIELDS)
    assert [p.name for p in ply["sh"].properties] == [f"f_rest_{i}" for i in range(9)]
    back = read_splats(path)
    order = compressed_ply.morton_order(splats.means.astype(np.float64))  # the file's order
    assert np.linalg.norm(back.means[:-1] - back.means[1:], axis=1).mean() < 0.5 * np.linalg.norm(
        splats.means[:-1] - splats.means[1:], axis=1).mean()  # neighbours in the file are near in space
    # Positions: 11/10/11 bits across each chunk's box (at most the whole box).
    span = float((splats.means.max(0) - splats.means.min(0)).max())
    np.testing.assert_allclose(back.means, splats.means[order], atol=span / 1023 / 2 + 1e-6)
    np.testing.assert_allclose(back.shN, splats.shN[order], atol=8 / 256 + 1e-6)
    assert np.abs(sigmoid(back.opacities) - sigmoid(splats.opacities[order])).max() <= 0.5 / 255 + 1e-6


def test_compressed_ply_without_chunk_colours(tmp_path):
    """Older files keep colours directly in [0, 1] (12 chunk fields); they read too."""
    splats = SplatArrays(means=np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], np.float32),
                         sh0=np.array([[[0.5, 0.0, -0.5]], [[0.0, 0.0, 0.0]]], np.float32),
                         shN=np.zeros((2, 0, 3), np.float32), opacities=np.zeros(2, np.float32),
                         scales=np.full((2, 3), -3.0, np.float32),
                         quats=np.tile([1.0, 0, 0, 0], (2, 1)).astype(np.float32))
    data = compressed_ply.encode_compressed_ply(splats)
    header, body = data.split(b"end_header\n", 1)
    lines = [l for l in header.decode().splitlines() if not any(l.endswith(f) for f in compressed_ply.COLOR_FIELDS)]
    chunk = np.frombuffer(body[:18 * 4], dtype="<f4")[:12].tobytes()
    vertex = np.frombuffer(body[18 * 4:18 * 4 + 2 * 16], dtype="<u4").copy()
    colour = 0.5 + SH_C0 * splats.sh0.reshape(2, 3)
    vertex[3::4] = (np.round(colour * 255).astype(np.uint32) << np.array([24, 16, 8])).sum(1) | 128
    path = tmp_path / "old.ply"
    path.write_bytes(("\n".join(lines) + "\nend_header\n").encode() + chunk + vertex.astype("<u4").tobytes())
    back = read_splats(path)
    np.testing.assert_allclose(back.sh0, splats.sh0, atol=0.5 / 255 / SH_C0 + 1e-6)


@pytest.mark.parametrize("name, data, message", [
    ("short.splat", b"\0" * 33, "32-byte"),
    ("nan.splat", struct.pack("<6f", float("nan"), 0, 0, 1, 1, 1) + bytes(8), "non-finite"),
    ("plain.spz", b"not gzip at all", "gzip"),
    ("magic.spz", gzip.compress(struct.pack("<IIIBBBB", 0x12345678, 3, 1, 0, 12, 0, 0)), "magic"),
    ("v9.spz", gzip.compress(struct.pack("<IIIBBBB", 0x5053474E, 9, 1, 0, 12, 0, 0)), "version 9"),
    ("cut.spz", gzip.compress(struct.pack("<IIIBBBB", 0x5053474E, 3, 5, 0, 12, 0, 0) + bytes(10)), "expected"),
    ("ext.spz", gzip.compress(struct.pack("<IIIBBBB", 0x5053474E, 3, 1, 0, 12, 2, 0)), "extensions"),
    ("mesh.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n", "missing field"),
])
def test_bad_files_one_line_error(tmp_path, capsys, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ReconError, match=message):
        read_splats(path)
    assert main(["render", str(path), "--path", "orbit"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"recon: error: {path}") and message in err[0]


def test_export_web_formats_then_render(tmp_path):
    """`recon export --splat/--spz/--compressed-ply` on a run; each file renders again with the scene's cameras."""
    import imageio.v3 as iio

    from recon.engine.scene.demo import write_demo_scene
    from recon.engine.train import rundir

    scene = write_demo_scene(tmp_path / "scene", views=4, resolution=16)
    rng = np.random.default_rng(0)
    model = GaussianModel.from_splats(scene_splats(rng, 300, 1))
    run = tmp_path / "run"
    rundir.write_config(run, {"model": "gaussians", "source": str(scene)})
    rundir.save_checkpoint(run, {"kind": "gaussians", "step": 1, "model": model.state_dict(),
                                 "normalization": model.normalization.to_dict()})
    outs = {"splat": tmp_path / "x.splat", "spz": tmp_path / "x.spz", "compressed": tmp_path / "x.compressed.ply"}
    assert main(["export", str(run), "--splat", str(outs["splat"]), "--spz", str(outs["spz"]),
                 "--compressed-ply", str(outs["compressed"])]) == 0
    for fmt, out in outs.items():
        frames = tmp_path / f"frames_{fmt}"
        assert main(["render", str(out), "--scene", str(scene), "--path", "orbit", "--frames", "2",
                     "-o", str(frames) + "/"]) == 0
        assert iio.imread(frames / "00000.png").shape == (16, 16, 3)
