"""Evaluation: prompt sets (``prompts``), protocol presets (``presets``), the built-in world's sets."""

from erasure.evaluation.presets import (PresetPromptFile, ProtocolPreset, load_preset, preset_names,
                                        unlearncanvas_answer_set)
from erasure.evaluation.prompts import PromptRecord, PromptSet, prompt_set_names, prompt_sets, read_prompt_set

__all__ = [
    "PresetPromptFile",
    "PromptRecord",
    "PromptSet",
    "ProtocolPreset",
    "load_preset",
    "preset_names",
    "prompt_set_names",
    "prompt_sets",
    "read_prompt_set",
    "unlearncanvas_answer_set",
]
