"""Protocol presets for real models, as package data: ``erasure/data/prompts/presets/<name>.json``.

A preset records what a published protocol uses (prompt files and their columns, seeds, classifier,
thresholds, metric definitions, sources), written from the papers' repositories. It points at the
user's own copies of the prompt files (``"prompts_file": "<path to your copy of imagenette.csv>"``)
and never contains them. Each JSON object has ``name``, ``description`` and ``prompt_files`` (a list of
``role``, ``prompts_file``, ``reference``, ``expected_columns``, ``concept_column``, ``rows``, ...);
every other key is kept as written in :attr:`ProtocolPreset.settings`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from erasure.errors import ErasureError
from erasure.evaluation.prompts import PACKAGED_PROMPTS, PromptSet, packaged_files, read_prompt_set
from erasure.registry import Registry

PACKAGED_PRESETS: Traversable = PACKAGED_PROMPTS / "presets"


@dataclass(frozen=True)
class PresetPromptFile:
    """One prompt file a protocol uses, as published (``expected_columns``: the header as in the file)."""

    role: str
    prompts_file: str
    reference: str
    expected_columns: tuple[str, ...]
    concept_column: str | None
    rows: int | None
    details: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ProtocolPreset:
    """A published evaluation protocol: its prompt files and every other setting, as written."""

    name: str
    description: str
    prompt_files: tuple[PresetPromptFile, ...]
    settings: dict[str, Any] = field(default_factory=dict, hash=False)
    path: str = ""

    def prompt_file(self, role: str | None = None) -> PresetPromptFile:
        """The prompt file for ``role`` (may be omitted when the preset has exactly one)."""
        roles = Registry[PresetPromptFile](f"prompt-file role of preset '{self.name}'")
        for f in self.prompt_files:
            roles.register(f.role, f)
        if role is None:
            if len(self.prompt_files) != 1:
                raise ErasureError(f"preset '{self.name}' has {len(self.prompt_files)} prompt files; "
                                   f"pass role= one of {', '.join(roles.names()) or '(none)'}")
            return self.prompt_files[0]
        return roles.get(role)

    def read_prompts(self, path: str | Path, role: str | None = None, *, default_seed: int | None = None) -> PromptSet:
        """Read the user's copy of a protocol prompt file, checking it has the published columns."""
        expected = self.prompt_file(role)
        prompt_set = read_prompt_set(Path(path), default_seed=default_seed)
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            header = {h.strip().lower() for h in next(csv.reader(fh), [])}
        named = [c for c in expected.expected_columns if c and not c.lower().startswith("unnamed:")]
        missing = [c for c in named if c.lower() not in header]
        if missing:
            raise ErasureError(f"{path} lacks the column(s) {', '.join(missing)} of preset '{self.name}' "
                               f"({expected.role}: {expected.reference}); is it the right file?")
        return prompt_set


def presets() -> Registry[Traversable]:
    """The registry of preset files (name -> JSON file) packaged in ``erasure/data/prompts/presets/``."""
    registry: Registry[Traversable] = Registry("preset")
    if not PACKAGED_PRESETS.is_dir():
        raise ErasureError(f"the packaged protocol presets are missing from {PACKAGED_PRESETS} (a broken install?); "
                           "reinstall erasure")
    for parts, preset_file in packaged_files(PACKAGED_PRESETS, ".json"):
        registry.register("-".join(parts), preset_file)
    return registry


def preset_names() -> tuple[str, ...]:
    """Names of the protocol presets, sorted."""
    return presets().names()


def load_preset(name: str) -> ProtocolPreset:
    """Load the packaged preset ``<name>.json``; a typo raises ErasureError with "did you mean"."""
    path = presets().get(name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ErasureError(f"preset file {path} is not valid JSON ({e.msg} at line {e.lineno}); fix it") from None
    if not isinstance(data, dict):
        raise ErasureError(f"preset file {path} must hold a JSON object; found {type(data).__name__}")
    missing = [k for k in ("name", "description", "prompt_files") if k not in data]
    if missing:
        raise ErasureError(f"preset file {path} lacks the key(s) {', '.join(missing)}; add them")
    if data["name"] != name:
        raise ErasureError(f"preset file {path} is named '{data['name']}'; its name must match the file name '{name}'")
    files = []
    for i, entry in enumerate(data["prompt_files"]):
        absent = [k for k in ("role", "prompts_file", "reference", "expected_columns") if k not in entry]
        if absent:
            raise ErasureError(f"preset file {path}: prompt_files[{i}] lacks {', '.join(absent)}; add them")
        known = {"role", "prompts_file", "reference", "expected_columns", "concept_column", "rows"}
        files.append(PresetPromptFile(
            role=entry["role"], prompts_file=entry["prompts_file"], reference=entry["reference"],
            expected_columns=tuple(entry["expected_columns"]), concept_column=entry.get("concept_column"),
            rows=entry.get("rows"), details={k: v for k, v in entry.items() if k not in known},
        ))
    settings = {k: v for k, v in data.items() if k not in ("name", "description", "prompt_files")}
    return ProtocolPreset(name=data["name"], description=data["description"], prompt_files=tuple(files),
                          settings=settings, path=str(path))
