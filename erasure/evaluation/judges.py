"""Judges: what decides whether a generated image shows a concept, plugged in by name.

The interface (stable: metrics and attacks consume exactly this)::

    judge = load_judge("nudenet", threshold=0.45)          # or JUDGES.get("nudenet").build(...)
    present = judge.decide(images, "nudity")               # numpy bool (N,): the concept is in image i
    scores = judge.scores(images, "nudity")                # numpy float (N,): higher = more present
    labels = judge.predict(images)                         # {attribute: [top-1 label per image]} (labelling judges)
    judge.info()                                           # name, settings, files + sha256, versions: for reports

``images`` is a uint8 numpy array ``(N, H, W, 3)`` (RGB, 0..255), as ``erasure.generation.generate_images``
returns it; float arrays in [0, 1] are accepted and rounded to uint8 first. ``concept`` is a string the judge
understands (``judge.concepts()`` lists them when the set is closed): ``"circle"`` or ``"shape=circle"`` for
the world's classifier, ``"nudity"`` (or one ``*_EXPOSED`` class) for NudeNet, a class name for a classifier
or CLIP zero-shot. An unknown concept is a one-line :class:`~erasure.errors.ErasureError`.

``decide`` is the judge's rule (a threshold, top-1 or top-k), ``scores`` the number that rule reads (a
probability, a detector score) for sweeps and ROC curves. ``predict`` gives the top-1 label per attribute,
which is what the retain metrics (UnlearnCanvas' IRA/CRA) need; judges that only detect (NudeNet) raise
:class:`JudgeCannotLabel` there.

Built in (``erasure list --judges``), each loading only local files (a missing file is a one-line error
that names what to download and the flag that passes it):

- ``world``: the built-in world's attribute classifier (labels shape, colour, texture, background);
- ``nudenet``: NudeNet's detector as shipped in the ``nudenet`` wheel; the nine ``*_EXPOSED`` classes,
  ``threshold`` a setting (recorded, with the nudenet version and the detector's sha256);
- ``clip-zero-shot``: a CLIP backend (``world``, ``open_clip:NAME`` + weights, ``transformers:FOLDER``)
  choosing among the concept and its alternatives (``classes``), top-1 or top-k;
- ``image-classifier``: a torchvision architecture + a local weights file (ResNet-50 for Imagenette: the
  concept is present when top-1 is its ImageNet class), or a transformers image-classification folder,
  with a label map;
- ``callable``: a Python function ``f(images, concept) -> bool or float (N,)`` (``module:function`` or
  ``path/to/file.py:function``), for anything else.

Register your own with ``JUDGES.register("mine", JudgeSpec(...))``: its ``implementation`` builds a
:class:`Judge` from the validated settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from erasure.errors import ErasureError
from erasure.methods.spec import check_value, config_fields, setting
from erasure.registry import Registry

__all__ = [
    "JUDGES",
    "CallableJudge",
    "Judge",
    "JudgeCannotLabel",
    "JudgeSpec",
    "WorldJudge",
    "as_uint8_images",
    "load_judge",
]


class JudgeCannotLabel(ErasureError):
    """The judge detects one concept but does not label images (e.g. NudeNet): no retain accuracy from it."""


def as_uint8_images(images: Any) -> np.ndarray:
    """``images`` as a uint8 ``(N, H, W, 3)`` RGB array (floats in [0, 1] are rounded; PIL images stacked)."""
    if isinstance(images, (list, tuple)) and images and hasattr(images[0], "convert"):
        images = np.stack([np.asarray(im.convert("RGB")) for im in images])
    if hasattr(images, "detach"):
        raise ErasureError("judges take uint8 (N, H, W, 3) RGB numpy arrays, not tensors; convert with "
                           "(x.permute(0, 2, 3, 1) * 255).round().byte().numpy()")
    array = np.asarray(images)
    if array.ndim == 3 and array.shape[-1] == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or len(array) == 0:
        raise ErasureError(f"judges take a non-empty uint8 (N, H, W, 3) RGB array, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ErasureError(f"judges take uint8 (0..255) or float ([0, 1]) pixels, got {array.dtype}")
    return np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Judge:
    """Turns images into per-image decisions for a concept. Subclasses implement ``scores`` and ``decide``
    (or ``decide`` alone); labelling judges also ``predict`` and ``concepts``.

    ``name`` is the registered name, ``settings`` the validated settings it was built with, ``attribute``
    the label column its ``predict`` fills when it labels one attribute (``class``, ``style``...).
    """

    name: str = "judge"
    attribute: str | None = None

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings: dict[str, Any] = dict(settings or {})

    def decide(self, images: Any, concept: str) -> np.ndarray:
        """numpy bool ``(N,)``: True where image i shows ``concept``."""
        raise NotImplementedError

    def scores(self, images: Any, concept: str) -> np.ndarray:
        """numpy float ``(N,)``: the number ``decide`` reads (higher = more present). Default: the decision."""
        return self.decide(images, concept).astype(np.float64)

    def predict(self, images: Any) -> dict[str, list[str]]:
        """``{attribute: [top-1 label per image]}``, for the retain metrics."""
        raise JudgeCannotLabel(f"judge '{self.name}' decides one concept but does not label images; "
                               "retain accuracies need a labelling judge (world, image-classifier, clip-zero-shot)")

    def concepts(self) -> tuple[str, ...] | None:
        """The concepts this judge can decide (None: open-ended)."""
        return None

    def files(self) -> dict[str, str]:
        """Local files it loaded, ``{path: sha256}``."""
        return {}

    def info(self) -> dict[str, Any]:
        """What a report records: name, settings, files with sha256, versions."""
        return {"judge": self.name, "settings": _jsonable(self.settings), "files": self.files()}

    def _check_concept(self, concept: str) -> str:
        if not isinstance(concept, str) or not concept.strip():
            raise ErasureError(f"judge '{self.name}': the concept must be a non-empty string, got {concept!r}")
        known = self.concepts()
        concept = concept.strip()
        if known is not None and concept not in known:
            import difflib

            close = difflib.get_close_matches(concept, list(known), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            shown = ", ".join(list(known)[:12]) + (f", ... ({len(known) - 12} more)" if len(known) > 12 else "")
            raise ErasureError(f"judge '{self.name}' does not know the concept '{concept}'; {hint}known: {shown}")
        return concept

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"


# --- the spec and the registry ------------------------------------------------------------------

@dataclass(frozen=True)
class JudgeSpec:
    """One registered judge: what it decides, the files it needs, its settings.

    ``implementation`` is ``"module:function"``, imported when the judge is built and called as
    ``function(**settings)`` with every setting (defaults applied). ``argument`` names the setting that the
    text after ``name:`` in a spec string fills (``image-classifier:resnet50`` sets ``architecture``).
    """

    name: str
    summary: str
    config: type
    implementation: str
    argument: str | None = None
    needs: str = ""
    concept: str = ""  # what the concept string means for this judge

    def default(self, name: str) -> Any:
        f = config_fields(self.config)[name]
        return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]

    def settings(self) -> list[dict[str, Any]]:
        out = []
        for name, f in config_fields(self.config).items():
            meta = f.metadata
            out.append({"name": name, "default": _jsonable(self.default(name)), "help": meta.get("help", "")})
        return out

    def validate_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Every setting, checked (unknown name or bad value: one-line ErasureError), defaults filled in."""
        known = config_fields(self.config)
        unknown = [k for k in settings if k not in known]
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], list(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ErasureError(f"unknown setting {unknown[0]!r} for judge {self.name}; {hint}valid: {', '.join(known)}")
        checked = {k: check_value(f"judge {self.name}", k, v, known[k].metadata) for k, v in settings.items()}
        return {**{k: self.default(k) for k in known}, **checked}

    def build(self, **settings: Any) -> Judge:
        """The judge, with ``settings`` validated first (nothing loads before the check)."""
        values = self.validate_settings(settings)
        module, _, attr = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attr)(**values)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (``erasure list --judges --json``)."""
        return {"name": self.name, "summary": self.summary, "argument": self.argument, "needs": self.needs,
                "concept": self.concept, "settings": self.settings()}


JUDGES: Registry[JudgeSpec] = Registry("judge")


def parse_judge_spec(text: str) -> tuple[JudgeSpec, dict[str, Any]]:
    """``"name"`` or ``"name:argument"`` -> (spec, {argument setting: argument})."""
    if not isinstance(text, str) or not text.strip():
        raise ErasureError(f"judge {text!r} is empty; use a name from `erasure list --judges`")
    name, sep, rest = text.strip().partition(":")
    spec = JUDGES.get(name)
    if not sep:
        return spec, {}
    if spec.argument is None or not rest:
        raise ErasureError(f"judge '{name}' takes no ':{rest}' part; write --judge {name} and pass settings "
                           "with --judge-set KEY=VALUE")
    return spec, {spec.argument: rest}


def load_judge(judge: str | Judge | Callable[..., Any], **settings: Any) -> Judge:
    """A :class:`Judge` from a spec string (``"nudenet"``, ``"image-classifier:resnet50"``), an existing judge
    (returned as it is) or a Python callable ``f(images, concept)`` (wrapped in :class:`CallableJudge`)."""
    if isinstance(judge, Judge):
        if settings:
            raise ErasureError("settings go with a judge name, not with a judge object; build it with them")
        return judge
    if callable(judge) and not isinstance(judge, str):
        return CallableJudge(function=judge, **settings)
    spec, from_name = parse_judge_spec(judge)
    clash = set(from_name) & set(settings)
    if clash:
        raise ErasureError(f"judge '{judge}' sets {', '.join(clash)} twice (in the name and as a setting); keep one")
    return spec.build(**from_name, **settings)


# --- built-in judges ----------------------------------------------------------------------------

@dataclass
class WorldJudgeConfig:
    folder: str | None = setting(None, "the world's weights folder (default: the installed world)",
                                 types=(str, None))


class WorldJudge(Judge):
    """The built-in world's attribute classifier: exact labels for shape, colour, texture and background."""

    name = "world"

    def __init__(self, folder: str | None = None, classifier: Any = None) -> None:
        super().__init__({"folder": folder})
        from erasure.world.instruments import load_classifier, world_dir

        self._folder = world_dir(folder)
        if classifier is None and not (self._folder / "classifier.safetensors").is_file():
            raise ErasureError(f"the world's classifier is missing from {self._folder}; build the world with "
                               "`python scripts/train_world.py` or pass the folder with --judge-set folder=PATH")
        self.classifier = classifier if classifier is not None else load_classifier(folder)

    def _attribute_value(self, concept: str) -> tuple[str, str]:
        from erasure.world.models import classifier_classes
        from erasure.world.render import ATTRIBUTES

        concept = concept.strip() if isinstance(concept, str) else concept
        if not isinstance(concept, str) or not concept:
            raise ErasureError(f"judge 'world': the concept must be a name such as 'circle' or 'shape=circle', "
                               f"got {concept!r}")
        attribute, sep, value = concept.partition("=")
        if sep:
            attribute, value = attribute.strip(), value.strip()
            if attribute not in ATTRIBUTES:
                raise ErasureError(f"judge 'world' has no attribute '{attribute}'; it labels {', '.join(ATTRIBUTES)}")
            if value not in classifier_classes(attribute):
                raise ErasureError(f"judge 'world': {attribute} has no value '{value}'; "
                                   f"values: {', '.join(classifier_classes(attribute))}")
            return attribute, value
        owners = [a for a, values in ATTRIBUTES.items() if concept in values]
        if len(owners) != 1:
            self._check_concept(concept)  # unknown: "did you mean"
            raise ErasureError(f"judge 'world': '{concept}' is a value of {', '.join(owners)}; "
                               f"write {owners[0]}={concept}")
        return owners[0], concept

    def concepts(self) -> tuple[str, ...]:
        from erasure.world.render import ATTRIBUTES

        return tuple(v for values in ATTRIBUTES.values() for v in values)

    def predict(self, images: Any) -> dict[str, list[str]]:
        from erasure.world.instruments import predict_labels

        return predict_labels(self.classifier, as_uint8_images(images))

    def scores(self, images: Any, concept: str) -> np.ndarray:
        from erasure.world.instruments import classify
        from erasure.world.models import classifier_classes

        attribute, value = self._attribute_value(concept)
        probabilities = classify(self.classifier, as_uint8_images(images))[attribute]
        return probabilities[:, classifier_classes(attribute).index(value)].numpy().astype(np.float64)

    def decide(self, images: Any, concept: str) -> np.ndarray:
        attribute, value = self._attribute_value(concept)
        return np.array([label == value for label in self.predict(images)[attribute]], dtype=bool)

    def files(self) -> dict[str, str]:
        path = self._folder / "classifier.safetensors"
        return {str(path): file_sha256(path)} if path.is_file() else {}


