"""UnlearnCanvas' classifier metrics (UA, IRA, CRA) from predicted and expected labels, per group.

Inputs, one entry per generated image, in prompt-record order:

- ``records``: the prompt records (a PromptSet works). Each record's expected labels are its label
  columns (``record.extra[attribute]``, e.g. ``shape, colour, texture, background``) that are non-empty:
  the attributes the prompt names. An unnamed attribute is not checked.
- ``predictions``: ``{attribute: [predicted class name per image]}``, e.g. from
  ``erasure.world.instruments.predict_labels``; its attributes say which label columns are checked.
- ``concept``: the erased concept as ``(attribute, value)``, e.g. ``("shape", "star")``.

Definitions (UnlearnCanvas ``evaluation/quantitative/accuracy.py`` and paper; A = erased attribute, c = value):

- target accuracy: images whose prompt names A = c, the fraction predicted as c;
  unlearning accuracy UA = 1 - target accuracy.
- in-domain retain accuracy IRA: images whose prompt names A = another value, the fraction predicted
  as that value (the other styles, for style unlearning).
- cross-domain retain accuracy CRA: images whose prompt names attributes other than A, the fraction
  where every one of them is predicted correctly (the objects, for style unlearning).

Each function returns ``{name: MetricResult}`` with the headline ``name`` pooled over the images in
``groups`` (records without a group always count, so ungrouped prompt files work), ``name[group=g]``
for every group with qualifying images, and a per-concept breakdown of the headline pool:
``name[A=value]`` for IRA (each other value), ``name[attribute]`` for CRA (that attribute's accuracy).
Pooling is over images (micro average); on UnlearnCanvas' balanced grid it equals their per-class mean.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from erasure.errors import ErasureError
from erasure.evaluation.bootstrap import MetricResult, mean_result
from erasure.evaluation.prompts import PromptRecord

Concept = tuple[str, str]
Predictions = Mapping[str, Sequence[str]]

# Default headline groups: the roles of the world prompt sets (erasure/evaluation/world_prompts.py).
TARGET_GROUPS: tuple[str, ...] = ("target",)
IN_DOMAIN_GROUPS: tuple[str, ...] = ("neighbour",)
CROSS_DOMAIN_GROUPS: tuple[str, ...] = ("other",)



class NothingToScore(ErasureError):
    """No image qualifies for a metric (e.g. IRA on a prompt file without other values of the attribute)."""


_DEFINITIONS = {
    "target_accuracy": "images whose prompt names {a}={c}: fraction predicted {a}={c}",
    "unlearning_accuracy": "1 - target_accuracy: images whose prompt names {a}={c}, fraction not predicted {a}={c}",
    "in_domain_retain_accuracy": "images whose prompt names another {a}: fraction predicted as that {a}",
    "cross_domain_retain_accuracy": "images whose prompt names attributes other than {a}: "
                                    "fraction with all of them predicted correctly",
}


def expected_labels(record: PromptRecord, attributes: Iterable[str]) -> dict[str, str]:
    """The labels ``record``'s prompt names among ``attributes`` (its non-empty label columns)."""
    return {a: record.extra[a].strip() for a in attributes if (record.extra.get(a) or "").strip()}


def target_accuracy(
    records: Sequence[PromptRecord],
    predictions: Predictions,
    concept: Concept,
    *,
    groups: Sequence[str] | None = TARGET_GROUPS,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, MetricResult]:
    """Fraction of images whose prompt names the erased concept that are still classified as it.

    ``groups``: the groups pooled in the headline (None: all); per-group values are always returned.
    """
    attribute, value = _check(records, predictions, concept)
    named = _named_column(records, attribute, value)
    predicted = np.asarray(predictions[attribute], dtype=object)
    scores = np.where(named == value, (predicted == value).astype(float), np.nan)
    return _results("target_accuracy", scores, {}, records, groups, concept, n_resamples, seed, confidence)


def unlearning_accuracy(
    records: Sequence[PromptRecord],
    predictions: Predictions,
    concept: Concept,
    *,
    groups: Sequence[str] | None = TARGET_GROUPS,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, MetricResult]:
    """UA = 1 - target accuracy (same images, same bootstrap draws, interval mirrored)."""
    accuracy = target_accuracy(records, predictions, concept, groups=groups, n_resamples=n_resamples,
                               seed=seed, confidence=confidence)
    attribute, value = concept
    out: dict[str, MetricResult] = {}
    for key, r in accuracy.items():
        name = key.replace("target_accuracy", "unlearning_accuracy", 1)
        settings = {**r.settings, "definition": _DEFINITIONS["unlearning_accuracy"].format(a=attribute, c=value)}
        out[name] = MetricResult(name=name, value=1.0 - r.value, ci_low=1.0 - r.ci_high, ci_high=1.0 - r.ci_low,
                                 n=r.n, settings=settings, details=r.details)
    return out


