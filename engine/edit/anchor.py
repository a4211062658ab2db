"""Fine-tune a selection of Gaussians toward edited images with GaussianEditor's anchor loss.

Only the selection trains: it is split off as its own parameter set (so unselected Gaussians stay
bit-identical by construction) and the 3DGS density control (``DefaultStrategy``) clones, splits and prunes
only inside it. Every densification starts a new *generation* and records the current state as the
*anchor*; each attribute is pulled toward its anchor by

    L_anchor = sum_a lambda_a * mean_i( g_i * ||P_i^a - anchor_i^a||^2 )

with per-attribute weights lambda_a (position, rotation, scale, opacity, colour) and per-generation
weights g_i that grow by ``anchor_multiplier`` at every densification, so older generations are held
more firmly than newer ones (GaussianEditor's hierarchical Gaussian splatting). Densified Gaussians inherit
their parent's generation-0 identity (``origin``), which carries its labels.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import torch

from recon.engine.errors import ReconError
from recon.engine.scene.camera import Camera, camera_matrices
from recon.engine.train.metrics import photometric_loss

# anchor attribute -> raw parameter names
ATTRIBUTES = {"position": ("means",), "rotation": ("quats",), "scale": ("scales",), "opacity": ("opacities",),
              "color": ("sh0", "shN")}
# bookkeeping columns carried through densification like parameters (never trained)
_TRACKED = ("generation", "origin", "row")


@dataclass
class FinetuneConfig:
    """Options of ``recon edit --op finetune``."""

    steps: int = 500
    seed: int = 0
    anchor_position: float = field(default=50.0, metadata={"help": "anchor weight of positions"})
    anchor_rotation: float = field(default=50.0, metadata={"help": "anchor weight of rotations"})
    anchor_scale: float = field(default=50.0, metadata={"help": "anchor weight of (log) scales"})
    anchor_opacity: float = field(default=50.0, metadata={"help": "anchor weight of (logit) opacities"})
    anchor_color: float = field(default=0.0, metadata={"help": "anchor weight of SH colours (0: colours move freely)"})
    anchor_generation0: float = field(default=0.05, metadata={"help": "generation weight of the original Gaussians"})
    anchor_init: float = field(default=0.1, metadata={"help": "generation weight of a newly densified generation"})
    anchor_multiplier: float = field(default=1.3, metadata={"help": "growth of every generation's weight per "
                                                                    "densification"})
    lr_means: float = field(default=1.6e-4, metadata={"help": "position learning rate (times the scene extent)"})
    lr_quats: float = field(default=1e-3, metadata={"help": "rotation learning rate"})
    lr_scales: float = field(default=5e-3, metadata={"help": "log-scale learning rate"})
    lr_opacities: float = field(default=0.05, metadata={"help": "opacity learning rate"})
    lr_sh0: float = field(default=2.5e-3, metadata={"help": "base colour learning rate (higher SH: /20)"})
    densify_start: int = field(default=100, metadata={"help": "first step of density control in the selection"})
    densify_stop: int = field(default=400, metadata={"help": "no density control from this step on"})
    densify_every: int = field(default=100, metadata={"help": "steps between densifications (each a generation)"})
    densify_grad_threshold: float = field(default=2e-4, metadata={"help": "clone/split above this screen gradient"})

    def attribute_weights(self) -> dict[str, float]:
        """lambda_a per raw parameter name."""
        per_attr = {"position": self.anchor_position, "rotation": self.anchor_rotation, "scale": self.anchor_scale,
                    "opacity": self.anchor_opacity, "color": self.anchor_color}
        return {name: per_attr[attr] for attr, names in ATTRIBUTES.items() for name in names}


def generation_weights(generation: torch.Tensor, densifications: int, config: FinetuneConfig) -> torch.Tensor:
    """Per-Gaussian weight g_i [M] of generations [M] after ``densifications`` densifications."""
    gen = generation.float()
    mult = torch.as_tensor(config.anchor_multiplier, dtype=gen.dtype, device=gen.device)
    younger = config.anchor_init * mult ** (densifications - gen)
    original = config.anchor_generation0 * mult ** densifications
    return torch.where(gen == 0, original, younger)


def anchor_loss(params: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], weights: torch.Tensor,
                attribute_weights: dict[str, float]) -> torch.Tensor:
    """sum_a lambda_a * mean_i(g_i * ||P_i - anchor_i||^2) over raw parameters; ``weights`` g_i [M]."""
    total = weights.new_zeros(())
    if weights.numel() == 0:
        return total
    for name, lam in attribute_weights.items():
        if lam == 0.0:
            continue
        diff = (params[name] - anchor[name]).reshape(weights.shape[0], -1)
        total = total + lam * (weights * diff.square().sum(-1)).mean()
    return total


def new_rows(means: torch.Tensor, rows: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Which Gaussians density control just created. [M'] bool

    ``rows`` [M'] are the pre-densification row indices the Gaussians descend from and ``before`` [M, 3]
    the positions then. A Gaussian is old when it is the first with its row that still sits where that row
    was (a clone is an exact copy, so either copy may count as the old one; split children have moved).
    """
    rows = rows.long()
    unmoved = (means == before[rows]).all(-1)
    order = torch.arange(means.shape[0], device=means.device)
    first = torch.full((before.shape[0],), means.shape[0], dtype=torch.long, device=means.device)
    first.scatter_reduce_(0, rows[unmoved], order[unmoved], reduce="amin")
    old = torch.zeros(means.shape[0], dtype=torch.bool, device=means.device)
    old[first[first < means.shape[0]]] = True
    return ~old


