// Tile blending, forward: front-to-back alpha compositing of each tile's depth-sorted Gaussians.
//
// Same semantics as _blend_fwd_kernel in kernels/splatting/triton.py: a Gaussian is blended at a pixel when
// sigma >= 0 and alpha >= 1/255; a pixel stops before the Gaussian that would take its transmittance under
// 1e-4 (that Gaussian is not added); `last` is the sorted index of the last Gaussian blended (-1 if none);
// the background is added with the final transmittance. Block (tile, chunk) blends channels
// chunk * MAX_D ... chunk * MAX_D + MAX_D - 1 (blockIdx.y is the chunk), so many channels never crowd the
// registers; chunk 0 also writes T and `last`. What CUDA C adds over Triton: each block stages a batch of
// blockDim.x Gaussians in shared memory cooperatively, and the whole block leaves early once every pixel is
// done (__syncthreads_count).
#include "common.cuh"

template <int MAX_D>
__device__ void blend_forward_impl(
    const float* __restrict__ means2d,     // [C*N, 2]
    const float* __restrict__ conics,      // [C*N, 3]
    const float* __restrict__ colors,      // [C*N, D]
    const float* __restrict__ opacities,   // [C*N]
    const long long* __restrict__ ids,     // [M] sorted intersections -> flattened Gaussian
    const long long* __restrict__ starts,  // [C*tiles]
    const long long* __restrict__ ends,    // [C*tiles]
    const float* __restrict__ background,  // [C, D] or NULL
    float* __restrict__ out,               // [C, H, W, D]
    float* __restrict__ trans_out,         // [C, H, W] final transmittance
    int* __restrict__ last_out,            // [C, H, W]
    int width, int height, int tiles_x, int tiles_per_cam, int tile_size, int D, float max_alpha) {
    extern __shared__ float4 recon_shared[];
    const int tile = blockIdx.x;
    const recon::Pixel p = recon::tile_pixel(tile, tiles_x, tiles_per_cam, width, height, tile_size);
    const int slots = blockDim.x;
    const recon::Batch batch = recon::carve_batch(recon_shared, slots);
    const long long start = starts[tile];
    const long long end = ends[tile];
    const int c0 = blockIdx.y * MAX_D;  // first channel of this block's chunk

    float acc[MAX_D];
#pragma unroll
    for (int c = 0; c < MAX_D; ++c) acc[c] = 0.0f;
    float trans = 1.0f;
    int last = -1;
    bool done = !p.inside;

    for (long long base = start; base < end; base += slots) {
        // Every thread reaches this barrier on every round, so it also keeps the previous batch in place
        // until all threads have read it.
        if (__syncthreads_count(done) == slots) break;
        const long long i = base + threadIdx.x;
        if (i < end) recon::stage(batch, threadIdx.x, i, ids, means2d, conics, opacities);
        __syncthreads();
        const int count = (int)min((long long)slots, end - base);
        for (int k = 0; k < count && !done; ++k) {
            const recon::Splat s = recon::eval_splat(batch.conic_opac[k], batch.mean[k], p.px, p.py, max_alpha);
            if (!s.usable) continue;
            const float next_trans = trans * (1.0f - s.alpha);
            if (next_trans < RECON_TRANSMITTANCE_MIN) {
                done = true;
                break;
            }
            const float w = s.alpha * trans;
            const float* col = colors + batch.id[k] * D + c0;
#pragma unroll
            for (int c = 0; c < MAX_D; ++c) {
                if (c0 + c < D) acc[c] += w * col[c];
            }
            trans = next_trans;
            last = (int)(base + k);
        }
    }

    if (!p.inside) return;
    if (background != nullptr) {
#pragma unroll
        for (int c = 0; c < MAX_D; ++c) {
            if (c0 + c < D) acc[c] += trans * background[p.cam * D + c0 + c];
        }
    }
#pragma unroll
    for (int c = 0; c < MAX_D; ++c) {
        if (c0 + c < D) out[p.index * D + c0 + c] = acc[c];
    }
    if (blockIdx.y == 0) {
        trans_out[p.index] = trans;
        last_out[p.index] = last;
    }
}

// One entry point per chunk width (the loader picks the smallest MAX_D >= D, or the widest and several chunks);
// at most 256 threads a block.
#define RECON_BLEND_FORWARD(MAX_D)                                                                             \
    extern "C" __global__ void __launch_bounds__(256) blend_forward_##MAX_D(                                  \
        const float* means2d, const float* conics, const float* colors, const float* opacities,               \
        const long long* ids, const long long* starts, const long long* ends, const float* background,        \
        float* out, float* trans_out, int* last_out, int width, int height, int tiles_x, int tiles_per_cam,   \
        int tile_size, int D, float max_alpha) {                                                               \
        blend_forward_impl<MAX_D>(means2d, conics, colors, opacities, ids, starts, ends, background, out,     \
                                  trans_out, last_out, width, height, tiles_x, tiles_per_cam, tile_size, D,   \
                                  max_alpha);                                                                  \
    }

RECON_BLEND_FORWARD(4)
RECON_BLEND_FORWARD(8)
RECON_BLEND_FORWARD(16)
