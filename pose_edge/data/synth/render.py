"""Drawing: textured backgrounds and posed figures, with a part map that says which figure part owns each pixel.

Every part is drawn twice with the same geometry, once in colour into the image and once as an integer id into the
owner map, so that visibility labels are read off exactly what was drawn. Parts are painted far to near.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pose_edge.data.synth.body import Proportions, Skeleton3D

# Sub-pixel drawing: OpenCV takes fixed-point coordinates with this many fractional bits.
SHIFT = 4
_ONE = 1 << SHIFT

PARTS = (
    "torso", "neck", "head", "face", "nose", "l_eye", "r_eye", "l_ear", "r_ear",
    "l_upper_arm", "r_upper_arm", "l_forearm", "r_forearm", "l_hand", "r_hand",
    "l_thigh", "r_thigh", "l_shin", "r_shin", "l_foot", "r_foot",
)
PART_ID = {name: i for i, name in enumerate(PARTS)}
NUM_PARTS = len(PARTS)

# The parts on which each COCO keypoint lies when nothing else covers it.
KEYPOINT_PARTS: tuple[frozenset[int], ...] = tuple(
    frozenset(PART_ID[p] for p in parts)
    for parts in (
        ("head", "face", "nose"), ("head", "face", "l_eye"), ("head", "face", "r_eye"),
        ("head", "face", "l_ear"), ("head", "face", "r_ear"),
        ("torso", "l_upper_arm"), ("torso", "r_upper_arm"), ("l_upper_arm", "l_forearm"),
        ("r_upper_arm", "r_forearm"), ("l_forearm", "l_hand"), ("r_forearm", "r_hand"),
        ("torso", "l_thigh"), ("torso", "r_thigh"), ("l_thigh", "l_shin"), ("r_thigh", "r_shin"),
        ("l_shin", "l_foot"), ("r_shin", "r_foot"),
    )
)

SKIN_TONES = np.array([  # BGR, light to dark
    (196, 215, 240), (160, 190, 228), (130, 170, 215), (105, 145, 198), (80, 115, 165), (55, 80, 120), (40, 58, 90),
], dtype=np.float64)


@dataclass(frozen=True)
class Appearance:
    """Colours (BGR) of one figure's skin, hair and clothes."""

    skin: tuple
    hair: tuple
    shirt: tuple
    pants: tuple
    shoes: tuple
    long_sleeves: bool
    shorts: bool
    stripes: bool


def _random_colour(rng: np.random.Generator, sat=(40, 230), val=(40, 240)) -> tuple:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(*sat), rng.integers(*val)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def sample_appearance(rng: np.random.Generator) -> Appearance:
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1)
    hair = np.array([(20, 20, 25), (30, 45, 70), (40, 80, 130), (90, 150, 200), (170, 170, 170)][rng.integers(5)])
    return Appearance(
        skin=tuple(int(c) for c in np.clip(skin, 0, 255)),
        hair=tuple(int(c) for c in np.clip(hair * rng.uniform(0.8, 1.2), 0, 255)),
        shirt=_random_colour(rng), pants=_random_colour(rng, sat=(20, 200), val=(30, 200)),
        shoes=_random_colour(rng, sat=(0, 120), val=(20, 120)),
        long_sleeves=bool(rng.uniform() < 0.5), shorts=bool(rng.uniform() < 0.25), stripes=bool(rng.uniform() < 0.3),
    )


