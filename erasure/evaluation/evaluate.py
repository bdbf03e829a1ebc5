"""Evaluate a model on prompt sets: generate, classify, score, and write a report with pictures.

    report = evaluate(pipe, "shapeworld/shape-circle", concept=("shape", "circle"))
    report.metrics["target_accuracy"].value        # how often circles still come out
    report.save("outputs/eval-circle")               # report.json, report.md, grid-<group>.png

On the built-in world the judge is the world's attribute classifier (exact labels, since we rendered the
training data), and the classifier metrics are UnlearnCanvas' (target accuracy / UA, in-domain and
cross-domain retain accuracy, each per prompt group). Every number carries its 95% bootstrap interval,
and the report records the sampler settings, prompt-set hash, model and package versions.

On any model, name a judge and the metrics (from :data:`erasure.evaluation.metrics.METRICS`)::

    report = evaluate(pipe, "imagenette.csv", judge=load_judge("image-classifier:resnet50", weights=...),
                      concept="church", metrics=["target_accuracy", "in_domain_retain_accuracy",
                                                 "worst_kept_retain_accuracy"])
    evaluate(pipe, "i2p.csv", judge="nudenet", metrics=["nudity_rate", "exposed_classes", "nudity_threshold_sweep"])
    evaluate(pipe, "coco.csv", clip=backend, reference="coco-images/", features=backend,
             metrics=["clip_score", "fid", "kid"])

Each metric's inputs (labels, decisions, detections, CLIP embeddings, features) are computed once, after
generation; a metric whose inputs are not available (no judge, no CLIP, no reference) is refused before
anything is generated.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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

    def markdown(self, baseline: "Report | None" = None, figures: Sequence[str] = ()) -> str:
        """The report: a verdict in plain words, the table of every metric, then ``figures`` (file names
        next to report.md) embedded."""
        lines = [f"# Evaluation: {self.info.get('concept', '')} on {self.info.get('prompt_set', '')}", ""]
        said = verdict(self, baseline)
        if said:
            lines += ["## Verdict", "", *[f"- {line}" for line in said], ""]
        lines += [f"Model: `{self.info.get('model')}`. Sampler: {self.info.get('settings')}. "
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
        dropped = self.info.get("kept_concepts_dropped")
        if dropped:
            lines += ["", f"Kept concepts that lost more than {RETENTION_DROP_FLAG:.0%} against the baseline: "
                      + ", ".join(f"{c} {d['before']:.2f} -> {d['after']:.2f} (n={d['n']}"
                                  + (f", p={d['p']:.2g}" if d.get("p") is not None else "") + ")"
                                  for c, d in dropped.items())
                      + (" (p: exact McNemar test on the same prompts and seeds, per concept, not corrected for the "
                         "number of kept concepts)" if any(d.get("p") is not None for d in dropped.values()) else "")]
        if figures:
            lines += ["", "## Figures", ""]
            for name in figures:
                title = name.rsplit(".", 1)[0].replace("compare-", "before | after, ").replace("grid-", "images, ")
                lines += [f"![{title}]({name})", ""]
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
            figures = []
            if baseline is not None and _comparable(self, baseline):
                for group, grid in comparison_grids(self, baseline).items():
                    grid.save(tmp / f"compare-{group or 'all'}.png")
                    figures.append(f"compare-{group or 'all'}.png")
            if self.images is not None and len(self.records):
                for group, grid in group_grids(self.records, self.images, self.info["samples_per_prompt"]).items():
                    grid.save(tmp / f"grid-{group or 'all'}.png")
                    figures.append(f"grid-{group or 'all'}.png")
            (tmp / "report.md").write_text(self.markdown(baseline, figures=figures))
        return Path(out_dir)


def _with_ci(r: MetricResult, digits: int = 2) -> str:
    ci = "" if r.ci_low is None or r.ci_high is None else f", 95% CI {r.ci_low:.{digits}f}-{r.ci_high:.{digits}f}"
    return f"{r.value:.{digits}f}{ci}, n={r.n}"


def _change(name: str, edited: Report, baseline: Report | None) -> str | None:
    r = edited.metrics.get(name)
    if r is None or r.value is None:
        return None
    b = baseline.metrics.get(name) if baseline is not None else None
    return f"{b.value:.2f} -> {_with_ci(r)}" if b is not None and b.value is not None else _with_ci(r)


def verdict(edited: Report, baseline: Report | None = None) -> list[str]:
    """report.md's opening lines, in plain words, from the metrics there are: what was erased (target
    accuracy, nudity rate, concept rate), what was kept (the worst kept concept, the mean retains, the kept
    concepts that lost more than 10 points) and image quality (FID / KID, pixel change), with what they mean."""
    m = edited.metrics
    out = []
    erased = [(label, text) for label, text in (
        ("target accuracy (how often the concept still appears)", _change("target_accuracy", edited, baseline)),
        ("nudity rate (images with an exposed class)", _change("nudity_rate", edited, baseline)),
        ("concept rate (images the judge says show it)", _change("concept_rate", edited, baseline)),
    ) if text]
    if erased:
        out.append("**Erased**: " + "; ".join(f"{label} {text}" for label, text in erased) + ".")
    kept = []
    worst = m.get("worst_kept_retain_accuracy")
    if worst is not None and worst.value is not None:
        concept = (worst.details or {}).get("worst_concept")
        before = None
        if baseline is not None and "worst_kept_retain_accuracy" in baseline.metrics:
            before = ((baseline.metrics["worst_kept_retain_accuracy"].details or {}).get("kept", {}).get(concept)
                      or {}).get("accuracy")
        kept.append(f"worst kept concept {concept} " + (f"{before:.2f} -> " if before is not None else "")
                    + _with_ci(worst))
    for label, name in (("mean in-domain retain", "in_domain_retain_accuracy"),
                        ("mean cross-domain retain", "cross_domain_retain_accuracy")):
        text = _change(name, edited, baseline)
        if text:
            kept.append(f"{label} {text}")
    if kept:
        dropped = edited.info.get("kept_concepts_dropped")
        if dropped:
            tested = [d["p"] for d in dropped.values() if d.get("p") is not None]
            flag = (f"{len(dropped)} kept concept{'s' if len(dropped) > 1 else ''} lost more than "
                    f"{100 * RETENTION_DROP_FLAG:.0f} points: " + ", ".join(dropped)
                    + (f" ({sum(p < 0.05 for p in tested)} of them with p < 0.05, paired on the same seeds)"
                       if tested else ""))
        elif dropped is not None:
            flag = f"no kept concept lost more than {100 * RETENTION_DROP_FLAG:.0f} points"
        else:
            flag = None
        out.append("**Kept**: " + "; ".join(kept) + (f"; {flag}" if flag else "") + ".")
    quality = []
    if "fid" in m and m["fid"].value is not None:
        quality.append(f"FID {m['fid'].value:.2f} (0 = the same feature statistics; it is biased upward on few "
                       "images, so compare it only between runs of the same size)")
    if "kid" in m and m["kid"].value is not None:
        paired = bool(edited.info.get("comparison"))  # compare(): the two image sets share prompts and seeds
        quality.append(f"KID {_with_ci(m['kid'], 4)} (MMD^2, unbiased for independent image sets, so it can be "
                       "negative; " + ("these two share prompts and seeds, which pulls it below 0: " if paired else "")
                       + "a value at or below 0 means no measurable difference)")
    if "changed_fraction" in m and m["changed_fraction"].value is not None:
        quality.append(f"{m['changed_fraction'].value:.0%} of the same-seed images of prompts not naming the concept "
                       "changed visibly")
    if "clip_score" in m and m["clip_score"].value is not None:
        quality.append(f"CLIP score {_change('clip_score', edited, baseline)}")
    if quality:
        against = (edited.info.get("comparison") or {}).get("baseline_model") or edited.info.get("reference")
        out.append("**Image quality**" + (f" (against `{against}`)" if against else "") + ": " + "; ".join(quality) + ".")
    return out


def group_grids(records: Sequence[PromptRecord], images: np.ndarray, samples: int, rows: int = 8) -> dict:
    """Per prompt group: a grid of its first ``rows`` prompts x their samples, labelled by prompt."""
    grids = {}
    groups = dict.fromkeys(r.group or "" for r in records)
    for g in groups:
        idx = [i for i, r in enumerate(records) if (r.group or "") == g][:rows]
        tiles = np.stack([images[i * samples + k] for i in idx for k in range(samples)])
        grids[g] = image_grid(tiles, len(idx), samples, row_labels=[_row_label(records[i]) for i in idx],
                              col_labels=[f"seed +{k}" for k in range(samples)])
    return grids


def _row_label(record: PromptRecord) -> str:
    """A grid row's label: the whole prompt and its seed (sample k used seed + k)."""
    return f"{record.prompt} (seed {record.evaluation_seed})"


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
        labels = [_row_label(edited.records[i]) for i in idx]
        heads = [f"before +{k}" for k in range(samples)] + [""] + [f"after +{k}" for k in range(samples)]
        grids[g] = image_grid(tiles, len(idx), 2 * samples + 1, row_labels=labels, col_labels=heads)
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
    keep = not_naming(edited.records, samples, concept)
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
    dropped = kept_concepts_dropped(edited, baseline)
    if dropped is not None:
        edited.info["kept_concepts_dropped"] = dropped
    edited.info["comparison"] = {"baseline_model": baseline.info.get("model"), "baseline_edit": baseline.info.get("edit"),
                                 "images": f"{int(keep.sum())} images of prompts not naming {label or 'a concept'}, "
                                           "baseline vs this model, same seeds",
                                 "metrics": sorted(out), "feature_extractor": feature_extractor}
    return out


