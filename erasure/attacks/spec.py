"""What an attack is, declared once: :class:`AttackSpec`, in the style of :class:`erasure.methods.spec.MethodSpec`.

Everything that needs to know about an attack (the ``erasure attack`` command, the registry listing, the
tests) reads its spec. An attack is registered once::

    ATTACKS.register("unlearndiffatk", AttackSpec(name="unlearndiffatk", kind="adaptive", config=UDAConfig, ...,
                                                  implementation="erasure.attacks.unlearndiffatk:UnlearnDiffAtk"))

``kind`` says how its successes are counted in a report:

- ``adaptive`` (optimised against the erased model) and ``probe`` (gradient-free, against the erased model):
  the unmodified prompt is tried first (a success there is a *pre* success) and the attack runs on the rest;
  ASR = (pre successes + attack successes) / prompts, as UnlearnDiffAtk's ``check_asr.py`` counts it;
- ``inversion``: like ``adaptive``, but its optimisation is per concept (one token reused on every prompt);
- ``transfer``: fixed prompts optimised against *other* models, generated once; its rate is the transfer ASR
  and is never mixed with the other two.

A config is a dataclass made with :func:`erasure.methods.spec.setting`, so settings are checked (type, range,
choices, finiteness) without importing torch. This module must not import torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from erasure.methods.spec import check_settings, config_fields, describe_settings

ATTACK_KINDS = ("adaptive", "probe", "inversion", "transfer")


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack: what it is, what it needs, what it takes.

    ``implementation`` is ``"module:Class"``, imported only when the attack runs; the class is built as
    ``Class(config)`` (a filled config dataclass) and has ``prepare(context)`` (once per run: e.g. CCE's
    inversion) and ``attack_prompt(context, prompt_index) -> Attempt`` (see :mod:`erasure.attacks.core`).
    """

    name: str
    kind: str
    summary: str
    paper: str
    reference: str
    config: type
    implementation: str
    gradients: bool  # needs gradients through the erased UNet (white box)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    test_settings: Mapping[str, Any] = field(default_factory=dict)  # tiny and fast: the tests' settings
    budget: str = ""  # the cost per prompt at the defaults, in words

    def __post_init__(self) -> None:
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {ATTACK_KINDS}")
        names = config_fields(self.config)
        for key in (*self.defaults, *self.test_settings):
            if key not in names:
                raise ValueError(f"{self.name}: {key!r} is not a setting of {self.config.__name__}")

    def default(self, name: str) -> Any:
        if name in self.defaults:
            return self.defaults[name]
        f = config_fields(self.config)[name]
        return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]

    def settings(self) -> list[dict[str, Any]]:
        """Every setting with its effective default, allowed kinds, choices, range and help."""
        return describe_settings(self.config, self.default)

    def validate_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``settings`` checked and converted (without torch); an unknown name or bad value is one line."""
        return check_settings(self.config, settings, f"attack {self.name}", self.name)

    def make_config(self, settings: Mapping[str, Any] | None = None):
        """The config dataclass filled with this attack's defaults and ``settings`` (validated)."""
        checked = self.validate_settings(dict(settings or {}))
        return self.config(**{**self.defaults, **checked})

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "summary": self.summary, "paper": self.paper,
                "reference": self.reference, "gradients": self.gradients, "budget": self.budget,
                "settings": self.settings()}

    def implementation_class(self):
        module, _, attr = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attr)
