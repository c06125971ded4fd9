// What every kernel header includes first: the same spelling under nvcc, NVRTC and g++ (through emulation.h).
//
// Rules for kernel code in this directory, so that one source serves all three compilers:
//   * no standard headers (NVRTC has none): fixed types are int, unsigned int, unsigned long long, float, double;
//   * dynamic shared memory only through PE_DYNAMIC_SHARED(type, name);
//   * helpers below instead of INFINITY, isnan, min/max, half conversions;
//   * warp intrinsics with the full mask only (all lanes of the warp take part).
// Floating-point contraction is off everywhere (nvcc/NVRTC --fmad=false, g++ -ffp-contract=off) so that a*b+c
// rounds twice, as the NumPy references do.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define PE_GPU 1
#define PE_DYNAMIC_SHARED(T, name)                                     \
    extern __shared__ __align__(16) unsigned char pe_dynamic_shared_[]; \
    T* name = reinterpret_cast<T*>(pe_dynamic_shared_)
#else
#include "emulation.h"
#define PE_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(pe_emu::dynamic_shared())
#endif

#define PE_FULL_MASK 0xFFFFFFFFu

// IEEE half stored as its 16 bits: the engine's FP16 outputs, read without cuda_fp16.h (NVRTC has no headers).
struct __align__(2) PeHalf {
    unsigned short bits;
};

