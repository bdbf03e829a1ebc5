"""Evaluate a model on prompt sets: generate, classify, score, and write a report with pictures.

    report = evaluate(pipe, "shapeworld/shape-circle", concept=("shape", "circle"))
    report.metrics["target_accuracy"].value        # how often circles still come out
    report.save("outputs/eval-circle")               # report.json, report.md, grid-<group>.png

On the built-in world the judge is the world's attribute classifier (exact labels, since we rendered the
training data), and the classifier metrics are UnlearnCanvas' (target accuracy / UA, in-domain and
cross-domain retain accuracy, each per prompt group). Every number carries its 95% bootstrap interval,
and the report records the sampler settings, prompt-set hash, model and package versions.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from erasure.errors import ErasureError
from erasure.evaluation.bootstrap import MetricResult
from erasure.evaluation.prompts import PromptRecord, PromptSet, read_prompt_set
from erasure.generation import SamplerSettings, generate_images, image_grid

# The built-in world's sampler defaults (guidance 5 was best in the world's own sweep; see README).
WORLD_SETTINGS = SamplerSettings(steps=25, guidance=5.0)


@dataclass
class Report:
    """What ``evaluate`` measured: metrics by name, and everything needed to reproduce them."""

    metrics: dict[str, MetricResult]
    info: dict[str, Any]
    images: np.ndarray | None = field(default=None, repr=False)
    records: tuple[PromptRecord, ...] = field(default=(), repr=False)

    def value(self, name: str) -> float:
        return self.metrics[name].value

    def to_dict(self) -> dict[str, Any]:
        return {"info": self.info, "metrics": {k: v.to_dict() for k, v in self.metrics.items()}}

    def markdown(self, baseline: "Report | None" = None) -> str:
        lines = [f"# Evaluation: {self.info.get('concept', '')} on {self.info.get('prompt_set', '')}", "",
                 f"Model: `{self.info.get('model')}`. Sampler: {self.info.get('settings')}. "
                 f"{self.info.get('images')} images, {self.info.get('samples_per_prompt')} per prompt.", ""]
        head = "| metric | value | 95% CI | n |" + (" baseline | change |" if baseline else "")
        lines += [head, "|---|---|---|---|" + ("---|---|" if baseline else "")]
        for name, r in self.metrics.items():
            row = f"| {name} | {r.value:.3f} | [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.n} |"
            if baseline is not None and name in baseline.metrics:
                b = baseline.metrics[name].value
                row += f" {b:.3f} | {r.value - b:+.3f} |"
            elif baseline is not None:
                row += " | |"
            lines.append(row)
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | Path, *, force: bool = False, baseline: "Report | None" = None) -> Path:
        """Write ``report.json``, ``report.md`` and one grid per prompt group, atomically."""
        from erasure.files import atomic_folder

        with atomic_folder(out_dir, force=force) as tmp:
            data = self.to_dict()
            if baseline is not None:
                data["baseline"] = baseline.to_dict()
            from erasure.files import dumps_json  # NaN as null: bare NaN is not JSON

            (tmp / "report.json").write_text(dumps_json(data))
            (tmp / "report.md").write_text(self.markdown(baseline))
            if self.images is not None and len(self.records):
                for group, grid in group_grids(self.records, self.images, self.info["samples_per_prompt"]).items():
                    grid.save(tmp / f"grid-{group or 'all'}.png")
            if baseline is not None and _comparable(self, baseline):
                for group, grid in comparison_grids(self, baseline).items():
                    grid.save(tmp / f"compare-{group or 'all'}.png")
        return Path(out_dir)


def group_grids(records: Sequence[PromptRecord], images: np.ndarray, samples: int, rows: int = 8) -> dict:
    """Per prompt group: a grid of its first ``rows`` prompts x their samples, labelled by prompt."""
    grids = {}
    groups = dict.fromkeys(r.group or "" for r in records)
    for g in groups:
        idx = [i for i, r in enumerate(records) if (r.group or "") == g][:rows]
        tiles = np.stack([images[i * samples + k] for i in idx for k in range(samples)])
        grids[g] = image_grid(tiles, len(idx), samples, row_labels=[records[i].prompt for i in idx])
    return grids


def _comparable(a: Report, b: Report) -> bool:
    return (a.images is not None and b.images is not None and a.images.shape == b.images.shape
            and [(r.prompt, r.evaluation_seed) for r in a.records] == [(r.prompt, r.evaluation_seed) for r in b.records]
            and a.info.get("samples_per_prompt") == b.info.get("samples_per_prompt"))


def comparison_grids(edited: Report, baseline: Report, rows: int = 8) -> dict:
    """Per prompt group, one row per prompt: the baseline's samples, then the edited model's (same seeds)."""
    samples = edited.info["samples_per_prompt"]
    grids = {}
    groups = dict.fromkeys(r.group or "" for r in edited.records)
    for g in groups:
        idx = [i for i, r in enumerate(edited.records) if (r.group or "") == g][:rows]
        gap = np.full_like(edited.images[0], 255)  # a white column between before and after
        tiles = np.stack([t for i in idx for t in (*[baseline.images[i * samples + k] for k in range(samples)], gap,
                                                    *[edited.images[i * samples + k] for k in range(samples)])])
        labels = [f"{edited.records[i].prompt}  (before | after)" for i in idx]
        grids[g] = image_grid(tiles, len(idx), 2 * samples + 1, row_labels=labels)
    return grids


def compare(
    edited: Report,
    baseline: Report,
    *,
    features: Callable[[np.ndarray], np.ndarray] | None = None,
    feature_extractor: str | None = None,
    n_resamples: int = 200,
) -> dict[str, MetricResult]:
    """Distances between two models' images of the same prompts and seeds, on the prompts that do not name
    the erased concept (what should not have changed): ``pixel_change`` / ``changed_fraction`` of same-seed
    pairs, and ``fid`` / ``kid`` of ``features`` (on the built-in world: the classifier's features).
    The results are added to ``edited.metrics`` and returned."""
    from erasure.evaluation.distances import fid, kid
    from erasure.evaluation.metrics import per_prompt_change

    if not _comparable(edited, baseline):
        raise ErasureError("the two reports are not of the same prompts, seeds and samples (or hold no images); "
                           "evaluate both models on the same prompt set with keep_images=True")
    samples = edited.info["samples_per_prompt"]
    label = edited.info.get("concept") or ""
    concept = tuple(label.split("=", 1)) if "=" in label else None
    keep = np.array([not (concept and (r.extra.get(concept[0]) or "").strip() == concept[1])
                     for r in edited.records for _ in range(samples)])
    if not keep.any():
        raise ErasureError("every prompt names the erased concept, so nothing is left to compare; "
                           "use a prompt set with other (retain) prompts too")
    a, b = baseline.images[keep], edited.images[keep]
    out: dict[str, MetricResult] = dict(per_prompt_change(a, b, n_resamples=n_resamples))
    if features is not None:
        fa, fb = np.asarray(features(a)), np.asarray(features(b))
        out["fid"] = fid(fa, fb, feature_extractor=feature_extractor, n_resamples=min(n_resamples, 100))
        out["kid"] = kid(fa, fb, feature_extractor=feature_extractor, n_resamples=n_resamples)
    edited.metrics.update(out)
    edited.info["comparison"] = {"baseline_model": baseline.info.get("model"), "baseline_edit": baseline.info.get("edit"),
                                 "images": f"{int(keep.sum())} images of prompts not naming {label or 'a concept'}, "
                                           "baseline vs this model, same seeds",
                                 "metrics": sorted(out), "feature_extractor": feature_extractor}
    return out


def world_features(images: np.ndarray) -> np.ndarray:
    """The built-in world's feature extractor for FID/KID: its attribute classifier's penultimate layer."""
    from erasure.world.instruments import classifier_features, load_classifier

    return classifier_features(load_classifier(), images)


def resolve_prompt_set(spec: str | Path | PromptSet) -> PromptSet:
    """A PromptSet, a registered name (``shapeworld/shape-circle``), or a path to a prompt file."""
    if isinstance(spec, PromptSet):
        return spec
    from erasure.evaluation.prompts import prompt_sets

    registry = prompt_sets()
    if str(spec) in registry:
        return read_prompt_set(registry.get(str(spec)), name=str(spec))
    path = Path(spec)
    if path.is_file():
        return read_prompt_set(path)
    registry.get(str(spec))  # raises "unknown prompt set ... did you mean"
    raise AssertionError("unreachable")


def prompt_set_hash(records: Sequence[PromptRecord]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.prompt, r.evaluation_seed, r.group, sorted(r.extra.items())], default=str).encode())
    return h.hexdigest()[:16]


def _is_world(pipe) -> bool:
    return getattr(pipe, "erasure_source", None) == "shapeworld"


def evaluate(
    pipe,
    prompt_set: str | Path | PromptSet,
    *,
    concept: tuple[str, str] | None = None,
    settings: SamplerSettings | None = None,
    samples_per_prompt: int = 1,
    batch_size: int = 32,
    classifier=None,
    n_resamples: int = 1000,
    progress: bool = True,
    keep_images: bool = True,
    images_dir: str | Path | None = None,
) -> Report:
    """Generate ``samples_per_prompt`` images per record (seeds ``evaluation_seed + k``) and score them.

    With a ``concept`` (``(attribute, value)``) and the world's classifier (the default on the built-in
    world), the classifier metrics are computed; the label columns of the prompt set say what each
    prompt names. Without a classifier, only the attribute-free metrics apply. With ``images_dir``
    the images are kept there with a hashed manifest, and a rerun resumes (see ``generate_to_folder``).
    """
    from erasure.embeddings import text_encoder_fingerprint as weights_fingerprint
    from erasure.evaluation.classifier_metrics import classifier_metrics

    pset = resolve_prompt_set(prompt_set)
    if samples_per_prompt < 1:
        raise ErasureError(f"samples per prompt must be >= 1 (got {samples_per_prompt})")
    if settings is None:
        settings = WORLD_SETTINGS if _is_world(pipe) else SamplerSettings()
    records = tuple(pset.records)
    if concept is not None:  # check before the (long) generation, not after it
        from erasure.evaluation.classifier_metrics import check_concept_labels

        check_concept_labels(records, tuple(concept))
        if classifier is None and not _is_world(pipe):
            raise ErasureError("classifier metrics need a classifier; on your own model pass classifier= "
                               "(the built-in world brings its own)")
    prompts = [r.prompt for r in records for _ in range(samples_per_prompt)]
    seeds = [int(r.evaluation_seed) + k for r in records for k in range(samples_per_prompt)]
    t0 = time.perf_counter()
    if images_dir is not None:
        from erasure.evaluation.generate import generate_to_folder

        from erasure.embeddings import text_encoder_fingerprint as weights_fingerprint

        # the recipe names the exact weights, so an edited model never resumes an unedited model's folder
        model = (f"{getattr(pipe, 'erasure_source', 'unknown')}@unet:{weights_fingerprint(pipe.unet)[:16]}"
                 f",text:{weights_fingerprint(pipe.text_encoder)[:16]}")
        images = generate_to_folder(pipe, prompts, seeds, images_dir, settings, batch_size=batch_size,
                                    model=model, progress=progress)
    else:
        images = generate_images(pipe, prompts, seeds, settings, batch_size=batch_size, progress=progress)
    t1 = time.perf_counter()
    metrics: dict[str, MetricResult] = {}
    if concept is not None:
        if classifier is None and _is_world(pipe):
            from erasure.world.instruments import load_classifier

            classifier = load_classifier()
        if classifier is None:
            raise ErasureError("classifier metrics need a classifier; on your own model pass classifier= "
                               "(the built-in world brings its own)")
        from erasure.world.instruments import predict_labels

        predictions = predict_labels(classifier, images)
        expanded = tuple(r for r in records for _ in range(samples_per_prompt))
        metrics.update(classifier_metrics(expanded, predictions, tuple(concept), n_resamples=n_resamples))
    info = {
        "model": getattr(pipe, "erasure_source", None),
        "edit": getattr(pipe, "erasure_edit", None),
        "weights_sha256": {"unet": weights_fingerprint(pipe.unet), "text_encoder": weights_fingerprint(pipe.text_encoder)},
        "prompt_set": pset.name,
        "prompt_set_sha256": prompt_set_hash(records),
        "concept": f"{concept[0]}={concept[1]}" if concept else None,
        "settings": asdict(settings),
        "samples_per_prompt": samples_per_prompt,
        "images": len(images),
        "seconds_generate": round(t1 - t0, 2),
        "seconds_score": round(time.perf_counter() - t1, 2),
    }
    from erasure.versions import package_versions

    info["versions"] = package_versions()
    return Report(metrics=metrics, info=info, images=images if keep_images else None,
                  records=records if keep_images else ())