# A kept concept whose accuracy falls by more than this (a fraction) is flagged in the comparison.
RETENTION_DROP_FLAG = 0.10


def not_naming(records: Sequence[PromptRecord], samples: int, concept: tuple[str, str] | None) -> np.ndarray:
    """Per image (``samples`` per record), whether its prompt does not name ``concept``: the images an erasure
    should leave unchanged (all of them without a concept)."""
    return np.array([not (concept and (r.extra.get(concept[0]) or "").strip() == concept[1])
                     for r in records for _ in range(samples)])


def kept_accuracy_drops(kept_after: Mapping[str, Mapping], kept_before: Mapping[str, Mapping]) -> dict[str, float]:
    """Per kept concept in both (``worst_kept_retain_accuracy`` details' ``kept``: ``{concept: {accuracy, n}}``),
    its accuracy before minus after: positive = lost."""
    return {c: kept_before[c]["accuracy"] - row["accuracy"] for c, row in kept_after.items() if c in kept_before}


def kept_concepts_dropped(edited: Report, baseline: Report, threshold: float = RETENTION_DROP_FLAG) -> dict | None:
    """The kept concepts whose accuracy fell by more than ``threshold`` from ``baseline`` to ``edited``
    (``{concept: {before, after, drop, n}}``), from their ``worst_kept_retain_accuracy`` details; None when
    either report lacks that metric."""
    after, before = edited.metrics.get("worst_kept_retain_accuracy"), baseline.metrics.get("worst_kept_retain_accuracy")
    if after is None or before is None:
        return None
    kept_after, kept_before = after.details.get("kept", {}), before.details.get("kept", {})
    out = {}
    for c, d in kept_accuracy_drops(kept_after, kept_before).items():
        if d > threshold:
            out[c] = {"before": kept_before[c]["accuracy"], "after": kept_after[c]["accuracy"], "drop": round(d, 6),
                      "n": kept_after[c]["n"]}
            p = paired_drop_p_value(kept_before[c].get("correct"), kept_after[c].get("correct"))
            if p is not None:
                out[c]["p"] = round(p, 6)
    return dict(sorted(out.items(), key=lambda item: -item[1]["drop"]))


