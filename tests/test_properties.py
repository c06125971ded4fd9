"""Property-based tests (hypothesis) of everything that reads numbers or bytes it did not make: the two decoders, the
annotation validator, the image header reader and the results validator.

The properties: no input, finite or not, makes them crash (only the project's own one-line errors may come out);
what they return is finite, or its non-finite part is flagged (Poses.finite counts it). Examples are few and
deadlines off, so the file runs in seconds; hypothesis keeps the failing examples it finds in .hypothesis/.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install 'pose-edge[dev]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

from pose_edge.errors import DataError  # noqa: E402
from pose_edge.geometry import Letterbox  # noqa: E402
from pose_edge.runtime.heatmap_decode import REFINE_MODES, decode_heatmaps  # noqa: E402
from pose_edge.runtime.kapao_decode import postprocess  # noqa: E402
from pose_edge.runtime.settings import COCO_THRESHOLDS  # noqa: E402

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])
ANY_FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
FINITE_FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


# ---------------------------------------------------------------------------------------------- heatmap decoding


@st.composite
def heatmap_inputs(draw):
    n, k = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    finite = draw(st.booleans())
    maps = draw(arrays(np.float32, (n, k, h, w), elements=FINITE_FLOAT32 if finite else ANY_FLOAT32))
    affine = draw(st.none() | arrays(np.float64, (n, 2, 3), elements=st.floats(-1e3, 1e3)))
    return maps, affine, draw(st.sampled_from(REFINE_MODES)), draw(st.sampled_from([3, 5, 11]))


@FAST
@given(heatmap_inputs())
def test_heatmap_decoding_of_any_maps(case):
    """Any maps: coordinates finite (a finite affine, and a refinement step that would overflow is not applied);
    the score is the map's value at its peak (np.argmax's rules), so a non-finite score flags a non-finite map."""
    maps, affine, refine, kernel = case
    out = decode_heatmaps(maps, affine, refine, kernel)
    n, k = maps.shape[:2]
    assert out.shape == (n, k, 3) and out.dtype == np.float32
    assert np.isfinite(out[..., :2]).all()
    flat = maps.reshape(n * k, maps.shape[2] * maps.shape[3])
    peak = flat[np.arange(n * k), np.argmax(flat, axis=1)] if n * k else np.zeros(0, np.float32)
    np.testing.assert_array_equal(out[..., 2].reshape(-1), peak)
    if np.isfinite(maps).all():
        assert np.isfinite(out).all()


# ------------------------------------------------------------------------------------------------ KAPAO decoding

STRIDES = (8, 16)
ANCHORS = (((10.0, 13.0), (16.0, 30.0)), ((30.0, 61.0),))


@st.composite
def kapao_inputs(draw):
    num_keypoints = draw(st.sampled_from([0, 2]))
    num_classes = 1 + num_keypoints
    depth = 5 + num_classes + 2 * num_keypoints
    n = draw(st.integers(1, 2))
    finite = draw(st.booleans())
    elements = (st.floats(-30, 30, width=32) if finite else
                st.one_of(st.floats(-30, 30, width=32), st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30])))
    grids = [draw(arrays(np.float32, (n, len(a) * depth, 16 // s, 24 // s), elements=elements))
             for s, a in zip(STRIDES, ANCHORS)]
    boxes = draw(st.none() | st.just([Letterbox((30, 44), (16, 24), (0.5, 0.5), (2, 1))] * n))
    return grids, num_classes, num_keypoints, boxes


@FAST
@given(kapao_inputs())
def test_kapao_postprocess_of_any_grids(case):
    """Any raw grids: one Poses per image, scores in descending order; finite grids give finite poses; anything
    else gives poses whose non-finite people and keypoints Poses.finite drops or zeroes, and counts."""
    grids, num_classes, num_keypoints, boxes = case
    results = postprocess(grids, STRIDES, ANCHORS, num_classes, num_keypoints, boxes, COCO_THRESHOLDS)
    assert len(results) == grids[0].shape[0]
    finite_input = all(np.isfinite(g).all() for g in grids)
    for poses in results:
        p = len(poses)
        assert poses.keypoints.shape == (p, num_keypoints, 3) and poses.boxes.shape == (p, 4)
        assert (np.diff(poses.scores) <= 0).all()
        assert np.isfinite(poses.scores).all()  # a non-finite confidence fails the threshold
        if finite_input:
            assert np.isfinite(poses.keypoints).all() and np.isfinite(poses.boxes).all()
        clean = poses.finite()
        for array in (clean.keypoints, clean.boxes, clean.scores):
            assert np.isfinite(array).all()
        assert len(clean) == p - clean.extra.get("non_finite_people", 0)


# ------------------------------------------------------------------------------------------- annotation validator

JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12), ANY_FLOAT32.map(float), st.text(max_size=3),
                 st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                          max_size=1))
NUMBER = st.one_of(st.integers(-10, 200), st.floats(-10, 200), ANY_FLOAT32.map(float))


def _maybe(valid):
    return st.one_of(valid, valid, JUNK)


KEYPOINTS = st.one_of(
    st.lists(st.tuples(st.floats(0, 64), st.floats(0, 48), st.sampled_from([0, 1, 2])), min_size=17,
             max_size=17).map(lambda t: [v for xyv in t for v in xyv]),
    st.lists(NUMBER, min_size=51, max_size=51), st.lists(JUNK, max_size=52))
IMAGE = st.fixed_dictionaries({"id": _maybe(st.integers(1, 4)), "file_name": _maybe(st.just("a.jpg")),
                               "width": _maybe(st.just(64)), "height": _maybe(st.just(48))})
ANNOTATION = st.fixed_dictionaries(
    {"id": _maybe(st.integers(1, 8)), "image_id": _maybe(st.integers(1, 4)), "category_id": _maybe(st.just(1)),
     "iscrowd": _maybe(st.sampled_from([0, 1])), "keypoints": KEYPOINTS,
     "num_keypoints": _maybe(st.integers(0, 17)),
     "bbox": _maybe(st.lists(NUMBER, min_size=4, max_size=4)), "area": _maybe(NUMBER)},
    optional={"segmentation": JUNK})


@st.composite
def datasets(draw):
    def drop_keys(record):
        keys = draw(st.sets(st.sampled_from(sorted(record)), max_size=1))
        return {k: v for k, v in record.items() if k not in keys}

    images = [drop_keys(r) for r in draw(st.lists(IMAGE, max_size=4))]
    anns = [drop_keys(r) for r in draw(st.lists(ANNOTATION, max_size=8))]
    anns += draw(st.lists(JUNK, max_size=1))  # a record that is not even an object
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


@FAST
@given(datasets())
def test_annotation_validation_of_any_records(dataset):
    """Any records: the validator returns (never raises on a record); what it keeps passes it again unchanged,
    loads in pycocotools, and holds only finite numbers; every record is either kept or counted."""
    from pose_edge.data.validate import validate_dataset

    clean, report = validate_dataset(dataset, "any.json")
    again, second = validate_dataset(clean, "any.json")
    assert second.ok and again["annotations"] == clean["annotations"] and again["images"] == clean["images"]
    assert len(clean["images"]) + report.images_skipped() == len(dataset["images"])
    assert len(clean["annotations"]) + report.annotations_skipped() == len(dataset["annotations"])
    for ann in clean["annotations"]:
        assert all(math.isfinite(v) for v in ann["keypoints"] + ann["bbox"] + [ann["area"]])
        assert ann["category_id"] == 1 and ann["image_id"] in {im["id"] for im in clean["images"]}
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = clean
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    assert len(coco.anns) == len(clean["annotations"])


@FAST
@given(st.binary(max_size=300), st.sampled_from([b"", b"\xff\xd8", b"\xff\xd8\xff\xc0\x00\x11", b"\x89PNG\r\n\x1a\n",
                                                 b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"]))
def test_image_header_of_any_bytes(tmp_path_factory, data, prefix):
    """Any bytes: a header or a one-line DataError naming the file, nothing else."""
    from pose_edge.data.image_header import read_header

    path = tmp_path_factory.mktemp("h") / "x.jpg"
    path.write_bytes(prefix + data)
    try:
        header = read_header(path)
    except DataError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        return
    assert header.width > 0 and header.height > 0


@FAST
@given(st.lists(st.one_of(JUNK, st.fixed_dictionaries(
    {"image_id": _maybe(st.integers(1, 3)), "keypoints": st.one_of(KEYPOINTS, JUNK),
     "score": _maybe(st.floats(0, 1))}, optional={"category_id": _maybe(st.sampled_from([1, 2]))})), max_size=5))
def test_results_validation_of_any_records(results):
    """Any results list: the person results to score, or a one-line DataError; never another exception."""
    import warnings

    from pose_edge.evaluate.scoring import validate_results

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kept = validate_results(results, {1, 2, 3})
    except DataError as e:
        assert "\n" not in str(e)
        return
    assert all(r["category_id"] == 1 and len(r["keypoints"]) == 51 for r in kept)
