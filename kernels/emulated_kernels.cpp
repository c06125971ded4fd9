// The host-compiler translation unit: the same kernel headers as pose_kernels.cu, compiled by g++ over the CPU
// emulation (emulation.h), exported to Python (kernels/emulator.py) through a small C ABI:
//   pe_emu_launch(name, grid, block, dynamic shared bytes, params, params size) -> 0 or an error code
//   pe_emu_kernel_count / pe_emu_kernel_name                  the kernels this library holds
//   pe_emu_layout_count / pe_emu_layout_entry                 field offsets of the parameter blocks
#include "pe_cuda.h"

#include <cstddef>
#include <cstring>
#include <vector>

#include "heatmap_decode.cuh"
#include "kapao_decode.cuh"

namespace {

struct KernelEntry {
    const char* name;
    std::size_t params_size;
    void (*run)(const void* params);
};

template <typename P, void (*Kernel)(P)>
void call(const void* params) {
    Kernel(*static_cast<const P*>(params));
}

#define PE_ENTRY(name, P) {#name, sizeof(P), &call<P, &name>}
const KernelEntry kKernels[] = {
    PE_ENTRY(pe_heatmap_decode_f32, HeatmapDecodeParams),
    PE_ENTRY(pe_heatmap_decode_f16, HeatmapDecodeParams),
    PE_ENTRY(pe_kapao_select_f32, KapaoParams),
    PE_ENTRY(pe_kapao_select_f16, KapaoParams),
    PE_ENTRY(pe_kapao_sort_f32, KapaoParams),
    PE_ENTRY(pe_kapao_sort_f16, KapaoParams),
    PE_ENTRY(pe_kapao_nms_mask, KapaoParams),
    PE_ENTRY(pe_kapao_nms_reduce, KapaoParams),
    PE_ENTRY(pe_kapao_fuse_f32, KapaoParams),
    PE_ENTRY(pe_kapao_fuse_f16, KapaoParams),
    PE_ENTRY(pe_kapao_decode_rows_f32, KapaoParams),
    PE_ENTRY(pe_kapao_decode_rows_f16, KapaoParams),
};
#undef PE_ENTRY

struct LayoutEntry {
    const char* structure;
    const char* field;
    std::size_t offset, size;
};

#define PE_FIELD(S, f) {#S, #f, offsetof(S, f), sizeof(static_cast<S*>(nullptr)->f)}
#define PE_SIZE(S) {#S, "", 0, sizeof(S)}
const LayoutEntry kLayout[] = {
    PE_SIZE(HeatmapDecodeParams),
    PE_FIELD(HeatmapDecodeParams, heatmaps), PE_FIELD(HeatmapDecodeParams, hm_to_image),
    PE_FIELD(HeatmapDecodeParams, out), PE_FIELD(HeatmapDecodeParams, num_maps),
    PE_FIELD(HeatmapDecodeParams, num_keypoints), PE_FIELD(HeatmapDecodeParams, height),
    PE_FIELD(HeatmapDecodeParams, width), PE_FIELD(HeatmapDecodeParams, refine),
    PE_FIELD(HeatmapDecodeParams, blur_radius), PE_FIELD(HeatmapDecodeParams, blur_weights),
    PE_SIZE(KapaoLevel),
    PE_FIELD(KapaoLevel, data), PE_FIELD(KapaoLevel, height), PE_FIELD(KapaoLevel, width),
    PE_FIELD(KapaoLevel, row_offset), PE_FIELD(KapaoLevel, stride), PE_FIELD(KapaoLevel, anchors),
    PE_SIZE(KapaoParams),
    PE_FIELD(KapaoParams, levels), PE_FIELD(KapaoParams, num_levels), PE_FIELD(KapaoParams, num_anchors),
    PE_FIELD(KapaoParams, num_classes), PE_FIELD(KapaoParams, num_keypoints), PE_FIELD(KapaoParams, depth),
    PE_FIELD(KapaoParams, num_rows), PE_FIELD(KapaoParams, batch), PE_FIELD(KapaoParams, kp_pass),
    PE_FIELD(KapaoParams, conf_person), PE_FIELD(KapaoParams, conf_kp), PE_FIELD(KapaoParams, conf_kp_person),
    PE_FIELD(KapaoParams, capacity), PE_FIELD(KapaoParams, max_candidates), PE_FIELD(KapaoParams, max_det),
    PE_FIELD(KapaoParams, iou_person), PE_FIELD(KapaoParams, iou_kp), PE_FIELD(KapaoParams, overwrite_tol2),
    PE_FIELD(KapaoParams, letterbox), PE_FIELD(KapaoParams, counts), PE_FIELD(KapaoParams, keys),
    PE_FIELD(KapaoParams, cand_box), PE_FIELD(KapaoParams, cand_conf), PE_FIELD(KapaoParams, cand_class),
    PE_FIELD(KapaoParams, cand_row), PE_FIELD(KapaoParams, nms_mask), PE_FIELD(KapaoParams, kept),
    PE_FIELD(KapaoParams, out_count), PE_FIELD(KapaoParams, out_boxes), PE_FIELD(KapaoParams, out_scores),
    PE_FIELD(KapaoParams, out_keypoints), PE_FIELD(KapaoParams, out_rows),
};
#undef PE_FIELD
#undef PE_SIZE

}  // namespace

extern "C" {

// 0 ok; 1 a configuration the GPU would refuse; -1 no such kernel; -2 the parameter block has the wrong size.
int pe_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                  unsigned long long dynamic_bytes, const void* params, unsigned long long params_size) {
    for (const KernelEntry& k : kKernels) {
        if (std::strcmp(k.name, name) != 0) continue;
        if (params_size != k.params_size) return -2;
        std::vector<unsigned char> copy(static_cast<const unsigned char*>(params),
                                        static_cast<const unsigned char*>(params) + params_size);
        const void* block = copy.data();
        return pe_emu::launch(dim3(gx, gy, gz), dim3(bx, by, bz), dynamic_bytes, [&] { k.run(block); });
    }
    return -1;
}

int pe_emu_kernel_count() { return static_cast<int>(sizeof(kKernels) / sizeof(kKernels[0])); }
const char* pe_emu_kernel_name(int i) { return kKernels[i].name; }

int pe_emu_layout_count() { return static_cast<int>(sizeof(kLayout) / sizeof(kLayout[0])); }
void pe_emu_layout_entry(int i, const char** structure, const char** field, unsigned long long* offset,
                         unsigned long long* size) {
    *structure = kLayout[i].structure;
    *field = kLayout[i].field;
    *offset = kLayout[i].offset;
    *size = kLayout[i].size;
}

}  // extern "C"
