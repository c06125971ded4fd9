/* The host finish of the heatmap decode for "none" and "quarter" (pose_edge/runtime/heatmap_decode.py, rules 2-4):
 * from each map's peak index to (x, y, score), with the quarter step and the back-projection. NumPy finds the peaks
 * (its argmax is vectorised and defines rule 1); this only replaces the dozen NumPy calls that follow, whose fixed
 * cost dominates a single crop. The result is bit for bit what the NumPy path gives: the same float32 comparisons,
 * the same float64 operations in the same order, and no fused multiply-add (built with -ffp-contract=off; the pragma
 * says the same to compilers that read it).
 *
 * Only the buffer protocol is used, no NumPy headers: the Python caller hands over C-contiguous buffers of the right
 * dtypes, and this checks their byte lengths so that a wrong call raises instead of reading out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#pragma STDC FP_CONTRACT OFF

typedef struct {
    Py_buffer maps, peaks, affine, out;
    int has_affine;
} Buffers;

static void release(Buffers *b) {
    PyBuffer_Release(&b->maps);
    PyBuffer_Release(&b->peaks);
    if (b->has_affine) PyBuffer_Release(&b->affine);
    PyBuffer_Release(&b->out);
}

/* The quarter step of one axis: +-0.25 toward the higher neighbour, 0 on a tie or when either is NaN. */
static double quarter(float low, float high) {
    return (double)((high > low) - (high < low)) * 0.25;
}

/* finish(maps, peaks, h, w, k, quarter, affine, out)
 *   maps    float32 [M, H, W]   peaks int64 [M] (flat argmax per map)   k: maps per crop (M = N*K)
 *   quarter bool                affine float64 [N, 2, 3] or None          out float32 [M, 3], written
 */
static PyObject *finish(PyObject *self, PyObject *args) {
    Buffers b = {0};
    PyObject *affine_obj;
    Py_ssize_t h, w, k;
    int refine;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnnpOw*", &b.maps, &b.peaks, &h, &w, &k, &refine, &affine_obj, &b.out))
        return NULL;
    b.has_affine = affine_obj != Py_None;
    if (b.has_affine && PyObject_GetBuffer(affine_obj, &b.affine, PyBUF_C_CONTIGUOUS) < 0) {
        b.has_affine = 0;
        release(&b);
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
            if (refine && px > 1 && px < w - 1 && py > 1 && py < h - 1) {  /* rule 3, "quarter" */
                x += quarter(map[idx - 1], map[idx + 1]);
                y += quarter(map[idx - w], map[idx + w]);
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

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_peaks_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__peaks_native(void) { return PyModule_Create(&module); }
