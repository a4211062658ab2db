"""``recon smpl``: the SMPL body model: a synthetic test model, and fitting to joints, keypoints or scans."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from recon.apps.options import add_config_arguments, config_from_args
from recon.engine.errors import ReconError
from recon.engine.smpl.fit import FitConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("smpl", help="fit an SMPL body model to 3D joints, 2D keypoints or scans",
                              description="SMPL body model tools.")
    sub = p.add_subparsers(dest="smpl_command", metavar="SUBCOMMAND", required=True)

    make = sub.add_parser("make-test-model", help="write the synthetic SMPL-layout body model (.npz)",
                          description="Write a small synthetic body model with the SMPL 24-joint tree, in the SMPL "
                                      "npz layout, for tests and demos (the real SMPL files cannot be shipped).")
    make.add_argument("output", type=Path, help="output .npz file")
    make.add_argument("--betas", type=int, default=10, help="number of shape components (default: 10)")
    make.add_argument("--seed", type=int, default=0, help="random seed of the shape/pose blend shapes")
    make.set_defaults(run=run_make_test_model)

    human = sub.add_parser("make-makehuman-model", help="build an openly licensed body model (.npz) from MakeHuman",
                           description="Build an SMPL-layout body model from MakeHuman's CC0 base mesh, skeleton and "
                                       "weights (base.obj, default.mhskel, default_weights.mhw): T-pose, metres, "
                                       "generic shape directions (size, height, girth), no pose correctives.")
    human.add_argument("output", type=Path, help="output .npz file")
    human.add_argument("--source", type=Path, default=Path("../shared/data/makehuman"),
                       help="folder with MakeHuman's files (default: ../shared/data/makehuman)")
    human.set_defaults(run=run_make_makehuman_model)

    fit = sub.add_parser("fit", help="fit body parameters to 3D joints, 2D keypoints or a scan",
                         description="Fit SMPL parameters (betas, global_orient, body_pose, transl) per frame. Writes "
                                     "params.npz/params.json, posed meshes, report.json and overlays (--image).")
    fit.add_argument("--model", type=Path, required=True, help="body model file (.pkl or .npz; SMPL's, or one made "
                                                               "by make-makehuman-model or make-test-model)")
    target = fit.add_mutually_exclusive_group(required=True)
    target.add_argument("--joints3d", type=Path, help="3D joints .npy/.json [frames, joints, 3] or [joints, 3], metres")
    target.add_argument("--keypoints2d", type=Path, help="2D keypoints: OpenPose/COCO JSON, .npy, JSON array, or a "
                                                         "folder of per-frame OpenPose JSONs (a sequence)")
    target.add_argument("--scan", type=Path, help="scan point cloud or mesh (.ply/.obj/.xyz), metres, y up")
    fit.add_argument("--camera", type=Path, help="camera JSON (fx, fy, cx, cy or K; optional world_to_camera); "
                                                 "default with --image: EXIF focal length, else the larger side")
    fit.add_argument("--image", type=Path, nargs="+", help="input image(s), one per frame: overlays, and the "
                                                            "camera estimate when --camera is not given")
    fit.add_argument("--keypoint-format", default="auto", choices=("auto", "coco17", "body25", "smpl"),
                     help="layout of the 2D keypoints (default: from their count)")
    fit.add_argument("--person", type=int, help="fit only this person of a keypoint file (index in the report's "
                                                "order; default: every person)")
    fit.add_argument("--mesh-format", default="ply", choices=("ply", "obj"), help="posed mesh format (default: ply)")
    fit.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    fit.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_config_arguments(fit, FitConfig)
    fit.set_defaults(run=run_fit)


def run_make_test_model(args: argparse.Namespace) -> int:
    from recon.engine.smpl.synthetic import write_test_model

    if args.betas < 1:
        raise ReconError(f"--betas must be at least 1 (got {args.betas})")
    data = write_test_model(args.output, num_betas=args.betas, seed=args.seed)
    print(f"wrote {args.output}: {len(data['v_template'])} vertices, {len(data['f'])} faces, "
          f"{data['weights'].shape[1]} joints, {args.betas} shape components")
    return 0


def run_make_makehuman_model(args: argparse.Namespace) -> int:
    from recon.engine.smpl.makehuman import write_makehuman_model

    if not args.source.is_dir():
        raise ReconError(f"{args.source}: not a folder (MakeHuman's base.obj, default.mhskel, default_weights.mhw)")
    data = write_makehuman_model(args.output, args.source)
    print(f"wrote {args.output}: {len(data['v_template'])} vertices, {len(data['f'])} faces, "
          f"{data['weights'].shape[1]} joints (MakeHuman CC0 base mesh, T-pose)")
    return 0


def run_fit(args: argparse.Namespace) -> int:
    import torch

    from recon.engine.models.smpl import SMPL

    config = config_from_args(FitConfig, args)
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise ReconError(f"--device {args.device}: {exc}") from None
    model = SMPL.from_file(args.model).to(device)
    images = _read_images(args.image)  # before the fit: a bad image fails in seconds, not after it
    if args.joints3d is not None:
        fits, camera = [("", _fit_joints3d(model, args, config))], None
    elif args.keypoints2d is not None:
        fits, camera = _fit_keypoints2d(model, args, config)
    else:
        fits, camera = [("", _fit_scan(model, args, config))], None
    _write_outputs(args, model, fits, camera, images)
    return 0


def _read_images(paths: list | None) -> list:
    """The ``--image`` files as RGB arrays (grey repeated to three channels)."""
    from recon.engine.io.images import read_image

    images = []
    for path in paths or []:
        image = read_image(path)[..., :3]
        images.append(image.repeat(3, -1) if image.shape[-1] == 1 else image)
    return images


def _fit_joints3d(model, args: argparse.Namespace, config: FitConfig):
    from recon.engine.smpl.fit import fit_joints3d
    from recon.engine.smpl.io import read_joints3d

    joints, conf = read_joints3d(args.joints3d)
    return fit_joints3d(model, joints, config, confidence=conf, name=str(args.joints3d))


def _fit_keypoints2d(model, args: argparse.Namespace, config: FitConfig):
    """Every person of the keypoint input (or ``--person``): people seen in one frame are fitted together, each
    a frame of its own; a person over several frames is a sequence (one shape, smooth motion). Returns
    ``[(label, result)]`` and the camera; each result's report names the person and the camera."""
    from dataclasses import replace

    from recon.engine.smpl.fit import SEQUENCE_SMOOTH, fit_keypoints2d
    from recon.engine.smpl.keypoints import read_people, to_smpl_joints

    people = read_people(args.keypoints2d, layout=args.keypoint_format, num_joints=model.num_joints)
    if args.person is not None:
        if not 0 <= args.person < len(people):
            raise ReconError(f"{args.keypoints2d}: --person {args.person}, but the file holds {len(people)} "
                             f"{'person' if len(people) == 1 else 'people'} (0 to {len(people) - 1})")
        people = [people[args.person]]
    camera, camera_report = _camera(args)
    targets = [to_smpl_joints(p.keypoints, model.joint_names) for p in people]
    name = str(args.keypoints2d)
    fits = {}
    single = [i for i, p in enumerate(people) if len(p.frames) == 1]
    if single:
        xy = np.concatenate([targets[i][0] for i in single])
        conf = np.concatenate([targets[i][1] for i in single])
        together = fit_keypoints2d(model, xy, conf, camera, replace(config, share_betas=False, smooth=0.0), name=name)
        fits.update({i: together.rows(k, k + 1) for k, i in enumerate(single)})
    sequence = replace(config, share_betas=True, smooth=getattr(args, "smooth", SEQUENCE_SMOOTH))
    for i, person in enumerate(people):
        if i not in fits:
            fits[i] = fit_keypoints2d(model, *targets[i], camera, sequence, name=f"{name} ({person.label})")
    out = []
    for i, person in enumerate(people):
        result = fits[i]
        result.report = {"person": person.label, **person.ids, "frame_names": [str(f) for f in person.frames],
                         **result.report, "camera": camera_report}
        out.append((person.label if len(people) > 1 else "", result))
    return out, camera