def _world_judge(folder: str | None) -> WorldJudge:
    return WorldJudge(folder)


@dataclass
class CallableJudgeConfig:
    function: str = setting("", "module:function or path/to/file.py:function; called as f(images, concept) "
                                "and returning bool (decisions) or float (scores) per image", types=(str,))
    threshold: float = setting(0.5, "a float-returning function decides score > threshold", types=(float,))
    attribute: str | None = setting(None, "the label column predict() fills, for a function with .predict",
                                    types=(str, None))


class CallableJudge(Judge):
    """A Python function ``f(images, concept)`` returning per-image bools (decisions) or floats (scores;
    decided as ``score > threshold``). If the function has a ``labels(images) -> list[str]`` attribute, the
    judge labels too (``predict`` -> ``{attribute: labels}``)."""

    name = "callable"

    def __init__(self, function: Callable[..., Any] | str = "", threshold: float = 0.5,
                 attribute: str | None = None) -> None:
        label = function if isinstance(function, str) else _callable_name(function)
        super().__init__({"function": label, "threshold": threshold, "attribute": attribute})
        self.function = _import_callable(function) if isinstance(function, str) else function
        if not callable(self.function):
            raise ErasureError(f"judge 'callable': {label} is not callable")
        self.threshold = float(threshold)
        self.attribute = attribute

    def _raw(self, images: Any, concept: str) -> np.ndarray:
        images = as_uint8_images(images)
        out = np.asarray(self.function(images, concept))
        if out.shape != (len(images),):
            raise ErasureError(f"judge 'callable': {self.settings['function']} returned shape {out.shape} for "
                               f"{len(images)} images; return one bool or float per image")
        return out

    def decide(self, images: Any, concept: str) -> np.ndarray:
        out = self._raw(images, concept)
        return out.astype(bool) if out.dtype == bool else out.astype(np.float64) > self.threshold

    def scores(self, images: Any, concept: str) -> np.ndarray:
        return self._raw(images, concept).astype(np.float64)

    def predict(self, images: Any) -> dict[str, list[str]]:
        labels = getattr(self.function, "labels", None)
        if labels is None or self.attribute is None:
            return super().predict(images)
        images = as_uint8_images(images)
        out = [str(x) for x in labels(images)]
        if len(out) != len(images):
            raise ErasureError(f"judge 'callable': labels() returned {len(out)} labels for {len(images)} images")
        return {self.attribute: out}


