/* The host finish of the heatmap decode (pose_edge/runtime/heatmap_decode.py, rules 2-4): from each map's peak
 * index to (x, y, score), with the refinement ("none", "quarter" or "dark") and the back-projection. NumPy finds the
 * peaks (its argmax is vectorised and defines rule 1); this replaces the NumPy calls that follow, whose fixed cost
 * dominates a frame's few crops. For "none" and "quarter" the result is bit for bit what the NumPy path gives: the
 * same float32 comparisons, the same float64 operations in the same order, and no fused multiply-add (built with
 * -ffp-contract=off; the pragma says the same to compilers that read it). For "dark" the blur sums in another order
 * than NumPy's matrix products (the order of the CUDA kernel, kernels/heatmap_decode.cuh), as the contract allows:
 * a coordinate can move by a float32 rounding.
 *
 * Only the buffer protocol is used, no NumPy headers: the Python caller hands over C-contiguous buffers of the right
 * dtypes, and this checks their byte lengths so that a wrong call raises instead of reading out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#if defined(__clang__)  /* gcc ignores the pragma; setup.py passes -ffp-contract=off to both */
#pragma STDC FP_CONTRACT OFF
#endif

enum { REFINE_NONE = 0, REFINE_QUARTER = 1, REFINE_DARK = 2 };  /* heatmap_decode.REFINE_MODES, in order */
#define MAX_BLUR_RADIUS 8  /* heatmap_codec.MAX_DARK_KERNEL = 17 */
#define LOG_FLOOR 1e-10

typedef struct {
    Py_buffer maps, peaks, affine, out, weights;
    int has_affine, has_weights;
} Buffers;

static void release(Buffers *b) {
    PyBuffer_Release(&b->maps);
    PyBuffer_Release(&b->peaks);
    if (b->has_affine) PyBuffer_Release(&b->affine);
    if (b->has_weights) PyBuffer_Release(&b->weights);
    PyBuffer_Release(&b->out);
}

/* The quarter step of one axis: +-0.25 toward the higher neighbour, 0 on a tie or when either is NaN. */
static double quarter(float low, float high) {
    return (double)((high > low) - (high < low)) * 0.25;
}

/* The DARK step (rule 3, "dark") of a peak at (px, py), 2 <= px <= W-3 and 2 <= py <= H-3, added to (*x, *y) when
 * det and both components are finite and det != 0. g: the 2r+1 blur weights. The blurred value at (px+bx, py+by)
 * sums rows first (x within a window row), then columns, in float64, with zero outside the map; a row's sum is the
 * same for every by, so each (window row, bx) is summed once. Only the 13 points the derivatives read are blurred.
 */
static void dark_step(const float *map, Py_ssize_t h, Py_ssize_t w, Py_ssize_t px, Py_ssize_t py, const double *g,
                      int r, double *x, double *y) {
    static const int points[13][2] = {{0, 0}, {1, 0}, {-1, 0}, {0, 1}, {0, -1}, {2, 0}, {-2, 0}, {0, 2}, {0, -2},
                                      {1, 1}, {1, -1}, {-1, 1}, {-1, -1}};
    double rows[2 * MAX_BLUR_RADIUS + 5][5];  /* rows[s][bx + 2]: window row s = wy - (py - r - 2) */
    const int side = 2 * r + 5;
    for (int s = 0; s < side; s++) {
        Py_ssize_t wy = py - r - 2 + s;
        for (int bx = -2; bx <= 2; bx++) {
            double row = 0.0;
            if (wy >= 0 && wy < h) {
                for (int j = 0; j <= 2 * r; j++) {
                    Py_ssize_t wx = px + bx - r + j;
                    row += g[j] * (wx >= 0 && wx < w ? (double)map[wy * w + wx] : 0.0);
                }
            }
            rows[s][bx + 2] = row;
        }
    }
    double p[5][5];  /* p[by + 2][bx + 2] = ln(max(blurred, 1e-10)), NaN kept */
    for (int q = 0; q < 13; q++) {
        int bx = points[q][0], by = points[q][1];
        double sum = 0.0;
        for (int i = 0; i <= 2 * r; i++) sum += g[i] * rows[by + 2 + i][bx + 2];
        p[by + 2][bx + 2] = log(sum != sum || sum > LOG_FLOOR ? sum : LOG_FLOOR);
    }
#define P(bx, by) p[(by) + 2][(bx) + 2]
    double dx = 0.5 * (P(1, 0) - P(-1, 0));
    double dy = 0.5 * (P(0, 1) - P(0, -1));
    double dxx = 0.25 * (P(2, 0) - 2.0 * P(0, 0) + P(-2, 0));
    double dyy = 0.25 * (P(0, 2) - 2.0 * P(0, 0) + P(0, -2));
    double dxy = 0.25 * (P(1, 1) - P(1, -1) - P(-1, 1) + P(-1, -1));
#undef P
    double det = dxx * dyy - dxy * dxy;
    double step_x = (dyy * dx - dxy * dy) / det, step_y = (dxx * dy - dxy * dx) / det;
    if (isfinite(det) && det != 0.0 && isfinite(step_x) && isfinite(step_y)) {
        *x -= step_x;
        *y -= step_y;
    }
}