def _camera(args: argparse.Namespace):
    """The camera of a keypoint fit and its report entry (values and where the focal length came from)."""
    from recon.engine.smpl.io import camera_for_image, read_camera

    if args.camera is not None:
        camera, source = read_camera(args.camera), f"camera file {args.camera}"
    elif args.image:
        camera, source = camera_for_image(args.image[0])
        source = {"exif": f"EXIF focal length of {args.image[0]}",
                  "default": f"default: focal = the larger side of {args.image[0]} (no EXIF focal length)"}[source]
    else:
        raise ReconError(f"{args.keypoints2d}: 2D keypoints need --camera, or --image to estimate one from")
    return camera, {"source": source, "fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy}


def _fit_scan(model, args: argparse.Namespace, config: FitConfig):
    from recon.engine.smpl.fit import fit_scan
    from recon.engine.smpl.io import read_scan

    return fit_scan(model, read_scan(args.scan), config, name=str(args.scan))


def _write_outputs(args: argparse.Namespace, model, fits: list, camera, images: list) -> None:
    """Params, meshes, overlays, then report.json last (one folder per person when the input held several);
    everything is computed before the first file is written, so a failure leaves no partial set of outputs
    (each file is itself written atomically)."""
    from recon.engine.io.atomic import write_json_atomic
    from recon.engine.io.images import write_image
    from recon.engine.io.mesh import write_mesh
    from recon.engine.smpl.io import write_params
    from recon.engine.smpl.overlay import render_mesh_overlay

    out = args.output
    faces = model.faces.cpu().numpy()
    frames = max(len(result.vertices) for _, result in fits)
    if images and len(images) not in (1, frames):
        raise ReconError(f"{args.image[0]}: {len(images)} images given for {frames} frames")
    overlays = []
    for f, image in enumerate(images if camera is not None else []):
        meshes = [r.vertices[f if len(r.vertices) == len(images) else 0] for _, r in fits
                  if len(r.vertices) in (1, len(images))]
        stacked = np.concatenate(meshes)
        all_faces = np.concatenate([faces + k * len(meshes[0]) for k in range(len(meshes))])
        overlays.append(render_mesh_overlay(image, stacked, all_faces, camera))
    for label, result in fits:
        folder = out / label if label else out
        write_params(folder, result.params)
        for f in range(len(result.vertices)):
            write_mesh(folder / "meshes" / f"frame_{f:04d}.{args.mesh_format}", result.vertices[f], faces)
    for f, overlay in enumerate(overlays):
        write_image(out / f"overlay_{f:04d}.png", overlay)
    if len(fits) == 1 and not fits[0][0]:
        report = fits[0][1].report
    else:
        report = {"people": [{"folder": label, **result.report} for label, result in fits]}
    write_json_atomic(out / "report.json", report)
    for label, result in fits:
        summary = {k: v for k, v in result.report.items() if not k.endswith("per_frame") and k != "frame_names"}
        print(json.dumps(summary))
    where = ", ".join(f"{out / label}" for label, _ in fits) if fits[0][0] else str(out)
    print(f"wrote params.npz, params.json and meshes/ in {where}; {out}/report.json")