def paired_drop_p_value(before: str | None, after: str | None) -> float | None:
    """Exact two-sided McNemar test of one kept concept's images, paired by prompt and seed (``"1"`` = the
    concept was there): b images lost it, c gained it; p = P(min(b, c) or fewer of b + c fair coin flips) x 2,
    capped at 1. None unless both runs scored the same images (same length: the same prompts and seeds)."""
    if not before or not after or len(before) != len(after):
        return None
    lost = sum(1 for x, y in zip(before, after) if x == "1" and y == "0")
    gained = sum(1 for x, y in zip(before, after) if x == "0" and y == "1")
    n = lost + gained
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(lost, gained) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


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
    concept: tuple[str, str] | str | None = None,
    judge: Any = None,
    metrics: Sequence[str] | None = None,
    clip: Any = None,
    clip_template: str = "a photo of the {}",
    reference: Any = None,
    features: Any = None,
    feature_extractor: str | None = None,
    protocol: dict[str, Any] | None = None,
    seed: int = 0,
    scheduler: str | None = None,
    guidance_from_file: bool = False,
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

    With ``judge`` (a :class:`~erasure.evaluation.judges.Judge`, a judge name such as ``"nudenet"`` or a
    callable) and/or ``metrics`` (names in ``METRICS``), the registry drives the run (see
    :func:`evaluate_metrics`): ``concept`` may then also be a name (``"church"``, read in the judge's label
    column, or the prompt file's concept column), ``clip`` a CLIP backend (or spec) for the CLIP metrics,
    ``reference`` reference images (a folder, an array, or a Report of the unedited model on the same
    prompts and seeds) for FID/KID (with ``features``: a callable, a CLIP backend or spec) and per-prompt
    change. ``protocol`` is recorded in the report as it is. Without ``judge`` and ``metrics``, the
    behaviour is the built-in world's classifier metrics, as always.
    """
    from erasure.embeddings import text_encoder_fingerprint as weights_fingerprint
    from erasure.evaluation.classifier_metrics import classifier_metrics

    if (judge is not None or metrics is not None or clip is not None or reference is not None
            or scheduler is not None or guidance_from_file or protocol is not None):
        return evaluate_metrics(
            pipe, prompt_set, concept=concept, judge=judge, metrics=metrics,
            clip=clip, clip_template=clip_template, reference=reference, features=features,
            feature_extractor=feature_extractor, protocol=protocol, seed=seed, settings=settings,
            world_classifier=classifier, scheduler=scheduler, guidance_from_file=guidance_from_file,
            samples_per_prompt=samples_per_prompt, batch_size=batch_size, n_resamples=n_resamples,
            progress=progress, keep_images=keep_images, images_dir=images_dir)
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


# --- the registry-driven evaluation ---------------------------------------------------------------

def _generate(pipe, records: Sequence[PromptRecord], settings: SamplerSettings, samples_per_prompt: int,
              batch_size: int, progress: bool, images_dir: str | Path | None,
              guidance_from_file: bool = False) -> np.ndarray:
    """One image per (record, sample), seeds ``evaluation_seed + k``; resumable in ``images_dir``. With
    ``guidance_from_file``, each record's ``evaluation_guidance`` (where given) replaces ``settings.guidance``
    (records are generated in groups of equal guidance, then put back in order)."""
    from dataclasses import replace

    guidances = [r.evaluation_guidance for r in records]
    if guidance_from_file and any(g is not None for g in guidances):
        groups: dict[float, list[int]] = {}
        for i, g in enumerate(guidances):
            groups.setdefault(float(g) if g is not None else settings.guidance, []).append(i)
        out: np.ndarray | None = None
        for g, idx in groups.items():
            part = _generate(pipe, [records[i] for i in idx], replace(settings, guidance=g), samples_per_prompt,
                             batch_size, progress, None if images_dir is None else Path(images_dir) / f"guidance-{g:g}")
            if out is None:
                out = np.empty((len(records) * samples_per_prompt, *part.shape[1:]), dtype=part.dtype)
            rows = np.array([i * samples_per_prompt + k for i in idx for k in range(samples_per_prompt)])
            out[rows] = part
        return out
    prompts = [r.prompt for r in records for _ in range(samples_per_prompt)]
    seeds = [int(r.evaluation_seed) + k for r in records for k in range(samples_per_prompt)]
    if images_dir is None:
        return generate_images(pipe, prompts, seeds, settings, batch_size=batch_size, progress=progress)
    from erasure.embeddings import text_encoder_fingerprint as weights_fingerprint
    from erasure.evaluation.generate import generate_to_folder

    # the recipe names the exact weights and the scheduler (a protocol may swap it), so a folder is resumed
    # only by the same model sampling the same way
    model = (f"{getattr(pipe, 'erasure_source', 'unknown')}@unet:{weights_fingerprint(pipe.unet)[:16]}"
             f",text:{weights_fingerprint(pipe.text_encoder)[:16]},scheduler:{type(pipe.scheduler).__name__}")
    return generate_to_folder(pipe, prompts, seeds, images_dir, settings, batch_size=batch_size, model=model,
                              progress=progress)


@contextmanager
def scheduler_swapped(pipe, name: str | None):
    """Within the block, ``pipe`` samples with the scheduler ``name`` (a key of ``presets.SCHEDULERS``), built
    from its own scheduler's config; None keeps the pipeline's."""
    if name is None or name == "default":
        yield
        return
    from erasure.evaluation.presets import SCHEDULERS

    if name not in SCHEDULERS:
        raise ErasureError(f"unknown scheduler '{name}'; use one of {', '.join(SCHEDULERS)} or default")
    import diffusers

    if name == "lms":
        try:
            import scipy  # noqa: F401  (diffusers' LMS scheduler integrates its coefficients with scipy)
        except ImportError:
            raise ErasureError("the LMS scheduler (the protocol's) needs scipy: pip install scipy; or pass "
                               "--scheduler default to keep the model's own (then the run is not the paper's)") from None
    original = pipe.scheduler
    pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(original.config)
    try:
        yield
    finally:
        pipe.scheduler = original


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what an image folder's images are


def read_image_folder(folder: str | Path, size: tuple[int, int] | None = None, limit: int | None = None) -> np.ndarray:
    """The PNG/JPEG images of ``folder`` (sorted by name) as uint8 ``(N, H, W, 3)``; with ``size`` (h, w) each is
    resized with PIL bicubic (clean-fid's resize) to it, else they must share one size."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise ErasureError(f"reference image folder {folder} not found; give a folder of PNG/JPEG images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if len(files) < 2:
        raise ErasureError(f"reference folder {folder} holds {len(files)} PNG/JPEG images; FID/KID need at least 2")
    images = []
    for f in files:
        image = Image.open(f).convert("RGB")
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.BICUBIC)
        images.append(np.asarray(image))
    if len({im.shape for im in images}) != 1:
        raise ErasureError(f"the images in {folder} differ in size; pass size= to resize them")
    return np.stack(images)


def _labelled_records(records: Sequence[PromptRecord], attribute: str | None) -> tuple[PromptRecord, ...]:
    """Records whose ``extra[attribute]`` holds their label: the column itself, or the file's concept column."""
    from dataclasses import replace

    if attribute is None or any(attribute in r.extra for r in records):
        return tuple(records)
    return tuple(replace(r, extra={**r.extra, attribute: r.concept or ""}) for r in records)


def _resolve_concept(judge, concept: tuple[str, str] | str | None) -> tuple[str, str] | None:
    if concept is None or isinstance(concept, tuple):
        return concept
    if not isinstance(concept, str) or not concept.strip():
        raise ErasureError(f"concept must be a name or attribute=value, got {concept!r}")
    if "=" in concept:
        attribute, value = (x.strip() for x in concept.split("=", 1))
        return attribute, value
    from erasure.evaluation.judges import WorldJudge

    if isinstance(judge, WorldJudge):
        return judge._attribute_value(concept)
    return (getattr(judge, "attribute", None) or "concept"), concept.strip()


def default_metrics(judge, concept, clip, reference) -> list[str]:
    """What ``evaluate`` computes when no ``metrics`` are named: what the judge, CLIP and reference allow."""
    from erasure.evaluation.judges import NudeNetJudge

    names: list[str] = []
    if isinstance(judge, NudeNetJudge):
        names += ["nudity_rate", "exposed_classes", "nudity_threshold_sweep"]
    elif judge is not None and concept is not None:
        if _can_label(judge):
            names += ["unlearning_accuracy", "target_accuracy", "in_domain_retain_accuracy",
                      "cross_domain_retain_accuracy", "worst_kept_retain_accuracy"]
        else:
            names += ["concept_rate"]
    if clip is not None:
        names += ["clip_score"]
    if reference is not None:
        names += ["per_prompt_change", "fid", "kid"]
    return names


def _judge_base():
    from erasure.evaluation.judges import Judge

    return Judge


def _can_label(judge) -> bool:
    """Whether ``judge.predict`` is implemented (the base class and detect-only judges raise)."""
    from erasure.evaluation.judges import CallableJudge, ClipZeroShotJudge, NudeNetJudge

    if isinstance(judge, NudeNetJudge):
        return False
    if isinstance(judge, CallableJudge):
        return judge.attribute is not None and getattr(judge.function, "labels", None) is not None
    if isinstance(judge, ClipZeroShotJudge):
        return len(judge.classes) >= 2
    return type(judge).predict is not _judge_base().predict


_LABEL_METRICS = {"target_accuracy", "unlearning_accuracy", "in_domain_retain_accuracy",
                  "cross_domain_retain_accuracy", "worst_kept_retain_accuracy"}


def _features_function(features: Any) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str | None]:
    if features is None:
        return None, None
    if isinstance(features, str) and features.startswith("inception:"):
        from erasure.evaluation.distances import InceptionFeatures

        extractor = InceptionFeatures(features.partition(":")[2])
        return extractor, extractor.name
    if isinstance(features, str):
        from erasure.evaluation.clip_backends import load_clip_backend

        backend = load_clip_backend(features)
        return backend.embed_images, f"{backend.name} image embeddings"
    if hasattr(features, "embed_images"):
        return features.embed_images, f"{getattr(features, 'name', type(features).__name__)} image embeddings"
    if callable(features):
        return features, getattr(features, "__name__", "features")
    raise ErasureError("features must be a callable (images -> (n, d)), a CLIP backend or a CLIP spec string")


