"""A headless Chromium driven over the DevTools protocol (websockets, no extra packages), for viewer tests.

Debian's ``chromium`` renders WebGL in software (SwiftShader). ``Chromium.find()`` gives the executable or
None; tests skip with the reason when it is absent.
"""
from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--remote-debugging-port=0")


class Chromium:
    """One headless browser with one page; ``close`` (or a ``with`` block) ends it."""

    def __init__(self, width: int = 800, height: int = 600, executable: str | None = None):
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="recon-chromium-")
        self.process = subprocess.Popen([executable or self.find(), *FLAGS, f"--user-data-dir={self.profile}",
                                         f"--window-size={width},{height}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.socket = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30)
        self._ids = itertools.count(1)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    @staticmethod
    def find() -> str | None:
        """The chromium executable on PATH, or None."""
        return shutil.which("chromium") or shutil.which("chromium-browser")

    def call(self, method: str, session: str | None = None, **params: Any) -> dict:
        """Send one DevTools command and wait for its answer (events in between are skipped)."""
        ident = next(self._ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params,
                                     **({"sessionId": session} if session else {})}))
        while True:
            reply = json.loads(self.socket.recv(timeout=120))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def page(self, method: str, **params: Any) -> dict:
        return self.call(method, session=self.session, **params)

    def open(self, url: str) -> None:
        self.page("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        return self.page("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> Any:
        """Poll a JavaScript expression until it is truthy; its value, or TimeoutError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"page never satisfied: {expression}")

    def screenshot(self) -> bytes:
        """PNG bytes of the page as shown."""
        return base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"])

    def click_text(self, text: str) -> bool:
        """Click the first button whose text contains ``text``; False when there is none."""
        return bool(self.evaluate(f"""(() => {{ const b = [...document.querySelectorAll('button')]
            .find(e => e.innerText.includes({json.dumps(text)})); if (b) b.click(); return !!b; }})()"""))

    def click_label(self, text: str) -> bool:
        """Click the input (checkbox, ...) that the label ``text`` is for; False when there is none."""
        return bool(self.evaluate(f"""(() => {{ const l = [...document.querySelectorAll('label')]
            .find(e => e.innerText.trim() === {json.dumps(text)}); const i = l && document.getElementById(l.htmlFor);
            if (i) i.click(); return !!i; }})()"""))

    def kill(self) -> None:
        """End the browser abruptly, as a crash or a killed tab would (no goodbye to the server)."""
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        if getattr(self, "socket", None) is not None:
            self.socket.close()
        if self.process.poll() is None:
            self.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
