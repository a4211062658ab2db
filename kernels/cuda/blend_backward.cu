// Tile blending, backward: back-to-front over each tile's Gaussians, recovering T_i = T_{i+1} / (1 - alpha_i).
//
// Same gradients as _blend_bwd_kernel in kernels/splatting/triton.py (and autograd through reference.py):
//   out = sum_i w_i c_i + T_final bg,  w_i = alpha_i T_i,  alpha_out = 1 - T_final
//   d out / d alpha_i = T_i c_i - (sum_{j>i} w_j c_j + T_final bg) / (1 - alpha_i)
//   d alpha_out / d alpha_i = T_final / (1 - alpha_i)
// Gradients reach sigma and the opacity only where alpha was not clamped (o * vis <= max_alpha). Block
// (tile, chunk) handles channels chunk * MAX_D ... + MAX_D - 1: every gradient but absgrad's is linear in
// d loss / d alpha_i, a sum over channels, so each chunk adds its channels' share and chunk 0 adds the alpha
// output's; absgrad (a sum of per-pixel absolute values) is only asked for with one chunk. Per Gaussian,
// the per-pixel terms are summed within each warp (__shfl_down_sync) and lane 0 adds the warp's sum atomically;
// absgrad adds the warp sums of |d/d mean2d| the same way.
#include "common.cuh"