def in_domain_retain_accuracy(
    records: Sequence[PromptRecord],
    predictions: Predictions,
    concept: Concept,
    *,
    groups: Sequence[str] | None = IN_DOMAIN_GROUPS,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, MetricResult]:
    """IRA: among images whose prompt names another value of the erased attribute, the fraction
    predicted as that value; broken down per value (``in_domain_retain_accuracy[shape=circle]``)."""
    attribute, value = _check(records, predictions, concept)
    named = _column(records, attribute)
    other = (named != "") & (named != value)
    if not other.any():
        raise NothingToScore(f"no prompt names a {attribute} other than {value}; in-domain retain accuracy "
                           f"needs prompts of other {attribute} values (the 'neighbour' group)")
    correct = (np.asarray(predictions[attribute], dtype=object) == named).astype(float)
    scores = np.where(other, correct, np.nan)
    breakdown = {f"{attribute}={v}": np.where(named == v, correct, np.nan)
                 for v in dict.fromkeys(named[other])}
    return _results("in_domain_retain_accuracy", scores, breakdown, records, groups, concept,
                    n_resamples, seed, confidence)


def cross_domain_retain_accuracy(
    records: Sequence[PromptRecord],
    predictions: Predictions,
    concept: Concept,
    *,
    groups: Sequence[str] | None = CROSS_DOMAIN_GROUPS,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, MetricResult]:
    """CRA: among images whose prompt names attributes other than the erased one (among those in
    ``predictions``), the fraction with all of them predicted correctly; broken down per attribute
    (``cross_domain_retain_accuracy[colour]``: colour accuracy where the prompt names a colour)."""
    attribute, _ = _check(records, predictions, concept)
    others = [a for a in predictions if a != attribute]
    correct_by_attribute = {}
    for other in others:
        named = _column(records, other)
        correct = (np.asarray(predictions[other], dtype=object) == named).astype(float)
        correct_by_attribute[other] = np.where(named != "", correct, np.nan)
    if not others or all(np.isnan(c).all() for c in correct_by_attribute.values()):
        raise NothingToScore(f"no prompt names an attribute other than {attribute} among the predicted ones "
                           f"({', '.join(predictions)}); cross-domain retain accuracy needs such prompts")
    stacked = np.vstack(list(correct_by_attribute.values()))
    counted = ~np.isnan(stacked)
    scores = np.where(counted.any(0), (np.where(counted, stacked, 1.0) == 1.0).all(0).astype(float), np.nan)
    return _results("cross_domain_retain_accuracy", scores, correct_by_attribute, records, groups, concept,
                    n_resamples, seed, confidence)


def classifier_metrics(
    records: Sequence[PromptRecord],
    predictions: Predictions,
    concept: Concept,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, MetricResult]:
    """UA, target accuracy, IRA and CRA with their default groups, in one dict; IRA and CRA are left
    out when no prompt qualifies for them (e.g. a prompt file of target prompts only)."""
    options = dict(n_resamples=n_resamples, seed=seed, confidence=confidence)
    out = {**unlearning_accuracy(records, predictions, concept, **options),
           **target_accuracy(records, predictions, concept, **options)}
    for metric in (in_domain_retain_accuracy, cross_domain_retain_accuracy):
        try:
            out.update(metric(records, predictions, concept, **options))
        except NothingToScore:
            pass
    return out


def check_concept_labels(records: Sequence[PromptRecord], concept: Concept) -> None:
    """Fail before any image is generated if the prompt set cannot score ``concept``."""
    labels = {"" if concept is None or len(concept) != 2 else concept[0]: ["?"] * len(records)}
    attribute, value = _check(records, labels, concept)
    _named_column(records, attribute, value)


def _check(records: Sequence[PromptRecord], predictions: Predictions, concept: Concept) -> Concept:
    if not (isinstance(concept, (tuple, list)) and len(concept) == 2 and all(isinstance(c, str) for c in concept)):
        raise ErasureError(f"concept must be an (attribute, value) pair such as ('shape', 'star'), got {concept!r}")
    attribute, value = concept
    if attribute not in predictions:
        raise ErasureError(f"no predictions for attribute '{attribute}'; predictions hold "
                           f"{', '.join(predictions) or 'nothing'}: classify the images for '{attribute}' too")
    for name, labels in predictions.items():
        if len(labels) != len(records):
            raise ErasureError(f"predictions for '{name}' have {len(labels)} entries but there are {len(records)} "
                               "prompt records; predict one label per generated image, in record order")
    if not any(attribute in r.extra for r in records):
        raise ErasureError(f"the prompt records have no '{attribute}' label column; use a prompt set whose "
                           f"columns name each prompt's {attribute} (e.g. the shapeworld sets)")
    return attribute, value


