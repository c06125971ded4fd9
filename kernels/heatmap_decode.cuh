// Top-down heatmap decode in one fused kernel: one block per (crop, keypoint) map. The rules are those of
// pose_edge/runtime/heatmap_decode.py (the NumPy reference; its docstring is the contract):
//   1. argmax over the map by block reduction (per-thread scan, warp shuffles, then the warp leaders in shared
//      memory), with np.argmax's rules: the first maximum in row-major order wins, and a NaN beats every number;
//   2. a map whose peak is not > 0 (NaN included) keeps (0, 0) and is not refined;
//   3. refinement at the integer peak (px, py):
//        quarter  x += 0.25 * sign(hm[py, px+1] - hm[py, px-1]) when 1 < px < W-1 and 1 < py < H-1 (likewise y),
//                 a NaN difference counting as 0;
//        dark     when 2 <= px <= W-3 and 2 <= py <= H-3: the Gaussian blur (zero padding) computed only at the
//                 5 x 5 points the Taylor step reads, from the raw window around the peak in shared memory, rows then
//                 columns, in float64; P = ln(max(B, 1e-10)) (NaN stays NaN, as np.maximum); the Taylor step
//                 (x, y) -= Hess^-1 grad when det and both step components are finite and det != 0;
//   4. the inverse affine of the crop, heatmap px -> image px, in float64, then float32.
#pragma once

#include "pe_cuda.h"
#include "params.h"

#define PE_HEATMAP_THREADS 128
#define PE_HEATMAP_WARPS (PE_HEATMAP_THREADS / 32)
#define PE_DARK_WINDOW (2 * (PE_MAX_BLUR_RADIUS + 2) + 1)  // raw values the Taylor step's 5 x 5 blurred points read

// Does (v, i) beat (best, best_i) under np.argmax? A NaN wins, then the larger value, then the lower index.
__device__ __forceinline__ bool hm_beats(float v, int i, float best, int best_i) {
    if (i < 0) return false;
    if (best_i < 0) return true;
    if (pe_isnan(best)) return pe_isnan(v) && i < best_i;
    if (pe_isnan(v)) return true;
    return v > best || (v == best && i < best_i);
}

// sign(v) as the reference counts it: 1, -1, or 0 for zero and NaN.
__device__ __forceinline__ double hm_sign(float v) { return v > 0.0f ? 1.0 : (v < 0.0f ? -1.0 : 0.0); }

__device__ __forceinline__ bool hm_finite(double v) { return v - v == 0.0; }  // false for +-Inf and NaN