def render_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured scene without people: a smooth colour field, noise at two scales, and clutter shapes."""
    gy, gx = rng.integers(2, 5, size=2)
    grey = rng.uniform(60, 200, size=(gy, gx, 1))
    field = (grey + rng.uniform(0.15, 0.6) * (rng.uniform(20, 235, size=(gy, gx, 3)) - grey)).astype(np.float32)
    image = cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    for cells, amplitude in ((rng.integers(8, 40), rng.uniform(5, 30)), (rng.integers(60, 200), rng.uniform(0, 15))):
        noise = rng.normal(0, amplitude, size=(max(2, cells * height // width), cells, 1)).astype(np.float32)
        image += cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
    if rng.uniform() < 0.4:  # a floor, wall or road: a plane darker towards one side
        ramp = np.linspace(rng.uniform(-40, 0), rng.uniform(0, 40), height, dtype=np.float32)[:, None, None]
        image += ramp
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 14)):
        _draw_clutter(image, rng)
    return image


def _draw_clutter(image: np.ndarray, rng: np.random.Generator) -> None:
    """A non-human shape: box, ellipse, pole or stripe band (furniture, signs, trees, road markings)."""
    h, w = image.shape[:2]
    colour = _random_colour(rng, sat=(0, 200), val=(20, 240))
    x, y = int(rng.uniform(-0.1, 1.0) * w), int(rng.uniform(-0.1, 1.0) * h)
    size = int(rng.uniform(0.03, 0.4) * max(w, h))
    kind = rng.integers(4)
    if kind == 0:
        cv2.rectangle(image, (x, y), (x + size, y + int(size * rng.uniform(0.3, 2))), colour, -1)
    elif kind == 1:
        cv2.ellipse(image, (x, y), (size // 2, int(size * rng.uniform(0.2, 0.6))), float(rng.uniform(0, 180)),
                    0, 360, colour, -1)
    elif kind == 2:
        cv2.line(image, (x, y), (x + int(rng.normal(0, 0.1) * size), y + size * 2), colour,
                 max(1, size // 8))
    else:
        for i in range(int(rng.integers(3, 8))):
            yy = y + i * max(2, size // 6)
            cv2.line(image, (x, yy), (x + 2 * size, yy + int(rng.normal(0, 5))), colour, max(1, size // 16))


@dataclass(frozen=True)
class PlacedFigure:
    """A posed body mapped into the image: world (x, y) * scale + offset, y flipped; depth kept in world units."""

    skeleton: Skeleton3D
    props: Proportions
    appearance: Appearance
    scale: float  # pixels per unit of standing height
    offset: tuple[float, float]  # image position of the world origin (the pelvis)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """world points [..., 3] -> image points [..., 2]."""
        points = np.asarray(points, dtype=np.float64)
        return np.stack([points[..., 0] * self.scale + self.offset[0],
                         -points[..., 1] * self.scale + self.offset[1]], axis=-1)

    def keypoints_image(self) -> np.ndarray:
        return self.to_image(self.skeleton.keypoints)


def _fixed(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * _ONE)), int(round(p[1] * _ONE))


def _shade(colour: tuple, factor: float) -> tuple:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


class Painter:
    """Draws one figure's parts into the image and the owner map (value figure_index * NUM_PARTS + part id)."""

    def __init__(self, image: np.ndarray, owner: np.ndarray, figure_index: int):
        self.image, self.owner, self.base = image, owner, figure_index * NUM_PARTS

    def _targets(self, part: str, colour: tuple):
        return (self.image, colour), (self.owner, self.base + PART_ID[part])

    def capsule(self, part: str, a: np.ndarray, b: np.ndarray, width_px: float, colour: tuple) -> None:
        thickness = max(1, int(round(width_px)))
        for target, value in self._targets(part, colour):
            cv2.line(target, _fixed(a), _fixed(b), value, thickness, cv2.LINE_8, SHIFT)

    def disc(self, part: str, centre: np.ndarray, radius_px: float, colour: tuple) -> None:
        radius = max(int(round(radius_px * _ONE)), _ONE // 2)
        for target, value in self._targets(part, colour):
            cv2.circle(target, _fixed(centre), radius, value, -1, cv2.LINE_8, SHIFT)

    def polygon(self, part: str, points: np.ndarray, colour: tuple) -> None:
        pts = np.round(points * _ONE).astype(np.int32).reshape(-1, 1, 2)
        for target, value in self._targets(part, colour):
            cv2.fillPoly(target, [pts], value, cv2.LINE_8, SHIFT)


# Depth (units of height) behind the torso's middle beyond which a joint under the torso counts as hidden.
TORSO_HIDES_BEYOND = 0.055

# Face keypoints with a normal turned further from the camera than this (z component) are hidden behind the head.
FACE_HIDDEN_NZ = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.35, 4: 0.35}


def face_point_hidden(skeleton: Skeleton3D) -> np.ndarray:
    """[17] bool: face keypoints that turn away from the camera (the back of the head hides them)."""
    hidden = np.zeros(17, dtype=bool)
    for k, limit in FACE_HIDDEN_NZ.items():
        hidden[k] = skeleton.normals[k, 2] > limit
    return hidden


