"""Protocol presets for real models, as package data: ``erasure/data/prompts/presets/<name>.json``.

A preset records what a published protocol uses (prompt files and their columns, seeds, classifier,
thresholds, metric definitions, sources), written from the papers' repositories. It points at the
user's own copies of the prompt files (``"prompts_file": "<path to your copy of imagenette.csv>"``)
and never contains them. Each JSON object has ``name``, ``description`` and ``prompt_files`` (a list of
``role``, ``prompts_file``, ``reference``, ``expected_columns``, ``concept_column``, ``rows``, ...);
every other key is kept as written in :attr:`ProtocolPreset.settings`.

A prompt file may instead be generated in the package (``"generated": NAME`` in its entry, NAME a key of
:data:`GENERATORS`): UnlearnCanvas' answer set is a grid of styles x objects x seeds written by its sampling
script, not a file, so :func:`unlearncanvas_answer_set` builds it from the preset's data
(``.to_csv(PATH)`` writes it).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Callable

from erasure.errors import ErasureError
from erasure.evaluation.prompts import PACKAGED_PROMPTS, PromptRecord, PromptSet, packaged_files, read_prompt_set
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

    def generated_role(self) -> PresetPromptFile | None:
        """The prompt file the package generates (``"generated"`` in its entry), if the preset has one."""
        generated = [f for f in self.prompt_files if f.details.get("generated")]
        return generated[0] if len(generated) == 1 else None

    def generate_prompts(self, role: str | None = None) -> PromptSet:
        """The prompt file ``role`` (default: the generated one) built in the package, with its published rows."""
        chosen = self.prompt_file(role) if role is not None else self.generated_role()
        if chosen is None or not chosen.details.get("generated"):
            raise ErasureError(f"preset '{self.name}' generates no prompt file" + (f" '{role}'" if role else "")
                               + "; give your copy of the file with --prompts-file FILE")
        generator = GENERATORS.get(chosen.details["generated"])
        prompt_set = generator(self)
        if chosen.rows is not None and len(prompt_set) != chosen.rows:
            raise ErasureError(f"preset '{self.name}': the generated {chosen.role} has {len(prompt_set)} rows, "
                               f"not {chosen.rows}; the preset file is inconsistent (reinstall erasure)")
        return prompt_set

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


# --- prompt files generated in the package ------------------------------------------------------------

def _unlearncanvas_records(preset: ProtocolPreset) -> PromptSet:
    data = preset.settings
    try:
        template, styles, objects, seeds = (data["prompt_template"], data["styles"], data["objects"], data["seeds"])
    except KeyError as missing:
        raise ErasureError(f"preset file {preset.path} lacks the key {missing} its answer set is built from; "
                           "reinstall erasure") from None
    records = []
    # the reference's order: one sampling run per seed, each over theme_available x class_available
    for seed in seeds:
        for style in styles:
            for obj in objects:
                records.append(PromptRecord(
                    case_number=len(records), prompt=template.format(object=obj, style=style.replace("_", " ")),
                    evaluation_seed=int(seed), extra={"style": style, "object": obj}))
    return PromptSet(name=f"{preset.name}-answer-set", records=tuple(records), source=f"generated from {preset.path}")


# name (a prompt file entry's "generated") -> the function building it from the preset
GENERATORS: Registry[Callable[[ProtocolPreset], PromptSet]] = Registry("generated prompt file")
GENERATORS.register("unlearncanvas-answer-set", _unlearncanvas_records)


def unlearncanvas_answer_set() -> PromptSet:
    """UnlearnCanvas' answer set, as its sampling script writes it (``sampling_unlearned_models/esd.py``):
    ``"A {object} image in {style} style."`` (the style's ``_`` as spaces) for its 51 themes x 20 objects x
    seeds 188, 288, 588, 688, 888 = 5,100 prompts, by seed, then theme, then object; columns ``style`` and
    ``object`` hold the classifiers' class names (``Van_Gogh``, ``Dogs``). ``.to_csv(PATH)`` writes it."""
    return load_preset("unlearncanvas").generate_prompts()


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


# --- runnable protocols: a preset's "run" block -------------------------------------------------

# The schedulers a protocol may name, as diffusers classes (built from the pipeline's scheduler config).
SCHEDULERS: dict[str, str] = {
    "lms": "LMSDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
}


@dataclass(frozen=True)
class ProtocolRun:
    """What ``erasure evaluate --preset NAME`` runs: the published protocol's sampler, judge and metrics for
    one of its prompt files (``role``), and what the user's file turned out to be (``rows``, ``subset``)."""

    preset: str
    version: str
    role: str
    sampler: dict[str, Any]
    samples_per_prompt: int
    judge: str | None
    judge_settings: dict[str, Any]
    metrics: tuple[str, ...]
    compare_metrics: tuple[str, ...]
    reference_metrics: tuple[str, ...]
    concept: str  # "required" or "none"
    rows: int
    rows_expected: int | None
    subset: bool
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    generated: bool = False  # the prompts were generated in the package, not read from the user's file

    def sampler_settings(self, **overrides: Any):
        """The protocol's :class:`~erasure.generation.SamplerSettings` (``overrides``: values the user set)."""
        from erasure.generation import SamplerSettings

        values = {k: self.sampler[k] for k in ("steps", "guidance", "height", "width") if k in self.sampler}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return SamplerSettings(**values)

    def record(self, **overrides: Any) -> dict[str, Any]:
        """The protocol's name, version and every setting, for the report (with what the user overrode)."""
        return {"name": self.preset, "version": self.version, "prompt_file_role": self.role, "sampler": self.sampler,
                "samples_per_prompt": self.samples_per_prompt, "judge": self.judge,
                "judge_settings": self.judge_settings, "metrics": list(self.metrics), "rows": self.rows,
                "rows_expected": self.rows_expected, "subset": self.subset,
                "prompts": "generated in the package" if self.generated else "the user's file",
                "overrides": {k: v for k, v in overrides.items() if v is not None},
                **{k: self.options[k] for k in ("judge_note", "note") if k in self.options},
                "comparable_with_the_papers": not self.subset and not any(v is not None for v in overrides.values())}


def protocol_run(preset: ProtocolPreset | str, prompts_file: str | Path | None, *, role: str | None = None,
                 subset: bool = False) -> tuple[ProtocolRun, PromptSet]:
    """The runnable protocol for the user's copy of one of the preset's prompt files, and that file read.

    The role is the one whose published columns the file has (``role`` picks among several); the file must
    have the published row count unless ``subset`` (a part of it: recorded, and the report says the numbers
    are not the paper's). ``prompts_file=None``: the prompt file the package generates (UnlearnCanvas' answer
    set); for a preset without one that is an error asking for the file."""
    preset = load_preset(preset) if isinstance(preset, str) else preset
    run = preset.settings.get("run")
    if not isinstance(run, dict):
        raise ErasureError(f"preset '{preset.name}' is not runnable yet (no run settings); runnable: "
                           f"{', '.join(runnable_presets()) or 'none'}")
    if prompts_file is None:
        chosen = preset.prompt_file(role) if role is not None else preset.generated_role()
        if chosen is None or not chosen.details.get("generated"):
            raise ErasureError(f"--preset {preset.name} needs --prompts-file FILE: your copy of the protocol's "
                               "prompt file")
        if chosen.role not in run.get("roles", {}):
            raise ErasureError(f"preset '{preset.name}' has no run settings for its prompt file '{chosen.role}'")
        return _protocol_run(preset, run, chosen, preset.generate_prompts(chosen.role), subset=False, generated=True)
    path = Path(prompts_file)
    if not path.is_file():
        raise ErasureError(f"prompt file {path} not found; give your copy of the protocol's file "
                           f"({'; '.join(f.reference for f in preset.prompt_files)})")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        header = {h.strip().lower() for h in next(csv.reader(fh), [])}
    roles = [f for f in preset.prompt_files if f.role in run.get("roles", {})]
    if role is not None:
        chosen = preset.prompt_file(role)
    else:
        fits = [f for f in roles if all(c.lower() in header for c in f.expected_columns
                                        if c and not c.lower().startswith("unnamed:"))]
        if not fits:
            raise ErasureError(f"{path} has the columns {', '.join(sorted(header))}, which fit no prompt file of "
                               f"preset '{preset.name}' ({'; '.join(f'{f.role}: ' + ', '.join(c for c in f.expected_columns if c) for f in roles)})")
        rows_in_file = len(read_prompt_set(path).records) if len(fits) > 1 else None
        # several fit (the I2P files differ only in their index column): the one with this many rows, then
        # the one with the most named columns
        fits.sort(key=lambda f: (f.rows != rows_in_file, -len([c for c in f.expected_columns if c])))
        chosen = fits[0]
    if chosen.role not in run.get("roles", {}):
        raise ErasureError(f"preset '{preset.name}' has no run settings for its prompt file '{chosen.role}'")
    prompt_set = preset.read_prompts(path, chosen.role)
    rows = len(prompt_set.records)
    if chosen.rows is not None and rows != chosen.rows and not subset:
        whole = ("give the full file (or drop --prompts-file: erasure generates it)" if chosen.details.get("generated")
                 else "give the full file")
        raise ErasureError(f"{path} has {rows} rows, but the protocol's {chosen.role} file has {chosen.rows} "
                           f"({chosen.reference}); {whole}, or pass --subset to run on this part "
                           "(the report then says its numbers are not the paper's)")
    return _protocol_run(preset, run, chosen, prompt_set, subset=subset, generated=False)


def _protocol_run(preset: ProtocolPreset, run: dict, chosen: PresetPromptFile, prompt_set: PromptSet, *,
                  subset: bool, generated: bool) -> tuple[ProtocolRun, PromptSet]:
    rows = len(prompt_set.records)
    sampler = dict(run["roles"][chosen.role])
    judge_settings = {**run.get("judge_settings", {}), **run.get("role_judge_settings", {}).get(chosen.role, {})}
    options = {k: v for k, v in run.items()
               if k in ("judge_classes_from_file", "clip_from_judge", "judge_note", "note", "concept_example")}
    return ProtocolRun(
        preset=preset.name, version=str(run.get("version", "1")), role=chosen.role, sampler=sampler,
        samples_per_prompt=int(run.get("samples_per_prompt", 1)), judge=run.get("judge"),
        judge_settings=judge_settings, metrics=tuple(run.get("metrics", ())),
        compare_metrics=tuple(run.get("compare_metrics", ())), reference_metrics=tuple(run.get("reference_metrics", ())),
        concept=run.get("concept", "none"), rows=rows, rows_expected=chosen.rows, subset=bool(subset) and rows != chosen.rows,
        options=options, generated=generated,
    ), prompt_set


def runnable_presets() -> tuple[str, ...]:
    """The presets with run settings (``erasure evaluate --preset NAME``)."""
    out = []
    for name in preset_names():
        try:
            if isinstance(load_preset(name).settings.get("run"), dict):
                out.append(name)
        except ErasureError:
            continue
    return tuple(out)
