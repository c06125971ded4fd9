"""pose-edge: 2D human pose estimation from training to a GPU inside a robot."""

__version__ = "0.1.0"
