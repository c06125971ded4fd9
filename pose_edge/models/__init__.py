"""Model families and their presets.

Each family module (simple_baseline.py, kapao.py) exposes PRESETS (name -> Preset), build_model(preset) -> nn.Module
and model_meta(preset) -> ModelMeta. This package only gathers them.
"""

from __future__ import annotations

from pose_edge.errors import PoseEdgeError
from pose_edge.models.preset import Preset


def _family_modules():
    from pose_edge.models import kapao, simple_baseline

    return {"simple_baseline": simple_baseline, "kapao": kapao, "person_detector": kapao}


def all_presets() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for module in dict.fromkeys(_family_modules().values()):
        presets.update(module.PRESETS)
    return presets


def get_preset(name: str) -> Preset:
    presets = all_presets()
    if name not in presets:
        raise PoseEdgeError(f"unknown preset {name!r}; `pose-edge models` lists them: {', '.join(sorted(presets))}")
    return presets[name]


def family_module(preset: Preset):
    return _family_modules()[preset.family]


def build_model(preset: Preset | str):
    preset = get_preset(preset) if isinstance(preset, str) else preset
    return family_module(preset).build_model(preset)


def model_meta(preset: Preset | str):
    preset = get_preset(preset) if isinstance(preset, str) else preset
    return family_module(preset).model_meta(preset)
