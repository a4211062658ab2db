"""``recon edit RUN``: select Gaussians by tracing 2D masks (or a 3D box) and edit them into a new run."""
from __future__ import annotations

import argparse

from recon.apps.options import add_config_arguments, config_from_args
from recon.engine.edit.anchor import FinetuneConfig
from recon.engine.errors import ReconError
from recon.engine.io.masks import MASK_THRESHOLD, check_threshold

OPS = ("select", "delete", "extract", "recolor", "transform", "finetune")


def _floats(count: int):
    """An argparse type: ``count`` comma-separated numbers."""
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}")
        return values
    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "edit", help="edit a Gaussian run by 2D masks (select, delete, extract, recolor, transform, finetune)",
        description="Select Gaussians by tracing per-view 2D masks (or a 3D box) onto them, then write an edited "
                    "copy of the run to -o (the source run is left as it is). The selection is stored in the new "
                    "run as selection.npz.")
    p.add_argument("run_dir", help="run directory of a Gaussian fit")
    p.add_argument("--op", choices=OPS, required=True, help="what to do with the selection")
    p.add_argument("-o", "--output", required=True, help="new run directory for the edited scene")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--masks", help="folder of mask images (PNG, JPEG, WebP, TIFF, BMP) named by the images' "
                                       "stems (binary, or integer labels in lossless files), or one sub-folder of "
                                       "binary masks per object")
    where.add_argument("--box", type=_floats(6), help="select by a box xmin,ymin,zmin,xmax,ymax,zmax "
                                                      "(the scene's original coordinates; write --box=-1,... "
                                                      "when it starts with a minus)")
    where.add_argument("--selection", help="reuse a selection.npz (or a run directory holding one)")
    p.add_argument("--mask-threshold", type=float, default=MASK_THRESHOLD,
                   help="a mask pixel is selected where its value (alpha if any, else the brightest channel, "
                        f"scaled to [0, 1]) reaches this (default: {MASK_THRESHOLD}, safe for JPEG masks)")
    p.add_argument("--label", help="which mask label to select (needed when the masks hold several)")
    p.add_argument("--threshold", type=float, default=0.5, help="select Gaussians whose label weight reaches this "
                                                                "(default: 0.5)")
    p.add_argument("--scene", help="the run's scene folder (default: the folder it was fitted on)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--color", type=_floats(3), help="recolor: flat colour R,G,B in [0, 1]")
    p.add_argument("--hue", type=float, help="recolor: rotate the hue by this many degrees")
    p.add_argument("--translate", type=_floats(3), default=(0.0, 0.0, 0.0),
                   help="transform: move by x,y,z (original scene units)")
    p.add_argument("--rotate", type=_floats(3), default=(0.0, 0.0, 0.0),
                   help="transform: rotation vector x,y,z in degrees (axis times angle), about the selection's centre")
    p.add_argument("--scale", type=float, default=1.0, help="transform: scale about the selection's centre")
    p.add_argument("--targets", help="finetune: folder of edited images named like the views they replace")
    add_config_arguments(p.add_argument_group("finetune options"), FinetuneConfig)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from recon.engine.edit import ops
    from recon.engine.edit.runs import (load_edit_source, masks_from_box, masks_from_folder, trace_view_masks,
                                        write_edited_run)
    from recon.engine.edit.tracing import load_selection

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not 0.0 < args.threshold <= 1.0:
        raise ReconError(f"--threshold must be in (0, 1], got {args.threshold}")
    check_threshold(args.mask_threshold)
    source = load_edit_source(args.run_dir, device, args.scene)
    raw = {k: v.detach() for k, v in source.model.params.items()}
    if args.selection:
        selection = load_selection(args.selection, raw["means"].shape[0])
    else:
        masks = masks_from_folder(source, args.masks, args.mask_threshold) if args.masks else masks_from_box(source, args.box)
        selection = trace_view_masks(source, masks, args.label, args.threshold)
    selected = selection.selected.to(device)
    edit = {"op": args.op, "selected": int(selected.sum()), "gaussians": int(selected.numel()),
            "label": selection.label, "threshold": selection.threshold}
    print(f"selected {edit['selected']} of {edit['gaussians']} Gaussians (label {selection.label})")
    if args.op != "select" and edit["selected"] == 0:
        raise ReconError(f"{args.masks or args.selection or 'the box'}: the selection is empty (no Gaussian reaches "
                         f"--threshold {selection.threshold}): nothing to {args.op}")

    if args.op == "select":
        params = raw
    elif args.op == "delete":
        params, selection = ops.delete(raw, selected), selection.subset(~selection.selected)
    elif args.op == "extract":
        params, selection = ops.extract(raw, selected), selection.subset(selection.selected)
    elif args.op == "recolor":
        params = ops.recolor(raw, selected, color=args.color, hue=args.hue)
        edit.update(color=args.color, hue=args.hue)
    elif args.op == "transform":
        scale = source.scene.normalization.scale
        params = ops.transform(raw, selected, translate=tuple(t * scale for t in args.translate),
                               rotate_deg=args.rotate, scale=args.scale)
        edit.update(translate=args.translate, rotate=args.rotate, scale=args.scale)
    else:
        params, selection, summary = _finetune(source, selection, args, device)
        edit.update(summary)
    out = write_edited_run(source, args.output, params, selection, edit)
    print(f"edited run: {out} ({params['means'].shape[0]} Gaussians)")
    return 0


def _finetune(source, selection, args: argparse.Namespace, device):
    """Fine-tune the selection toward ``--targets``; returns (params, selection of the result, summary)."""
    import torch

    from recon.engine.edit.anchor import finetune_selection
    from recon.engine.edit.runs import load_targets
    from recon.engine.edit.tracing import Selection

    if not args.targets:
        raise ReconError("--op finetune needs --targets (a folder of edited images)")
    config = config_from_args(FinetuneConfig, args)
    views = load_targets(source, args.targets, device)
    result = finetune_selection(source.model, selection.selected.to(device), views, config,
                                extent=source.scene.extent, progress=True, photo_sizes=source.photo_sizes)
    keep, chosen = ~selection.selected, selection.selected
    origin = result.origin.cpu()
    out_selection = Selection(
        selection.labels, torch.cat([selection.weights[keep], selection.weights[chosen][origin]]),
        torch.cat([selection.seen[keep], selection.seen[chosen][origin]]), result.selected.cpu(),
        selection.label, selection.threshold)
    last = result.history[-1]
    summary = {"targets": str(args.targets), "steps": config.steps, "final_photometric": last["photometric"],
               "final_anchor": last["anchor"], "generations": int(result.generation.max()) + 1}
    return result.params, out_selection, summary
