// KAPAO post-processing on the GPU: decode + confidence filter + compaction, score ordering, class-aware IoU-bitmask
// NMS for pose objects and keypoint objects (each pass with its own thresholds), and the fusion of keypoint objects
// into poses. The steps are separate kernels on one stream that hand their results over in device memory; the host
// reads back only the final poses and the counts.
//
// The rules are those of pose_edge/runtime/kapao_decode.py (the NumPy reference; read its docstring), step by step:
//   kapao_select     one thread per row (anchor x cell) and image: objectness first (rows below both passes'
//                    thresholds read nothing else), best class (first maximum; NaN wins, as np.argmax), the
//                    thresholds of each pass, and a warp-aggregated append of a 64-bit sort key
//                    (conf bits | 2^24-1-row | class) to the pass's list. Every row fits, so nothing is lost here.
//   kapao_sort       one block per image and pass: keeps the max_candidates best keys (radix select on the key when
//                    there are more: the lowest-scoring are dropped and counted, exactly what the reference's max_nms
//                    cap does), sorts them by score descending, ties by row ascending (bitonic sort in shared memory),
//                    and writes the candidates (box xyxy, conf, class, row) in that order.
//   kapao_nms_mask   64 x 64 tiles of the upper triangle: bit j of row i says candidate i suppresses j (same class,
//                    IoU computed in float32 as torchvision does, compared in float64, strictly greater).
//   kapao_nms_reduce one warp per image and pass: the greedy scan in score order over the bitmask, up to max_det kept.
//   kapao_fuse       one block per image: writes the poses (box, score, keypoints with conf 0) in image pixels,
//                    then a warp per keypoint type replays that type's keypoint objects in NMS order: nearest
//                    eligible pose (first minimum; NaN wins, as np.argmin), replaced if the object is more confident
//                    and closer than the tolerance.
// Capacity: the workspace holds every row's key, so selection never overflows; at most min(max_nms, capacity <= 4096)
// candidates per image and pass enter the NMS, the best by score, and counts[.][3] says how many were dropped.
//   kapao_decode_rows  (tests only) every decoded row, so that the reference can be fed this kernel's own numbers.
#pragma once

#include "pe_cuda.h"
#include "params.h"

#define PE_KAPAO_SELECT_THREADS 256
#define PE_KAPAO_SORT_THREADS 256
#define PE_KAPAO_TILE 64
#define PE_KAPAO_FUSE_THREADS 256
#define PE_ROW_MASK ((1u << PE_ROW_BITS) - 1u)

// Where a row lives: level, anchor, grid cell.
struct KapaoCell {
    int level, anchor, gy, gx;
};

__device__ __forceinline__ KapaoCell kapao_locate(const KapaoParams& p, int row) {
    int level = 0;
    while (level + 1 < p.num_levels && row >= p.levels[level + 1].row_offset) ++level;
    const KapaoLevel& lv = p.levels[level];
    const int local = row - lv.row_offset;  // (a * H + gy) * W + gx
    const int cells = lv.height * lv.width;
    KapaoCell c;
    c.level = level;
    c.anchor = local / cells;
    c.gy = (local % cells) / lv.width;
    c.gx = local % lv.width;
    return c;
}

// The raw value of channel `channel` of anchor c.anchor at cell c of image n.
template <typename T>
__device__ __forceinline__ float kapao_raw(const KapaoParams& p, int n, const KapaoCell& c, int channel) {
    const KapaoLevel& lv = p.levels[c.level];
    const long long plane = static_cast<long long>(lv.height) * lv.width;
    const long long chan = (static_cast<long long>(n) * p.num_anchors + c.anchor) * p.depth + channel;
    return pe_load(static_cast<const T*>(lv.data), chan * plane + static_cast<long long>(c.gy) * lv.width + c.gx);
}