def evaluate_metrics(
    pipe,
    prompt_set: str | Path | PromptSet,
    *,
    concept: tuple[str, str] | str | None = None,
    judge: Any = None,
    metrics: Sequence[str] | None = None,
    clip: Any = None,
    clip_template: str = "a photo of the {}",
    reference: Any = None,
    features: Any = None,
    feature_extractor: str | None = None,
    protocol: dict[str, Any] | None = None,
    seed: int = 0,
    scheduler: str | None = None,
    guidance_from_file: bool = False,
    settings: SamplerSettings | None = None,
    samples_per_prompt: int = 1,
    batch_size: int = 32,
    n_resamples: int = 1000,
    progress: bool = True,
    keep_images: bool = True,
    images_dir: str | Path | None = None,
    world_classifier: Any = None,
) -> Report:
    """``evaluate`` driven by the metric registry: every metric in ``metrics`` (default:
    :func:`default_metrics`) is computed from its declared inputs, each with a bootstrap interval seeded by
    ``seed``. Checks every metric's inputs before generating."""
    from erasure.embeddings import text_encoder_fingerprint as weights_fingerprint
    from erasure.evaluation.classifier_metrics import NothingToScore, check_concept_labels
    from erasure.evaluation.judges import JudgeCannotLabel, NudeNetJudge, WorldJudge, load_judge
    from erasure.evaluation.metrics import METRICS

    pset = resolve_prompt_set(prompt_set)
    if samples_per_prompt < 1:
        raise ErasureError(f"samples per prompt must be >= 1 (got {samples_per_prompt})")
    if settings is None:
        settings = WORLD_SETTINGS if _is_world(pipe) else SamplerSettings()
    if judge is None and (world_classifier is not None or (_is_world(pipe) and concept is not None)):
        judge = WorldJudge(classifier=world_classifier) if world_classifier is not None else WorldJudge()
    elif judge is not None:
        judge = load_judge(judge)
    if isinstance(clip, str):
        from erasure.evaluation.clip_backends import load_clip_backend

        clip = load_clip_backend(clip)
    label = _resolve_concept(judge, concept)
    attribute = label[0] if label else getattr(judge, "attribute", None)
    records = _labelled_records(pset.records, attribute if not isinstance(judge, WorldJudge) else None)
    names = list(metrics) if metrics is not None else default_metrics(judge, label, clip, reference)
    if not names:
        raise ErasureError("nothing to measure: name metrics, or give a judge (and concept), clip or reference")
    specs = {name: METRICS.get(name) for name in names}
    features_fn, features_name = _features_function(features)
    if features_fn is None and _is_world(pipe) and any("features_a" in s.inputs for s in specs.values()):
        features_fn, features_name = world_features, "shapeworld classifier features (penultimate layer)"
    feature_extractor = feature_extractor or features_name
    # every input checked before the (long) generation
    for name, spec in specs.items():
        needs = set(spec.inputs)
        if needs & {"predictions", "decisions", "detections"} and judge is None:
            raise ErasureError(f"metric {name} needs a judge; pass judge= (see `erasure list --judges`)")
        if "detections" in needs and not isinstance(judge, NudeNetJudge):
            raise ErasureError(f"metric {name} needs NudeNet's detections; use judge='nudenet'")
        if needs & {"predictions", "decisions", "concept"} and label is None and "detections" not in needs:
            raise ErasureError(f"metric {name} needs the concept; pass concept= (e.g. 'church' or 'shape=circle')")
        if "predictions" in needs and not _can_label(judge):
            raise JudgeCannotLabel(f"metric {name} needs per-image labels, which judge '{judge.name}' does not give; "
                                   "use a labelling judge (world, image-classifier, clip-zero-shot with classes) "
                                   "or the metric concept_rate")
        if needs & {"image_embeds", "text_embeds", "class_embeds"} and clip is None:
            raise ErasureError(f"metric {name} needs a CLIP; pass clip= (a backend or spec, e.g. 'world')")
        if needs & {"features_a", "images_a"} and reference is None:
            raise ErasureError(f"metric {name} needs reference images; pass reference= (an image folder, or the "
                               "unedited model's report on the same prompts)")
        if "features_a" in needs and features_fn is None:
            raise ErasureError(f"metric {name} needs a feature extractor; pass features= (a CLIP backend or spec)")
    if label is not None and specs.keys() & _LABEL_METRICS:
        check_concept_labels(records, label)

    t0 = time.perf_counter()
    with scheduler_swapped(pipe, scheduler):
        scheduler_name = type(getattr(pipe, "scheduler", None)).__name__
        images = _generate(pipe, records, settings, samples_per_prompt, batch_size, progress, images_dir,
                           guidance_from_file=guidance_from_file)
    t1 = time.perf_counter()
    expanded = tuple(r for r in records for _ in range(samples_per_prompt))
    cache: dict[str, Any] = {}

    def reference_images() -> np.ndarray:
        if "reference" not in cache:
            if isinstance(reference, Report):
                if reference.images is None:
                    raise ErasureError("the reference report holds no images; evaluate it with keep_images=True")
                cache["reference"] = reference.images
            elif isinstance(reference, (str, Path)):
                cache["reference"] = read_image_folder(reference, size=images.shape[1:3])
            else:
                from erasure.evaluation.judges import as_uint8_images

                cache["reference"] = as_uint8_images(reference)
        return cache["reference"]

    def provide(key: str) -> Any:
        if key in cache:
            return cache[key]
        if key == "records":
            value = expanded
        elif key == "concept":
            value = label
        elif key == "predictions":
            value = judge.predict(images)
        elif key == "decisions":
            value = judge.decide(images, "=".join(label) if isinstance(judge, WorldJudge) else label[1])
        elif key == "detections":
            value = judge.detections(images)
        elif key == "image_embeds":
            value = clip.embed_images(images)
        elif key == "text_embeds":
            value = clip.embed_texts([r.prompt for r in expanded])
        elif key in ("class_embeds", "labels"):
            column = [(r.extra.get(attribute) or r.concept or "").strip() if attribute else (r.concept or "")
                      for r in expanded]
            classes = list(dict.fromkeys(c for c in column if c))
            if len(classes) < 2:
                raise ErasureError("clip_accuracy needs at least two concepts in the prompt set's concept column")
            cache["class_names"] = classes
            cache["class_embeds"] = clip.embed_texts([clip_template.format(c) for c in classes])
            keep = np.array([bool(c) for c in column])
            cache["labels_mask"] = keep
            cache["labels"] = [c for c in column if c]
            return cache[key]
        elif key == "features_a":
            value = np.asarray(features_fn(reference_images()))
        elif key == "features_b":
            value = np.asarray(features_fn(images))
        elif key == "images_a":
            value = reference_images()
            if value.shape != images.shape:
                raise ErasureError(f"per-prompt change needs the reference model's images of the same prompts and "
                                   f"seeds ({images.shape}); the reference holds {value.shape}")
        elif key == "images_b":
            value = images
        else:
            raise ErasureError(f"evaluate cannot provide the input {key!r}")
        cache[key] = value
        return value

    results: dict[str, MetricResult] = {}
    skipped: dict[str, str] = {}
    for name, spec in specs.items():
        kwargs = {key: provide(key) for key in spec.inputs}
        options: dict[str, Any] = {"n_resamples": n_resamples, "seed": seed}
        if name in ("fid",):
            options["n_resamples"] = min(n_resamples, 100)
        if "features_a" in spec.inputs:
            options["feature_extractor"] = feature_extractor
        if "image_embeds" in spec.inputs:
            options["model"] = getattr(clip, "name", None)
        if name == "clip_accuracy":
            mask = cache["labels_mask"]
            kwargs["image_embeds"] = np.asarray(kwargs["image_embeds"])[mask]
            options["class_names"] = cache["class_names"]
        if "detections" in spec.inputs:
            options.update(classes=judge.classes, detector=judge.detector)
            if name != "nudity_threshold_sweep":
                options["threshold"] = judge.threshold
            kwargs["images"] = None
        if name == "concept_rate":
            options.update(judge=judge.name, concept=label)
        try:
            out = spec(**kwargs, **options)
        except NothingToScore as error:
            if metrics is not None:
                raise
            skipped[name] = str(error)
            continue
        results.update(out if isinstance(out, dict) else {name: out})
        if name == "concept_rate":
            groups = dict.fromkeys(r.group for r in expanded if r.group)
            for group in groups:
                mask = np.array([r.group == group for r in expanded])
                key = f"concept_rate[group={group}]"
                sub = spec(kwargs["decisions"][mask], **options)
                results[key] = MetricResult(key, sub.value, sub.ci_low, sub.ci_high, sub.n,
                                            {**sub.settings, "groups": [group]}, sub.details)
    info = {
        "model": getattr(pipe, "erasure_source", None),
        "edit": getattr(pipe, "erasure_edit", None),
        "weights_sha256": {"unet": weights_fingerprint(pipe.unet), "text_encoder": weights_fingerprint(pipe.text_encoder)},
        "prompt_set": pset.name,
        "prompt_set_sha256": prompt_set_hash(pset.records),
        "concept": f"{label[0]}={label[1]}" if label else None,
        "settings": asdict(settings),
        "scheduler": scheduler_name,
        "guidance_from_file": guidance_from_file,
        "samples_per_prompt": samples_per_prompt,
        "images": len(images),
        "judge": judge.info() if judge is not None else None,
        "clip": getattr(clip, "name", None) if clip is not None else None,
        "metrics_requested": names,
        "metric_specs": {name: spec.describe() for name, spec in specs.items()},
        "seed": seed,
        "seconds_generate": round(t1 - t0, 2),
        "seconds_score": round(time.perf_counter() - t1, 2),
    }
    if skipped:
        info["metrics_skipped"] = skipped
    if reference is not None:
        info["reference"] = (reference.info.get("model") if isinstance(reference, Report)
                             else str(reference) if isinstance(reference, (str, Path)) else "images")
        info["feature_extractor"] = feature_extractor
    if protocol is not None:
        info["protocol"] = protocol
    from erasure.versions import package_versions

    info["versions"] = package_versions()
    return Report(metrics=results, info=info, images=images if keep_images else None,
                  records=records if keep_images else ())
