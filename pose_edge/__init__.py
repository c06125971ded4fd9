"""pose-edge: 2D human pose estimation from training to a GPU inside a robot.

The public API is what this module exposes; everything else may move:
    pose_edge.load(model, detector=None, ...) -> Estimator     one call from a model file to poses (torch-free)
    pose_edge.Poses                                            the result type of both paradigms
    pose_edge.Settings, pose_edge.DEPLOY, pose_edge.COCO_EVAL  post-processing settings and their two profiles
They are imported on first use, so `import pose_edge` stays cheap.
"""

__version__ = "0.1.0"



def __getattr__(name):
    if name in ("load", "Estimator"):
        from pose_edge import estimator

        return getattr(estimator, name)
    if name == "Poses":
        from pose_edge.runtime.poses import Poses

        return Poses
    if name in ("Settings", "DEPLOY", "COCO_EVAL"):
        from pose_edge.runtime import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'pose_edge' has no attribute {name!r}")


__all__ = ["COCO_EVAL", "DEPLOY", "Estimator", "Poses", "Settings", "load"]