// Box centre (cx, cy) and size (w, h) in input pixels: centre (2y - 0.5 + g) * s, size (2y)^2 * anchor.
template <typename T>
__device__ __forceinline__ void kapao_box(const KapaoParams& p, int n, const KapaoCell& c, float& cx, float& cy,
                                          float& w, float& h) {
    const KapaoLevel& lv = p.levels[c.level];
    const float s = lv.stride;
    cx = (2.0f * pe_sigmoid(kapao_raw<T>(p, n, c, 0)) - 0.5f + static_cast<float>(c.gx)) * s;
    cy = (2.0f * pe_sigmoid(kapao_raw<T>(p, n, c, 1)) - 0.5f + static_cast<float>(c.gy)) * s;
    const float tw = 2.0f * pe_sigmoid(kapao_raw<T>(p, n, c, 2));
    const float th = 2.0f * pe_sigmoid(kapao_raw<T>(p, n, c, 3));
    w = tw * tw * lv.anchors[2 * c.anchor];
    h = th * th * lv.anchors[2 * c.anchor + 1];
}

// Keypoint k of the row's pose, input pixels: (4y - 2) * anchor + g * s (from the cell's corner, not the box).
template <typename T>
__device__ __forceinline__ void kapao_keypoint(const KapaoParams& p, int n, const KapaoCell& c, int k, float& x,
                                               float& y) {
    const KapaoLevel& lv = p.levels[c.level];
    const int first = 5 + p.num_classes + 2 * k;
    x = (4.0f * pe_sigmoid(kapao_raw<T>(p, n, c, first)) - 2.0f) * lv.anchors[2 * c.anchor] +
        static_cast<float>(c.gx) * lv.stride;
    y = (4.0f * pe_sigmoid(kapao_raw<T>(p, n, c, first + 1)) - 2.0f) * lv.anchors[2 * c.anchor + 1] +
        static_cast<float>(c.gy) * lv.stride;
}

// Input pixels -> image pixels: (v - pad) / scale, float32, as Letterbox.to_image.
__device__ __forceinline__ float kapao_to_image(const float* lb, int axis, float v) {
    return lb ? pe_div_rn(v - lb[axis], lb[2 + axis]) : v;
}

__device__ __forceinline__ unsigned long long kapao_key(float conf, int row, int cls) {
    return (static_cast<unsigned long long>(__float_as_uint(conf)) << 32) |
           (static_cast<unsigned long long>(PE_ROW_MASK - static_cast<unsigned>(row)) << 8) |
           static_cast<unsigned long long>(cls & 0xFF);
}
__device__ __forceinline__ float kapao_key_conf(unsigned long long key) {
    return __uint_as_float(static_cast<unsigned>(key >> 32));
}
__device__ __forceinline__ int kapao_key_row(unsigned long long key) {
    return static_cast<int>(PE_ROW_MASK - (static_cast<unsigned>(key >> 8) & PE_ROW_MASK));
}
__device__ __forceinline__ int kapao_key_class(unsigned long long key) { return static_cast<int>(key & 0xFFu); }

__device__ __forceinline__ unsigned int* kapao_counts(const KapaoParams& p, int n, int pass) {
    return p.counts + (n * 2 + pass) * 4;
}

// Appends `key` to list[*count] for every lane with `take`; one atomic per warp. All 32 lanes must call it.
__device__ __forceinline__ void kapao_warp_append(bool take, unsigned long long key, unsigned long long* list,
                                                  unsigned int* count) {
    const unsigned ballot = __ballot_sync(PE_FULL_MASK, take);
    if (ballot == 0) return;  // the same for every lane
    const unsigned lane = pe_lane();
    const int leader = __ffs(static_cast<int>(ballot)) - 1;
    unsigned base = 0;
    if (lane == static_cast<unsigned>(leader)) base = atomicAdd(count, static_cast<unsigned>(__popc(ballot)));
    base = __shfl_sync(PE_FULL_MASK, base, leader);
    if (take) list[base + __popc(ballot & ((1u << lane) - 1u))] = key;
}

