"""An articulated 3-D stick body: proportions, joint angles within human limits, and forward kinematics.

Body frame: x to the person's left, y up, z backwards (a person at yaw 0 faces the camera, which looks along +z).
Lengths are in units of standing height. The projection to the image is orthographic: image x = world x, image
y = -world y, and z is depth (larger is farther from the camera).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

POSE_KINDS = ("standing", "walking", "sitting", "arms_raised", "lying")
_POSE_WEIGHTS = (0.25, 0.3, 0.15, 0.15, 0.15)

DOWN = np.array([0.0, -1.0, 0.0])
UP = np.array([0.0, 1.0, 0.0])


def rot_x(a: float) -> np.ndarray:
    """Rotation about x; positive turns a downward vector forwards (towards the camera, -z)."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    """Rotation about the vertical axis (yaw); positive turns a person facing the camera towards image left."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    """Rotation in the image plane; positive turns a downward vector towards +x."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@dataclass(frozen=True)
class Proportions:
    """Segment lengths and widths in units of standing height (an adult is about 7.5 heads tall)."""

    head_r: float = 0.065
    neck: float = 0.035
    torso: float = 0.30
    shoulder_half: float = 0.105
    hip_half: float = 0.075
    upper_arm: float = 0.17
    forearm: float = 0.15
    hand: float = 0.045
    thigh: float = 0.245
    shin: float = 0.245
    foot: float = 0.07
    torso_half_depth: float = 0.06
    arm_width: float = 0.045
    forearm_width: float = 0.038
    thigh_width: float = 0.075
    shin_width: float = 0.055


def sample_proportions(rng: np.random.Generator) -> Proportions:
    base = Proportions()
    build = rng.uniform(0.85, 1.2)  # slim to broad
    fields = {}
    for f in dataclasses.fields(base):
        value = getattr(base, f.name) * rng.uniform(0.93, 1.07)
        if "width" in f.name or "half" in f.name:
            value *= build
        fields[f.name] = value
    return Proportions(**fields)


# Joint limits in degrees: (min, max).
LIMITS = {
    "shoulder_flex": (-60, 180), "shoulder_abd": (0, 180), "elbow": (0, 150),
    "hip_flex": (-30, 125), "hip_abd": (0, 45), "knee": (0, 140),
    "lean": (-20, 45), "side": (-20, 20), "head_yaw": (-70, 70), "head_pitch": (-30, 30),
}


@dataclass(frozen=True)
class Pose:
    """Joint angles in radians, left (l_) and right (r_) limbs, plus the whole body's yaw and in-plane roll."""

    kind: str
    l_shoulder_flex: float = 0.0
    l_shoulder_abd: float = 0.1
    l_elbow: float = 0.1
    r_shoulder_flex: float = 0.0
    r_shoulder_abd: float = 0.1
    r_elbow: float = 0.1
    l_hip_flex: float = 0.0
    l_hip_abd: float = 0.03
    l_knee: float = 0.05
    r_hip_flex: float = 0.0
    r_hip_abd: float = 0.03
    r_knee: float = 0.05
    lean: float = 0.0
    side: float = 0.0
    head_yaw: float = 0.0
    head_pitch: float = 0.0
    yaw: float = 0.0
    roll: float = 0.0

    def clipped(self) -> "Pose":
        values = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            key = f.name[2:] if f.name[:2] in ("l_", "r_") else f.name
            if key in LIMITS:
                lo, hi = np.radians(LIMITS[key])
                v = float(np.clip(v, lo, hi))
            values[f.name] = v
        return Pose(**values)


def _deg(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.radians(rng.uniform(lo, hi)))


def sample_view_yaw(rng: np.random.Generator) -> float:
    """Mostly towards the camera, as in photographs of people; sometimes in profile or from behind."""
    r = rng.uniform()
    if r < 0.6:
        return float(np.radians(rng.normal(0, 30)))
    if r < 0.8:
        return float(np.radians(rng.choice([-90, 90]) + rng.normal(0, 20)))
    return float(np.radians(180 + rng.normal(0, 30)))


