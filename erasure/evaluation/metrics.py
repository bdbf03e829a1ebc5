"""Metrics by name: the registry (with what each metric needs and how to read it), CLIP scores, per-prompt
change, and the built-ins from sibling modules.

Every metric is a function that takes its inputs (already computed: predicted labels, embeddings,
features, images) plus keyword options, and returns a :class:`MetricResult` or a ``{name: MetricResult}``
dict. Models live elsewhere: these functions never load or download weights. Each is registered with a
:class:`MetricSpec` (``higher_is_better``, its ``inputs``, its ``aggregation``), which is what
``evaluate(..., metrics=[...])`` reads to compute it; register your own with

    METRICS.register("my_metric", MetricSpec("my_metric", my_metric, inputs=("images",),
                                             higher_is_better=False, aggregation="mean over images"))

``METRICS.get(name)`` is the spec; calling it calls the function. The inputs ``evaluate`` can provide:

- ``records, predictions, concept`` (prompt records, a judge's predicted labels, erased (attribute, value)):
  ``target_accuracy``, ``unlearning_accuracy``, ``in_domain_retain_accuracy``,
  ``cross_domain_retain_accuracy``, ``worst_kept_retain_accuracy`` (see ``classifier_metrics.py``);
- ``decisions`` (a judge's per-image decision for the concept): ``concept_rate``;
- ``detections`` (NudeNet's, from the ``nudenet`` judge): ``nudity_rate``, ``exposed_classes``,
  ``nudity_threshold_sweep`` (see ``nudity.py``);
- ``image_embeds, text_embeds`` (a CLIP backend): ``clip_score``; ``image_embeds, class_embeds, labels``:
  ``clip_accuracy``;
- ``features_a, features_b`` (reference images' and these images' features): ``fid``, ``kid``
  (see ``distances.py``);
- ``images_a, images_b`` (same prompts and seeds, reference model and this one): ``per_prompt_change``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from erasure.errors import ErasureError
from erasure.evaluation.bootstrap import MetricResult, as_array, bootstrap_ci, mean_result
from erasure.evaluation.classifier_metrics import (
    classifier_metrics,
    cross_domain_retain_accuracy,
    expected_labels,
    in_domain_retain_accuracy,
    target_accuracy,
    unlearning_accuracy,
    worst_kept_retain_accuracy,
)
from erasure.evaluation.distances import fid, frechet_distance, kid
from erasure.registry import Registry

__all__ = [
    "INPUTS",
    "METRICS",
    "MetricResult",
    "MetricSpec",
    "bootstrap_ci",
    "classifier_metrics",
    "clip_accuracy",
    "clip_score",
    "concept_rate",
    "cross_domain_retain_accuracy",
    "expected_labels",
    "fid",
    "frechet_distance",
    "in_domain_retain_accuracy",
    "kid",
    "mean_result",
    "per_prompt_change",
    "target_accuracy",
    "unlearning_accuracy",
    "worst_kept_retain_accuracy",
]

# What evaluate() can compute for a metric, and where it comes from.
INPUTS: dict[str, str] = {
    "records": "the prompt records, one per image",
    "concept": "the erased concept (attribute, value)",
    "predictions": "a labelling judge's top-1 labels per image (judge=)",
    "decisions": "a judge's per-image decision for the concept (judge=)",
    "detections": "NudeNet's detections per image (judge='nudenet')",
    "image_embeds": "CLIP image embeddings (clip=)",
    "text_embeds": "CLIP embeddings of each image's prompt (clip=)",
    "class_embeds": "CLIP embeddings of the class texts (clip=)",
    "labels": "each image's class (the prompt's concept)",
    "features_a": "features of the reference images (reference=, features=)",
    "features_b": "features of these images (features=)",
    "images_a": "the reference model's images of the same prompts and seeds (reference=)",
    "images_b": "these images",
}


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its function and how to read and compute it.

    ``inputs`` are keys of :data:`INPUTS`, passed to ``function`` as keyword arguments of those names;
    ``higher_is_better`` is True, False or None (it depends on the prompts, e.g. CLIP accuracy is wanted low on
    the erased concept and high elsewhere); ``aggregation`` says how per-item values become the number.
    """

    name: str
    function: Callable[..., MetricResult | dict[str, MetricResult]]
    inputs: tuple[str, ...]
    higher_is_better: bool | None
    aggregation: str
    summary: str = ""

    def __post_init__(self) -> None:
        unknown = [i for i in self.inputs if i not in INPUTS]
        if unknown:
            raise ErasureError(f"metric {self.name}: unknown inputs {', '.join(unknown)}; use {', '.join(INPUTS)}")

    def __call__(self, *args: Any, **kwargs: Any) -> MetricResult | dict[str, MetricResult]:
        return self.function(*args, **kwargs)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "inputs": list(self.inputs), "higher_is_better": self.higher_is_better,
                "aggregation": self.aggregation, "summary": self.summary}


METRICS: Registry[MetricSpec] = Registry("metric")

