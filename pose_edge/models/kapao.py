"""Placeholder until this family lands: no presets yet."""

PRESETS: dict = {}


def build_model(preset):
    raise NotImplementedError(preset.name)


def model_meta(preset):
    raise NotImplementedError(preset.name)
