"""The attacks' typed settings (no torch here: the command line checks them before importing it).

Lists of numbers are written as text (``"1,3,5.5"``), since a setting's list kind holds text; each config
checks them in ``__post_init__`` so a bad list is a one-line error before any model loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from erasure.errors import ErasureError
from erasure.methods.spec import setting

PLACEMENTS = ("prefix", "suffix", "insert")
VOCABULARIES = ("all", "words", "model")


def number_list(name: str, text: str, *, minimum: float | None = None, integer: bool = False) -> tuple[float, ...]:
    """``"1, 3,5.5"`` -> (1.0, 3.0, 5.5); a one-line ErasureError for anything else."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ErasureError(f"setting {name} needs at least one number, e.g. {name}=1,2,3")
    out = []
    for p in parts:
        try:
            value = float(p)
        except ValueError:
            raise ErasureError(f"setting {name}: {p!r} is not a number; write numbers separated by commas") from None
        if not math.isfinite(value) or (minimum is not None and value < minimum):
            raise ErasureError(f"setting {name}: {p} must be a finite number" + (f" >= {minimum:g}" if minimum is not None else ""))
        if integer and not value.is_integer():
            raise ErasureError(f"setting {name}: {p} must be a whole number")
        out.append(int(value) if integer else value)
    return tuple(out)


@dataclass(frozen=True)
class UnlearnDiffAtkConfig:
    tokens: int = setting(3, "adversarial token slots k (the reference: 5 for nudity, 3 for styles and objects)",
                          minimum=1, maximum=30)
    placement: str = setting("prefix", "where the slots go: before the prompt (prefix_k), after it (suffix_k), or "
                             "spread into it at equal intervals (insert_k)", choices=PLACEMENTS)
    timesteps: int = setting(50, "timestep blocks n: t = T/(2n) + j T/n (50: 10, 30, ..., 990)", minimum=1, maximum=1000)
    steps_per_timestep: int = setting(40, "Adam steps per timestep block", minimum=1, maximum=100_000)
    lr: float = setting(0.01, "Adam learning rate", minimum=0, exclusive_minimum=True)
    weight_decay: float = setting(0.1, "Adam weight decay (L2, as torch.optim.Adam)", minimum=0)
    vocabulary: str = setting("all", "candidate tokens: all (the reference), words (whole-word tokens that "
                              "re-tokenise to themselves: the decoded prompt is exactly the optimised ids), model "
                              "(the words of the model's profile, e.g. the built-in world's)", choices=VOCABULARIES)
    exclude_words: tuple = setting((), "words whose tokens are never candidates (e.g. the concept itself)",
                                   types=(tuple,))
    check_every: int = setting(1, "generate and judge after every N timestep blocks (the reference: 1)",
                               minimum=1, maximum=100_000)
    check_steps: Any = setting(None, "sampler steps of the success checks (default: the run's sampler steps)",
                               types=(int, None), minimum=1, maximum=1000)
    confirm: bool = setting(False, "with check_steps: a check that succeeds is generated again at the run's sampler "
                            "steps and only that image decides (the reference's criterion); the attack goes on if it "
                            "fails")
    target_steps: Any = setting(None, "sampler steps of the original model's target image (default: the run's)",
                                types=(int, None), minimum=1, maximum=1000)
    target_images: Any = setting(None, "a folder of your own images of the concept as the targets instead of the "
                                 "original model's (UnlearnDiffAtk issue 8: real images work too): prompt i gets image "
                                 "i in the natural order of the file names (2.png before 10.png), cycling when there "
                                 "are fewer images than prompts; resized to the model's resolution",
                                 types=(str, None))


GENERIC_TEMPLATES = ("{}", "a photo of {}", "an image of {}", "a picture of {}", "a painting of {}",
                     "a drawing of {}", "a close-up of {}", "a photo with {}")


@dataclass(frozen=True)
class RingABellConfig:
    etas: str = setting("1,3,5.5", "strengths eta of the concept vector tried in order, comma-separated (Ring-A-Bell: "
                        "3 nudity, 5.5 violence; RECE: 0.9 Van Gogh)")
    pairs_file: Any = setting(None, "CSV of prompt pairs (columns with, without: the prompt with and without the "
                              "concept); default: templates filled with the concept and with the anchor",
                              types=(str, None))
    templates: tuple = setting((), "templates with {} for the pairs (default: the model profile's, else generic ones)",
                               types=(tuple,))
    anchor: str = setting("", "what replaces the concept in the pair's 'without' prompt (default: nothing)")
    vector_from: str = setting("original", "whose text encoder the concept vector is computed with (Ring-A-Bell: the "
                               "unerased model's)", choices=("original", "erased"))

    def __post_init__(self) -> None:
        number_list("etas", self.etas)


@dataclass(frozen=True)
class CompletionConfig:
    steps: str = setting("1,2,3", "k values tried in order: the original model runs the first k sampler steps, the "
                         "erased model the rest (When Are Concepts Erased?: k in 0..2 of 50 DDIM steps)")

    def __post_init__(self) -> None:
        number_list("steps", self.steps, minimum=1, integer=True)


@dataclass(frozen=True)
class NoiseConfig:
    etas: str = setting("0.0,0.5,1.0", "DDIM eta values, each in [0, 1] (the paper's 1.0 ... 1.85 need its own "
                        "scheduler: diffusers' DDIM gives NaN images above 1)")
    scales: str = setting("1.0,1.02,1.04", "initial-noise scales (the paper's variance scales are 1.00 ... 1.04)")

    def __post_init__(self) -> None:
        if any(e > 1 for e in number_list("etas", self.etas, minimum=0)):
            raise ErasureError("setting etas: DDIM eta above 1 makes diffusers' DDIM step produce NaN; use values in [0, 1]")
        number_list("scales", self.scales, minimum=0)


@dataclass(frozen=True)
class CCEConfig:
    steps: int = setting(5000, "textual-inversion optimiser steps (CCE esd/train.sh: 5000)", minimum=1, maximum=1_000_000)
    batch_size: int = setting(4, "images per forward (CCE: 4)", minimum=1, maximum=4096)
    accumulation: int = setting(4, "gradient accumulation steps (CCE: 4)", minimum=1, maximum=4096)
    lr: float = setting(5e-3, "learning rate before scaling (CCE: 5e-3)", minimum=0, exclusive_minimum=True)
    scale_lr: bool = setting(True, "multiply lr by batch_size x accumulation (CCE's --scale_lr: 0.08)")
    images: int = setting(25, "images of the concept the original model generates to invert (CCE: 25)",
                          minimum=1, maximum=100_000)
    init_word: Any = setting(None, "the word whose embedding starts the new token (default: the concept's first token)",
                             types=(str, None))
    token: str = setting("<cce>", "how the learnt token is written in the reported prompts")


@dataclass(frozen=True)
class TransferConfig:
    """A transfer set has no settings: its prompts are the published file's."""


__all__ = ["UnlearnDiffAtkConfig", "RingABellConfig", "CompletionConfig", "NoiseConfig", "CCEConfig",
           "TransferConfig", "number_list", "PLACEMENTS", "VOCABULARIES", "GENERIC_TEMPLATES"]
