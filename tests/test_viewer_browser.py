"""The viewer in a real browser (Debian's headless chromium, WebGL in software): what the page shows is what
``recon render`` renders for the same camera, and a browser killed during ``recon fit --view`` leaves the fit
to finish. Skipped, with the reason, where chromium is absent (``.ci/run`` installs it)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from browser import Chromium

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(Chromium.find() is None, reason="needs Debian's chromium (apt-get install chromium)")]

# The page's image area against a direct render of the same camera. Measured about 45 dB here (PNG transport,
# WebGL in software); another view of the same run scores far below, so an empty or wrong view fails.
PAGE_PSNR_FLOOR = 35.0
STEPS = 100


def recon(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recon.apps.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def url_of(proc: subprocess.Popen, marker: str) -> str:
    """The viewer URL from the line of ``proc``'s output that holds ``marker``."""
    for line in proc.stdout:
        if marker in line and "http://" in line:
            return line[line.index("http://"):].split()[0]
    raise AssertionError(f"no viewer URL printed: {proc.stderr.read()}")


def canvas_mask(browser: Chromium, shape: tuple[int, int], cell: int = 8) -> np.ndarray:
    """Pixels where the 3D canvas is on top (not the panel, not a notification), minus the axes gizmo corner."""
    height, width = shape
    hits = browser.evaluate(f"""(() => {{ const out = [];
        for (let y = {cell // 2}; y < {height}; y += {cell}) for (let x = {cell // 2}; x < {width}; x += {cell}) {{
            const e = document.elementFromPoint(x, y); out.push(e !== null && e.tagName === 'CANVAS'); }}
        return out; }})()""")
    grid = np.array(hits, dtype=bool).reshape(-(-height // cell), -(-width // cell))
    mask = np.repeat(np.repeat(grid, cell, 0), cell, 1)[:height, :width]
    mask[height - 100:, :100] = False
    return mask


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def live_fit(tmp_path_factory):
    """``recon fit --view`` of a small demo scene with a browser watching, killed mid-fit."""
    from recon.engine.scene.demo import write_demo_scene

    root = tmp_path_factory.mktemp("live")
    scene = write_demo_scene(root / "scene", views=6, resolution=32)
    run = root / "run"
    fit = recon("fit", str(scene), "-o", str(run), "--steps", str(STEPS), "--init-points", "300", "--max-gaussians",
                "600", "--sh-degree", "1", "--view", "--view-port", "0")
    seen = {}
    try:
        url = url_of(fit, "viewer at")
        browser = Chromium()
        try:
            browser.open(url)
            seen["status"] = browser.wait_for(
                "(() => { const t = document.body.innerText; return t.includes('training: step') && "
                "(t.includes('full ') || t.includes('preview ')) && t; })()", timeout=300)
        finally:
            browser.kill()  # no goodbye: as if the tab crashed
        seen["killed_at"] = time.monotonic()
        out, err = fit.communicate(timeout=1200)
    finally:
        if fit.poll() is None:
            fit.kill()
    return {"run": run, "scene": scene, "returncode": fit.returncode, "stderr": err, **seen}


def test_killed_browser_leaves_the_fit_to_finish(live_fit):
    assert "training: step" in live_fit["status"]  # the page showed the training model while it trained
    step = int(live_fit["status"].split("training: step ")[1].split()[0])
    assert step < STEPS, "the browser should have been killed during the fit"
    assert live_fit["returncode"] == 0, live_fit["stderr"][-2000:]
    metrics = json.loads((live_fit["run"] / "metrics.json").read_text())
    assert metrics["steps"] == STEPS and f"checkpoint at step {STEPS}" in (live_fit["run"] / "log.txt").read_text()


def test_page_shows_what_recon_render_renders(live_fit, tmp_path):
    import imageio.v3 as iio

    run, views = live_fit["run"], tmp_path / "views"
    assert live_fit["returncode"] == 0, "the fit of the fixture failed"
    viewer = recon("view", str(run), "--port", "0", "--save-dir", str(views))
    try:
        url = url_of(viewer, "recon view:")
        with Chromium(800, 600) as browser:
            browser.open(url)
            browser.wait_for("document.body.innerText.includes('full ')", timeout=300)  # first full-size render
            assert browser.click_label("Show cameras")  # frustum lines off: only the render remains
            time.sleep(2.0)
            shot = iio.imread(browser.screenshot())[..., :3]
            mask = canvas_mask(browser, shot.shape[:2])
            assert browser.click_text("Save view and path")
            deadline = time.monotonic() + 300
            while not (views / "path_000.json").is_file() and time.monotonic() < deadline:
                time.sleep(0.25)
    finally:
        viewer.terminate()
        viewer.communicate(timeout=60)
    assert mask.mean() > 0.3, "too little of the canvas is visible to compare"
    frames = tmp_path / "frames"
    assert subprocess.run([sys.executable, "-m", "recon.apps.cli", "render", str(run), "--path",
                           str(views / "path_000.json"), "-o", str(frames) + "/"], capture_output=True).returncode == 0
    rendered = iio.imread(frames / "00000.png")
    assert rendered.shape == shot.shape  # the page's canvas size, at one image pixel per screen pixel
    assert np.abs(iio.imread(views / "view_000.png").astype(int) - rendered.astype(int)).max() <= 1
    value = psnr(shot[mask], rendered[mask])
    print(f"page vs recon render: {value:.2f} dB over {mask.mean():.0%} of the page")
    assert value >= PAGE_PSNR_FLOOR
    # The floor tells views apart: the same run seen from another training camera scores below it.
    other = json.loads((views / "path_000.json").read_text())
    from recon.engine.models.registry import load_run
    from recon.engine.render.path_file import write_camera_path
    from recon.engine.viewer.viewpoint import camera_from_pose, pose_from_camera

    model, _ = load_run(run)
    wrong = camera_from_pose(pose_from_camera(model.cameras["train"][1]), other["render_width"], other["render_height"])
    write_camera_path(tmp_path / "wrong.json", [wrong], model.normalization)
    assert subprocess.run([sys.executable, "-m", "recon.apps.cli", "render", str(run), "--path",
                           str(tmp_path / "wrong.json"), "-o", str(tmp_path / "wrong") + "/"]).returncode == 0
    wrong_value = psnr(shot[mask], iio.imread(tmp_path / "wrong" / "00000.png")[mask])
    print(f"page vs another camera's render: {wrong_value:.2f} dB")
    assert wrong_value < PAGE_PSNR_FLOOR
