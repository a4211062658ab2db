"""``recon view TARGET``: an interactive browser viewer of a run, a splat file or a scene folder."""
from __future__ import annotations

import argparse
import signal
from pathlib import Path

from recon.apps.options import add_device_options, select_device


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "view", help="look at a run, a splat file or a scene in the browser",
        description="Serve an interactive viewer on localhost and print its URL. TARGET is a run directory (any "
                    "model), a splat file (3DGS PLY from any tool, compressed PLY, .splat, .spz) or a scene folder "
                    "(its cameras and sparse points). recon renders every view itself and streams it, small while "
                    "the camera moves and full size when it stops, so it works on the CPU too (slowly).")
    p.add_argument("target", help="run directory, splat file or scene folder")
    p.add_argument("--scene", help="scene folder whose cameras (and photos) to show with a splat file")
    p.add_argument("--port", type=int, default=8080, help="port to serve on (the next free one if taken; default 8080)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 exposes the viewer "
                        "to the network)")
    p.add_argument("--save-dir", help="where 'Save view and path' writes (default: <run>/views, else ./views)")
    p.add_argument("--max-resolution", type=int, default=1280, help="longest side of full-size renders (default 1280)")
    add_device_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recon.engine.viewer.server import Viewer
    from recon.engine.viewer.target import open_target

    device = select_device(args)
    target = open_target(Path(args.target), device, args.scene)
    viewer = Viewer(target, host=args.host, port=args.port, save_dir=args.save_dir, max_side=args.max_resolution)
    url = viewer.start()
    signal.signal(signal.SIGTERM, lambda *_: viewer.request_stop())
    print(f"recon view: {target.label} at {url} (Ctrl+C to stop)", flush=True)
    try:
        viewer.serve()
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
    print("recon view: stopped", flush=True)
    return 0
