"""A model preset: a named set of constructor arguments and training defaults. No registries, no inheritance."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    """name: what users type; family: as ModelMeta.family; input_size: (height, width) in pixels.

    model_args are passed to the family's model constructor; train_args are the recipe's defaults (epochs, batch,
    optimiser, learning rate, schedule), which command-line flags override.
    """

    name: str
    family: str
    input_size: tuple[int, int]
    model_args: dict = field(default_factory=dict)
    train_args: dict = field(default_factory=dict)
    description: str = ""
