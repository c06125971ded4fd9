"""Post-processing settings, defined once: what a robot wants (DEPLOY) and what COCO scoring wants (COCO_EVAL).

COCO's AP rewards keeping every candidate down to a confidence of 0.001 (a low-confidence true pose still adds
recall), so evaluation keeps up to 300 poses an image. A robot wants the people who are there: the deployment
profile keeps confident poses only, so `pose_edge.load()` returns a handful of people, not hundreds of ghosts.
`pose-edge eval` and every other evaluation (training, `export --val`, `bench`) use COCO_EVAL; `pose_edge.load()`
and `pose-edge predict` use DEPLOY. PAPER and PAPER_TTA are the published papers' evaluation settings, for scoring
imported weights the way their authors did (`pose-edge eval --settings paper`). Every profile can be overridden field
by field (dataclasses.replace, load(..., conf=...), the eval options).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Thresholds:
    """Candidate selection, NMS and fusion of a KAPAO-style head (and the person detector's person pass). The defaults
    are the reference's COCO evaluation settings (KAPAO's val.py)."""

    conf_thres: float = 0.001  # person pass: obj and obj * cls must exceed it
    iou_thres: float = 0.65  # person pass NMS IoU
    conf_thres_kp: float = 0.2  # keypoint pass confidence
    iou_thres_kp: float = 0.25  # keypoint pass NMS IoU
    conf_thres_kp_person: float = 0.3  # only poses more confident than this receive keypoint objects
    overwrite_tol: float = 50.0  # original-image pixels
    max_det: int = 300  # per pass and image
    max_nms: int = 30000  # candidates entering each NMS
    use_kp_dets: bool = True  # fuse keypoint objects (False: poses keep their regressed keypoints, all conf 0)


COCO_THRESHOLDS = Thresholds()


AUTO_REFINE = "auto"  # the refinement of the model's convention: DARK, or the quarter step for Simple Baselines'


@dataclass(frozen=True)
class TopDownSettings:
    """How a heatmap model turns person boxes into poses (Simple Baselines' test settings by default)."""

    refine: str = AUTO_REFINE  # sub-pixel refinement of heatmap peaks: "auto", "dark", "quarter" or "none"
    keypoint_threshold: float = 0.2  # rescoring: mean of the keypoint scores above it (IN_VIS_THRE)
    oks_nms: float | None = 0.9  # OKS-NMS threshold between poses of one image; None: off
    box_padding: float = 1.25  # person boxes grow by this factor before cropping
    max_batch: int = 64  # crops per backend call


@dataclass(frozen=True)
class Settings:
    """Everything post-processing needs, for both paradigms.

    single_stage: KAPAO's person and keypoint passes. detector: the person detector in front of a top-down model
    (person pass only). topdown: the heatmap model's decoding and scoring. min_score: poses scoring below it are
    not returned (both paradigms).
    Test-time augmentation: flip (top-down: heatmaps of mirrored crops averaged; KAPAO: the mirrored image at scale 1
    as an extra pass); scales: KAPAO's passes at these scales of the letterboxed input (above 1 needs a backend that
    takes larger inputs: the ONNX export, whose height and width are dynamic, in ONNX Runtime); scale_flips: KAPAO
    only, one bool per scale saying whether that pass runs mirrored, as val.py's --scales / --flips pair them (then
    `flip` adds no pass); None: `flip` decides. The rows of all passes meet in one NMS.
    rect: KAPAO's rectangular letterbox (val.py --rect): each image padded only to the next multiple of 64 instead of
    the square input (needs a backend that takes other sizes, as above).
    clip: the coordinate clipping of KAPAO's val.py, reproduced on purpose (off by default): person boxes and
    keypoint-object boxes are clipped to the image before fusion (moving a clipped keypoint object's centre), and so
    are the first two keypoints of every pose (nose and left eye; its clip_coords treats the pose array's first four
    numbers as a box). Other keypoints may lie outside the image, as the network put them.
    """

    single_stage: Thresholds = field(default_factory=Thresholds)
    detector: Thresholds = field(default_factory=lambda: Thresholds(use_kp_dets=False))
    topdown: TopDownSettings = field(default_factory=TopDownSettings)
    min_score: float = 0.0
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    scale_flips: tuple[bool, ...] | None = None
    rect: bool = False
    clip: bool = False


# COCO scoring: keep everything (KAPAO's val.py; Simple Baselines' test settings). Detector boxes as KAPAO's person
# pass evaluates them; pycocotools reads at most 100 boxes an image, so more would only cost time.
COCO_EVAL = Settings(
    single_stage=Thresholds(),
    detector=Thresholds(conf_thres=0.001, iou_thres=0.65, max_det=100, use_kp_dets=False),
    topdown=TopDownSettings(),
    min_score=0.0,
)

# The published papers' evaluation, to reproduce their COCO val2017 AP with imported weights: KAPAO as its README
# scores it (val.py --rect: rectangular letterbox, clipping, no test-time augmentation); the top-down models with
# the flip test and each model's own convention (Simple Baselines: quarter step and shifted flip; DarkPose: DARK).
PAPER = replace(COCO_EVAL, flip=True, scale_flips=(False,), rect=True, clip=True)
# KAPAO's published test-time augmentation (val.py --scales 0.8 1 1.2 --flips -1 3 -1, square 1280 input): the image
# at 0.8, mirrored at 1 (no unmirrored pass at 1), and at 1.2.
PAPER_TTA = replace(PAPER, rect=False, scales=(0.8, 1.0, 1.2), scale_flips=(False, True, False))

# A robot: KAPAO's demo thresholds (demos/image.py: conf 0.7, IoU 0.45, keypoint objects 0.5 / 0.45, fusion into
# poses above 0.2 within 25 px); detector boxes above 0.5 (a top-down model runs once per box, so every false box
# costs a crop); poses below 0.3 dropped.
DEPLOY = Settings(
    single_stage=Thresholds(conf_thres=0.7, iou_thres=0.45, conf_thres_kp=0.5, iou_thres_kp=0.45,
                            conf_thres_kp_person=0.2, overwrite_tol=25.0, max_det=100),
    detector=Thresholds(conf_thres=0.5, iou_thres=0.45, max_det=50, use_kp_dets=False),
    topdown=TopDownSettings(),
    min_score=0.3,
)

PROFILES = {"deploy": DEPLOY, "coco": COCO_EVAL, "paper": PAPER, "paper-tta": PAPER_TTA}