@dataclass
class FinetuneResult:
    """Parameters after fine-tuning: the unselected ones first (unchanged), then the trained selection."""

    params: dict[str, torch.Tensor]
    selected: torch.Tensor  # [N'] bool
    origin: torch.Tensor  # [M'] index into the input's selected Gaussians each trained one descends from
    generation: torch.Tensor  # [M'] int
    history: list[dict[str, float]]


def finetune_selection(model: Any, selected: torch.Tensor, views: list[tuple[Camera, torch.Tensor]],
                       config: FinetuneConfig, *, extent: float = 1.0, progress: bool = False,
                       photo_sizes: dict[tuple[int, int], tuple[int, int]] | None = None) -> FinetuneResult:
    """Fine-tune ``model``'s (a GaussianModel) ``selected`` [N] Gaussians toward ``views`` (camera, target
    image [H, W, 3]) with the photometric and anchor losses. The model itself is left unchanged. ``photo_sizes``
    (``undistorted.photo_sizes``) gives density control the photo size of undistorted views."""
    from tqdm import tqdm

    from recon.engine.train.densify import DefaultStrategy, Schedule
    from recon.engine.train.optim import make_adam

    if not bool(selected.any()):
        raise ReconError("the selection is empty: nothing to fine-tune")
    if not views:
        raise ReconError("fine-tuning needs at least one target image")
    device = model.device
    original = model.params
    source = {k: v.detach() for k, v in original.items()}
    frozen = {k: v[~selected] for k, v in source.items()}
    count = int(selected.sum())
    trainable = {k: torch.nn.Parameter(v[selected].clone()) for k, v in source.items()}
    trainable["generation"] = torch.nn.Parameter(torch.zeros(count, device=device), requires_grad=False)
    trainable["origin"] = torch.nn.Parameter(torch.arange(count, device=device, dtype=torch.float64),
                                             requires_grad=False)
    trainable["row"] = torch.nn.Parameter(torch.zeros(count, device=device, dtype=torch.float64),
                                          requires_grad=False)
    lrs = {"means": config.lr_means * extent, "quats": config.lr_quats, "scales": config.lr_scales,
           "opacities": config.lr_opacities, "sh0": config.lr_sh0, "shN": config.lr_sh0 / 20.0,
           **{k: 0.0 for k in _TRACKED}}
    optimizer = make_adam(trainable, lrs)
    strategy = DefaultStrategy(grad_threshold=config.densify_grad_threshold, schedule=Schedule(
        refine_start=config.densify_start, refine_stop=config.densify_stop, refine_every=max(1, config.densify_every),
        reset_every=config.steps + config.densify_stop + 1))  # no opacity resets while editing
    anchor = {k: v.detach().clone() for k, v in trainable.items() if k not in _TRACKED}
    weights_of = config.attribute_weights()
    generator = torch.Generator().manual_seed(config.seed)
    densifications = 0
    history = []
    n_frozen = frozen["means"].shape[0]
    for step in tqdm(range(1, config.steps + 1), disable=not progress, desc="finetune"):
        camera, target = views[int(torch.randint(len(views), (1,), generator=generator))]
        model.params = {k: torch.cat([frozen[k], trainable[k]]) for k in frozen}
        viewmats, Ks = camera_matrices([camera], device)
        image, _, info = model.rasterize(viewmats, Ks, camera.width, camera.height,
                                         background=torch.tensor(model.background, device=device))
        photo = photometric_loss(image[0], target)
        weights = generation_weights(trainable["generation"].detach(), densifications, config)
        anchored = anchor_loss(trainable, anchor, weights, weights_of)
        (photo + anchored).backward()
        means2d = info["means2d"]
        sub_info = {"means2d": types.SimpleNamespace(grad=means2d.grad[:, n_frozen:]),
                    "radii": info["radii"][:, n_frozen:], "width": camera.width, "height": camera.height,
                    "photo_size": (photo_sizes or {}).get((camera.width, camera.height))}
        strategy.step_pre_optimizer(trainable, sub_info, step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if strategy.schedule.refines_at(step):
            with torch.no_grad():
                trainable["row"].copy_(torch.arange(trainable["row"].shape[0], dtype=torch.float64))
            before = trainable["means"].detach().clone()
            strategy.step_post_optimizer(trainable, optimizer, step, extent, generator)
            densifications += 1
            born = new_rows(trainable["means"].detach(), trainable["row"].detach(), before)
            with torch.no_grad():
                trainable["generation"][born] = float(densifications)
            anchor = {k: v.detach().clone() for k, v in trainable.items() if k not in _TRACKED}
        history.append({"step": step, "photometric": photo.item(), "anchor": anchored.item(),
                        "gaussians": int(trainable["means"].shape[0])})
    model.params = original
    out = {k: torch.cat([frozen[k], trainable[k].detach()]) for k in frozen}
    trained = trainable["means"].shape[0]
    selected_out = torch.cat([torch.zeros(n_frozen, dtype=torch.bool, device=device),
                              torch.ones(trained, dtype=torch.bool, device=device)])
    return FinetuneResult(params=out, selected=selected_out, origin=trainable["origin"].detach().long(),
                          generation=trainable["generation"].detach().long(), history=history)
