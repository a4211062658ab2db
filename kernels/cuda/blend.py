"""Stage 4 of the rasterizer (tile blending) and its backward on the CUDA C kernels of ``blend_forward.cu`` and
``blend_backward.cu``: the same autograd contract as ``splatting.triton.blend_tiles``, so ``backend="cuda"`` is a
drop-in choice.

One thread block per tile, one thread per pixel: ``ceil(tile_size^2 / 32) * 32`` threads (whole warps; the extra
threads own no pixel) and 32 bytes of shared memory per thread for one staged batch of Gaussians. The kernels
are compiled with ``__launch_bounds__(256)``, so tiles up to 16 x 16 run here; larger tiles (32) run the
Triton blend instead. Colour channels D pick the kernel built for the smallest bound >= D of ``CHANNEL_BOUNDS``;
more than the widest run as several blocks per tile, one per chunk of channels (grid y), so the per-thread
accumulators stay in registers whatever D is.
"""
from __future__ import annotations

import torch

from recon.kernels.cuda import loader
from recon.kernels.splatting import reference

CHANNEL_BOUNDS = (4, 8, 16)
MAX_TILE = 16
SHARED_BYTES_PER_THREAD = 32  # float4 conic+opacity, float2 mean, int64 id (common.cuh: Batch)


def _channel_chunks(depth: int) -> tuple[int, int]:
    """(kernel channel bound, number of channel chunks) for ``depth`` channels."""
    bound = next((b for b in CHANNEL_BOUNDS if depth <= b), CHANNEL_BOUNDS[-1])
    return bound, -(-depth // bound)


def _threads(tile_size: int) -> int:
    return -(-tile_size * tile_size // 32) * 32


class _Blend(torch.autograd.Function):
    """Per-tile blending: CUDA C forward and backward kernels launched through pycuda."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, flatten_ids, tile_offsets, options):
        width, height, tile_size, max_alpha, absgrad = options
        _, tiles_y, tiles_x = tile_offsets.shape
        depth = colors.shape[-1]
        buf = reference.blend_buffers(means2d, conics, colors, opacities, background, flatten_ids, tile_offsets,
                                      width, height)
        tensors, ids, starts, bg, trans, last = buf.inputs, buf.ids, buf.starts, buf.background, buf.trans, buf.last
        threads = _threads(tile_size)
        meta = (width, height, tiles_x, tiles_y * tiles_x, tile_size, depth, float(max_alpha))
        bound, chunks = _channel_chunks(depth)
        loader.launch("blend_forward", f"blend_forward_{bound}", means2d.device, (starts.numel(), chunks),
                      threads, threads * SHARED_BYTES_PER_THREAD,
                      (*tensors, ids, starts, buf.ends, bg, buf.out, trans, last, *meta))
        ctx.save_for_backward(*tensors, ids, starts, bg, trans, last)
        ctx.meta, ctx.threads, ctx.absgrad = meta, threads, absgrad
        return buf.out, (1.0 - trans)[..., None]

    @staticmethod
    def backward(ctx, v_out, v_alpha):
        means2d, conics, colors, opacities, ids, starts, bg, trans, last = ctx.saved_tensors
        grads = [torch.zeros_like(t) for t in (means2d, conics, colors, opacities)]
        depth = colors.shape[-1]
        v_out, v_alpha = reference.blend_output_grads(v_out, v_alpha, trans, depth)
        v_abs = ctx.absgrad
        if v_abs is not None and (v_abs.dtype != torch.float32 or not v_abs.is_contiguous()):
            raise ValueError("absgrad buffer must be a contiguous float32 [C * N, 2] tensor")
        threads = ctx.threads
        bound, chunks = _channel_chunks(depth)
        if v_abs is not None and chunks > 1:
            raise ValueError(f"absgrad needs all channels in one block: at most {bound}, got {depth}")
        loader.launch("blend_backward", f"blend_backward_{bound}", trans.device, (starts.numel(), chunks),
                      threads, threads * SHARED_BYTES_PER_THREAD,
                      (means2d, conics, colors, opacities, ids, starts, bg, trans, last, v_out, v_alpha, *grads,
                       v_abs, *ctx.meta))
        v_bg = (v_out * trans[..., None]).sum((1, 2)) if bg is not None else None
        return (*grads, v_bg, None, None, None)


def blend_tiles(means2d, conics, colors, opacities, flatten_ids, tile_offsets, width, height, tile_size,
                max_alpha=0.99, background=None, absgrad=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 4 (and its backward, stage 5) on CUDA C; same contract as ``reference.blend_tiles``.

    Tiles larger than ``MAX_TILE`` (the kernels' launch bounds) run ``splatting.triton.blend_tiles``.
    """
    if tile_size > MAX_TILE:
        from recon.kernels.splatting import triton as triton_stages

        return triton_stages.blend_tiles(means2d, conics, colors, opacities, flatten_ids, tile_offsets, width,
                                         height, tile_size, max_alpha, background, absgrad)
    options = (width, height, tile_size, max_alpha, absgrad)
    return _Blend.apply(means2d, conics, colors, opacities, background, flatten_ids, tile_offsets, options)
