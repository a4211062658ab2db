"""The browser viewer: a viser server whose images are recon's own renders, streamed progressively.

The page shows the training (blue) and test (orange) cameras as frustums (a click jumps there and shows the
photo in the panel), and a panel with the render mode, resolution, field of view, background, keyframes and
*Save view and path*, which writes the current view as PNG and the camera path as a ``recon render --path``
file into the save folder.

Rendering runs in one place, ``render_pending``: the ``serve`` loop calls it for ``recon view``, the training
loop for ``recon fit --view`` (``live.py``). Each browser tab has its own ``Progressive`` schedule; a tab that
closes or dies is forgotten, and sending to it never raises.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon.engine.scene.camera import Camera
from recon.engine.viewer.modes import MODES, modes_for, render_mode
from recon.engine.viewer.progressive import Job, Progressive
from recon.engine.viewer.target import ViewTarget
from recon.engine.viewer.viewpoint import Pose, camera_from_pose, home_view, pose_from_camera

TRAIN_COLOUR, TEST_COLOUR, KEYFRAME_COLOUR = (40, 110, 220), (240, 140, 30), (30, 170, 80)
UP_CHOICES = ("auto", "+z", "-z", "+y", "-y", "+x", "-x")
PHOTO_WIDTH = 320


@dataclass
class _Tab:
    """One connected browser tab: its viser client, render schedule, keyframes and photo panel."""

    client: Any
    schedule: Progressive
    keyframes: list[Pose] = field(default_factory=list)
    photo: Any = None
    save_requested: bool = False


class Viewer:
    """Serves ``target`` in the browser; ``start`` it, then ``serve`` (or call ``render_pending`` yourself)."""

    def __init__(self, target: ViewTarget, *, host: str = "127.0.0.1", port: int = 8080,
                 save_dir: str | Path | None = None, max_side: int = 1280, still_after: float = 0.25):
        self.target = target
        self.model = target.source.model
        self.host, self.port = host, port
        self.save_dir = Path(save_dir) if save_dir else target.default_save_dir
        self.max_side = max_side
        self.still_after = still_after
        self.background = _background(target)
        self.mode = "rgb"
        self.server = None
        self.status = None
        self.saves = itertools.count()
        self._tabs: dict[int, _Tab] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._cursor = 0
        self._serving = False
        self._frustums: list[Any] = []

    # ----------------------------------------------------------------------------------------- set-up
    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.server.get_port() if self.server else self.port}"

    @property
    def connected(self) -> int:
        """Number of browser tabs connected now."""
        return len(self._tabs)

    def start(self) -> str:
        """Start the server (quietly: viser's banner is dropped) and build the page; returns the URL."""
        import viser

        # A tab that closed while its image was being rendered: expected, and handled by forgetting the tab.
        warnings.filterwarnings("ignore", message="Queued a .* on a closed connection")
        with contextlib.redirect_stdout(io.StringIO()):
            self.server = viser.ViserServer(host=self.host, port=self.port, label="recon", verbose=False)
        self.server.gui.configure_theme(show_share_button=False, show_logo=False)
        source = self.target.source
        home = home_view(source.train or source.test, self.target.points)
        self.server.scene.set_up_direction(tuple(home.up))
        initial = self.server.initial_camera
        initial.position, initial.look_at, initial.up, initial.fov = home.position, home.look_at, home.up, home.fov
        self._up = home.up
        self._scale = self._frustum_scale()
        self._build_panel()
        self._add_frustums()
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)
        return self.url

    def request_stop(self) -> None:
        """Ask a ``serve`` loop to return within half a second (safe from a signal handler; ``stop`` then
        shuts the server)."""
        self._serving = False

    def stop(self) -> None:
        """Stop serving (a ``serve`` loop returns); calling it again does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._notify()
        if self.server is not None:
            with contextlib.redirect_stdout(io.StringIO()):
                self.server.stop()

    def _build_panel(self) -> None:
        gui = self.server.gui
        gui.add_markdown(f"**{self.target.label}**")
        self.training = gui.add_markdown("", visible=False)
        with gui.add_folder("View"):
            mode = gui.add_dropdown("Render mode", modes_for(self.target.source.kind), initial_value="RGB")
            side = gui.add_slider("Max resolution", 128, 4096, 64, self.max_side, hint="longest image side (px)")
            fov = gui.add_slider("Field of view", 10.0, 120.0, 1.0,
                                 round(math.degrees(self.server.initial_camera.fov)), hint="vertical, degrees")
            colour = gui.add_rgb("Background", tuple(int(round(255 * c)) for c in self.background))
            up = gui.add_dropdown("Up direction", UP_CHOICES, initial_value="auto",
                                  hint="auto: the cameras' mean up")
            show = gui.add_checkbox("Show cameras", True, hint="training cameras blue, test cameras orange; "
                                                               "click one to look through it")
            self.status = gui.add_markdown("waiting for a browser")

        @mode.on_update
        def _(_) -> None:
            self.mode = MODES[mode.value]
            self._changed_all()

        @side.on_update
        def _(_) -> None:
            self.max_side = int(side.value)
            for tab in list(self._tabs.values()):
                self._camera_moved(tab)

        @fov.on_update
        def _(_) -> None:
            for tab in list(self._tabs.values()):
                tab.client.camera.fov = math.radians(fov.value)

        @colour.on_update
        def _(_) -> None:
            self.background = tuple(c / 255.0 for c in colour.value)
            self._changed_all()

        @show.on_update
        def _(_) -> None:
            for handle in self._frustums:
                handle.visible = show.value

        @up.on_update
        def _(_) -> None:
            self.server.scene.set_up_direction(tuple(self._up) if up.value == "auto" else up.value)

        with gui.add_folder("Camera path"):
            add = gui.add_button("Add keyframe", hint="append the current view to this tab's camera path")
            clear = gui.add_button("Clear keyframes")
            frames = gui.add_number("Path frames", 120, min=2, max=10000, step=1)
            save = gui.add_button("Save view and path", hint=f"PNG and recon render --path file, in {self.save_dir}")
            self.saved = gui.add_markdown(f"saves go to `{self.save_dir}`")
        self.path_frames = frames

        @add.on_click
        def _(event) -> None:
            tab = self._tabs.get(event.client_id)
            if tab is not None and tab.schedule.camera is not None:
                tab.keyframes.append(pose_from_camera(tab.schedule.camera))
                self._frustum(tab.client.scene, f"/keyframes/{len(tab.keyframes):03d}", tab.schedule.camera,
                              KEYFRAME_COLOUR)

        @clear.on_click
        def _(event) -> None:
            tab = self._tabs.get(event.client_id)
            if tab is not None:
                for i in range(len(tab.keyframes)):
                    tab.client.scene.remove_by_name(f"/keyframes/{i + 1:03d}")
                tab.keyframes.clear()

        @save.on_click
        def _(event) -> None:
            tab = self._tabs.get(event.client_id)
            if tab is not None:
                tab.save_requested = True
                self._notify()

    def _frustum_scale(self) -> float:
        """Frustum depth: half the median distance between neighbouring cameras, at most 5% of their spread."""
        cameras = self.target.source.train + self.target.source.test
        if len(cameras) < 2:
            return 0.1
        centres = np.stack([c.center for c in cameras])
        distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.diag(np.full(len(centres), np.inf))
        spread = float(np.linalg.norm(centres - centres.mean(0), axis=1).max())
        return min(0.5 * float(np.median(distances.min(1))), 0.05 * spread) or 0.1

    def _add_frustums(self) -> None:
        source = self.target.source
        for split, cameras, colour in (("train", source.train, TRAIN_COLOUR), ("test", source.test, TEST_COLOUR)):
            for index, camera in enumerate(cameras):
                handle = self._frustum(self.server.scene, f"/cameras/{split}/{index:05d}", camera, colour)
                handle.on_click(self._jump_handler(split, index, camera))
                self._frustums.append(handle)

    def _frustum(self, scene: Any, name: str, camera: Camera, colour: tuple[int, int, int]) -> Any:
        """A thin wireframe frustum of ``camera`` (lines of constant screen width, so one never hides a view)."""
        pose = pose_from_camera(camera)
        return scene.add_camera_frustum(name, fov=pose.fov, aspect=camera.width / camera.height,
                                        scale=self._scale, thickness=1.5, thickness_units="screen",
                                        color=colour, wxyz=pose.wxyz, position=pose.position)

    def _jump_handler(self, split: str, index: int, camera: Camera):
        def jump(event) -> None:
            tab = self._tabs.get(event.client_id)
            if tab is None:
                return
            pose = pose_from_camera(camera)
            with tab.client.atomic():
                tab.client.camera.wxyz = pose.wxyz
                tab.client.camera.position = pose.position
                tab.client.camera.fov = pose.fov
            self._show_photo(tab, split, index)
        return jump

    def _show_photo(self, tab: _Tab, split: str, index: int) -> None:
        scene = self.target.source.scene
        if scene is None:
            return
        from recon.engine.io.images import resize_image, to_uint8

        frame_index = (scene.train_indices if split == "train" else scene.test_indices)[index]
        photo = scene.load_image(frame_index)
        height, width = photo.shape[:2]
        if width > PHOTO_WIDTH:
            photo = resize_image(photo, (PHOTO_WIDTH, max(1, round(height * PHOTO_WIDTH / width))))
        label = f"{split} {index}: {Path(scene.frames[frame_index].image_path).name}"
        if tab.photo is None:
            tab.photo = tab.client.gui.add_image(to_uint8(photo), label=label, format="jpeg")
        else:
            tab.photo.image, tab.photo.label = to_uint8(photo), label

    # ----------------------------------------------------------------------------------------- tabs
    def _connect(self, client) -> None:
        tab = _Tab(client, Progressive(still_after=self.still_after))
        with self._lock:
            self._tabs[client.client_id] = tab
        client.camera.on_update(lambda _: self._camera_moved(tab))
        self._camera_moved(tab)

    def _disconnect(self, client) -> None:
        with self._lock:
            self._tabs.pop(client.client_id, None)

    def _camera_moved(self, tab: _Tab) -> None:
        camera = self._tab_camera(tab)
        if camera is not None:
            tab.schedule.change(time.perf_counter(), camera)
            self._notify()

    def _tab_camera(self, tab: _Tab) -> Camera | None:
        """The full-size camera of a tab: its canvas, capped at ``max_side`` on the longer side."""
        cam = tab.client.camera
        width, height = int(cam.image_width), int(cam.image_height)
        if width < 1 or height < 1:
            return None
        scale = min(1.0, self.max_side / max(width, height))
        return camera_from_pose(Pose(np.asarray(cam.wxyz), np.asarray(cam.position), float(cam.fov)),
                                max(1, round(width * scale)), max(1, round(height * scale)))

    def changed(self) -> None:
        """The model changed (training): every tab renders again, at full size unless its camera is moving."""
        now = time.perf_counter()
        for tab in list(self._tabs.values()):
            if now - tab.schedule.changed_at >= tab.schedule.still_after:
                tab.schedule.change(now, still=True)
        self._notify()

    def _changed_all(self) -> None:
        for tab in list(self._tabs.values()):
            tab.schedule.change(time.perf_counter(), still=True)
        self._notify()

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # ----------------------------------------------------------------------------------------- rendering
    def render_pending(self) -> bool:
        """Do one due piece of work (a save, else one tab's next render); False when nothing was due."""
        tabs = list(self._tabs.values())
        for tab in tabs:
            if tab.save_requested:
                tab.save_requested = False
                self._save(tab)
                return True
        now = time.perf_counter()
        for offset in range(len(tabs)):  # round robin over the tabs
            tab = tabs[(self._cursor + offset) % len(tabs)]
            job = tab.schedule.next_job(now)
            if job is not None:
                self._cursor = (self._cursor + offset + 1) % len(tabs)
                self._render(tab, job)
                return True
        return False

    def _render(self, tab: _Tab, job: Job) -> None:
        from recon.engine.io.images import to_uint8

        started = time.perf_counter()
        if self.model is None:
            image, caption = np.full((job.camera.height, job.camera.width, 3), self.background), "no model"
        else:
            image, caption = render_mode(self.model, job.camera, self.mode, self.background)
        seconds = time.perf_counter() - started
        if not tab.schedule.finished(job, seconds) or tab.client.client_id not in self._tabs:
            return  # stale (the camera moved on while rendering) or the tab is gone
        try:
            tab.client.scene.set_background_image(to_uint8(image), format="png" if job.full else "jpeg",
                                                  jpeg_quality=85)
            self.status.content = (f"{'full' if job.full else 'preview'} {job.camera.width}x{job.camera.height} "
                                   f"in {seconds:.2f} s; {tab.schedule.dropped} stale renders dropped"
                                   + (f"  \n{caption}" if caption else ""))
        except Exception:  # a tab that died mid-send: forget it, never fail the caller (a training run)
            self._disconnect(tab.client)

    def _save(self, tab: _Tab) -> None:
        """Write the tab's view as PNG and its camera path (keyframes, else the view alone) as a path file."""
        from recon.engine.io.images import write_image
        from recon.engine.render.path_file import write_camera_path
        from recon.engine.render.paths import interpolate_cameras

        camera = self._tab_camera(tab)
        if camera is None:
            return
        index = next(self.saves)
        while (self.save_dir / f"view_{index:03d}.png").exists() or (self.save_dir / f"path_{index:03d}.json").exists():
            index = next(self.saves)
        image_path, path_path = self.save_dir / f"view_{index:03d}.png", self.save_dir / f"path_{index:03d}.json"
        if self.model is None:
            image = np.full((camera.height, camera.width, 3), self.background)
        else:
            image, _ = render_mode(self.model, camera, self.mode, self.background)
        write_image(image_path, image)
        keyframes = [camera_from_pose(pose, camera.width, camera.height) for pose in tab.keyframes]
        path = interpolate_cameras(keyframes, int(self.path_frames.value)) if len(keyframes) >= 2 else [camera]
        write_camera_path(path_path, path, self.target.source.normalization, keyframes=keyframes)
        message = f"saved {image_path.name} and {path_path.name} ({len(path)} frames) in {self.save_dir}"
        print(f"recon view: {message}", flush=True)
        try:
            self.saved.content = message
            tab.client.add_notification("Saved", message, auto_close_seconds=5.0)
        except Exception:
            self._disconnect(tab.client)

    def serve(self, timeout: float | None = None) -> None:
        """Render for the connected tabs until ``stop`` (or ``timeout`` seconds; Ctrl+C propagates)."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        self._serving = True
        while self._serving and not self._stop.is_set() and (deadline is None or time.perf_counter() < deadline):
            if self.render_pending():
                continue
            now = time.perf_counter()
            waits = [w for tab in list(self._tabs.values()) if (w := tab.schedule.wait(now)) is not None]
            with self._wake:
                self._wake.wait(timeout=min(waits + [0.5]))


def _background(target: ViewTarget) -> tuple[float, float, float]:
    """The colour the target was fitted on: its scene's, else its model's (Gaussians, NeRF), else white."""
    scene, model = target.source.scene, target.source.model
    colour = (scene.background if scene is not None else getattr(model, "background", None)
              or getattr(getattr(model, "arch", None), "background", None) or (1.0, 1.0, 1.0))
    return tuple(float(c) for c in colour)