def sample_pose(rng: np.random.Generator, kind: str | None = None) -> Pose:
    """A random pose of `kind` (one of POSE_KINDS, or drawn at random), within joint limits."""
    if kind is None:
        kind = str(rng.choice(POSE_KINDS, p=_POSE_WEIGHTS))
    p: dict[str, float] = {
        "l_shoulder_flex": _deg(rng, -15, 25), "r_shoulder_flex": _deg(rng, -15, 25),
        "l_shoulder_abd": _deg(rng, 4, 25), "r_shoulder_abd": _deg(rng, 4, 25),
        "l_elbow": _deg(rng, 0, 35), "r_elbow": _deg(rng, 0, 35),
        "l_hip_flex": _deg(rng, -5, 10), "r_hip_flex": _deg(rng, -5, 10),
        "l_hip_abd": _deg(rng, 0, 10), "r_hip_abd": _deg(rng, 0, 10),
        "l_knee": _deg(rng, 0, 12), "r_knee": _deg(rng, 0, 12),
        "lean": _deg(rng, -5, 10), "side": _deg(rng, -6, 6),
        "head_yaw": _deg(rng, -45, 45), "head_pitch": _deg(rng, -15, 15),
        "yaw": sample_view_yaw(rng), "roll": float(np.radians(rng.normal(0, 4))),
    }
    if kind == "walking":
        phase = rng.uniform(0, 2 * np.pi)
        p.update(walking_angles(phase, stride=_deg(rng, 15, 35), arm_swing=_deg(rng, 10, 35)))
    elif kind == "sitting":
        for side in "lr":
            p[f"{side}_hip_flex"] = _deg(rng, 70, 105)
            p[f"{side}_knee"] = _deg(rng, 70, 110)
            p[f"{side}_shoulder_flex"] = _deg(rng, 10, 55)
            p[f"{side}_elbow"] = _deg(rng, 20, 90)
        p["lean"] = _deg(rng, -10, 20)
    elif kind == "arms_raised":
        sides = {"both": "lr", "left": "l", "right": "r"}[str(rng.choice(["both", "left", "right"]))]
        for side in sides:
            if rng.uniform() < 0.5:  # up over the head, sideways
                p[f"{side}_shoulder_abd"] = _deg(rng, 120, 175)
            else:  # up in front
                p[f"{side}_shoulder_flex"] = _deg(rng, 110, 175)
            p[f"{side}_elbow"] = _deg(rng, 0, 60)
    elif kind == "lying":
        p["roll"] = float(np.radians(rng.choice([-1, 1]) * (90 + rng.normal(0, 12))))
        for side in "lr":
            p[f"{side}_knee"] = _deg(rng, 0, 50)
            p[f"{side}_hip_flex"] = _deg(rng, -5, 40)
            p[f"{side}_shoulder_abd"] = _deg(rng, 5, 100)
    return Pose(kind=kind, **p).clipped()


def walking_angles(phase: float, stride: float, arm_swing: float) -> dict[str, float]:
    """Angles of a gait cycle at `phase` (radians): legs swing in antiphase, each arm swings against its leg."""
    s = np.sin(phase)
    return {
        "l_hip_flex": stride * s, "r_hip_flex": -stride * s,
        "l_knee": np.radians(5) + stride * max(0.0, -np.sin(phase - 0.6)) * 1.5,
        "r_knee": np.radians(5) + stride * max(0.0, np.sin(phase - 0.6)) * 1.5,
        "l_shoulder_flex": -arm_swing * s, "r_shoulder_flex": arm_swing * s,
        "l_elbow": np.radians(15) + arm_swing * max(0.0, -s), "r_elbow": np.radians(15) + arm_swing * max(0.0, s),
    }


