"""The standing catalogue of bad inputs, per entry point: data loading, eval, export, engine loading, the runtime API
(pose_edge.load / Estimator) and predict.

Every case asserts what the user sees -- a one-line error naming the problem (no traceback), or the record left out
with a one-line warning saying what and how many -- and that nothing was written or lost: the folder the case runs
in is byte-identical afterwards (same files, same contents, no new files, temporaries included).

Models here are tiny real ONNX graphs with the metadata `pose-edge export` writes (tests/tiny_models.py), so the
catalogue runs in seconds; the networks themselves are covered by the export tests.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pose_edge.cli import main
from pose_edge.data.coco import CocoKeypoints
from pose_edge.errors import ArtifactError, DataError, DataWarning, PoseEdgeError

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import engine_with_sidecar, kapao_onnx, topdown_onnx  # noqa: E402

W, H = 64, 48  # the tiny set's image size


# ------------------------------------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root (hidden temporaries included): relative path -> (sha256, permission bits)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o777)
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *needles: str) -> str:
    """The CLI failed with exit status 1 and printed exactly one line, "Error: ...", containing every needle (or,
    for click's own usage errors, exit status 2 with the usage lines click always prints before it)."""
    assert isinstance(result.exception, SystemExit) and result.exit_code in (1, 2), (result.output, result.exception)
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    if result.exit_code == 2:
        assert lines[0].startswith("Usage: ") and lines[-2].startswith("Try "), result.output
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def one_line(e: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def _jpeg(seed: int, size=(W, H)) -> bytes:
    image = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def _person(ann_id: int, image_id: int, x: float = 5.0) -> dict:
    kps = []
    for k in range(17):
        kps += [x + 1 + k % 5 * 3, 6.0 + k * 1.5, 2] if k < 6 else [0, 0, 0]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "keypoints": kps,
            "num_keypoints": 6, "bbox": [x, 5.0, 20.0, 30.0], "area": 600.0}


def write_tiny_set(root: Path, images: int = 3) -> Path:
    """A COCO-format set in the built-in layout: `images` JPEGs of 64x48 per split, two people each."""
    for split in ("train", "val"):
        folder = root / "images" / split
        folder.mkdir(parents=True)
        records, anns = [], []
        for i in range(1, images + 1):
            (folder / f"{i:06d}.jpg").write_bytes(_jpeg(i))
            records.append({"id": i, "file_name": f"{i:06d}.jpg", "width": W, "height": H})
            anns += [_person(2 * i - 1, i, 5.0), _person(2 * i, i, 30.0)]
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(
            {"images": records, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    return root


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    return write_tiny_set(tmp_path_factory.mktemp("tiny_set"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {"kapao": kapao_onnx(root / "kapao-tiny.onnx"), "topdown": topdown_onnx(root / "sb.onnx")}


# ------------------------------------------------------------------------------------------------- data loading
# (name, damage(dataset dict, images folder), what the report calls it, (images left out, annotations left out))


def _ann(i=0):
    return lambda d, _folder: d["annotations"][i]


def _set(key, value, i=0):
    def damage(d, _folder):
        d["annotations"][i][key] = value
    return damage


def _set_kp(index, value):
    def damage(d, _folder):
        d["annotations"][0]["keypoints"][index] = value
    return damage


def _image_file(write):
    def damage(d, folder):
        write(folder / d["images"][0]["file_name"])
    return damage


def _exif_rotated(path: Path) -> None:
    """The same pixels with an EXIF orientation 6 (OpenCV turns them by 90 degrees): it loads as 48x64."""
    import struct

    entry = struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    data = path.read_bytes()
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:])


def _dup_image(d, _folder):
    d["images"][1]["id"] = d["images"][0]["id"]


def _dup_ann(d, _folder):
    d["annotations"][1]["id"] = d["annotations"][0]["id"]


RECORD_CASES = [
    ("nan bbox", _set("bbox", [float("nan"), 5, 20, 30]), "non-finite bbox", (0, 1)),
    ("infinite bbox", _set("bbox", [5, 5, float("inf"), 30]), "non-finite bbox", (0, 1)),
    ("negative bbox", _set("bbox", [5, 5, -20, 30]), "empty or negative bbox", (0, 1)),
    ("zero bbox", _set("bbox", [5, 5, 0, 0]), "empty or negative bbox", (0, 1)),
    ("bbox far outside", _set("bbox", [5000, 5, 20, 30]), "bbox outside the image", (0, 1)),
    ("bbox of strings", _set("bbox", ["5", "5", "20", "30"]), "bbox not 4 numbers", (0, 1)),
    ("no bbox", lambda d, f: d["annotations"][0].pop("bbox"), "bbox not 4 numbers", (0, 1)),
    ("nan keypoint", _set_kp(0, float("nan")), "non-finite keypoints", (0, 1)),
    ("infinite keypoint", _set_kp(1, float("-inf")), "non-finite keypoints", (0, 1)),
    ("huge keypoint", _set_kp(0, 1e12), "keypoint outside the image", (0, 1)),
    ("negative keypoint", _set_kp(1, -500.0), "keypoint outside the image", (0, 1)),
    ("visibility 3", _set_kp(2, 3), "keypoint visibility not 0, 1 or 2", (0, 1)),
    ("short keypoints", _set("keypoints", [1.0] * 50), "keypoints not 51 numbers", (0, 1)),
    ("keypoints of strings", _set("keypoints", ["1"] * 51), "keypoints not 51 numbers", (0, 1)),
    ("boolean keypoints", _set("keypoints", [True] * 51), "keypoints not 51 numbers", (0, 1)),
    ("num_keypoints too high", _set("num_keypoints", 17), "num_keypoints disagrees", (0, 1)),
    ("num_keypoints missing", lambda d, f: d["annotations"][0].pop("num_keypoints"), "no integer num_keypoints",
     (0, 1)),
    ("category not person", _set("category_id", 2), "category not person", (0, 1)),
    ("no category", lambda d, f: d["annotations"][0].pop("category_id"), "no category_id", (0, 1)),
    ("iscrowd 2", _set("iscrowd", 2), "iscrowd not 0 or 1", (0, 1)),
    ("negative area", _set("area", -1.0), "area not a finite number", (0, 1)),
    ("nan area", _set("area", float("nan")), "area not a finite number", (0, 1)),
    ("unknown image_id", _set("image_id", 999), "unknown image_id", (0, 1)),
    ("string annotation id", _set("id", "a"), "id not an integer", (0, 1)),
    ("duplicate annotation id", _dup_ann, "duplicate annotation id", (0, 1)),
    ("annotation not an object", lambda d, f: d["annotations"].__setitem__(0, [1, 2]), "id not an integer", (0, 1)),
    ("duplicate image id", _dup_image, "duplicate image id", (2, 4)),
    ("string image id", lambda d, f: d["images"][0].__setitem__("id", "1"), "id not an integer", (1, 2)),
    ("image size differs", lambda d, f: d["images"][0].update(width=640, height=480), "size differs", (1, 2)),
    ("zero width", lambda d, f: d["images"][0].update(width=0), "width/height not positive", (1, 2)),
    ("no file_name", lambda d, f: d["images"][0].pop("file_name"), "no file_name", (1, 2)),
    ("file name escapes", lambda d, f: d["images"][0].update(file_name="../../etc/passwd"),
     "file name outside the image folder", (1, 2)),
    ("absolute file name", lambda d, f: d["images"][0].update(file_name="/etc/passwd"),
     "file name outside the image folder", (1, 2)),
    ("missing image file", _image_file(lambda p: p.unlink()), "missing image file", (1, 2)),
    ("empty image file", _image_file(lambda p: p.write_bytes(b"")), "unreadable image file", (1, 2)),
    ("not an image", _image_file(lambda p: p.write_bytes(b"hello, not a jpeg" * 10)), "unreadable image file",
     (1, 2)),
    ("truncated jpeg", _image_file(lambda p: p.write_bytes(p.read_bytes()[:-300])), "truncated image file", (1, 2)),
    ("exif-rotated jpeg", _image_file(_exif_rotated), "size differs", (1, 2)),
    ("a png under .jpg", _image_file(lambda p: p.write_bytes(
        cv2.imencode(".png", np.zeros((H, W, 3), np.uint8))[1].tobytes())), None, (0, 0)),
]


def _damaged(tiny_set: Path, tmp_path: Path, damage) -> tuple[Path, dict]:
    root = tmp_path / "data"
    shutil.copytree(tiny_set, root)
    ann_file = root / "annotations" / "person_keypoints_val.json"
    d = json.loads(ann_file.read_text())
    original = copy.deepcopy(d)
    damage(d, root / "images" / "val")
    ann_file.write_text(json.dumps(d))
    return root, original


@pytest.mark.parametrize("name, damage, kind, skipped", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_bad_record_is_left_out_with_a_count_or_refused_under_strict(tiny_set, tmp_path, name, damage, kind,
                                                                      skipped):
    root, original = _damaged(tiny_set, tmp_path, damage)
    before = snapshot(tmp_path)
    with pytest.warns(DataWarning) if kind else _no_data_warning() as record:
        data = CocoKeypoints(root, "val")
    assert len(data.coco.imgs) == len(original["images"]) - skipped[0]
    assert len(data.coco.anns) == len(original["annotations"]) - skipped[1]
    if kind is None:
        assert data.report.ok
        return
    messages = [str(w.message) for w in record if issubclass(w.category, DataWarning)]
    assert len(messages) == 1 and "\n" not in messages[0] and kind in messages[0], messages
    assert f"{skipped[1]} of {len(original['annotations'])} annotations skipped" in messages[0]
    for ann in data.coco.anns.values():  # what is kept is clean
        assert all(np.isfinite(ann["keypoints"])) and all(np.isfinite(ann["bbox"])) and ann["category_id"] == 1
    with pytest.raises(DataError) as e:
        CocoKeypoints(root, "val", strict=True)
    one_line(e, "person_keypoints_val.json", kind, "--strict")
    assert snapshot(tmp_path) == before


class _no_data_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self.record = self._catch.__enter__()
        warnings.simplefilter("always")
        return self.record

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        assert not [w for w in self.record if issubclass(w.category, DataWarning)], [str(w.message) for w in self.record]


FILE_CASES = [
    ("not json", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n"), "not valid JSON"),
    ("truncated json", lambda p: p.write_text(p.read_text()[:100]), "not valid JSON"),
    ("deeply nested json", lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "not valid JSON"),
    ("a list at the top", lambda p: p.write_text("[]"), "top level is not a JSON object"),
    ("no images list", lambda p: p.write_text(json.dumps({"annotations": [], "categories": []})),
     "'images' is missing"),
    ("no person category", lambda p: p.write_text(json.dumps({"images": [], "annotations": [],
                                                              "categories": [{"id": 2, "name": "dog"}]})),
     "no person category"),
    ("not UTF-8", lambda p: p.write_bytes(b'{"images": "\xff\xfe"}'), "not valid JSON"),
]


@pytest.mark.parametrize("name, damage, message", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_broken_annotation_file_is_one_line_in_every_mode(tiny_set, tmp_path, name, damage, message):
    root = tmp_path / "data"
    shutil.copytree(tiny_set, root)
    ann_file = root / "annotations" / "person_keypoints_val.json"
    damage(ann_file)
    before = snapshot(tmp_path)
    for strict in (False, True):
        with pytest.raises(DataError) as e:
            CocoKeypoints(root, "val", strict=strict)
        one_line(e, str(ann_file), message)
    one_line_error(cli("eval", "gt", "--data", root), str(ann_file), message)
    assert snapshot(tmp_path) == before


def test_data_check_reports_what_where_and_how_many(tiny_set, tmp_path):
    root, _ = _damaged(tiny_set, tmp_path, lambda d, folder: (_set("bbox", [float("nan")] * 4)(d, folder),
                                                               _set("category_id", 3, 1)(d, folder),
                                                               (folder / "000002.jpg").unlink()))
    result = cli("data", "check", "--data", root, "--split", "val")
    assert result.exit_code == 1, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert "image skipped: missing image file: 1 (image 2 (000002.jpg))" in lines
    assert "annotation skipped: non-finite bbox: 1 (annotation 1)" in lines
    assert "annotation skipped: category not person: 1 (annotation 2)" in lines
    assert "annotation skipped: on a skipped image: 2" in lines
    report = json.loads(cli("data", "check", "--data", root, "--split", "val", "--json").output)[0]
    assert report["usable_people"] == 2 and report["annotations_of_skipped_images"] == 2
    assert cli("data", "check", "--data", tiny_set).exit_code == 0


def test_training_refuses_a_set_without_usable_people_and_strict_refuses_bad_records(tiny_set, tmp_path):
    def no_people(d, _folder):
        for ann in d["annotations"]:
            ann["bbox"] = [0, 0, 0, 0]

    root = tmp_path / "data"
    shutil.copytree(tiny_set, root)
    train_file = root / "annotations" / "person_keypoints_train.json"
    d = json.loads(train_file.read_text())
    no_people(d, None)
    train_file.write_text(json.dumps(d))
    before = snapshot(tmp_path)
    result = cli("train", "kapao-tiny", "--data", root, "--out", tmp_path / "run", "--epochs", 1, "--workers", 0)
    message = one_line_error(result, "no usable person")
    assert "6 of 6 annotations skipped (6 empty or negative bbox" in message
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()

    shutil.copy(tiny_set / "annotations" / "person_keypoints_train.json", train_file)  # one bad record only
    d = json.loads(train_file.read_text())
    d["annotations"][0]["keypoints"][0] = float("nan")
    train_file.write_text(json.dumps(d))
    before = snapshot(tmp_path)
    result = cli("train", "kapao-tiny", "--data", root, "--out", tmp_path / "run", "--strict", "--epochs", 1)
    one_line_error(result, "non-finite keypoints", "--strict")
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_an_image_broken_during_training_is_one_line_naming_it_even_from_a_worker(tiny_set, tmp_path):
    """Validated at the start, then damaged while training runs (a disk error, another process): the data-loader
    worker's error reaches the loop as one line naming the file, not a worker traceback."""
    import torch

    from pose_edge.data.kapao_samples import KapaoDataset, collate
    from pose_edge.train.engine import one_line_errors

    root = tmp_path / "data"
    shutil.copytree(tiny_set, root)
    dataset = KapaoDataset(CocoKeypoints(root, "train"), (64, 64))
    broken = root / "images" / "train" / "000002.jpg"
    broken.write_bytes(b"\xff\xd8 not the rest of a jpeg")
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=1, collate_fn=collate)
    with pytest.raises(DataError) as e:
        for _ in one_line_errors(loader):
            pass
    one_line(e, str(broken), "not a readable image")


# --------------------------------------------------------------------------------------------------------- eval


def _gt_results(root: Path) -> list[dict]:
    d = json.loads((root / "annotations" / "person_keypoints_val.json").read_text())
    return [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
            for a in d["annotations"]]


def test_results_of_another_category_do_not_score_as_people(tiny_set, tmp_path):
    results = _gt_results(tiny_set)
    for r in results[::2]:
        r["category_id"] = 2
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    before = snapshot(tmp_path)
    result = cli("eval", path, "--data", tiny_set, "--json")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "3 of 6 results are not people (category_id 2, not 1)" in result.output
    stats = json.loads(result.output[result.output.index("{"):])
    assert 0.3 < stats["AR"] < 0.7  # half the people found: the other half's predictions were not counted
    one_line_error(cli("eval", path, "--data", tiny_set, "--strict"), "not people", "--strict")
    assert snapshot(tmp_path) == before


RESULTS_CASES = [
    ("nan keypoints", lambda r: r[0].update(keypoints=[float("nan")] * 51), "finite keypoint values"),
    ("string keypoints", lambda r: r[0].update(keypoints=["1"] * 51), "finite keypoint values"),
    ("keypoints a number", lambda r: r[0].update(keypoints=3), "finite keypoint values"),
    ("infinite score", lambda r: r[0].update(score=float("inf")), "finite score"),
    ("score a string", lambda r: r[0].update(score="high"), "finite score"),
    ("unknown image", lambda r: r[0].update(image_id=123456), "does not contain"),
    ("image_id a list", lambda r: r[0].update(image_id=[1]), "does not contain"),
    ("no score", lambda r: r[0].pop("score"), "needs image_id, keypoints and score"),
    ("a record not an object", lambda r: r.__setitem__(0, "x"), "needs image_id, keypoints and score"),
    ("not a list", lambda r: r.clear() or r.append({"results": []}), "needs image_id"),
]


@pytest.mark.parametrize("name, damage, message", RESULTS_CASES, ids=[c[0] for c in RESULTS_CASES])
def test_malformed_results_file_is_one_line(tiny_set, tmp_path, name, damage, message):
    results = _gt_results(tiny_set)
    damage(results)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "out" / "written.json"
    before = snapshot(tmp_path)
    one_line_error(cli("eval", path, "--data", tiny_set, "--results", out), str(path), message)
    assert snapshot(tmp_path) == before and not out.parent.exists()


@pytest.mark.parametrize("bad", ["folder", "under a file", "no permission"])
def test_unwritable_results_path_fails_before_evaluating(tiny_set, models, tmp_path, bad):
    target = {"folder": tmp_path, "under a file": tmp_path / "file.txt" / "r.json",
              "no permission": Path("/proc/pose-edge-catalogue/r.json")}[bad]
    (tmp_path / "file.txt").write_text("x")
    before = snapshot(tmp_path)
    one_line_error(cli("eval", models["kapao"], "--data", tiny_set, "--results", target, "--device", "cpu"),
                   str(target))
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------- ONNX models: load, eval, predict


def _onnx_variant(models, tmp_path, kind: str, edit) -> Path:
    """A copy of a tiny model with its pose-edge metadata edited (as JSON) or its bytes damaged."""
    import onnx

    path = tmp_path / f"{kind}-edited.onnx"
    proto = onnx.load(str(models[kind]))
    props = {p.key: p for p in proto.metadata_props}
    if callable(edit):
        d = json.loads(props["pose_edge"].value)
        edit(d)
        props["pose_edge"].value = json.dumps(d)
    elif edit == "no metadata":
        del proto.metadata_props[:]
    elif edit == "metadata not json":
        props["pose_edge"].value = "{oops"
    path.write_bytes(proto.SerializeToString())
    return path


def _keypoints(n):
    def edit(d):
        d["model_meta"]["keypoints"] = d["model_meta"]["keypoints"][:n]
    return edit


def _input_size(h, w):
    def edit(d):
        d["model_meta"]["input"].update(height=h, width=w)
    return edit


MODEL_CASES = [
    ("missing file", lambda m, t: t / "nothing.onnx", "no such file"),
    ("random bytes", lambda m, t: _write(t / "r.onnx", np.random.default_rng(0).bytes(5000)), "cannot load it"),
    ("truncated", lambda m, t: _write(t / "t.onnx", m["kapao"].read_bytes()[:3000]), "cannot load it"),
    ("empty", lambda m, t: _write(t / "e.onnx", b""), "cannot load it"),
    ("a folder named .onnx", lambda m, t: (t / "dir.onnx").mkdir() or t / "dir.onnx", "neither best.pt nor last.pt"),
    ("no pose-edge metadata", lambda m, t: _onnx_variant(m, t, "kapao", "no metadata"), "no pose-edge metadata"),
    ("metadata not JSON", lambda m, t: _onnx_variant(m, t, "kapao", "metadata not json"), "not valid JSON"),
    ("metadata of a future format", lambda m, t: _onnx_variant(m, t, "kapao", lambda d: d.update(format=99)),
     "metadata format 99"),
    ("unknown family", lambda m, t: _onnx_variant(m, t, "kapao", lambda d: d["model_meta"].update(family="x")),
     "unknown model family"),
    ("keypoints disagree (kapao)", lambda m, t: _onnx_variant(m, t, "kapao", _keypoints(16)),
     "disagrees with its graph"),
    ("keypoints disagree (top-down)", lambda m, t: _onnx_variant(m, t, "topdown", _keypoints(15)),
     "disagrees with its graph"),
    ("input size disagrees", lambda m, t: _onnx_variant(m, t, "topdown", _input_size(256, 192)),
     "input height 256 in the metadata, 128 in the graph"),
    ("fewer heads than outputs", lambda m, t: _onnx_variant(
        m, t, "kapao", lambda d: d["model_meta"].update(strides=d["model_meta"]["strides"][:3])),
     "disagrees with its graph"),
    ("a checkpoint suffix on bytes", lambda m, t: _write(t / "w.pt", b"not a checkpoint"), "cannot load checkpoint"),
    ("an unknown suffix", lambda m, t: _write(t / "m.tflite", b"x"), "not a model artefact"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name, make, message", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_file_is_one_line_for_load_eval_and_predict(models, tiny_set, tmp_path, name, make, message):
    import pose_edge

    work = tmp_path / "work"
    work.mkdir()
    model = make(models, work)
    frame_dir = tmp_path / "frames"
    frame_dir.mkdir()
    (frame_dir / "a.jpg").write_bytes(_jpeg(0))
    before = snapshot(tmp_path)
    with pytest.raises(PoseEdgeError) as e:
        pose_edge.load(model, device="cpu")
    one_line(e, message)
    one_line_error(cli("eval", model, "--data", tiny_set, "--device", "cpu"), message)
    one_line_error(cli("predict", model, frame_dir, "--out", tmp_path / "pred", "--device", "cpu"), message)
    assert snapshot(tmp_path) == before and not (tmp_path / "pred").exists()


FRAME_CASES = [
    ("float frame", np.zeros((48, 64, 3), np.float32), "uint8"),
    ("gray frame", np.zeros((48, 64), np.uint8), "3 colour channels"),
    ("BGRA frame", np.zeros((48, 64, 4), np.uint8), "3 colour channels"),
    ("empty frame", np.zeros((0, 64, 3), np.uint8), "empty"),
    ("a list", [[0, 0, 0]], "numpy array"),
    ("a 4-D batch", np.zeros((1, 48, 64, 3), np.uint8), "uint8 [H, W, 3]"),
    ("None", None, "numpy array"),
]


@pytest.mark.parametrize("name, frame, message", FRAME_CASES, ids=[c[0] for c in FRAME_CASES])
def test_bad_frames_are_one_line_errors(models, name, frame, message):
    import pose_edge

    est = pose_edge.load(models["kapao"], device="cpu")
    with pytest.raises(PoseEdgeError) as e:
        est(frame)
    one_line(e, message)


@pytest.mark.parametrize("kind", ["kapao", "topdown"])
def test_a_model_that_outputs_nan_gives_finite_poses_and_says_so(tmp_path, kind):
    """Garbage out of the network (NaN where keypoints should be, e.g. an FP16 overflow) is flagged, never passed on
    as poses with NaN in them."""
    import pose_edge

    if kind == "kapao":  # confident people (objectness and person class high) whose keypoint channels are NaN
        bias = [0, 0, 0, 0, 6.0, 6.0] + [-6.0] * 17 + [float("nan")] * 34
        model = kapao_onnx(tmp_path / "nan.onnx", bias=bias)
    else:  # every heatmap NaN
        model = topdown_onnx(tmp_path / "nan.onnx", bias=float("nan"))
    est = pose_edge.load(model, device="cpu", settings="coco")
    frame = cv2.imdecode(np.frombuffer(_jpeg(1), np.uint8), cv2.IMREAD_COLOR)
    boxes = np.array([[5.0, 5.0, 30.0, 40.0]]) if kind == "topdown" else None
    with pytest.warns(UserWarning, match="the model output NaN or Inf"):
        poses = est(frame, boxes=boxes)
    assert len(poses) >= 1
    for array in (poses.keypoints, poses.boxes, poses.scores):
        assert np.isfinite(array).all()
    assert (poses.keypoints == 0).all() and poses.extra["non_finite_keypoints"] == 17 * len(poses)


PREDICT_CASES = [
    ("missing source", lambda t: t / "nothing.jpg", {}, "no such file or folder"),
    ("empty folder", lambda t: (t / "empty").mkdir() or t / "empty", {}, "no images in this folder"),
    ("not an image", lambda t: _write(t / "x.jpg", b"not a jpeg"), {}, "not a readable image"),
    ("truncated jpeg", lambda t: _write(t / "x.jpg", _jpeg(3, (320, 240))[:-2000]), {}, "truncated JPEG"),
    ("corrupt video", lambda t: _write(t / "x.mp4", b"\x00" * 4096), {}, "x.mp4"),
    ("--out is a file", lambda t: _write(t / "ok.jpg", _jpeg(2)), {"out": "file"}, "is a file"),
    ("--out unwritable", lambda t: _write(t / "ok.jpg", _jpeg(2)), {"out": "/proc/pose-edge-catalogue/pred"},
     "/proc/pose-edge-catalogue"),
]


@pytest.mark.parametrize("name, make, options, message", PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES])
def test_predict_bad_sources_and_outputs_are_one_line(models, tmp_path, name, make, options, message):
    src = tmp_path / "src"
    src.mkdir()
    source = make(src)
    out = tmp_path / "pred" if options.get("out") in (None, "file") else Path(options["out"])
    if options.get("out") == "file":
        out.write_text("keep me")
    before = snapshot(tmp_path)
    one_line_error(cli("predict", models["kapao"], source, "--out", out, "--device", "cpu"), message)
    assert snapshot(tmp_path) == before


def test_predict_skips_a_bad_image_in_a_folder_with_a_warning(models, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(_jpeg(1))
    (src / "b.jpg").write_bytes(_jpeg(2)[:-500])  # truncated
    result = cli("predict", models["kapao"], src, "--out", tmp_path / "pred", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["frames"] == 1 and summary["skipped"] == 1
    assert "b.jpg" in result.output and "truncated JPEG" in result.output


# ------------------------------------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A kapao-tiny run folder (random weights, seed 0) as training writes it."""
    import dataclasses

    import torch

    from pose_edge.models import build_model, get_preset, model_meta
    from pose_edge.models.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    preset = get_preset("kapao-tiny")
    state = {"kind": "weights", "preset": dataclasses.asdict(preset), "meta": model_meta(preset).to_json(),
             "model": build_model(preset).state_dict(), "epoch": 0, "iteration": 0, "metrics": {}, "config": {}}
    save_checkpoint(run / "best.pt", state)
    save_checkpoint(run / "last.pt", {**state, "kind": "full"})
    (run / "meta.json").write_text(model_meta(preset).to_json())
    return run


EXPORT_CASES = [
    ("--out names the checkpoint", "run", lambda run, onnx, t: ["--out", run / "best.pt"], "checkpoint's name"),
    ("--out names last.pt via a symlink", "run", lambda run, onnx, t: ["--out", _link(t / "x.onnx", run / "last.pt")],
     "overwrite its own input"),
    ("--out names the run's meta.json", "run", lambda run, onnx, t: ["--out", run / "meta.json"],
     "overwrite its own input"),
    ("--out names the source ONNX", "onnx", lambda run, onnx, t: ["--engine", "trt", "--out", onnx],
     "overwrite its own input"),
    ("int8 from an FP32 graph", "onnx", lambda run, onnx, t: ["--engine", "trt", "--precision", "int8"],
     "is an FP32 graph"),
    ("fp16 from an FP32 graph", "onnx", lambda run, onnx, t: ["--engine", "trt", "--precision", "fp16"],
     "would build FP32"),
    ("--out is a folder", "run", lambda run, onnx, t: ["--out", t], "is a directory"),
    ("--out under a file", "run", lambda run, onnx, t: ["--out", _write(t / "f", b"x") / "m.onnx"], "not a folder"),
    ("--out unwritable", "run", lambda run, onnx, t: ["--out", "/proc/pose-edge-catalogue/m.onnx"],
     "cannot create files in /proc"),
    ("an ONNX exported to ONNX", "onnx", lambda run, onnx, t: [], "already an ONNX model"),
    ("a run folder without checkpoints", "empty", lambda run, onnx, t: [], "neither best.pt nor last.pt"),
]


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("name, source, args, message", EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_export_refuses_with_one_line_and_loses_nothing(run_folder, models, tmp_path, name, source, args, message):
    run = tmp_path / "run"
    shutil.copytree(run_folder, run)
    onnx_path = tmp_path / "kapao-tiny.onnx"
    shutil.copy(models["kapao"], onnx_path)
    (tmp_path / "empty").mkdir()
    artifact = {"run": run, "onnx": onnx_path, "empty": tmp_path / "empty"}[source]
    extra = args(run, onnx_path, tmp_path)
    before = snapshot(tmp_path)
    one_line_error(cli("export", artifact, *extra), message)
    assert snapshot(tmp_path) == before


def test_export_refuses_an_onnx_whose_metadata_claims_another_precision(models, tmp_path):
    edited = _onnx_variant(models, tmp_path, "kapao", lambda d: d.update(precision="int8"))
    before = snapshot(tmp_path)
    one_line_error(cli("export", edited, "--engine", "trt"), "metadata says int8 but the graph is fp32")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------- engine loading


@pytest.fixture
def engine(models, tmp_path):
    """An engine file with its sidecar as `pose-edge export --engine trt` writes them (the bytes are not a real
    engine: every check below happens before TensorRT would deserialise anything)."""
    from pose_edge.runtime.ort_backend import OrtBackend

    onnx_path = tmp_path / "kapao-tiny.onnx"
    shutil.copy(models["kapao"], onnx_path)
    info = OrtBackend(onnx_path, providers=("CPUExecutionProvider",)).info
    path = tmp_path / "kapao-tiny.engine"
    engine_with_sidecar(path, onnx_path, info, data=b"engine A" * 100)
    other = tmp_path / "other.engine"
    engine_with_sidecar(other, onnx_path, info, data=b"engine B" * 100)
    return path, other, onnx_path


def _edit_sidecar(path: Path, edit) -> None:
    from pose_edge.runtime.engine_sidecar import sidecar_path

    side = sidecar_path(path)
    d = json.loads(side.read_text())
    edit(d)
    side.write_text(json.dumps(d))


def _swap(engine, other, _onnx):
    from pose_edge.runtime.engine_sidecar import sidecar_path

    shutil.copy(sidecar_path(other), sidecar_path(engine))


def _planted_module(tmp_path: Path) -> str:
    """A module on sys.path that leaves a marker file if anything imports it."""
    (tmp_path / "planted_trt.py").write_text(f"open({str(tmp_path / 'IMPORTED')!r}, 'w').close()\n")
    sys.path.insert(0, str(tmp_path))
    return "planted_trt"


ENGINE_CASES = [
    ("sidecar of another engine", _swap, "is not the engine its metadata file"),
    ("engine changed after its build", lambda e, o, x: e.write_bytes(e.read_bytes() + b"\0"),
     "is not the engine its metadata file"),
    ("engine truncated", lambda e, o, x: e.write_bytes(e.read_bytes()[:10]), "is not the engine its metadata file"),
    ("sidecar missing", lambda e, o, x: Path(f"{e}.json").unlink(), "metadata file kapao-tiny.engine.json is missing"),
    ("sidecar not JSON", lambda e, o, x: Path(f"{e}.json").write_text("{"), "unreadable or malformed"),
    ("sidecar a list", lambda e, o, x: Path(f"{e}.json").write_text("[]"), "not a JSON object"),
    ("sidecar of version 1", lambda e, o, x: _edit_sidecar(e, lambda d: d.update(version=1)), "version"),
    ("sidecar without the engine hash", lambda e, o, x: _edit_sidecar(e, lambda d: d.pop("engine_sha256")),
     "unreadable or malformed"),
    ("engine hash not hex", lambda e, o, x: _edit_sidecar(e, lambda d: d.update(engine_sha256="z" * 64)),
     "engine_sha256 is not a sha256"),
    ("module outside the allow-list", lambda e, o, x: _edit_sidecar(e, lambda d: d.update(trt_module="os")),
     "trt_module 'os' is not one of tensorrt, tensorrt_rtx"),
    ("profile of strings", lambda e, o, x: _edit_sidecar(e, lambda d: d["profile"].update(max=["4", 256, 320, 3])),
     "profile is not"),
    ("profile batch inverted", lambda e, o, x: _edit_sidecar(e, lambda d: d["profile"]["min"].__setitem__(0, 9)),
     "min <= opt <= max"),
    ("profile size disagrees with the graph", lambda e, o, x: _edit_sidecar(
        e, lambda d: [d["profile"][k].__setitem__(1, 128) for k in ("min", "opt", "max")]),
     "input height 256 in the metadata, 128 in the graph"),
    ("outputs disagree with the graph", lambda e, o, x: _edit_sidecar(e, lambda d: d["outputs"].pop()),
     "disagrees with its graph"),
    ("an unknown extra field", lambda e, o, x: _edit_sidecar(e, lambda d: d.update(run="rm -rf /")),
     "unreadable or malformed"),
]


@pytest.mark.parametrize("name, damage, message", ENGINE_CASES, ids=[c[0] for c in ENGINE_CASES])
def test_engine_and_sidecar_are_checked_before_anything_of_tensorrt(engine, tmp_path, name, damage, message):
    import pose_edge

    path, other, onnx_path = engine
    damage(path, other, onnx_path)
    before = snapshot(tmp_path)
    with pytest.raises(ArtifactError) as e:
        pose_edge.load(path)
    one_line(e, message)
    assert snapshot(tmp_path) == before


def test_a_planted_module_name_is_never_imported(engine, tmp_path):
    import pose_edge

    path, _, _ = engine
    name = _planted_module(tmp_path)
    try:
        _edit_sidecar(path, lambda d: d.update(trt_module=name))
        with pytest.raises(ArtifactError, match="is not one of tensorrt, tensorrt_rtx"):
            pose_edge.load(path)
        assert not (tmp_path / "IMPORTED").exists() and name not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))


def test_a_deployed_engine_without_its_onnx_is_still_tied_to_its_sidecar(engine, tmp_path):
    """Engines travel without their ONNX. The source-ONNX check cannot run then, but the engine hash does: a valid
    pair passes every check up to the GPU (here: refused for want of one), a swapped sidecar does not."""
    import pose_edge
    from pose_edge.runtime.engine_sidecar import EngineSidecar, check_sidecar
    from pose_edge.runtime.gpu import gpu_status

    path, other, onnx_path = engine
    onnx_path.unlink()
    sidecar = EngineSidecar.read(path)
    check_sidecar(sidecar, path, "tensorrt", "10.3.0", "Orin", "8.7")  # nothing left to compare: accepted
    if not gpu_status()[0]:
        with pytest.raises(ArtifactError, match="needs an NVIDIA GPU"):
            pose_edge.load(path)
    _swap(path, other, onnx_path)
    with pytest.raises(ArtifactError, match="is not the engine its metadata file"):
        pose_edge.load(path)


def test_a_stale_onnx_beside_the_engine_is_refused(engine):
    from pose_edge.runtime.engine_sidecar import EngineSidecar, check_sidecar

    path, _, onnx_path = engine
    sidecar = EngineSidecar.read(path)
    check_sidecar(sidecar, path, "tensorrt", "10.3.0", "Orin", "8.7")
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="stale"):
        check_sidecar(sidecar, path, "tensorrt", "10.3.0", "Orin", "8.7")


# -------------------------------------------------------------------------------------------- data synth, files


@pytest.mark.parametrize("size", ["31x240", "320x8", "9000x100"])
def test_synth_sizes_out_of_range_are_one_line(tmp_path, size):
    one_line_error(cli("data", "synth", "--out", tmp_path / "d", "--size", size, "--train", 1, "--val", 1),
                   f"image size {size}")
    assert not (tmp_path / "d").exists()


def test_atomic_writes_keep_the_umask_and_the_replaced_file_s_mode(tmp_path):
    import os

    from pose_edge.fsutil import atomic_write_bytes

    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640
        existing = tmp_path / "shared.bin"
        existing.write_bytes(b"old")
        existing.chmod(0o644)
        atomic_write_bytes(existing, b"new")
        assert existing.stat().st_mode & 0o777 == 0o644 and existing.read_bytes() == b"new"
    finally:
        os.umask(old)


def test_stale_temporaries_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess

    from pose_edge.fsutil import _temp_prefix, atomic_write_bytes

    target = tmp_path / "model.onnx"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{_temp_prefix(target)}{int(dead.stdout)}.abc.tmp"
    live = tmp_path / f"{_temp_prefix(target)}{os.getppid()}.def.tmp"  # the parent runs: a writer still at work
    other_target = tmp_path / f"{_temp_prefix(tmp_path / 'other.onnx')}{int(dead.stdout)}.ghi.tmp"
    for p in (stale, live, other_target):
        p.write_bytes(b"half a file")
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert not stale.exists() and live.exists() and other_target.exists()


def test_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    import os

    from pose_edge.fsutil import atomic_write_bytes

    target = tmp_path / "last.pt"
    target.write_bytes(b"previous")

    def full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(PoseEdgeError) as e:
        atomic_write_bytes(target, b"new")
    one_line(e, "No space left on device", str(target))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"] and target.read_bytes() == b"previous"


def test_scratch_folders_of_killed_exports_are_removed(tmp_path, monkeypatch):
    import os
    import subprocess
    import tempfile

    from pose_edge.fsutil import _host, temporary_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    stale = tmp_path / f"pose-edge-export-{_host()}.{dead}.abc"
    live = tmp_path / f"pose-edge-export-{_host()}.{os.getppid()}.def"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"x" * 1000)
    with temporary_folder("pose-edge-export-") as scratch:
        assert scratch.parent == tmp_path and scratch.is_dir()
    assert not scratch.exists() and not stale.exists() and live.exists()
