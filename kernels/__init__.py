"""pose_edge.kernels: the CUDA post-processing kernels, how they are built and loaded, and their CPU emulation.

Sources (one body per kernel, compiled by nvcc/NVRTC for the GPU and by g++ for the CPU emulation):
    heatmap_decode.cuh   top-down heatmaps -> keypoints (argmax, quarter/DARK refinement, inverse affine)
    kapao_decode.cuh     KAPAO decode + filter + compaction, sort, IoU-bitmask NMS x 2, keypoint-object fusion
    params.h / params.py the parameter blocks (C and ctypes), pe_cuda.h the portability layer, emulation.h the CPU
                         emulation, pose_kernels.cu / emulated_kernels.cpp the two translation units
Python:
    launch.py      launch plans (HeatmapDecoder, KapaoPostprocessor) over a device
    cuda_device.py the GPU device (cuda-python): fatbin or NVRTC module, checked launches
    emulator.py    the CPU device: the same kernels built by g++, through ctypes
    build.py       nvcc fatbin for every target arch, NVRTC, g++ builds; `python -m pose_edge.kernels.build`
    selftest.py    `python -m pose_edge.kernels.selftest [--gpu]`; exercise.py: the ThreadSanitizer workload
The runtime's entry points are pose_edge.runtime.gpu_decode.GpuHeatmapDecoder and GpuKapaoDecoder.
"""
