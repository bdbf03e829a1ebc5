"""The one experiment loop: methods x concepts x settings on a model, base and results measured on the same
seeds, written as tables (markdown, CSV, JSON) and, between markers, into the docs. Scripts are thin drivers
over it (they import the package, never each other).

    variants = [Variant("unedited", None, ()), Variant("esd-x", "esd-x", ("circle",), {"lr": 3e-4})]
    measures = {"circle": world_measure("shapeworld-shape-circle", ("shape", "circle"), SamplerSettings(25, 5.0))}
    rows = run_experiment(pipe, [Variant(..., measure="circle"), ...], measures, out="runs/x")
    write_tables(rows, "runs/x/table", COLUMNS)
    write_docs_table("docs/methods.md", "esd-world", markdown_table(rows, COLUMNS), command="python scripts/...")

What the loop does per row: erase (the result of one (method, concepts, settings) is made once and reused by
every row that names it), apply, measure, restore (exactly: the result protocol), and write the row, with the
method's config and the measurement's, to ``out/rows/<key>.json`` (atomic). ``key`` is a hash of the row's
whole config (model, method, concepts, settings, measurement), so an interrupted run resumes: rows already
done are read back, not recomputed. The unedited model's row of a measurement is just a row without a method.

The loop itself is :func:`run_variants` (``run_experiment`` is it with an output folder); a result made
elsewhere goes through it too: :func:`evaluate_result` (base and result, the same prompts and seeds, whole
reports back) is what ``erasure erase --evaluate`` and the quickstart notebook use.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from erasure.errors import ErasureError

REPORT_KEYS = ["target_accuracy", "target_accuracy[group=synonym]", "target_accuracy[group=held-out]",
               "in_domain_retain_accuracy", "cross_domain_retain_accuracy"]


def script_main(main: Callable[[], int]) -> None:
    """Run a driver's ``main`` and exit with its status; a user's mistake (ErasureError) is one line, exit 2."""
    import sys

    try:
        code = main()
    except ErasureError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


def paper_objective(method: str | None) -> dict:
    """``{"retain_prompts": ()}`` for a method whose defaults hold the ESD family's retain term on the built-in
    world (``retain_prompts=None``, issue 18), else ``{}``. The studies of ESD's own settings (eta, iterations,
    anchors, parameter groups) and the comparisons with the reference code run the paper's objective, as they did
    when their tables were measured; a variant's own ``retain_prompts`` still wins (put this first)."""
    from erasure.methods import METHODS

    if method is None or method not in METHODS:
        return {}
    return {"retain_prompts": ()} if METHODS.get(method).defaults.get("retain_prompts", ()) is None else {}


def parse_variant(text: str) -> tuple[str, dict]:
    """``"esd-x:lr=3e-4,anchor=square"`` -> ``("esd-x", {"lr": 3e-4, "anchor": "square"})`` (JSON values, else text)."""
    method, _, rest = text.partition(":")
    settings = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ErasureError(f"variant {text!r}: {item!r} is not KEY=VALUE; write METHOD:key=value,...")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return method, settings


# --------------------------------------------------------------------------- what a row is


@dataclass(frozen=True)
class Variant:
    """One row of an experiment: ``method`` (None = the unedited model) erasing ``concepts`` with ``settings``,
    measured by the measurement named ``measure``; ``context`` names a way to run the applied result
    (:data:`CONTEXTS`, e.g. SPM's facilitated transport); ``extra`` is carried into the row as it is (a
    driver's own columns, e.g. how many shapes a scaling row erases)."""

    label: str
    method: str | None
    concepts: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    measure: str = "default"
    context: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def result_key(self) -> str:
        return _hash({"method": self.method, "concepts": list(self.concepts), "settings": dict(self.settings)})


