// Parameter blocks: every kernel takes exactly one of these by value. kernels/params.py mirrors them with ctypes
// (a test compares both layouts field by field). Pointers are device pointers; shapes are noted on every one.
// Only 4- and 8-byte fields, each naturally aligned, so host and device agree on the layout.
#pragma once

#define PE_MAX_LEVELS 8
#define PE_MAX_ANCHORS 4
#define PE_MAX_BLUR_RADIUS 8     // DARK blur kernels up to 17 x 17
#define PE_MAX_CAPACITY 4096     // NMS candidates per image and pass (shared-memory sort and bitmask rows)
#define PE_ROW_BITS 24           // rows per image < 2^24 (the sort key packs the row into 24 bits)

#define PE_REFINE_NONE 0
#define PE_REFINE_QUARTER 1
#define PE_REFINE_DARK 2

// ---------------------------------------------------------------------------------------------------------------
// Top-down heatmap decode: one block per (crop, keypoint) map.
struct HeatmapDecodeParams {
    const void* heatmaps;       // [N, K, H, W] float32 or float16 (the kernel's suffix says which), contiguous
    const double* hm_to_image;  // [N, 2, 3] float64 affine, heatmap px -> image px, row-major; null: heatmap px
    float* out;                 // [N, K, 3] (x, y, score)
    int num_maps;               // N * K
    int num_keypoints;          // K
    int height;                 // H
    int width;                  // W
    int refine;                 // PE_REFINE_*
    int blur_radius;            // DARK: (kernel size - 1) / 2, 0..PE_MAX_BLUR_RADIUS
    double blur_weights[2 * PE_MAX_BLUR_RADIUS + 1];  // DARK: the 1-D Gaussian, blur_weights[0 .. 2 * radius]
};

// ---------------------------------------------------------------------------------------------------------------
// KAPAO post-processing. Pass 0 = pose objects (class 0), pass 1 = keypoint objects (classes 1..K).
struct KapaoLevel {
    const void* data;                   // [N, A * D, H_l, W_l] raw head output, float32 or float16
    int height;                         // H_l
    int width;                          // W_l
    int row_offset;                     // first row of this level: sum of A * H * W over the levels before it
    float stride;                       // S_l, input pixels
    float anchors[PE_MAX_ANCHORS * 2];  // (w, h) per anchor, input pixels
};

struct KapaoParams {
    KapaoLevel levels[PE_MAX_LEVELS];
    int num_levels;
    int num_anchors;        // A
    int num_classes;        // nc (18 for KAPAO: person + 17 keypoint classes; 1 for the person detector)
    int num_keypoints;      // K (17 or 0)
    int depth;              // D = 5 + nc + 2K channels per anchor
    int num_rows;           // R = sum over levels of A * H_l * W_l
    int batch;              // N
    int kp_pass;            // 1: select keypoint objects and fuse them into the poses
    float conf_person;      // pass 0: obj and obj*cls must exceed it (compared in float32, as NumPy does)
    float conf_kp;          // pass 1
    float conf_kp_person;   // only poses scoring above it receive keypoint objects
    int capacity;           // C: workspace rows per image and pass (multiple of 64, <= PE_MAX_CAPACITY)
    int max_candidates;     // candidates that enter each NMS: min(max_nms, C)
    int max_det;            // kept per image and pass
    double iou_person;      // NMS thresholds, IoU compared in float64 (strictly greater suppresses)
    double iou_kp;
    double overwrite_tol2;  // fusion: squared distance in image pixels, compared in float64
    const float* letterbox;  // [N, 4] (pad_x, pad_y, scale_x, scale_y): image = (input - pad) / scale; null: none
    // workspace (kapao_workspace_bytes in launch.py lays it out)
    unsigned int* counts;              // [N, 2, 4] per pass: appended, sorted (entered NMS), kept, dropped (overflow)
    unsigned long long* keys;          // [N, 2, R] sort keys: conf bits | (2^24 - 1 - row) | class
    float* cand_box;                   // [N, 2, C, 4] xyxy, input pixels, in score order
    float* cand_conf;                  // [N, 2, C]
    int* cand_class;                   // [N, 2, C]
    int* cand_row;                     // [N, 2, C]
    unsigned long long* nms_mask;      // [N, 2, C, C / 64] bit j of row i: i suppresses j (j > i)
    int* kept;                         // [N, 2, max_det] positions in the candidate list, score order
    // outputs, image pixels
    int* out_count;                    // [N] poses per image (P <= max_det)
    float* out_boxes;                  // [N, max_det, 4] xyxy
    float* out_scores;                 // [N, max_det]
    float* out_keypoints;              // [N, max_det, K, 3] (x, y, conf); conf 0 where no keypoint object was fused
    float* out_rows;                   // [N, R, D] decoded rows (only the test kernel kapao_decode_rows writes it)
};