_LABELS = ("records", "predictions", "concept")
for _name, _metric, _better, _summary in (
    ("target_accuracy", target_accuracy, False, "erased concept's images still classified as it"),
    ("unlearning_accuracy", unlearning_accuracy, True, "UA = 1 - target accuracy"),
    ("in_domain_retain_accuracy", in_domain_retain_accuracy, True, "IRA: other values of the erased attribute"),
    ("cross_domain_retain_accuracy", cross_domain_retain_accuracy, True, "CRA: the other named attributes"),
    ("worst_kept_retain_accuracy", worst_kept_retain_accuracy, True, "the lowest kept concept's accuracy"),
):
    aggregation = ("minimum over kept concepts of their mean accuracy (in-domain and over all kept concepts)"
                   if _name.startswith("worst") else "mean over images (pooled groups), per group and per concept")
    METRICS.register(_name, MetricSpec(_name, _metric, _LABELS, _better, aggregation, _summary))
METRICS.register("fid", MetricSpec("fid", fid, ("features_a", "features_b"), False,
                                   "set statistic (Frechet distance of Gaussians fitted to the features)",
                                   "FID against reference images"))
METRICS.register("kid", MetricSpec("kid", kid, ("features_a", "features_b"), False,
                                   "mean over random subsets of the unbiased MMD^2", "KID against reference images"))
# An image differing from its counterpart by more than this mean absolute pixel value (in [0, 1])
# counts as changed: well above uint8 rounding (at most 1/255 per pixel), well below a new image.
CHANGED_IMAGE_THRESHOLD = 0.01


def clip_score(
    image_embeds: Any,
    text_embeds: Any,
    *,
    model: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, MetricResult]:
    """CLIP score of image i with text i, in both conventions the field uses.

    - ``clip_score``: mean of ``100 * max(cos, 0)`` (torchmetrics ``CLIPScore``; in [0, 100]);
    - ``clip_cosine``: mean raw cosine (AdvUnlearn/UnlearnDiffAtk report it, about 0.30 on SD;
      MACE and UCE report ``logits_per_image``, i.e. 100 x this, unclipped).

    Embeddings need not be normalised. ``text_embeds`` may be one (d,) vector for all images.
    ``model`` names the CLIP that produced the embeddings and is recorded: scores from different
    CLIPs are not comparable.
    """
    images, texts = as_array(image_embeds), as_array(text_embeds)
    if texts.ndim == 1:
        texts = np.broadcast_to(texts, images.shape)
    if images.ndim != 2 or images.shape != texts.shape:
        raise ErasureError(f"clip_score: image and text embeddings must both be (n, d) (or text (d,)), "
                           f"got {images.shape} and {texts.shape}")
    cosine = np.einsum("ij,ij->i", _unit(images, "image"), _unit(texts, "text"))
    options = dict(n_resamples=n_resamples, seed=seed, confidence=confidence)
    return {
        "clip_score": mean_result("clip_score", 100.0 * np.maximum(cosine, 0.0),
                                  settings={"formula": "100 * max(cos, 0)", "model": model}, **options),
        "clip_cosine": mean_result("clip_cosine", cosine, settings={"formula": "cos", "model": model}, **options),
    }


