"""Draw docs/smpl_overlay.png: three people from CMU clips fitted from noisy 2D keypoints, seen by the camera
(left: meshes over the keypoints) and from above (right: fitted bodies blue, true bodies orange).

    .venv/bin/python tools/smpl_overlay_figure.py [-o docs/smpl_overlay.png] [--seed 5]

Needs ../shared/data/mocap; uses the test scenes of tests/mocap_scenes.py (synthetic SMPL-layout body).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mocap_scenes import HEIGHT, WIDTH, keypoint_scene, random_camera  # noqa: E402

from recon.engine.io.images import write_image  # noqa: E402
from recon.engine.models.smpl import SMPL  # noqa: E402
from recon.engine.smpl.fit import FitConfig, PinholeCamera, fit_keypoints2d  # noqa: E402
from recon.engine.smpl.overlay import render_mesh_overlay  # noqa: E402
from recon.engine.smpl.synthetic import make_test_model  # noqa: E402

TRUTH_COLOUR = np.array([1.0, 0.6, 0.2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/smpl_overlay.png"))
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = SMPL(make_test_model())
    rng = np.random.default_rng(args.seed)
    camera = random_camera(rng)
    scenes = [keypoint_scene(model, rng, camera=camera, betas_std=0.3) for _ in range(3)]
    xy = np.concatenate([s.xy for s in scenes])
    conf = np.concatenate([s.confidence for s in scenes])
    result = fit_keypoints2d(model, xy, conf, camera, FitConfig())
    faces = model.faces.numpy()
    with torch.no_grad():
        truth = [model(**{k: v.float() for k, v in s.truth.items()})[0][0].numpy() for s in scenes]
    half = PinholeCamera(camera.fx / 2, camera.fy / 2, camera.cx / 2, camera.cy / 2)
    left = np.full((HEIGHT // 2, WIDTH // 2, 3), 0.15, np.float32)
    for k in range(3):
        left = render_mesh_overlay(left, result.vertices[k], faces, half, keypoints=xy[k][conf[k] > 0] / 2)
    # from above: a camera 20 m over the middle of the people, looking down (image up = away from the camera)
    far = max(float(t[:, 2].max()) for t in truth) + 0.5
    centre = np.array([np.mean([t[:, 0].mean() for t in truth]), far / 2])  # from the camera to the farthest
    w2c = np.eye(4)
    w2c[:3, :3] = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # world z (depth) -> image up
    w2c[:3, 3] = -w2c[:3, :3] @ np.array([centre[0], -20.0, centre[1]])
    focal = 20.0 * (HEIGHT / 2 - 30) / far  # the camera and the farthest person both in view
    top = PinholeCamera(focal, focal, WIDTH / 4, HEIGHT / 4, w2c)
    right = np.full_like(left, 0.15)
    for k in range(3):
        right = render_mesh_overlay(right, truth[k], faces, top, opacity=0.6, colour=TRUTH_COLOUR)
        right = render_mesh_overlay(right, result.vertices[k], faces, top, opacity=0.6)
    # the camera's position and its field of view, as a marker at the bottom
    cam_px = top.project(torch.zeros(1, 3, dtype=torch.float64)).numpy()[0]
    x, y = (int(round(v)) for v in cam_px)
    right[max(y - 4, 0):y + 5, max(x - 4, 0):x + 5] = (1.0, 1.0, 1.0)
    figure = np.concatenate([left, np.ones((left.shape[0], 8, 3), np.float32), right], 1)
    write_image(args.output, figure)
    report = [f"person {k}: depth {truth[k][:, 2].mean():.2f} m true, {result.vertices[k][:, 2].mean():.2f} m fitted"
              for k in range(3)]
    print(f"wrote {args.output}; " + "; ".join(report))


if __name__ == "__main__":
    main()