template <typename T>
__device__ void heatmap_decode_body(const HeatmapDecodeParams& p) {
    __shared__ float s_warp_value[PE_HEATMAP_WARPS];
    __shared__ int s_warp_index[PE_HEATMAP_WARPS];
    __shared__ float s_window[PE_DARK_WINDOW * PE_DARK_WINDOW];
    __shared__ double s_blurred[25];

    const int map = blockIdx.x;
    const int H = p.height, W = p.width, size = H * W;
    const int tid = threadIdx.x;
    const T* hm = static_cast<const T*>(p.heatmaps) + static_cast<long long>(map) * size;

    // 1. argmax. Each thread scans its indices in increasing order, so its own ties already keep the first.
    float best = 0.0f;
    int best_i = -1;
    for (int i = tid; i < size; i += PE_HEATMAP_THREADS) {
        const float v = pe_load(hm, i);
        if (hm_beats(v, i, best, best_i)) {
            best = v;
            best_i = i;
        }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(PE_FULL_MASK, best, offset);
        const int other_i = __shfl_xor_sync(PE_FULL_MASK, best_i, offset);
        if (hm_beats(other, other_i, best, best_i)) {
            best = other;
            best_i = other_i;
        }
    }
    if ((tid & 31) == 0) {
        s_warp_value[tid >> 5] = best;
        s_warp_index[tid >> 5] = best_i;
    }
    __syncthreads();  // the warp partials are complete
    best = s_warp_value[0];
    best_i = s_warp_index[0];
    for (int w = 1; w < PE_HEATMAP_WARPS; ++w) {
        if (hm_beats(s_warp_value[w], s_warp_index[w], best, best_i)) {
            best = s_warp_value[w];
            best_i = s_warp_index[w];
        }
    }
    // Every thread now holds the same maximum; the branches below are uniform across the block.
    const int px = best_i % W, py = best_i / W;
    const bool found = best > 0.0f;  // get_max_preds zeroes the coordinates otherwise (NaN included)
    double x = found ? px : 0, y = found ? py : 0;

    // 2. refinement
    if (found && p.refine == PE_REFINE_QUARTER) {
        if (px > 1 && px < W - 1 && py > 1 && py < H - 1) {
            const float dx = pe_load(hm, best_i + 1) - pe_load(hm, best_i - 1);
            const float dy = pe_load(hm, best_i + W) - pe_load(hm, best_i - W);
            x += 0.25 * hm_sign(dx);
            y += 0.25 * hm_sign(dy);
        }
    } else if (found && p.refine == PE_REFINE_DARK && px >= 2 && px <= W - 3 && py >= 2 && py <= H - 3) {
        const int r = p.blur_radius, side = 2 * (r + 2) + 1;
        // Raw values around the maximum, zero outside the map (the blur's zero padding).
        for (int e = tid; e < side * side; e += PE_HEATMAP_THREADS) {
            const int wy = py - (r + 2) + e / side, wx = px - (r + 2) + e % side;
            s_window[e] = (wy >= 0 && wy < H && wx >= 0 && wx < W) ? pe_load(hm, wy * W + wx) : 0.0f;
        }
        __syncthreads();  // the window is loaded
        if (tid < 25) {
            // Blurred value at (px + bx, py + by), bx, by in -2..2: rows first, then columns, in float64.
            const int bx = tid % 5 - 2, by = tid / 5 - 2;
            double sum = 0.0;
            for (int i = 0; i <= 2 * r; ++i) {
                const float* line = s_window + (by + 2 + i) * side + (bx + 2);
                double row = 0.0;
                for (int j = 0; j <= 2 * r; ++j) row += p.blur_weights[j] * static_cast<double>(line[j]);
                sum += p.blur_weights[i] * row;
            }
            s_blurred[tid] = log(pe_isnan(sum) || sum > 1e-10 ? sum : 1e-10);
        }
        __syncthreads();  // the blurred log values are complete
#define PE_P(bx, by) s_blurred[((by) + 2) * 5 + ((bx) + 2)]
        const double dx = 0.5 * (PE_P(1, 0) - PE_P(-1, 0));
        const double dy = 0.5 * (PE_P(0, 1) - PE_P(0, -1));
        const double dxx = 0.25 * (PE_P(2, 0) - 2.0 * PE_P(0, 0) + PE_P(-2, 0));
        const double dyy = 0.25 * (PE_P(0, 2) - 2.0 * PE_P(0, 0) + PE_P(0, -2));
        const double dxy = 0.25 * (PE_P(1, 1) - PE_P(1, -1) - PE_P(-1, 1) + PE_P(-1, -1));
#undef PE_P
        const double det = dxx * dyy - dxy * dxy;
        // mu = m - Hess^-1 grad, Hess^-1 = [[dyy, -dxy], [-dxy, dxx]] / det
        const double step_x = (dyy * dx - dxy * dy) / det;
        const double step_y = (dxx * dy - dxy * dx) / det;
        if (hm_finite(det) && det != 0.0 && hm_finite(step_x) && hm_finite(step_y)) {
            x -= step_x;
            y -= step_y;
        }
    }

    // 3. inverse affine and output
    if (tid == 0) {
        float* out = p.out + static_cast<long long>(map) * 3;
        if (p.hm_to_image) {
            const double* a = p.hm_to_image + static_cast<long long>(map / p.num_keypoints) * 6;
            out[0] = static_cast<float>(a[0] * x + a[1] * y + a[2]);
            out[1] = static_cast<float>(a[3] * x + a[4] * y + a[5]);
        } else {
            out[0] = static_cast<float>(x);
            out[1] = static_cast<float>(y);
        }
        out[2] = best;
    }
}

extern "C" __global__ void __launch_bounds__(PE_HEATMAP_THREADS, 1) pe_heatmap_decode_f32(const HeatmapDecodeParams p) {
    heatmap_decode_body<float>(p);
}
extern "C" __global__ void __launch_bounds__(PE_HEATMAP_THREADS, 1) pe_heatmap_decode_f16(const HeatmapDecodeParams p) {
    heatmap_decode_body<PeHalf>(p);
}