@dataclass(frozen=True)
class Measure:
    """A measurement of the model as it is: ``run(pipe)`` -> {metric: {"value", "ci_low", "ci_high"}}.
    ``config`` says everything that determines it (prompt set, sampler, seeds, ...): it enters the row keys."""

    config: Mapping[str, Any]
    run: Callable[[Any], dict[str, dict[str, float | None]]]


def _facilitated_transport(pipe):
    from erasure.adapters import facilitated_transport

    return facilitated_transport(pipe)


CONTEXTS: dict[str, Callable[[Any], contextlib.AbstractContextManager]] = {
    "facilitated-transport": _facilitated_transport,
}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def model_identity(pipe) -> str:
    """A cheap fingerprint of the pipeline's UNet and text encoder (:func:`erasure.training.model_fingerprint`)."""
    from erasure.training import model_fingerprint

    return _hash([model_fingerprint(pipe.unet), model_fingerprint(pipe.text_encoder)])


def row_key(model: str, variant: Variant, measure: Measure) -> str:
    """The hash a row is stored under: model, method, concepts, settings, context and the measurement's config."""
    return _hash({"model": model, "method": variant.method, "concepts": list(variant.concepts),
                  "settings": dict(variant.settings), "context": variant.context, "measure": dict(measure.config)})


# --------------------------------------------------------------------------- measurements


def report_metrics(report, keys: Sequence[str] | None = None) -> dict[str, dict[str, float | None]]:
    """An evaluation Report's metrics (all, or ``keys`` that it has) as plain values with their intervals."""
    from erasure.files import json_safe

    names = [k for k in (keys or report.metrics) if k in report.metrics]
    return {k: json_safe({"value": report.metrics[k].value, "ci_low": report.metrics[k].ci_low,
                          "ci_high": report.metrics[k].ci_high}) for k in names}


def world_measure(prompt_set: str, concept: tuple[str, str] | str, settings, *, samples_per_prompt: int = 1,
                  n_resamples: int = 1000, seed: int = 0, keys: Sequence[str] | None = None,
                  per_group: int | None = None) -> Measure:
    """:func:`erasure.evaluation.evaluate` on ``prompt_set`` for ``concept`` (same seeds for every row); with
    ``per_group``, on the first ``per_group`` prompts of each of its groups (``PromptSet.head``)."""
    from dataclasses import asdict

    def run(pipe):
        from erasure.evaluation.evaluate import evaluate, resolve_prompt_set

        prompts = prompt_set if per_group is None else resolve_prompt_set(prompt_set).head(per_group)
        report = evaluate(pipe, prompts, concept=concept, settings=settings, samples_per_prompt=samples_per_prompt,
                          n_resamples=n_resamples, seed=seed, progress=False, keep_images=False)
        return report_metrics(report, keys)

    config = {"kind": "evaluate", "prompt_set": prompt_set, "concept": list(concept) if isinstance(concept, tuple)
              else concept, "sampler": asdict(settings), "samples_per_prompt": samples_per_prompt,
              "n_resamples": n_resamples, "seed": seed, "keys": list(keys) if keys else None}
    if per_group is not None:  # only then: the rows of whole sets keep their keys
        config["per_group"] = per_group
    return Measure(config=config, run=run)


def target_group(set_name: str, n: int | None):
    """The first ``n`` records of a prompt set's ``target`` group, as a prompt set."""
    from erasure.evaluation.evaluate import resolve_prompt_set
    from erasure.evaluation.prompts import PromptSet

    pset = resolve_prompt_set(set_name)
    records = tuple(r for r in pset.records if r.group == "target")[:n]
    return PromptSet(name=f"{set_name}[target]", records=records, source=pset.source)


def shape_accuracy(pipe, shape: str, settings, n: int | None, samples_per_prompt: int = 1) -> float:
    """How often the world's classifier sees ``shape`` on the first ``n`` target prompts of its prompt set."""
    from erasure.evaluation.evaluate import evaluate

    report = evaluate(pipe, target_group(f"shapeworld-shape-{shape}", n), concept=("shape", shape),
                      settings=settings, progress=False, n_resamples=0, keep_images=False,
                      samples_per_prompt=samples_per_prompt)
    return report.value("target_accuracy")