def draw_figure(image: np.ndarray, owner: np.ndarray, fig: PlacedFigure, figure_index: int) -> None:
    """Paint one figure far to near: each part sorted by the depth of its middle."""
    sk, props, look, s = fig.skeleton, fig.props, fig.appearance, fig.scale
    kp3 = sk.keypoints
    kp = fig.to_image(kp3)
    paint = Painter(image, owner, figure_index)
    z_centre = 0.5 * (sk.neck[2] + sk.pelvis[2])

    def depth_shade(z: float) -> float:  # far side a little darker: a depth cue, as light falls on real people
        return float(np.clip(1.0 - 2.0 * (z - z_centre), 0.7, 1.15))

    jobs: list[tuple[float, callable]] = []

    def limb(part: str, i3: np.ndarray, j3: np.ndarray, width: float, colour: tuple) -> None:
        z = 0.5 * (i3[2] + j3[2])
        a, b = fig.to_image(i3), fig.to_image(j3)
        jobs.append((z, lambda: paint.capsule(part, a, b, width * s, _shade(colour, depth_shade(z)))))

    sleeve = look.shirt if look.long_sleeves else look.skin
    legs_lower = look.skin if look.shorts else look.pants
    for side, li in (("l", 0), ("r", 1)):
        limb(f"{side}_upper_arm", kp3[5 + li], kp3[7 + li], props.arm_width, look.shirt)
        limb(f"{side}_forearm", kp3[7 + li], kp3[9 + li], props.forearm_width, sleeve)
        limb(f"{side}_hand", kp3[9 + li], sk.hand_tips[li], props.forearm_width * 1.15, look.skin)
        limb(f"{side}_thigh", kp3[11 + li], kp3[13 + li], props.thigh_width, look.pants)
        limb(f"{side}_shin", kp3[13 + li], kp3[15 + li], props.shin_width, legs_lower)
        limb(f"{side}_foot", kp3[15 + li], sk.toes[li], props.shin_width * 0.9, look.shoes)
    limb("neck", sk.neck, sk.head_center, 0.045, look.skin)

    # Torso: a quadrilateral along the spine, at least as wide as the body is deep (it is not flat in profile).
    neck2, pelvis2 = fig.to_image(sk.neck), fig.to_image(sk.pelvis)
    axis = neck2 - pelvis2
    perp = np.array([-axis[1], axis[0]]) / max(np.linalg.norm(axis), 1e-6)
    half_top = max(abs(np.dot(kp[5] - kp[6], perp)) / 2 + props.arm_width * s * 0.4, props.torso_half_depth * s)
    half_bottom = max(abs(np.dot(kp[11] - kp[12], perp)) / 2 + props.thigh_width * s * 0.45,
                      props.torso_half_depth * s)
    top = neck2 - 0.04 * axis
    quad = np.array([top + half_top * perp, top - half_top * perp,
                     pelvis2 - half_bottom * perp, pelvis2 + half_bottom * perp])
    facing = sk.torso_front[2] < 0

    def torso() -> None:
        colour = _shade(look.shirt, depth_shade(z_centre))
        paint.polygon("torso", quad, colour)
        if look.stripes:
            for f in np.linspace(0.25, 0.85, 4):
                a, b = quad[0] + f * (quad[3] - quad[0]), quad[1] + f * (quad[2] - quad[1])
                paint.capsule("torso", a, b, max(1.0, 0.012 * s), _shade(colour, 0.6))
        if facing:  # the neckline shows the chest faces the camera
            paint.disc("torso", top - 0.03 * axis, 0.03 * s, look.skin)

    jobs.append((z_centre, torso))

    # Head: hair all round, the face towards where the head looks, then the features that face the camera.
    centre2 = fig.to_image(sk.head_center)
    hidden = face_point_hidden(sk)

    def head() -> None:
        r = props.head_r * s
        paint.disc("head", centre2, r, look.hair)
        if sk.face_dir[2] < 0.3:
            face_c = fig.to_image(sk.head_center + props.head_r * (0.38 * sk.face_dir - 0.12 * sk.head_up))
            paint.disc("face", face_c, 0.68 * r, look.skin)
        feature_r = max(0.5, 0.01 * s)
        for k, part, colour, size in ((3, "l_ear", _shade(look.skin, 0.8), 1.4), (4, "r_ear", _shade(look.skin, 0.8), 1.4),
                                      (1, "l_eye", (30, 25, 20), 1.0), (2, "r_eye", (30, 25, 20), 1.0),
                                      (0, "nose", _shade(look.skin, 0.7), 1.1)):
            if not hidden[k]:
                paint.disc(part, kp[k], feature_r * size, colour)

    jobs.append((float(sk.head_center[2]), head))

    for _, job in sorted(jobs, key=lambda j: -j[0]):
        job()


def pixel_of(points: np.ndarray) -> np.ndarray:
    """The pixel [..., 2] (column, row) a sub-pixel point lies in; pixel centres are at integer coordinates."""
    return np.floor(np.asarray(points) + 0.5).astype(np.int64)


def visibility(fig: PlacedFigure, figure_index: int, owner: np.ndarray, kp: np.ndarray) -> np.ndarray:
    """COCO visibility [17] of a drawn figure: 2 visible, 1 labelled but occluded, 0 not labelled.

    0: outside the image, or a face point turned away from the camera (annotators do not label the hidden side
       of a head). 2: the pixel under the keypoint shows one of the figure's own parts it lies on. 1: anything else
       covers it: another figure, or another part of the same body (an arm across the hip, the torso hiding the far
       shoulder in profile).

    kp: the figure's keypoints [17, 2] in image pixels, as they will be stored.
    """
    h, w = owner.shape
    z = fig.skeleton.keypoints[:, 2]
    z_torso = 0.5 * (fig.skeleton.neck[2] + fig.skeleton.pelvis[2])
    px = pixel_of(kp)
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    v = np.zeros(17, dtype=np.int64)
    hidden = face_point_hidden(fig.skeleton)
    base = figure_index * NUM_PARTS
    for k in range(17):
        if not inside[k] or hidden[k]:
            continue
        o = int(owner[px[k, 1], px[k, 0]])
        own_part = base <= o < base + NUM_PARTS and (o - base) in KEYPOINT_PARTS[k]
        # The torso is a solid: a joint well behind its middle (a far shoulder or hip once the body turns more than
        # about 30-45 degrees) is hidden by it even though the torso is one of "its own" parts.
        behind_torso = o == base + PART_ID["torso"] and z[k] > z_torso + TORSO_HIDES_BEYOND
        v[k] = 2 if own_part and not behind_torso else 1
    return v