template <int MAX_D>
__device__ void blend_backward_impl(
    const float* __restrict__ means2d,     // [C*N, 2]
    const float* __restrict__ conics,      // [C*N, 3]
    const float* __restrict__ colors,      // [C*N, D]
    const float* __restrict__ opacities,   // [C*N]
    const long long* __restrict__ ids,     // [M]
    const long long* __restrict__ starts,  // [C*tiles]
    const float* __restrict__ background,  // [C, D] or NULL
    const float* __restrict__ trans_in,    // [C, H, W] final transmittance from the forward
    const int* __restrict__ last_in,       // [C, H, W] last blended sorted index from the forward
    const float* __restrict__ v_out,       // [C, H, W, D]
    const float* __restrict__ v_alpha_in,  // [C, H, W]
    float* __restrict__ v_means2d,         // [C*N, 2] accumulated
    float* __restrict__ v_conics,          // [C*N, 3]
    float* __restrict__ v_colors,          // [C*N, D]
    float* __restrict__ v_opacities,       // [C*N]
    float* __restrict__ v_abs,             // [C*N, 2] or NULL (absgrad)
    int width, int height, int tiles_x, int tiles_per_cam, int tile_size, int D, float max_alpha) {
    extern __shared__ float4 recon_shared[];
    __shared__ int block_last;
    const int tile = blockIdx.x;
    const recon::Pixel p = recon::tile_pixel(tile, tiles_x, tiles_per_cam, width, height, tile_size);
    const int slots = blockDim.x;
    const recon::Batch batch = recon::carve_batch(recon_shared, slots);
    const long long start = starts[tile];
    const bool lane0 = (threadIdx.x % RECON_WARP) == 0;
    const int c0 = blockIdx.y * MAX_D;  // first channel of this block's chunk

    float grad_out[MAX_D];
    float after[MAX_D];  // sum over the Gaussians behind the current one of w_j c_j
    float trans = 1.0f;
    int last = -1;
    float v_final = 0.0f;  // (v_alpha - bg . v_out) * T_final: multiplied by 1 / (1 - alpha_i) per Gaussian
#pragma unroll
    for (int c = 0; c < MAX_D; ++c) {
        grad_out[c] = (p.inside && c0 + c < D) ? v_out[p.index * D + c0 + c] : 0.0f;
        after[c] = 0.0f;
    }
    if (p.inside) {
        trans = trans_in[p.index];
        last = last_in[p.index];
        v_final = blockIdx.y == 0 ? v_alpha_in[p.index] : 0.0f;
        if (background != nullptr) {
#pragma unroll
            for (int c = 0; c < MAX_D; ++c) {
                if (c0 + c < D) v_final -= grad_out[c] * background[p.cam * D + c0 + c];
            }
        }
        v_final *= trans;
    }

    if (threadIdx.x == 0) block_last = -1;
    __syncthreads();
    if (last >= 0) atomicMax(&block_last, last);
    __syncthreads();

    for (long long top = (long long)block_last + 1; top > start; top -= slots) {
        __syncthreads();  // nobody still reads the previous batch
        const long long i = top - 1 - threadIdx.x;
        if (i >= start) recon::stage(batch, threadIdx.x, i, ids, means2d, conics, opacities);
        __syncthreads();
        const int count = (int)min((long long)slots, top - start);
        // k runs the same range in every thread, so each warp is converged at the shuffles below.
        for (int k = 0; k < count; ++k) {
            const float4 co = batch.conic_opac[k];
            recon::Splat s;
            bool ok = false;
            if (p.inside && top - 1 - k <= last) {
                s = recon::eval_splat(co, batch.mean[k], p.px, p.py, max_alpha);
                ok = s.usable;
            }
            if (!__any_sync(0xffffffffu, ok)) continue;

            const long long g = batch.id[k];
            const float* col = colors + g * D + c0;
            float w = 0.0f, v_o = 0.0f, v_ca = 0.0f, v_cb = 0.0f, v_cc = 0.0f, v_mx = 0.0f, v_my = 0.0f;
            if (ok) {
                const float ra = 1.0f / (1.0f - s.alpha);
                trans *= ra;
                w = s.alpha * trans;
                float v_alpha = v_final * ra;
#pragma unroll
                for (int c = 0; c < MAX_D; ++c) {
                    if (c0 + c < D) {
                        v_alpha += grad_out[c] * (col[c] * trans - after[c] * ra);
                        after[c] += w * col[c];
                    }
                }
                if (co.w * s.vis <= max_alpha) {
                    const float v_sigma = -co.w * s.vis * v_alpha;
                    v_o = s.vis * v_alpha;
                    v_ca = 0.5f * v_sigma * s.dx * s.dx;
                    v_cb = v_sigma * s.dx * s.dy;
                    v_cc = 0.5f * v_sigma * s.dy * s.dy;
                    v_mx = v_sigma * (co.x * s.dx + co.y * s.dy);
                    v_my = v_sigma * (co.y * s.dx + co.z * s.dy);
                }
            }
#pragma unroll
            for (int c = 0; c < MAX_D; ++c) {
                if (c0 + c < D) {
                    const float sum = recon::warp_sum(w * grad_out[c]);
                    if (lane0) atomicAdd(v_colors + g * D + c0 + c, sum);
                }
            }
            const float s_o = recon::warp_sum(v_o);
            const float s_ca = recon::warp_sum(v_ca);
            const float s_cb = recon::warp_sum(v_cb);
            const float s_cc = recon::warp_sum(v_cc);
            const float s_mx = recon::warp_sum(v_mx);
            const float s_my = recon::warp_sum(v_my);
            if (lane0) {
                atomicAdd(v_opacities + g, s_o);
                atomicAdd(v_conics + 3 * g, s_ca);
                atomicAdd(v_conics + 3 * g + 1, s_cb);
                atomicAdd(v_conics + 3 * g + 2, s_cc);
                atomicAdd(v_means2d + 2 * g, s_mx);
                atomicAdd(v_means2d + 2 * g + 1, s_my);
            }
            if (v_abs != nullptr) {
                const float a_mx = recon::warp_sum(fabsf(v_mx));
                const float a_my = recon::warp_sum(fabsf(v_my));
                if (lane0) {
                    atomicAdd(v_abs + 2 * g, a_mx);
                    atomicAdd(v_abs + 2 * g + 1, a_my);
                }
            }
        }
    }
}

#define RECON_BLEND_BACKWARD(MAX_D)                                                                            \
    extern "C" __global__ void __launch_bounds__(256) blend_backward_##MAX_D(                                 \
        const float* means2d, const float* conics, const float* colors, const float* opacities,               \
        const long long* ids, const long long* starts, const float* background, const float* trans_in,        \
        const int* last_in, const float* v_out, const float* v_alpha_in, float* v_means2d, float* v_conics,   \
        float* v_colors, float* v_opacities, float* v_abs, int width, int height, int tiles_x,                \
        int tiles_per_cam, int tile_size, int D, float max_alpha) {                                            \
        blend_backward_impl<MAX_D>(means2d, conics, colors, opacities, ids, starts, background, trans_in,     \
                                   last_in, v_out, v_alpha_in, v_means2d, v_conics, v_colors, v_opacities,    \
                                   v_abs, width, height, tiles_x, tiles_per_cam, tile_size, D, max_alpha);    \
    }

RECON_BLEND_BACKWARD(4)
RECON_BLEND_BACKWARD(8)
RECON_BLEND_BACKWARD(16)
