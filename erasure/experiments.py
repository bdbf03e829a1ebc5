"""The experiment helpers the scripts share (scripts import the package, never each other): variant strings,
target-accuracy measurements on the built-in world's prompt sets, the scaling plot. The one loop that runs
methods x concepts x settings and writes the docs' tables between markers is still to come (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

REPORT_KEYS = ["target_accuracy", "target_accuracy[group=synonym]", "target_accuracy[group=held-out]",
               "in_domain_retain_accuracy", "cross_domain_retain_accuracy"]


def parse_variant(text: str) -> tuple[str, dict]:
    """``"esd-x:lr=3e-4,anchor=square"`` -> ``("esd-x", {"lr": 3e-4, "anchor": "square"})`` (JSON values, else text)."""
    method, _, rest = text.partition(":")
    settings = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return method, settings


def target_group(set_name: str, n: int | None):
    """The first ``n`` records of a prompt set's ``target`` group, as a prompt set."""
    from erasure.evaluation.prompts import PromptSet
    from erasure.evaluation.evaluate import resolve_prompt_set

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