// ---------------------------------------------------------------------------------------------------------------
// Step 1. grid (ceil(R / 256), N), block 256.
template <typename T>
__device__ void kapao_select_body(const KapaoParams& p) {
    const int n = blockIdx.y;
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    bool person = false, keypoint = false;
    unsigned long long key = 0;
    if (row < p.num_rows) {
        const KapaoCell c = kapao_locate(p, row);
        const float obj = pe_sigmoid(kapao_raw<T>(p, n, c, 4));
        // Both passes demand obj > their threshold first, so most rows stop here without reading their classes.
        const float gate = p.kp_pass && p.conf_kp < p.conf_person ? p.conf_kp : p.conf_person;
        if (obj > gate) {
            // Best class = first maximum of obj * cls; a NaN wins and then fails every threshold (np.argmax).
            int best = 0;
            float best_conf = pe_sigmoid(kapao_raw<T>(p, n, c, 5)) * obj;
            for (int cls = 1; cls < p.num_classes; ++cls) {
                const float conf = pe_sigmoid(kapao_raw<T>(p, n, c, 5 + cls)) * obj;
                if (!pe_isnan(best_conf) && (pe_isnan(conf) || conf > best_conf)) {
                    best = cls;
                    best_conf = conf;
                }
            }
            person = best == 0 && obj > p.conf_person && best_conf > p.conf_person;
            keypoint = p.kp_pass && best >= 1 && best <= p.num_keypoints && obj > p.conf_kp && best_conf > p.conf_kp;
            key = kapao_key(best_conf, row, best);
        }
    }
    const long long list = static_cast<long long>(p.num_rows);
    kapao_warp_append(person, key, p.keys + (n * 2 + 0) * list, kapao_counts(p, n, 0));
    kapao_warp_append(keypoint, key, p.keys + (n * 2 + 1) * list, kapao_counts(p, n, 1));
}