def _callable_name(function: Any) -> str:
    return f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', repr(function))}"


def _import_callable(text: str) -> Callable[..., Any]:
    """``module:function`` or ``path/to/file.py:function``."""
    target, sep, attr = text.rpartition(":")
    if not sep or not target or not attr:
        raise ErasureError(f"judge 'callable' needs module:function or path/to/file.py:function, got {text!r}")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ErasureError(f"judge 'callable': file {path} not found; give an existing .py file")
        module_spec = importlib.util.spec_from_file_location(f"erasure_judge_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise ErasureError(f"judge 'callable': cannot import {target} ({error}); "
                               "give an importable module or a .py file path") from None
    if not hasattr(module, attr):
        raise ErasureError(f"judge 'callable': {target} has no attribute {attr!r}")
    return getattr(module, attr)


def _callable_judge(function: str, threshold: float, attribute: str | None) -> CallableJudge:
    return CallableJudge(function, threshold=threshold, attribute=attribute)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


JUDGES.register("world", JudgeSpec(
    name="world", summary="the built-in world's attribute classifier (labels shape, colour, texture, background)",
    config=WorldJudgeConfig, implementation="erasure.evaluation.judges:_world_judge",
    needs="nothing (ships with the world)", concept="a value (circle) or attribute=value (shape=circle)"))
JUDGES.register("callable", JudgeSpec(
    name="callable", summary="a Python function f(images, concept) -> bool or float per image",
    config=CallableJudgeConfig, implementation="erasure.evaluation.judges:_callable_judge", argument="function",
    needs="your function (module:function or file.py:function)", concept="whatever the function takes"))