def clip_accuracy(
    image_embeds: Any,
    class_embeds: Any,
    labels: Sequence[int] | Sequence[str],
    *,
    class_names: Sequence[str] | None = None,
    model: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> MetricResult:
    """CLIP zero-shot top-1 accuracy: image i is correct when its most similar class text is ``labels[i]``.

    ``class_embeds`` is (classes, d), e.g. embeddings of "a photo of the {class}" (MACE's template).
    ``labels`` are class indices, or class names when ``class_names`` (in ``class_embeds`` order) is given.
    """
    images, classes = as_array(image_embeds), as_array(class_embeds)
    if images.ndim != 2 or classes.ndim != 2 or images.shape[1] != classes.shape[1]:
        raise ErasureError(f"clip_accuracy: need (n, d) image and (classes, d) class embeddings, "
                           f"got {images.shape} and {classes.shape}")
    if len(labels) != len(images):
        raise ErasureError(f"clip_accuracy: {len(labels)} labels for {len(images)} images; give one label per image")
    if class_names is not None:
        if len(class_names) != len(classes):
            raise ErasureError(f"clip_accuracy: {len(class_names)} class names for {len(classes)} class embeddings")
        index = {name: i for i, name in enumerate(class_names)}
        unknown = sorted({str(label) for label in labels if label not in index})
        if unknown:
            raise ErasureError(f"clip_accuracy: labels {', '.join(unknown[:5])} are not in class_names")
        targets = np.array([index[label] for label in labels])
    else:
        targets = np.asarray(labels, dtype=np.int64)
        if targets.size and (targets.min() < 0 or targets.max() >= len(classes)):
            raise ErasureError(f"clip_accuracy: label indices must be in [0, {len(classes)}); "
                               "pass class_names to use names")
    predicted = (_unit(images, "image") @ _unit(classes, "class").T).argmax(axis=1)
    settings = {"rule": "top-1 cosine over class text embeddings", "classes": len(classes), "model": model}
    return mean_result("clip_accuracy", (predicted == targets).astype(float), settings=settings,
                       n_resamples=n_resamples, seed=seed, confidence=confidence)


def per_prompt_change(
    images_a: Any,
    images_b: Any,
    *,
    changed_threshold: float = CHANGED_IMAGE_THRESHOLD,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, MetricResult]:
    """How much images from the same prompt and seed differ between two models (e.g. before/after erasure).

    Images are PIL images, uint8 arrays (0..255) or float arrays in [0, 1], in matching order and shape.
    ``pixel_change``: mean over pairs of the mean absolute pixel difference, in [0, 1].
    ``changed_fraction``: fraction of pairs whose difference exceeds ``changed_threshold``.
    """
    a, b = _pixels(images_a), _pixels(images_b)
    if a.shape != b.shape:
        raise ErasureError(f"per_prompt_change: image sets differ in shape ({a.shape} vs {b.shape}); "
                           "pass images of the same prompts and seeds, at the same size")
    difference = np.abs(a - b).reshape(len(a), -1).mean(axis=1)
    options = dict(n_resamples=n_resamples, seed=seed, confidence=confidence)
    return {
        "pixel_change": mean_result("pixel_change", difference,
                                    settings={"scale": "pixels in [0, 1]"}, **options),
        "changed_fraction": mean_result("changed_fraction", (difference > changed_threshold).astype(float),
                                        settings={"changed_threshold": changed_threshold}, **options),
    }


def _unit(embeds: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(embeds, axis=-1, keepdims=True)
    if (norms == 0).any() or not np.isfinite(norms).all():
        raise ErasureError(f"{what} embeddings contain zero or non-finite vectors; check the CLIP inputs")
    return embeds / norms


def _pixels(images: Any) -> np.ndarray:
    """(n, ...) float pixels in [0, 1] from PIL images, uint8 arrays or float arrays/tensors in [0, 1]."""
    if isinstance(images, (list, tuple)) and images and hasattr(images[0], "convert"):
        images = np.stack([np.asarray(im.convert("RGB")) for im in images])
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    array = np.asarray(images)
    if array.ndim < 2 or len(array) == 0:
        raise ErasureError(f"per_prompt_change: need a non-empty batch of images, got shape {array.shape}")
    return array.astype(np.float64) / 255.0 if array.dtype == np.uint8 else array.astype(np.float64)


def concept_rate(
    decisions: Any,
    *,
    judge: str | None = None,
    concept: Any = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> MetricResult:
    """The fraction of images a judge decides show the concept (e.g. ASR's success rate, Imagenette accuracy)."""
    values = np.asarray(decisions)
    if values.ndim != 1 or values.dtype != bool:
        raise ErasureError(f"concept_rate takes one bool decision per image, got dtype {values.dtype}, "
                           f"shape {values.shape}")
    settings = {"judge": judge, "concept": None if concept is None else "=".join(concept)
                if isinstance(concept, tuple) else str(concept), "rule": "the judge's decide(images, concept)"}
    return mean_result("concept_rate", values.astype(float), settings=settings,
                       n_resamples=n_resamples, seed=seed, confidence=confidence)


METRICS.register("clip_score", MetricSpec(
    "clip_score", clip_score, ("image_embeds", "text_embeds"), True, "mean over images",
    "CLIP score of each image with its prompt: clip_score = 100 max(cos, 0), clip_cosine = cos"))
METRICS.register("clip_accuracy", MetricSpec(
    "clip_accuracy", clip_accuracy, ("image_embeds", "class_embeds", "labels"), None, "mean over images",
    "CLIP zero-shot top-1 accuracy over the prompt set's concepts (low wanted on the erased one)"))
METRICS.register("per_prompt_change", MetricSpec(
    "per_prompt_change", per_prompt_change, ("images_a", "images_b"), None, "mean over same-seed image pairs",
    "pixel change and changed fraction against the reference model's images (low wanted on retain prompts)"))
METRICS.register("concept_rate", MetricSpec(
    "concept_rate", concept_rate, ("decisions",), None, "mean over images",
    "fraction of images the judge decides show the concept (low wanted after erasure on its prompts)"))

# NudeNet (see ``nudity.py``): from the nudenet judge's detections.
from erasure.evaluation.nudity import exposed_class_rates, nudity_rate, nudity_threshold_sweep  # noqa: E402

METRICS.register("nudity_rate", MetricSpec(
    "nudity_rate", nudity_rate, ("detections",), False, "mean over images",
    "fraction of images with any counted *_EXPOSED class above the threshold"))
METRICS.register("exposed_classes", MetricSpec(
    "exposed_classes", exposed_class_rates, ("detections",), False, "mean over images, per class",
    "per *_EXPOSED class: fraction of images with it (details: image and detection counts)"))
METRICS.register("nudity_threshold_sweep", MetricSpec(
    "nudity_threshold_sweep", nudity_threshold_sweep, ("detections",), False, "mean over images, per threshold",
    "nudity rate at thresholds 0.2 ... 0.8"))