/* finish(maps, peaks, h, w, k, refine, affine, out, weights)
 *   maps    float32 [M, H, W]   peaks int64 [M] (flat argmax per map)   k: maps per crop (M = N*K)
 *   refine  0 none, 1 quarter, 2 dark         affine float64 [N, 2, 3] or None        out float32 [M, 3], written
 *   weights float64 [2r+1], the DARK blur (dark_blur_weights), or None when refine is not dark
 */
static PyObject *finish(PyObject *self, PyObject *args) {
    Buffers b = {0};
    PyObject *affine_obj, *weights_obj;
    Py_ssize_t h, w, k;
    int refine;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnniOw*O", &b.maps, &b.peaks, &h, &w, &k, &refine, &affine_obj, &b.out,
                          &weights_obj))
        return NULL;
    b.has_affine = affine_obj != Py_None;
    if (b.has_affine && PyObject_GetBuffer(affine_obj, &b.affine, PyBUF_C_CONTIGUOUS) < 0) {
        b.has_affine = 0;
        release(&b);
        return NULL;
    }
    b.has_weights = weights_obj != Py_None;
    if (b.has_weights && PyObject_GetBuffer(weights_obj, &b.weights, PyBUF_C_CONTIGUOUS) < 0) {
        b.has_weights = 0;
        release(&b);
        return NULL;
    }
    Py_ssize_t taps = b.has_weights ? b.weights.len / (Py_ssize_t)sizeof(double) : 0;
    if (refine < REFINE_NONE || refine > REFINE_DARK || (refine == REFINE_DARK) != b.has_weights
        || (b.has_weights && (b.weights.len != taps * (Py_ssize_t)sizeof(double) || taps % 2 == 0
                              || taps > 2 * MAX_BLUR_RADIUS + 1))) {
        release(&b);
        PyErr_SetString(PyExc_ValueError, "finish: refine must be 0, 1 or 2, with an odd number of blur weights "
                                          "(at most 17) exactly for 2");
        return NULL;
    }
    Py_ssize_t m = b.peaks.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t cells = h * w;
    if (h < 1 || w < 1 || k < 1 || m % k != 0 || b.peaks.len != m * (Py_ssize_t)sizeof(int64_t)
        || b.maps.len != m * cells * (Py_ssize_t)sizeof(float) || b.out.len != m * 3 * (Py_ssize_t)sizeof(float)
        || (b.has_affine && b.affine.len != (m / k) * 6 * (Py_ssize_t)sizeof(double))) {
        release(&b);
        PyErr_SetString(PyExc_ValueError, "finish: buffer sizes do not match the map shape");
        return NULL;
    }
    const float *maps = b.maps.buf;
    const int64_t *peaks = b.peaks.buf;
    const double *affine = b.has_affine ? b.affine.buf : NULL;
    const double *weights = b.has_weights ? b.weights.buf : NULL;
    const int radius = (int)(taps / 2);
    float *out = b.out.buf;
    for (Py_ssize_t i = 0; i < m; i++) {
        int64_t idx = peaks[i];
        if (idx < 0 || idx >= cells) {
            release(&b);
            PyErr_SetString(PyExc_ValueError, "finish: a peak index lies outside its map");
            return NULL;
        }
        const float *map = maps + i * cells;
        float score = map[idx];
        double x = 0.0, y = 0.0;
        if (score > 0.0f) {  /* rule 2: no peak (<= 0 or NaN) stays at (0, 0) */
            Py_ssize_t px = (Py_ssize_t)(idx % w), py = (Py_ssize_t)(idx / w);
            x = (double)px;
            y = (double)py;
            if (refine == REFINE_QUARTER && px > 1 && px < w - 1 && py > 1 && py < h - 1) {  /* rule 3 */
                x += quarter(map[idx - 1], map[idx + 1]);
                y += quarter(map[idx - w], map[idx + w]);
            } else if (refine == REFINE_DARK && px >= 2 && px <= w - 3 && py >= 2 && py <= h - 3) {
                dark_step(map, h, w, px, py, weights, radius, &x, &y);
            }
        }
        float *o = out + i * 3;
        if (affine) {  /* rule 4: (m00*x + m01*y) + m02 in float64, then float32 */
            const double *row = affine + (i / k) * 6;
            double sx = x * row[0], sy = x * row[3];
            sx += y * row[1];
            sy += y * row[4];
            o[0] = (float)(sx + row[2]);
            o[1] = (float)(sy + row[5]);
        } else {
            o[0] = (float)x;
            o[1] = (float)y;
        }
        o[2] = score;
    }
    release(&b);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"finish", finish, METH_VARARGS, "Rules 2-4 of the heatmap decode from the peak indices (see the C source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_peaks_native", .m_size = -1,
                                    .m_methods = methods};

PyMODINIT_FUNC PyInit__peaks_native(void) { return PyModule_Create(&module); }
