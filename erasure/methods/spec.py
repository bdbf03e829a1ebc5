"""What a method is, declared once: :class:`MethodSpec`, and the typed settings it takes.

Everything that needs to know about a method (the CLI, ``erasure list``, the notebooks, the contract
tests) reads its spec; nothing inspects the implementation. A method is registered once::

    METHODS.register("esd-x", MethodSpec(name="esd-x", family="fine-tuning", config=ESDConfig, ...,
                                         implementation="erasure.methods.esd:esd_edit"))

A config is a dataclass whose fields are made by :func:`setting` (default, help text, allowed types,
choices, range). :meth:`MethodSpec.validate_settings` checks a user's settings against it without
importing torch, so a typo or a NaN is a one-line error before any model loads.

This module (and :mod:`erasure.methods.settings`) must not import torch: ``erasure list`` and every
user-mistake check of the CLI run before it.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from erasure.errors import ErasureError

FAMILIES = ("closed-form", "fine-tuning", "adapter", "inference-time")
RESULT_KINDS = ("edit", "adapter", "guide")
MODEL_FAMILIES = ("sd1", "sd2", "shapeworld")

_MISSING = dataclasses.MISSING


def setting(default: Any, help: str, *, types: Sequence[Any] | None = None, choices: Sequence[Any] | None = None,
            minimum: float | None = None, maximum: float | None = None, exclusive_minimum: bool = False) -> Any:
    """A config field with its help text and the checks :func:`check_value` applies.

    ``types``: allowed kinds among ``bool``, ``int``, ``float``, ``str``, ``tuple`` (of strings), ``None`` and
    literal strings such as ``"auto"`` (default: the default's kind). ``choices`` restricts strings;
    ``minimum`` / ``maximum`` bound numbers (``exclusive_minimum``: strictly above the minimum).
    """
    if types is None:
        types = (type(default) if default is not None else type(None),)
    meta = {"help": help, "types": tuple(types), "choices": tuple(choices) if choices is not None else None,
            "minimum": minimum, "maximum": maximum, "exclusive_minimum": exclusive_minimum}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _type_name(t: Any) -> str:
    if t is None or t is type(None):
        return "none"
    if isinstance(t, str):
        return repr(t)
    return {bool: "bool", int: "int", float: "number", str: "text", tuple: "list of text", dict: "mapping"}.get(
        t, getattr(t, "__name__", str(t)))


def check_value(method: str, name: str, value: Any, meta: Mapping[str, Any]) -> Any:
    """``value`` for setting ``name`` converted to its declared kind (JSON's 3.0 for an int, a list for a
    tuple), or a one-line ErasureError naming the setting, the value and what is allowed."""
    types = meta.get("types") or ()
    where = f"{method} setting {name}"
    literals = [t for t in types if isinstance(t, str)]
    if isinstance(value, str) and value in literals:
        return value
    if value is None:
        if None in types or type(None) in types:
            return None
        raise ErasureError(f"{where} needs a value ({' or '.join(_type_name(t) for t in types)}), got none")
    if isinstance(value, bool):
        if bool in types:
            return value
        raise ErasureError(f"{where} wants {' or '.join(_type_name(t) for t in types)}, got {value!r}")
    if isinstance(value, (int, float)):
        number: float | int | None = None
        if int in types and (isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())):
            number = int(value)
        elif float in types:
            number = float(value)
        if number is None:
            raise ErasureError(f"{where} wants {' or '.join(_type_name(t) for t in types)}, got {value!r}")
        if not math.isfinite(number):
            raise ErasureError(f"{where} must be a finite number, got {value!r}")
        low, high = meta.get("minimum"), meta.get("maximum")
        if low is not None and (number < low or (meta.get("exclusive_minimum") and number <= low)):
            bound = f"> {low:g}" if meta.get("exclusive_minimum") else f">= {low:g}"
            raise ErasureError(f"{where} must be {bound}" + (f" and <= {high:g}" if high is not None else "")
                               + f", got {value!r}")
        if high is not None and number > high:
            raise ErasureError(f"{where} must be <= {high:g}, got {value!r}; lower it")
        return number
    if isinstance(value, str):
        if str not in types:
            if tuple in types:
                value = (value,)
            else:
                raise ErasureError(f"{where} wants {' or '.join(_type_name(t) for t in types)}, got {value!r}")
        else:
            choices = meta.get("choices")
            if choices is not None and value not in choices:
                shown = ", ".join(repr(c) if c == "" else str(c) for c in choices)
                raise ErasureError(f"{where} must be one of {shown} (got {value!r})")
            return value
    if isinstance(value, (list, tuple)):
        if tuple not in types:
            raise ErasureError(f"{where} wants {' or '.join(_type_name(t) for t in types)}, got a list")
        if not all(isinstance(v, str) for v in value):
            raise ErasureError(f"{where} wants a list of text, got {list(value)!r}")
        return tuple(value)
    if isinstance(value, dict) and dict in types:
        return dict(value)
    raise ErasureError(f"{where} wants {' or '.join(_type_name(t) for t in types)}, got {type(value).__name__}")


def config_fields(config: type) -> dict[str, dataclasses.Field]:
    """The settings of a config dataclass, by name, in declaration order."""
    return {f.name: f for f in dataclasses.fields(config)}


def describe_settings(config: type, default: Callable[[str], Any]) -> list[dict[str, Any]]:
    """Every setting of ``config`` with its effective default (``default(name)``), allowed kinds, choices, range
    and help: what ``erasure list`` prints for methods, attacks and judges."""
    out = []
    for name, f in config_fields(config).items():
        meta = f.metadata
        entry = {"name": name, "default": _jsonable(default(name)),
                 "type": " or ".join(_type_name(t) for t in meta.get("types", ())), "help": meta.get("help", "")}
        for key in ("choices", "minimum", "maximum"):
            if meta.get(key) is not None:
                entry[key] = _jsonable(meta[key])
        out.append(entry)
    return out


def check_settings(config: type, settings: Mapping[str, Any], owner: str, label: str | None = None) -> dict[str, Any]:
    """``settings`` checked against ``config``'s fields and converted (without torch): an unknown name (with a
    close match suggested) or a bad value is a one-line ErasureError naming ``owner`` (e.g. "attack cce");
    ``label`` is the name check_value reports (default ``owner``). Returns only the given settings."""
    known = config_fields(config)
    unknown = [k for k in settings if k not in known]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ErasureError(f"unknown setting {unknown[0]!r} for {owner}; {hint}valid: {', '.join(known)}")
    return {k: check_value(label or owner, k, v, known[k].metadata) for k, v in settings.items()}


@dataclass(frozen=True)
class MethodSpec:
    """One registered erasure method: what it is, what it takes, what it returns.

    ``implementation`` is ``"module:function"``, imported only when the method runs, called as
    ``function(pipe, concepts, method=name, **settings, **options)``.
    """

    name: str
    family: str
    summary: str
    paper: str
    reference: str
    config: type
    result: str
    trains: bool
    implementation: str
    resumable: bool | None = None  # checkpoints and resumes (checkpoint_dir, resume); None = as ``trains``
    anchor_setting: str | None = None  # the setting --anchor/--guide maps to
    anchor_meaning: str = ""
    models: tuple[str, ...] = MODEL_FAMILIES
    defaults: Mapping[str, Any] = field(default_factory=dict)  # this method's values over the config's defaults
    options: tuple[str, ...] = ()  # run options that are not settings (checkpoint_dir, resume, progress, ...)
    test_settings: Mapping[str, Any] = field(default_factory=dict)  # tiny and fast: the contract tests' settings
    world_test_settings: Mapping[str, Any] = field(default_factory=dict)  # a short run that erases on the world
    changes: str = ""  # which parameters it changes, in words
    cross_field_check: Callable[[Mapping[str, Any]], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family {self.family!r} is not one of {FAMILIES}")
        if self.result not in RESULT_KINDS:
            raise ValueError(f"{self.name}: result {self.result!r} is not one of {RESULT_KINDS}")
        names = config_fields(self.config)
        for key in (*self.defaults, *self.test_settings, *self.world_test_settings):
            if key not in names and key not in self.options:
                raise ValueError(f"{self.name}: {key!r} is not a setting of {self.config.__name__}")
        if self.resumable is None:
            object.__setattr__(self, "resumable", self.trains)
        if self.anchor_setting is not None and self.anchor_setting not in names:
            raise ValueError(f"{self.name}: anchor setting {self.anchor_setting!r} is not a setting")

    # --- settings ------------------------------------------------------------------------------

    def default(self, name: str) -> Any:
        """The effective default of setting ``name`` for this method."""
        if name in self.defaults:
            return self.defaults[name]
        f = config_fields(self.config)[name]
        return f.default_factory() if f.default is _MISSING else f.default  # type: ignore[misc]

    def settings(self) -> list[dict[str, Any]]:
        """Every setting with its effective default, allowed kinds, choices, range and help."""
        return describe_settings(self.config, self.default)

    def validate_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``settings`` checked and converted (without torch): an unknown name or a bad value is a one-line
        ErasureError. Returns only the given settings (defaults are applied by the method)."""
        out = check_settings(self.config, settings, self.name)
        if self.cross_field_check is not None:
            self.cross_field_check({**{k: self.default(k) for k in config_fields(self.config)}, **out})
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (``erasure list --methods --json``)."""
        return {"name": self.name, "family": self.family, "summary": self.summary, "result": self.result,
                "trains": self.trains, "resumable": self.resumable, "models": list(self.models), "paper": self.paper,
                "reference": self.reference, "anchor": self.anchor_setting, "anchor_meaning": self.anchor_meaning,
                "changes": self.changes, "settings": self.settings()}

    # --- running -----------------------------------------------------------------------------

    def function(self) -> Callable[..., Any]:
        module, _, attr = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attr)

    def run(self, pipe, concepts: Sequence[str] | str, **kwargs: Any):
        """Erase ``concepts`` from ``pipe`` (not applied: ``result.apply(pipe)``); ``kwargs`` are settings
        and run options."""
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in self.options}
        settings = self.validate_settings(kwargs)
        if pipe is not None:
            from erasure.text import check_concepts, normalise_concepts

            check_concepts(pipe, normalise_concepts(concepts))
        return self.function()(pipe, concepts, method=self.name, **{**self.defaults, **settings}, **options)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