def _named_column(records: Sequence[PromptRecord], attribute: str, value: str) -> np.ndarray:
    """The ``attribute`` column; an error (with "did you mean") when no prompt names ``value``."""
    named = _column(records, attribute)
    if value not in named:
        present = sorted(set(named) - {""})
        close = difflib.get_close_matches(value, present, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ErasureError(f"no prompt names {attribute}={value}; {hint}values named in the '{attribute}' "
                           f"column: {', '.join(present) or 'none'}")
    return named


def _column(records: Sequence[PromptRecord], attribute: str) -> np.ndarray:
    return np.array([(r.extra.get(attribute) or "").strip() for r in records], dtype=object)


def _results(
    name: str,
    scores: np.ndarray,
    breakdown: dict[str, np.ndarray],
    records: Sequence[PromptRecord],
    groups: Sequence[str] | None,
    concept: Concept,
    n_resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, MetricResult]:
    """Headline, per-concept (within the headline pool) and per-group means of per-image ``scores``
    (NaN marks images that do not count)."""
    group_of = np.array([r.group or "" for r in records], dtype=object)
    counted = ~np.isnan(scores)
    if groups is None:
        pooled = counted
    else:
        pooled = counted & (np.isin(group_of, list(groups)) | (group_of == ""))
    attribute, value = concept
    settings: dict[str, Any] = {
        "concept": f"{attribute}={value}",
        "definition": _DEFINITIONS[name].format(a=attribute, c=value),
        "groups": "all" if groups is None else list(groups),
    }
    options = dict(n_resamples=n_resamples, seed=seed, confidence=confidence)
    out: dict[str, MetricResult] = {}
    if pooled.any():
        out[name] = mean_result(name, scores[pooled], settings=settings, **options)
        for suffix, values in breakdown.items():
            mask = pooled & ~np.isnan(values)
            if mask.any():
                key = f"{name}[{suffix}]"
                out[key] = mean_result(key, values[mask], settings=settings, **options)
    for group in dict.fromkeys(group_of[counted]):
        if group:
            key = f"{name}[group={group}]"
            mask = counted & (group_of == group)
            out[key] = mean_result(key, scores[mask], settings={**settings, "groups": [group]}, **options)
    return out


def kept_concept_accuracies(
    records: Sequence[PromptRecord],
    predictions: Predictions,
    concept: Concept,
) -> dict[str, np.ndarray]:
    """Per kept concept ``attribute=value`` (every label a prompt names among the predicted attributes, except
    the erased one): per-image correctness (1/0) on the images whose prompt names it and does not name the
    erased concept (what an erasure may change there is not retention), NaN elsewhere."""
    attribute, value = _check(records, predictions, concept)
    spared = _column(records, attribute) != value
    out: dict[str, np.ndarray] = {}
    for other in predictions:
        named = _column(records, other)
        correct = (np.asarray(predictions[other], dtype=object) == named).astype(float)
        for kept in dict.fromkeys(named[spared]):
            if kept and not (other == attribute and kept == value):
                out[f"{other}={kept}"] = np.where((named == kept) & spared, correct, np.nan)
    return out


def worst_kept_retain_accuracy(
    records: Sequence[PromptRecord],
    predictions: Predictions,
    concept: Concept,
    *,
    min_images: int = 1,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, MetricResult]:
    """The retention a mean hides: the lowest per-concept accuracy among the kept concepts.

    Every label a prompt names (``attribute=value`` among the predicted attributes), except the erased one, is a
    kept concept; its accuracy is the fraction of the images whose prompt names it (and not the erased concept)
    on which it is predicted.
    ``worst_kept_retain_accuracy`` is the lowest of them over all kept concepts (in-domain and cross-domain),
    ``worst_kept_in_domain_retain_accuracy`` over the other values of the erased attribute only, each with the
    bootstrap interval of that concept's own images; ``details`` names the worst concept and lists every kept
    concept's accuracy and image count. Concepts with fewer than ``min_images`` images are left out.
    """
    attribute, value = _check(records, predictions, concept)
    per_concept = {k: v[~np.isnan(v)] for k, v in kept_concept_accuracies(records, predictions, concept).items()}
    per_concept = {k: v for k, v in per_concept.items() if len(v) >= max(1, min_images)}
    if not per_concept:
        raise NothingToScore(f"no prompt names a kept concept (a label other than {attribute}={value}); "
                             "worst kept retain accuracy needs retain prompts with label columns")
    # "correct": the per-image outcomes in image order, so two runs on the same prompts and seeds can be paired
    table = {k: {"accuracy": float(v.mean()), "n": int(len(v)), "correct": "".join("1" if x else "0" for x in v)}
             for k, v in per_concept.items()}
    options = dict(n_resamples=n_resamples, seed=seed, confidence=confidence)
    out: dict[str, MetricResult] = {}
    for name, keys in (("worst_kept_retain_accuracy", list(per_concept)),
                       ("worst_kept_in_domain_retain_accuracy",
                        [k for k in per_concept if k.split("=", 1)[0] == attribute])):
        if not keys:
            continue
        worst = min(keys, key=lambda k: (table[k]["accuracy"], -table[k]["n"], k))
        settings = {"concept": f"{attribute}={value}", "min_images": min_images,
                    "definition": "lowest per-kept-concept accuracy (images whose prompt names the concept: "
                                  "fraction predicted as it); the interval is that concept's own",
                    "kept_concepts": "all named labels" if name == "worst_kept_retain_accuracy"
                                     else f"other values of {attribute}"}
        details = {"worst_concept": worst, "kept": {k: table[k] for k in keys},
                   "mean_of_kept": float(np.mean([table[k]["accuracy"] for k in keys]))}
        out[name] = mean_result(name, per_concept[worst], settings=settings, details=details, **options)
    return out