def shape_accuracies_measure(shapes: Sequence[str], settings, n: int | None, samples_per_prompt: int = 1) -> Measure:
    """Each shape's accuracy on the first ``n`` target prompts of its prompt set (metrics ``accuracy[<shape>]``)."""
    from dataclasses import asdict

    def run(pipe):
        return {f"accuracy[{s}]": {"value": shape_accuracy(pipe, s, settings, n, samples_per_prompt),
                                   "ci_low": None, "ci_high": None} for s in shapes}

    return Measure(config={"kind": "shape-accuracies", "shapes": list(shapes), "sampler": asdict(settings),
                           "prompts": n, "samples_per_prompt": samples_per_prompt}, run=run)


# --------------------------------------------------------------------------- the loop


def result_stats(result) -> dict[str, Any]:
    """What a row records about the result: its size and the trainer's final loss, when it has one."""
    if result.kind == "adapter":
        size = result.size_bytes
    else:
        size = sum(t.numel() * t.element_size() for t in result.tensors.values())
    info = {k: v for k, v in dict(result.info).items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {"size_kb": round(size / 1024, 1), "concepts": len(result.concepts), "info": info}


def _status_mb(name: str) -> float | None:
    """A field of /proc/self/status in MB (Linux; None elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def reset_peak_memory() -> float | None:
    """Reset the process's peak resident set (Linux: /proc/self/clear_refs) and return the current one in MB,
    so a row's ``peak_rss_mb`` is the erasure's peak (it includes the loaded model: ~``rss_before_mb``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def run_experiment(pipe, variants: Sequence[Variant], measures: Mapping[str, Measure], *, out: str | Path,
                   resume: bool = True, log: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Run every variant (see the module docstring); returns the rows in the variants' order.

    Every row is written to ``out/rows/<key>.json`` as soon as it is measured; with ``resume`` rows already
    there are read back instead of recomputed. The pipeline is left as it was. (The loop is
    :func:`run_variants`.)"""
    return run_variants(pipe, variants, measures, out=out, resume=resume, log=log)


def run_variants(pipe, variants: Sequence[Variant], measures: Mapping[str, Measure], *,
                 results: Mapping[str, Any] | None = None, out: str | Path | None = None, resume: bool = True,
                 log: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """The one loop behind :func:`run_experiment` and :func:`evaluate_result`: per variant, erase (or take the
    result already made), apply, measure, restore, and make the row; returns the rows in the variants' order.

    ``results`` maps a variant's label to a result made elsewhere (the CLI's ``erase --evaluate`` has one):
    that row applies it as it is instead of erasing. With ``out=None`` the rows stay in memory (nothing is
    written or read back); otherwise as :func:`run_experiment`. While a result is applied,
    ``pipe.erasure_edit`` describes it (an evaluation report records it); the pipeline is left as it was."""
    from erasure.files import write_json
    from erasure.methods import erase

    results = dict(results or {})
    unknown = sorted({v.measure for v in variants} - set(measures))
    if unknown:
        raise ErasureError(f"no measurement named {unknown[0]!r}; the experiment defines {', '.join(sorted(measures))}")
    bad = sorted({v.context for v in variants if v.context is not None} - set(CONTEXTS))
    if bad:
        raise ErasureError(f"unknown context {bad[0]!r}; choose from {', '.join(sorted(CONTEXTS))}")
    stray = sorted(set(results) - {v.label for v in variants if v.method is not None})
    if stray:
        raise ErasureError(f"a result is given for {stray[0]!r}, which is no variant with a method")
    folder = None if out is None else Path(out) / "rows"
    model = model_identity(pipe)
    rows: list[dict[str, Any]] = []
    made: dict[str, tuple[Any, float]] = {}  # one result per (method, concepts, settings), shared by its rows
    t_start = time.perf_counter()
    for variant in variants:
        measure = measures[variant.measure]
        key = row_key(model, variant, measure)
        path = None if folder is None else folder / f"{key[:20]}.json"
        if resume and path is not None and path.is_file():
            row = json.loads(path.read_text())
            if row.get("key") == key:
                rows.append({**row, "label": variant.label, "extra": dict(variant.extra)})
                if log:
                    log(f"{variant.label}: done before (read back from {path})")
                continue
        row: dict[str, Any] = {"key": key, "label": variant.label, "method": variant.method,
                               "concepts": list(variant.concepts), "settings": dict(variant.settings),
                               "context": variant.context, "measure": variant.measure,
                               "measure_config": dict(measure.config), "model": model, "extra": dict(variant.extra)}
        if variant.method is None:
            t0 = time.perf_counter()
            metrics = measure.run(pipe)
            row.update(metrics=metrics, seconds_measure=round(time.perf_counter() - t0, 1), seconds_erase=None)
        else:
            if variant.label in results:
                result, seconds, memory = results[variant.label], None, {}
            else:
                rkey = variant.result_key()
                if rkey not in made:
                    rss_before = reset_peak_memory()
                    t0 = time.perf_counter()
                    result = erase(pipe, variant.method, list(variant.concepts), **dict(variant.settings))
                    made[rkey] = (result, round(time.perf_counter() - t0, 1),
                                  {"rss_before_mb": rss_before, "peak_rss_mb": _status_mb("VmHWM")})
                result, seconds, memory = made[rkey]
            t0 = time.perf_counter()
            metrics = _measure_applied(pipe, result, measure, variant.context)
            row.update(metrics=metrics, seconds_measure=round(time.perf_counter() - t0, 1), seconds_erase=seconds,
                       result={**result_stats(result), **memory}, result_config=json.loads(json.dumps(dict(result.config),
                                                                                        default=str)))
        if path is not None:
            write_json(path, row, force=True)
        rows.append(row)
        if log:
            first = next(iter(row["metrics"].items()), (None, {}))
            log(f"[{time.perf_counter() - t_start:.0f}s] {variant.label}: {first[0]} {first[1].get('value')}")
    return rows


def _measure_applied(pipe, result, measure: Measure, context: str | None):
    """``measure`` of the pipeline with ``result`` applied (in ``context``); restored exactly afterwards."""
    previous = getattr(pipe, "erasure_edit", None)
    result.apply(pipe)
    try:
        pipe.erasure_edit = {"method": result.method, "concepts": list(result.concepts), "config": dict(result.config)}
        with (CONTEXTS[context](pipe) if context else contextlib.nullcontext()):
            return measure.run(pipe)
    finally:
        result.restore(pipe)
        pipe.erasure_edit = previous


def evaluate_result(pipe, result, prompt_set, *, label: str = "erased", log: Callable[[str], None] | None = None,
                    **evaluate_kwargs):
    """The unedited model and ``result`` (already made) evaluated alike through :func:`run_variants`: the same
    prompts and seeds, :func:`erasure.evaluation.evaluate.evaluate` with ``evaluate_kwargs``, the pipeline
    restored. Returns ``(base, after)``, the two whole Reports (images included: for ``compare``, grids and
    ``Report.save``). Nothing is written."""
    reports: list[Any] = []

    def run(p):
        from erasure.evaluation.evaluate import evaluate

        report = evaluate(p, prompt_set, **evaluate_kwargs)
        reports.append(report)
        return report_metrics(report)

    name = prompt_set if isinstance(prompt_set, (str, Path)) else getattr(prompt_set, "name", str(prompt_set))
    measure = Measure(config={"kind": "evaluate-reports", "prompt_set": str(name),
                              **{k: v for k, v in evaluate_kwargs.items() if isinstance(v, (str, int, float, bool, tuple))
                                 or v is None}}, run=run)
    variants = [Variant("unedited", None), Variant(label, result.method, tuple(result.concepts))]
    run_variants(pipe, variants, {"default": measure}, results={label: result}, out=None, log=log)
    base, after = reports
    return base, after


# --------------------------------------------------------------------------- tables


def value(row: Mapping[str, Any], metric: str) -> float | None:
    """A row's value of ``metric`` (None when it was not measured)."""
    m = row["metrics"].get(metric)
    return None if m is None else m["value"]


def with_interval(metric: str, digits: int = 2) -> Callable[[Mapping[str, Any]], str]:
    """A cell "0.90 [0.80, 0.97]" (value and bootstrap interval) of ``metric``; "n/a" where it is missing."""
    def cell(row):
        m = row["metrics"].get(metric)
        if m is None or m["value"] is None:
            return "n/a"
        if m.get("ci_low") is None:
            return f"{m['value']:.{digits}f}"
        return f"{m['value']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"
    return cell


Column = tuple[str, Callable[[Mapping[str, Any]], Any]]

REPORT_COLUMNS: list[Column] = [
    ("target acc.", with_interval("target_accuracy")), ("synonyms", with_interval("target_accuracy[group=synonym]")),
    ("held-out", with_interval("target_accuracy[group=held-out]")),
    ("in-domain retain", with_interval("in_domain_retain_accuracy")),
    ("cross-domain retain", with_interval("cross_domain_retain_accuracy")),
]


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """A markdown table: one line per row, one cell per column (header, function of the row)."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(f(row)) for _, f in columns) + " |")
    return "\n".join(lines)


def csv_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([h for h, _ in columns])
    for row in rows:
        writer.writerow([f(row) for _, f in columns])
    return buffer.getvalue()


def write_tables(rows: Sequence[Mapping[str, Any]], stem: str | Path, columns: Sequence[Column],
                 *, settings: Mapping[str, Any] | None = None) -> str:
    """``stem.md``, ``stem.csv`` and ``stem.json`` (every row in full, with the run's ``settings``), atomically;
    returns the markdown."""
    from erasure.files import write_json, write_text

    stem = Path(stem)
    md = markdown_table(rows, columns)
    write_text(stem.with_suffix(".md"), md + "\n", force=True)
    write_text(stem.with_suffix(".csv"), csv_table(rows, columns), force=True)
    write_json(stem.with_suffix(".json"), {"settings": dict(settings or {}), "rows": list(rows)}, force=True)
    return md


def markers(name: str) -> tuple[str, str]:
    """The docs' markers of table ``name``: ``<!-- name:start -->`` / ``<!-- name:end -->``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_between_markers(text: str, name: str, content: str) -> str:
    """``text`` with what lies between ``name``'s markers replaced by ``content`` (the markers stay)."""
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ErasureError(f"the document needs exactly one {start} followed by one {end} to write table {name!r}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + start + "\n" + content.strip("\n") + "\n" + end + tail


def check_markers(doc: str | Path, names: Iterable[str]) -> None:
    """Refuse, before any work, a docs file that lacks one of the tables' markers (one line saying which)."""
    doc = Path(doc)
    if not doc.is_file():
        raise ErasureError(f"{doc} does not exist; give the docs file that holds the table markers")
    text = doc.read_text()
    for name in names:
        replace_between_markers(text, name, "")


def write_docs_table(doc: str | Path, name: str, markdown: str, *, command: str | None = None) -> Path:
    """Write ``markdown`` (and the command that made it) between ``name``'s markers in ``doc``, atomically."""
    from erasure.files import write_text

    doc = Path(doc)
    if not doc.is_file():
        raise ErasureError(f"{doc} does not exist; give the docs file that holds the {name!r} markers")
    content = markdown if command is None else f"{markdown}\n\nWritten by `{command}`."
    return write_text(doc, replace_between_markers(doc.read_text(), name, content), force=True)


# --------------------------------------------------------------------------- the world's shape tables


def shape_rows(base: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], shapes: Sequence[str],
               erased: Sequence[str]) -> list[dict[str, Any]]:
    """Mass erasure, one line per shape: its role, its accuracy unedited and after each row's result."""
    return [{"shape": s, "role": "erased" if s in erased else "kept", "unedited": value(base, f"accuracy[{s}]"),
             "after": {r["label"]: value(r, f"accuracy[{s}]") for r in rows}} for s in shapes]


def shape_columns(labels: Sequence[str], change: bool = False) -> list[Column]:
    """Columns of :func:`shape_rows`: shape, role, unedited, one per row label (and the change, for one row)."""
    columns: list[Column] = [("shape", lambda r: r["shape"]), ("role", lambda r: r["role"]),
                             ("unedited", lambda r: f"{r['unedited']:.2f}")]
    columns += [(label, lambda r, label=label: f"{r['after'][label]:.2f}") for label in labels]
    if change and len(labels) == 1:
        columns.append(("change", lambda r: f"{r['after'][labels[0]] - r['unedited']:+.2f}"))
    return columns


def scaling_point(base: Mapping[str, Any], row: Mapping[str, Any], shapes: Sequence[str]) -> dict[str, Any]:
    """A scaling row (the first ``k`` shapes erased): erased and kept shapes' accuracy, before and after."""
    erased = list(row["concepts"])
    kept = [s for s in shapes if s not in erased]
    acc = {s: value(row, f"accuracy[{s}]") for s in shapes}
    before = {s: value(base, f"accuracy[{s}]") for s in shapes}
    return {"erased": len(erased), "erased_acc": sum(acc[s] for s in erased) / len(erased),
            "erased_max": max(acc[s] for s in erased), "kept_acc": sum(acc[s] for s in kept) / len(kept),
            "kept_acc_before": sum(before[s] for s in kept) / len(kept),
            "worst_kept_change": min(acc[s] - before[s] for s in kept),
            "seconds": row.get("seconds_erase"), "size_kb": row.get("result", {}).get("size_kb")}


SCALING_COLUMNS: list[Column] = [
    ("shapes erased", lambda p: p["erased"]),
    ("erased acc. (mean / worst)", lambda p: f"{p['erased_acc']:.2f} / {p['erased_max']:.2f}"),
    ("kept acc. (before -> after)", lambda p: f"{p['kept_acc_before']:.2f} -> {p['kept_acc']:.2f}"),
    ("worst kept shape's change (points)", lambda p: f"{100 * p['worst_kept_change']:+.0f}"),
]


def plot_scaling(curve, path: Path) -> None:
    """A small line plot (PIL only): kept shapes' accuracy, before and after, and erased shapes' accuracy."""
    from PIL import Image, ImageDraw

    w, h, m = 420, 260, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([m, 10, w - 10, h - m], outline="black")
    xs = [c["erased"] for c in curve]

    def pt(x, y):
        return (m + (x - 1) / max(1, max(xs) - 1) * (w - 10 - m), h - m - y * (h - m - 10))

    for key, colour in (("kept_acc_before", (150, 150, 150)), ("kept_acc", (0, 90, 200)), ("erased_acc", (200, 40, 40))):
        pts = [pt(c["erased"], c[key]) for c in curve]
        d.line(pts, fill=colour, width=2)
        for q in pts:
            d.ellipse([q[0] - 3, q[1] - 3, q[0] + 3, q[1] + 3], fill=colour)
    for x in xs:
        d.text((pt(x, 0)[0] - 3, h - m + 5), str(x), fill="black")
    for y in (0, 0.5, 1):
        d.text((5, pt(1, y)[1] - 6), f"{y:.1f}", fill="black")
    d.text((m, h - 18), "shapes erased at once   blue: kept (after)  grey: kept (before)  red: erased", fill="black")
    img.save(path)