// ---------------------------------------------------------------------------------------------------------------
// Step 2. grid (N, 2), block 256, dynamic shared memory: next_pow2(max_candidates) keys.
template <typename T>
__device__ void kapao_sort_body(const KapaoParams& p) {
    PE_DYNAMIC_SHARED(unsigned long long, s_keys);
    __shared__ unsigned int s_hist[256];
    __shared__ unsigned long long s_prefix, s_prefix_mask;
    __shared__ unsigned int s_need, s_fill;
    __shared__ int s_done;

    const int n = blockIdx.x, pass = blockIdx.y;
    const unsigned tid = threadIdx.x, threads = blockDim.x;
    unsigned int* counts = kapao_counts(p, n, pass);
    const unsigned total = counts[0];
    const unsigned take = pe_min(total, static_cast<unsigned>(p.max_candidates));
    const unsigned long long* keys = p.keys + (n * 2 + pass) * static_cast<long long>(p.num_rows);

    // Keys are distinct (the row is in them), so "the `take` largest" is a set: keys >= the take-th largest.
    unsigned long long threshold = 0;  // below every real key: take all
    if (total > take) {
        if (tid == 0) {
            s_prefix = 0;
            s_prefix_mask = 0;
            s_need = take;
            s_done = 0;
        }
        for (int shift = 56; shift >= 0; shift -= 8) {
            for (unsigned b = tid; b < 256; b += threads) s_hist[b] = 0;
            __syncthreads();  // the histogram is cleared and the prefix published
            const unsigned long long prefix = s_prefix, prefix_mask = s_prefix_mask;
            for (unsigned i = tid; i < total; i += threads) {
                const unsigned long long k = keys[i];
                if ((k & prefix_mask) == prefix) atomicAdd(&s_hist[(k >> shift) & 0xFFu], 1u);
            }
            __syncthreads();  // the histogram is complete
            if (tid == 0) {
                unsigned above = 0, need = s_need;
                int digit = 255;
                for (; digit > 0; --digit) {
                    if (above + s_hist[digit] >= need) break;
                    above += s_hist[digit];
                }
                need -= above;
                s_prefix = prefix | (static_cast<unsigned long long>(digit) << shift);
                s_prefix_mask = prefix_mask | (0xFFull << shift);
                s_need = need;
                // The whole group of this digit is taken: everything >= its prefix is exactly the top `take`.
                s_done = s_hist[digit] == need;
            }
            __syncthreads();  // the digit is chosen
            if (s_done) break;
        }
        threshold = s_prefix;
    }

    if (tid == 0) s_fill = 0;
    __syncthreads();  // the fill counter is reset
    for (unsigned i = tid; i < total; i += threads) {
        const unsigned long long k = keys[i];
        if (k >= threshold) s_keys[atomicAdd(&s_fill, 1u)] = k;
    }
    unsigned padded = 1;
    while (padded < take) padded <<= 1;
    __syncthreads();  // the keys are gathered
    for (unsigned i = take + tid; i < padded; i += threads) s_keys[i] = 0;  // 0 sorts below every real key
    __syncthreads();  // the keys are padded

    // Bitonic sort, descending.
    for (unsigned size = 2; size <= padded; size <<= 1) {
        for (unsigned stride = size >> 1; stride > 0; stride >>= 1) {
            for (unsigned i = tid; i < padded; i += threads) {
                const unsigned j = i ^ stride;
                if (j > i) {
                    const unsigned long long a = s_keys[i], b = s_keys[j];
                    const bool descending = (i & size) == 0;
                    if (descending ? a < b : a > b) {
                        s_keys[i] = b;
                        s_keys[j] = a;
                    }
                }
            }
            __syncthreads();  // this compare-exchange step is complete
        }
    }

    const long long base = (n * 2 + pass) * static_cast<long long>(p.capacity);
    for (unsigned i = tid; i < take; i += threads) {
        const unsigned long long k = s_keys[i];
        const int row = kapao_key_row(k);
        float cx, cy, w, h;
        kapao_box<T>(p, n, kapao_locate(p, row), cx, cy, w, h);
        const float half_w = w * 0.5f, half_h = h * 0.5f;  // = w / 2 exactly
        float* box = p.cand_box + (base + i) * 4;
        box[0] = cx - half_w;
        box[1] = cy - half_h;
        box[2] = cx + half_w;
        box[3] = cy + half_h;
        p.cand_conf[base + i] = kapao_key_conf(k);
        p.cand_class[base + i] = kapao_key_class(k);
        p.cand_row[base + i] = row;
    }
    if (tid == 0) {
        counts[1] = take;
        counts[3] = total - take;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Step 3. grid (tiles per image and pass, N * 2), block 64. Blocks stride over the upper-triangle tiles of the
// candidates that are there (the count is read on the device, so the grid is sized for the capacity).
__device__ __forceinline__ float kapao_iou(const float* a, float area_a, const float* b, float area_b) {
    const float w = pe_np_maximum(0.0f, pe_np_minimum(a[2], b[2]) - pe_np_maximum(a[0], b[0]));
    const float h = pe_np_maximum(0.0f, pe_np_minimum(a[3], b[3]) - pe_np_maximum(a[1], b[1]));
    const float inter = w * h;
    return pe_div_rn(inter, (area_a + area_b) - inter);
}

__device__ void kapao_nms_mask_body(const KapaoParams& p) {
    __shared__ float s_box[PE_KAPAO_TILE][4];
    __shared__ float s_area[PE_KAPAO_TILE];
    __shared__ int s_class[PE_KAPAO_TILE];

    const int n = blockIdx.y >> 1, pass = blockIdx.y & 1;
    const int tid = threadIdx.x;
    const int m = static_cast<int>(kapao_counts(p, n, pass)[1]);
    const int tiles_per_side = (m + PE_KAPAO_TILE - 1) / PE_KAPAO_TILE;
    const int tiles = tiles_per_side * (tiles_per_side + 1) / 2;
    const double threshold = pass == 0 ? p.iou_person : p.iou_kp;
    const long long base = (n * 2 + pass) * static_cast<long long>(p.capacity);
    const int words = p.capacity / 64;

    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        // Tile t of the upper triangle, row by row: (rb, cb) with cb >= rb.
        int rb = 0, rest = t;
        while (rest >= tiles_per_side - rb) {
            rest -= tiles_per_side - rb;
            ++rb;
        }
        const int cb = rb + rest;
        const int j = cb * PE_KAPAO_TILE + tid;
        if (j < m) {
            const float* b = p.cand_box + (base + j) * 4;
            s_box[tid][0] = b[0];
            s_box[tid][1] = b[1];
            s_box[tid][2] = b[2];
            s_box[tid][3] = b[3];
            s_area[tid] = (b[2] - b[0]) * (b[3] - b[1]);
            s_class[tid] = p.cand_class[base + j];
        }
        __syncthreads();  // the tile's column boxes are loaded
        const int i = rb * PE_KAPAO_TILE + tid;
        if (i < m) {
            const float* a = p.cand_box + (base + i) * 4;
            const float box_a[4] = {a[0], a[1], a[2], a[3]};
            const float area_a = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1]);
            const int class_a = p.cand_class[base + i];
            const int last = pe_min(PE_KAPAO_TILE, m - cb * PE_KAPAO_TILE);
            unsigned long long bits = 0;
            for (int q = (rb == cb ? tid + 1 : 0); q < last; ++q) {
                if (s_class[q] == class_a &&
                    static_cast<double>(kapao_iou(box_a, area_a, s_box[q], s_area[q])) > threshold) {
                    bits |= 1ull << q;
                }
            }
            p.nms_mask[(base + i) * words + cb] = bits;
        }
        __syncthreads();  // the tile's boxes stay until every thread is done with them
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Step 4. grid (N, 2), block 32.
__device__ void kapao_nms_reduce_body(const KapaoParams& p) {
    __shared__ unsigned long long s_removed[PE_MAX_CAPACITY / 64];
    const int n = blockIdx.x, pass = blockIdx.y;
    const unsigned lane = pe_lane();
    unsigned int* counts = kapao_counts(p, n, pass);
    const int m = static_cast<int>(counts[1]);
    const int used_words = (m + 63) / 64, words = p.capacity / 64;
    const long long base = (n * 2 + pass) * static_cast<long long>(p.capacity);
    int* kept = p.kept + (n * 2 + pass) * p.max_det;

    for (int w = lane; w < used_words; w += 32) s_removed[w] = 0;
    __syncwarp();
    int num_kept = 0;
    for (int i = 0; i < m && num_kept < p.max_det; ++i) {
        const bool alive = !((s_removed[i >> 6] >> (i & 63)) & 1ull);  // the same for every lane
        if (alive) {
            __syncwarp();  // every lane has read the word before any lane updates it
            if (lane == 0) kept[num_kept] = i;
            ++num_kept;
            const unsigned long long* mask_row = p.nms_mask + (base + i) * words;
            for (int w = (i >> 6) + lane; w < used_words; w += 32) s_removed[w] |= mask_row[w];
            __syncwarp();
        }
    }
    if (lane == 0) counts[2] = num_kept;
}

// ---------------------------------------------------------------------------------------------------------------
// Step 5. grid N, block 256.
// Is (d, i) nearer than (best_d, best_i)? np.argmin order: a NaN wins, then the smaller value, then the lower index.
__device__ __forceinline__ bool kapao_nearer(float d, int i, float best_d, int best_i) {
    if (i < 0) return false;
    if (best_i < 0) return true;
    if (pe_isnan(best_d)) return pe_isnan(d) && i < best_i;
    if (pe_isnan(d)) return true;
    return d < best_d || (d == best_d && i < best_i);
}

// One keypoint object (candidate `det` of pass 1, type k) against the poses, by one warp: the nearest eligible
// pose's keypoint k becomes the object's position and confidence if the object is more confident and close enough.
template <typename T>
__device__ __forceinline__ void kapao_fuse_one(const KapaoParams& p, int n, int det, int k, int poses, const float* lb,
                               const float* scores, float* kps, long long base1, unsigned lane) {
    const int K = p.num_keypoints;
    float cx, cy, w, h;
    kapao_box<T>(p, n, kapao_locate(p, p.cand_row[base1 + det]), cx, cy, w, h);
    const float x = kapao_to_image(lb, 0, cx), y = kapao_to_image(lb, 1, cy);
    const float conf = p.cand_conf[base1 + det];
    float best_d = 0.0f;
    int best = -1;
    for (int pose = lane; pose < poses; pose += 32) {
        if (!(scores[pose] > p.conf_kp_person)) continue;
        const float* kp = kps + (pose * K + k) * 3;
        const float dx = kp[0] - x, dy = kp[1] - y;
        const float d = dx * dx + dy * dy;
        if (kapao_nearer(d, pose, best_d, best)) {
            best_d = d;
            best = pose;
        }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other_d = __shfl_xor_sync(PE_FULL_MASK, best_d, offset);
        const int other = __shfl_xor_sync(PE_FULL_MASK, best, offset);
        if (kapao_nearer(other_d, other, best_d, best)) {
            best_d = other_d;
            best = other;
        }
    }
    if (lane == 0 && best >= 0) {
        float* kp = kps + (best * K + k) * 3;
        if (conf > kp[2] && static_cast<double>(best_d) < p.overwrite_tol2) {
            kp[0] = x;
            kp[1] = y;
            kp[2] = conf;
        }
    }
    __syncwarp();  // lane 0's update is seen by the next object's search
}

template <typename T>
__device__ void kapao_fuse_body(const KapaoParams& p) {
    const int n = blockIdx.x;
    const int tid = threadIdx.x, threads = blockDim.x;
    const int K = p.num_keypoints;
    const int poses = static_cast<int>(kapao_counts(p, n, 0)[2]);
    const long long base0 = (n * 2 + 0) * static_cast<long long>(p.capacity);
    const long long base1 = (n * 2 + 1) * static_cast<long long>(p.capacity);
    const int* kept0 = p.kept + (n * 2 + 0) * p.max_det;
    const int* kept1 = p.kept + (n * 2 + 1) * p.max_det;
    const float* lb = p.letterbox ? p.letterbox + 4 * n : nullptr;
    float* boxes = p.out_boxes + static_cast<long long>(n) * p.max_det * 4;
    float* scores = p.out_scores + static_cast<long long>(n) * p.max_det;
    float* kps = p.out_keypoints + static_cast<long long>(n) * p.max_det * K * 3;

    // The poses in person-NMS order: box and score, keypoints with conf 0. Item (pose, -1) is the box.
    for (int e = tid; e < poses * (K + 1); e += threads) {
        const int pose = e / (K + 1), k = e % (K + 1) - 1;
        const int cand = kept0[pose];
        if (k < 0) {
            const float* b = p.cand_box + (base0 + cand) * 4;
            boxes[pose * 4 + 0] = kapao_to_image(lb, 0, b[0]);
            boxes[pose * 4 + 1] = kapao_to_image(lb, 1, b[1]);
            boxes[pose * 4 + 2] = kapao_to_image(lb, 0, b[2]);
            boxes[pose * 4 + 3] = kapao_to_image(lb, 1, b[3]);
            scores[pose] = p.cand_conf[base0 + cand];
        } else {
            float x, y;
            kapao_keypoint<T>(p, n, kapao_locate(p, p.cand_row[base0 + cand]), k, x, y);
            float* kp = kps + (pose * K + k) * 3;
            kp[0] = kapao_to_image(lb, 0, x);
            kp[1] = kapao_to_image(lb, 1, y);
            kp[2] = 0.0f;
        }
    }
    if (tid == 0) p.out_count[n] = poses;
    __syncthreads();  // the poses are written before any warp fuses into them

    // Warp w fuses the keypoint objects of types w, w + warps, ... in keypoint-NMS order. Types never touch each
    // other's keypoints, so the warps need no barrier between them.
    const unsigned lane = pe_lane();
    const int dets = p.kp_pass ? static_cast<int>(kapao_counts(p, n, 1)[2]) : 0;
    if (poses == 0) return;  // the same for every thread; no block barrier follows
    for (int k = tid / 32; k < K; k += threads / 32) {
        for (int first = 0; first < dets; first += 32) {
            const int j = first + static_cast<int>(lane);
            const bool mine = j < dets && p.cand_class[base1 + kept1[j]] - 1 == k;
            unsigned ballot = __ballot_sync(PE_FULL_MASK, mine);
            while (ballot) {
                const int det = kept1[first + __ffs(static_cast<int>(ballot)) - 1];
                ballot &= ballot - 1;
                kapao_fuse_one<T>(p, n, det, k, poses, lb, scores, kps, base1, lane);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Tests only. grid (ceil(R / 256), N), block 256: out_rows[n, r, :] = the decoded row, as kapao_decode.decode.
template <typename T>
__device__ void kapao_decode_rows_body(const KapaoParams& p) {
    const int n = blockIdx.y;
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= p.num_rows) return;
    const KapaoCell c = kapao_locate(p, row);
    float* out = p.out_rows + (static_cast<long long>(n) * p.num_rows + row) * p.depth;
    kapao_box<T>(p, n, c, out[0], out[1], out[2], out[3]);
    for (int ch = 4; ch < 5 + p.num_classes; ++ch) out[ch] = pe_sigmoid(kapao_raw<T>(p, n, c, ch));
    for (int k = 0; k < p.num_keypoints; ++k) {
        kapao_keypoint<T>(p, n, c, k, out[5 + p.num_classes + 2 * k], out[6 + p.num_classes + 2 * k]);
    }
}

// The kernels, by the names the loader asks for.
extern "C" __global__ void __launch_bounds__(PE_KAPAO_SELECT_THREADS, 1) pe_kapao_select_f32(const KapaoParams p) {
    kapao_select_body<float>(p);
}
extern "C" __global__ void __launch_bounds__(PE_KAPAO_SELECT_THREADS, 1) pe_kapao_select_f16(const KapaoParams p) {
    kapao_select_body<PeHalf>(p);
}
extern "C" __global__ void __launch_bounds__(PE_KAPAO_SORT_THREADS, 1) pe_kapao_sort_f32(const KapaoParams p) {
    kapao_sort_body<float>(p);
}
extern "C" __global__ void __launch_bounds__(PE_KAPAO_SORT_THREADS, 1) pe_kapao_sort_f16(const KapaoParams p) {
    kapao_sort_body<PeHalf>(p);
}
extern "C" __global__ void __launch_bounds__(PE_KAPAO_TILE, 1) pe_kapao_nms_mask(const KapaoParams p) {
    kapao_nms_mask_body(p);
}
extern "C" __global__ void __launch_bounds__(32, 1) pe_kapao_nms_reduce(const KapaoParams p) {
    kapao_nms_reduce_body(p);
}
extern "C" __global__ void __launch_bounds__(PE_KAPAO_FUSE_THREADS, 1) pe_kapao_fuse_f32(const KapaoParams p) {
    kapao_fuse_body<float>(p);
}
extern "C" __global__ void __launch_bounds__(PE_KAPAO_FUSE_THREADS, 1) pe_kapao_fuse_f16(const KapaoParams p) {
    kapao_fuse_body<PeHalf>(p);
}
extern "C" __global__ void __launch_bounds__(PE_KAPAO_SELECT_THREADS, 1) pe_kapao_decode_rows_f32(const KapaoParams p) {
    kapao_decode_rows_body<float>(p);
}
extern "C" __global__ void __launch_bounds__(PE_KAPAO_SELECT_THREADS, 1) pe_kapao_decode_rows_f16(const KapaoParams p) {
    kapao_decode_rows_body<PeHalf>(p);
}