@dataclass(frozen=True)
class Skeleton3D:
    """World-frame points (units of height, origin at the pelvis) of one posed body.

    keypoints [17, 3] in COCO order; head, face_normal and the keypoint normals let the renderer tell which face
    points turn away from the camera; the rest are the end points the renderer needs for hands and feet.
    """

    keypoints: np.ndarray
    normals: np.ndarray  # [17, 3] outward normal of each face keypoint (zero for body joints)
    head_center: np.ndarray
    head_up: np.ndarray
    face_dir: np.ndarray
    neck: np.ndarray
    pelvis: np.ndarray
    hand_tips: np.ndarray  # [2, 3] left, right
    toes: np.ndarray  # [2, 3] left, right
    torso_front: np.ndarray  # unit vector the chest faces


def forward_kinematics(props: Proportions, pose: Pose) -> Skeleton3D:
    """Pose the body: chain the joint rotations from the pelvis outwards, then apply yaw and roll."""
    world = rot_z(pose.roll) @ rot_y(pose.yaw)
    torso_rot = rot_z(pose.side) @ rot_x(-pose.lean)
    pelvis = np.zeros(3)
    up = torso_rot @ UP
    neck = pelvis + props.torso * up
    across = torso_rot @ np.array([1.0, 0.0, 0.0])
    kp = np.zeros((17, 3))
    normals = np.zeros((17, 3))

    # Head: turned and tilted relative to the torso.
    head_rot = torso_rot @ rot_y(pose.head_yaw) @ rot_x(-pose.head_pitch)
    head_center = neck + (props.neck + props.head_r) * up
    r = props.head_r
    face_points = {  # index: offset in the head frame (front is -z)
        0: np.array([0.0, -0.15, -1.0]),
        1: np.array([0.38, 0.12, -0.86]), 2: np.array([-0.38, 0.12, -0.86]),
        3: np.array([1.0, 0.0, 0.1]), 4: np.array([-1.0, 0.0, 0.1]),
    }
    for k, offset in face_points.items():
        n = head_rot @ (offset / np.linalg.norm(offset))
        kp[k] = head_center + r * n
        normals[k] = n

    # Arms and legs: each limb's rotation chains abduction and flexion at the root joint, then the middle joint.
    hand_tips = np.zeros((2, 3))
    toes = np.zeros((2, 3))
    for i, (side, sign) in enumerate((("l", 1.0), ("r", -1.0))):
        shoulder = neck - 0.02 * up + sign * props.shoulder_half * across
        upper = torso_rot @ rot_z(sign * getattr(pose, f"{side}_shoulder_abd")) @ rot_x(
            getattr(pose, f"{side}_shoulder_flex"))
        elbow = shoulder + props.upper_arm * (upper @ DOWN)
        lower = upper @ rot_x(getattr(pose, f"{side}_elbow"))
        wrist = elbow + props.forearm * (lower @ DOWN)
        hand_tips[i] = wrist + props.hand * (lower @ DOWN)

        hip = pelvis + sign * props.hip_half * across
        thigh = rot_z(sign * getattr(pose, f"{side}_hip_abd")) @ rot_x(getattr(pose, f"{side}_hip_flex"))
        knee = hip + props.thigh * (thigh @ DOWN)
        shin = thigh @ rot_x(-getattr(pose, f"{side}_knee"))
        ankle = knee + props.shin * (shin @ DOWN)
        toes[i] = ankle + props.foot * (shin @ rot_x(np.pi / 2) @ DOWN)

        li = 0 if side == "l" else 1
        kp[5 + li], kp[7 + li], kp[9 + li] = shoulder, elbow, wrist
        kp[11 + li], kp[13 + li], kp[15 + li] = hip, knee, ankle

    def w(v: np.ndarray) -> np.ndarray:
        return v @ world.T

    return Skeleton3D(
        keypoints=w(kp), normals=w(normals), head_center=w(head_center), head_up=w(head_rot @ UP),
        face_dir=w(head_rot @ np.array([0.0, 0.0, -1.0])), neck=w(neck), pelvis=w(pelvis),
        hand_tips=w(hand_tips), toes=w(toes), torso_front=w(torso_rot @ np.array([0.0, 0.0, -1.0])),
    )