__device__ __forceinline__ float pe_half_to_float(unsigned short h) {
#ifdef PE_GPU
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    // Exact: every half is a float. Subnormal halves are normalised by hand.
    const unsigned sign = (h & 0x8000u) << 16;
    unsigned exponent = (h >> 10) & 0x1Fu;
    unsigned mantissa = h & 0x3FFu;
    unsigned bits;
    if (exponent == 0x1Fu) {
        bits = sign | 0x7F800000u | (mantissa << 13);  // Inf, NaN (payload kept)
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;  // +-0
    } else {
        exponent = 113u;
        while (!(mantissa & 0x400u)) {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
    }
    return __uint_as_float(bits);
#endif
}

__device__ __forceinline__ float pe_load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float pe_load(const PeHalf* p, long long i) { return pe_half_to_float(p[i].bits); }

__device__ __forceinline__ float pe_inf() { return __int_as_float(0x7F800000); }
__device__ __forceinline__ float pe_nan() { return __int_as_float(0x7FC00000); }
__device__ __forceinline__ bool pe_isnan(float x) { return x != x; }
__device__ __forceinline__ bool pe_isnan(double x) { return x != x; }

__device__ __forceinline__ int pe_min(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int pe_max(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ unsigned pe_min(unsigned a, unsigned b) { return a < b ? a : b; }

// np.maximum / np.minimum: a NaN in either argument gives NaN (fmaxf would drop it).
__device__ __forceinline__ float pe_np_maximum(float a, float b) {
    if (pe_isnan(a)) return a;
    if (pe_isnan(b)) return b;
    return a > b ? a : b;
}
__device__ __forceinline__ float pe_np_minimum(float a, float b) {
    if (pe_isnan(a)) return a;
    if (pe_isnan(b)) return b;
    return a < b ? a : b;
}

// A float32 estimate of 1/m for a normal m, within a few ulps: the GPU's MUFU.RCP; on the host a deliberately
// rough stand-in (off by PE_RCP_ESTIMATE_ULPS ulps), used only to test pe_div_newton and pe_div_fast on the CPU.
#ifndef PE_RCP_ESTIMATE_ULPS
#define PE_RCP_ESTIMATE_ULPS 3
#endif
__device__ __forceinline__ float pe_rcp_estimate(float m) {
#ifdef PE_GPU
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(m));
    return r;
#else
    return __uint_as_float(__float_as_uint(1.0f / m) + PE_RCP_ESTIMATE_ULPS);
#endif
}

// Correctly rounded float32 a / b (IEEE, as NumPy divides) without the compiler's division routine, whose slow-path
// call makes ptxas save registers to the stack (reported as spills). 1/b is refined from a float32 estimate by two
// Newton steps in float64 (relative error < 2^-51), multiplied by a and rounded once to float32. That rounding is
// correct because a quotient of two floats never lies closer than 2^-49 (relative) to a float32 rounding midpoint.
// Special values are sorted out first, as IEEE 754 defines them. Tested on the CPU against a / b
// (tests/test_kernels_numerics.py) with the rough estimate above.
__device__ __forceinline__ float pe_div_newton(float a, float b) {
    const unsigned ua = __float_as_uint(a), ub = __float_as_uint(b);
    const unsigned sign = (ua ^ ub) & 0x80000000u;
    const unsigned abs_a = ua & 0x7FFFFFFFu, abs_b = ub & 0x7FFFFFFFu;
    if (abs_a > 0x7F800000u || abs_b > 0x7F800000u) return __uint_as_float(0x7FC00000u);  // NaN
    if (abs_b == 0x7F800000u) return __uint_as_float(abs_a == 0x7F800000u ? 0x7FC00000u : sign);  // x / inf
    if (abs_a == 0x7F800000u || abs_b == 0) {
        return __uint_as_float(abs_a == 0 ? 0x7FC00000u : (sign | 0x7F800000u));  // inf / x, x / 0
    }
    if (abs_a == 0) return __uint_as_float(sign);  // 0 / x
    // |b| = m * 2^e with m in [1, 2): float64 holds float32 subnormals as normal numbers.
    const long long bits = __double_as_longlong(static_cast<double>(__uint_as_float(abs_b)));
    const int e = static_cast<int>((bits >> 52) & 0x7FF) - 1023;
    const double m = __longlong_as_double((bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL);
    double y = static_cast<double>(pe_rcp_estimate(static_cast<float>(m)));
    y = fma(y, fma(-m, y, 1.0), y);
    y = fma(y, fma(-m, y, 1.0), y);
    const double scale = __longlong_as_double(static_cast<long long>(1023 - e) << 52);  // 2^-e, exact
    const float q = static_cast<float>(static_cast<double>(__uint_as_float(abs_a)) * y * scale);
    return __uint_as_float(__float_as_uint(q) | sign);
}

// Correctly rounded float32 a / b in float32 arithmetic, for operands in 2^-40..2^40 (or a == 0): one Newton step
// on the reciprocal estimate, the quotient with one correction, and its residual r = a - b*q (exact with an FMA when
// q is within an ulp).
// q is accepted only when |r| < |b| * (half the float spacing at q), which proves q = RN(a / b). The few
// quotients this cannot prove (near a rounding midpoint, or operands out of range) go to pe_div_newton, so the
// result is always exact and float64 (slow on most GPUs) runs only for those.
__device__ __forceinline__ float pe_div_fast(float a, float b) {
    const float lo = __uint_as_float(0x2B800000u), hi = __uint_as_float(0x53800000u);  // 2^-40, 2^40
    const float abs_a = fabsf(a), abs_b = fabsf(b);
    if (abs_b >= lo && abs_b <= hi && ((abs_a >= lo && abs_a <= hi) || a == 0.0f)) {
        float y = pe_rcp_estimate(abs_b);
        y = fmaf(fmaf(-abs_b, y, 1.0f), y, y);
        const float q0 = abs_a * y;
        if (a == 0.0f) return b < 0.0f ? -a : a;  // +-0 with the sign of a / b
        const float q = fmaf(fmaf(-abs_b, q0, abs_a), y, q0);  // one correction of the quotient
        const float r = fmaf(-abs_b, q, abs_a);
        // Half the spacing of the floats around q: 2^(e(q) - 24), or 2^(e(q) - 25) when q is a power of two (the
        // spacing below it is half the one above).
        const unsigned bits = __float_as_uint(q);
        const float h = __uint_as_float(((bits >> 23) - ((bits & 0x7FFFFFu) ? 24u : 25u)) << 23);
        if (fabsf(r) < abs_b * h) return (a < 0.0f) != (b < 0.0f) ? -q : q;
    }
    return pe_div_newton(a, b);
}

// a / b rounded as IEEE: the host divides; the GPU uses pe_div_fast (same result, no division routine, no spills).
__device__ __forceinline__ float pe_div_rn(float a, float b) {
#ifdef PE_GPU
    return pe_div_fast(a, b);
#else
    return a / b;
#endif
}

// 1 / (1 + exp(-x)) in float32, as the NumPy decoder computes it (exp overflow gives 0, NaN stays NaN).
__device__ __forceinline__ float pe_sigmoid(float x) { return pe_div_rn(1.0f, 1.0f + expf(-x)); }

__device__ __forceinline__ unsigned pe_lane() { return threadIdx.x & 31u; }
