"""The one compiled piece of the runtime: the host finish of the heatmap decode (pose_edge/runtime/_peaks_native.c).

Everything else is declared in pyproject.toml. The extension is optional: where it cannot be built (no C compiler),
the install goes on and the runtime decodes in NumPy: the same results (DARK's within a float32 rounding), at
NumPy's speed (benchmarks/results/quarter_floor.md).
"""

import sys

from setuptools import Extension, setup

# No fused multiply-add: the C finish must round exactly as NumPy's separate multiply and add do.
FLAGS = ["/fp:precise"] if sys.platform == "win32" else ["-O2", "-ffp-contract=off"]

setup(ext_modules=[Extension("pose_edge.runtime._peaks_native", ["pose_edge/runtime/_peaks_native.c"],
                             extra_compile_args=FLAGS, optional=True)])
