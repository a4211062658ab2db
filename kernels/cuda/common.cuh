// Device helpers shared by blend_forward.cu and blend_backward.cu (plain CUDA C, no PyTorch headers).
//
// Conventions mirror kernels/splatting/triton.py and reference.py exactly: one thread block per image tile,
// one thread per tile pixel (pixel centres at +0.5), Gaussians sorted front to back within each tile's slice
// [starts[tile], ends[tile]) of `ids` (int64 indices into the flattened C*N Gaussians).
#pragma once

#define RECON_ALPHA_THRESHOLD (1.0f / 255.0f)
#define RECON_TRANSMITTANCE_MIN 1e-4f
#define RECON_WARP 32

namespace recon {

// One thread's pixel: camera, integer coordinates, in-image flag and pixel centre. Blocks are 1D with
// ceil(tile^2 / 32) * 32 threads so that every warp is full; threads past tile^2 get inside = false.
struct Pixel {
    int cam;
    int x, y;
    bool inside;
    float px, py;
    long long index;  // (cam * height + y) * width + x, valid only when inside
};

__device__ inline Pixel tile_pixel(int tile, int tiles_x, int tiles_per_cam, int width, int height, int tile_size) {
    Pixel p;
    p.cam = tile / tiles_per_cam;
    const int local = tile % tiles_per_cam;
    const int t = threadIdx.x;
    const bool in_tile = t < tile_size * tile_size;
    p.x = (local % tiles_x) * tile_size + (in_tile ? t % tile_size : 0);
    p.y = (local / tiles_x) * tile_size + (in_tile ? t / tile_size : 0);
    p.inside = in_tile && p.x < width && p.y < height;
    p.px = (float)p.x + 0.5f;
    p.py = (float)p.y + 0.5f;
    p.index = ((long long)p.cam * height + p.y) * width + p.x;
    return p;
}

// One batch of a tile's Gaussians staged in shared memory: conic (a, b, c) and opacity packed in a float4,
// the 2D mean in a float2 and the flattened Gaussian id. `count` slots of blockDim.x are carved from the
// dynamic shared memory (32 bytes a slot).
struct Batch {
    float4* conic_opac;
    float2* mean;
    long long* id;
};

__device__ inline Batch carve_batch(void* shared, int slots) {
    Batch b;
    b.conic_opac = reinterpret_cast<float4*>(shared);
    b.mean = reinterpret_cast<float2*>(b.conic_opac + slots);
    b.id = reinterpret_cast<long long*>(b.mean + slots);
    return b;
}

// Thread `slot` stages the Gaussian at sorted position `i` (the caller checks that i is in range).
__device__ inline void stage(Batch b, int slot, long long i, const long long* __restrict__ ids,
                            const float* __restrict__ means2d, const float* __restrict__ conics,
                            const float* __restrict__ opacities) {
    const long long g = ids[i];
    b.id[slot] = g;
    b.mean[slot] = make_float2(means2d[2 * g], means2d[2 * g + 1]);
    b.conic_opac[slot] = make_float4(conics[3 * g], conics[3 * g + 1], conics[3 * g + 2], opacities[g]);
}

// A staged Gaussian evaluated at one pixel: offsets from the pixel centre to the mean, the Mahalanobis power
// sigma, vis = exp(-sigma) and alpha = min(max_alpha, o * vis). `usable` is the blend test shared by forward
// and backward: sigma >= 0 and alpha >= 1/255.
struct Splat {
    float dx, dy, sigma, vis, alpha;
    bool usable;
};

__device__ inline Splat eval_splat(float4 conic_opac, float2 mean, float px, float py, float max_alpha) {
    Splat s;
    s.dx = mean.x - px;
    s.dy = mean.y - py;
    s.sigma = 0.5f * (conic_opac.x * s.dx * s.dx + conic_opac.z * s.dy * s.dy) + conic_opac.y * s.dx * s.dy;
    s.vis = expf(-s.sigma);
    s.alpha = fminf(conic_opac.w * s.vis, max_alpha);
    s.usable = s.sigma >= 0.0f && s.alpha >= RECON_ALPHA_THRESHOLD;
    return s;
}

// Sum of `value` over the 32 lanes of a full warp, valid in lane 0.
__device__ inline float warp_sum(float value) {
#pragma unroll
    for (int offset = RECON_WARP / 2; offset > 0; offset /= 2) {
        value += __shfl_down_sync(0xffffffffu, value, offset);
    }
    return value;
}

}  // namespace recon
