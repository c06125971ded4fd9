"""The preset table of `pose-edge models`: input size, parameters and GFLOPs of every preset."""

from __future__ import annotations

from pose_edge.models import all_presets, build_model


def describe_preset(preset) -> dict:
    from pose_edge.models.flops import count_gflops

    model = build_model(preset).eval()
    height, width = preset.input_size
    return {
        "name": preset.name,
        "family": preset.family,
        "input_size": [height, width],
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "gflops": round(count_gflops(model, (1, 3, height, width)), 2),
        "description": preset.description,
    }


def describe_all() -> list[dict]:
    return [describe_preset(p) for p in all_presets().values()]


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "no presets"
    header = f"{'preset':<22} {'family':<16} {'input HxW':>10} {'params (M)':>11} {'GFLOPs':>8}  description"
    lines = [header, "-" * len(header)]
    for r in rows:
        size = f"{r['input_size'][0]}x{r['input_size'][1]}"
        lines.append(f"{r['name']:<22} {r['family']:<16} {size:>10} {r['params_m']:>11.2f} {r['gflops']:>8.2f}  "
                     f"{r['description']}")
    return "\n".join(lines)
