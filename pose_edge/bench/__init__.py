"""`pose-edge bench`: COCO AP against end-to-end latency, per stage and per people count, on the machine it runs on.

    from pose_edge.bench import BenchOptions, run_bench
    record = run_bench(["kapao-tiny.onnx", "sb-r18-128x96.onnx+det-tiny.onnx"], "data/", "bench-out",
                       BenchOptions(batches=(1, 8)))

One module per job:
    configs.py   ARTIFACT strings (a model, or POSE+DET for a top-down pair) -> opened backends and a label
    frames.py    the frames timed: the data set's val images with their people, and synthetic frames of 1, 5, 20 people
    timing.py    the measurement loop (warm-up excluded), percentiles, the clocks (host monotonic; CUDA events)
    latency.py   one configuration timed through the runtime API (pose_edge.load): stages, model alone, people sweep
    decoders.py  the GPU decode kernels against the NumPy decoders on the same raw outputs (where a GPU is present)
    pareto.py    the AP / latency Pareto frontier
    machine.py   what the figures were measured on
    report.py    JSON and the Markdown table;  plots.py: the PNGs;  run.py: all of it in order
Accuracy comes from pose_edge.evaluate.split.evaluate_split, the one evaluation path (`pose-edge eval` calls it the
same way), so the AP in a bench record equals `pose-edge eval` on the same artefact and data.

Layer: above evaluation (it scores through it), beside train and export; imports neither.
"""

from pose_edge.bench.run import BenchOptions, run_bench

__all__ = ["BenchOptions", "run_bench"]
