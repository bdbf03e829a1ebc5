"""Comparing two models' images of the same prompts and seeds: per-prompt change, FID/KID, side-by-side grids."""

import json

import numpy as np
import pytest

from erasure.cli import main
from erasure.evaluation.evaluate import Report, compare, comparison_grids, world_features
from erasure.evaluation.prompts import PromptRecord
from erasure.world.render import render, sample_scene

SAMPLES = 2


def _report(shapes: list[str], named: list[str], seed: int) -> Report:
    """A report whose images are renders of ``shapes`` (per sample) for prompts naming ``named``."""
    rng = np.random.default_rng(seed)
    records = tuple(PromptRecord(case_number=i, prompt=f"a {s}", evaluation_seed=i, group="target" if s == "circle"
                                 else "retain", extra={"shape": s}) for i, s in enumerate(named))
    images = np.stack([render(sample_scene(rng, shape=s))[0] for s in shapes])
    info = {"model": f"renders-{seed}", "concept": "shape=circle", "samples_per_prompt": SAMPLES}
    return Report(metrics={}, info=info, images=images, records=records)


NAMED = ["circle"] * 4 + ["square", "star", "heart", "cross"] * 10


def test_same_images_on_retain_prompts_compare_as_zero_whatever_the_target_shows():
    before = _report([s for s in NAMED for _ in range(SAMPLES)], NAMED, seed=0)
    after = _report([s for s in NAMED for _ in range(SAMPLES)], NAMED, seed=0)
    # the erased prompts now show squares: excluded from the comparison, so still zero change
    after.images[: 4 * SAMPLES] = _report(["square"] * 4 * SAMPLES, NAMED[:4], seed=5).images
    out = compare(after, before, features=world_features, feature_extractor="classifier")
    assert out["pixel_change"].value == 0 and out["changed_fraction"].value == 0
    assert out["pixel_change"].n == (len(NAMED) - 4) * SAMPLES
    assert out["fid"].value == pytest.approx(0, abs=1e-6)
    assert after.info["comparison"]["metrics"] == ["changed_fraction", "fid", "kid", "pixel_change"]


def test_fid_separates_same_distribution_from_a_different_one():
    shapes = [s for s in NAMED for _ in range(SAMPLES)]
    a = _report(shapes, NAMED, seed=1)
    same = _report(shapes, NAMED, seed=2)  # same shapes, other colours/textures/positions
    other = _report(["diamond" if s != "circle" else s for s in shapes], NAMED, seed=3)
    near = compare(same, a, features=world_features)["fid"].value
    far = compare(other, a, features=world_features)["fid"].value
    assert far > 3 * near, (near, far)
    assert compare(same, a, features=world_features)["changed_fraction"].value == 1.0


def test_side_by_side_grid_rows_are_before_then_after():
    before = _report(["square"] * len(NAMED) * SAMPLES, NAMED, seed=0)
    after = _report(["star"] * len(NAMED) * SAMPLES, NAMED, seed=0)
    grids = comparison_grids(after, before, rows=3)
    assert set(grids) == {"target", "retain"}
    grid = np.asarray(grids["retain"])
    assert grid.shape[0] == 16 + 3 * (128 + 2)  # a header row (before +k | after +k), three prompts at 128 px


def test_unrelated_reports_are_refused():
    a = _report(["square"] * 8, ["square"] * 4, seed=0)
    b = _report(["square"] * 8, ["star"] * 4, seed=0)
    with pytest.raises(Exception, match="not of the same prompts"):
        compare(a, b)


def test_cli_compare_with_another_model(tiny_sd1_folder, tiny_sd2_folder, tmp_path, capsys):
    prompts = tmp_path / "p.csv"
    prompts.write_text("case_number,prompt,evaluation_seed,concept,group\n0,a red star,1,star,target\n"
                       "1,a blue circle,2,star,retain\n2,a green square,3,star,retain\n")
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(tiny_sd1_folder), "--compare", str(tiny_sd2_folder), "--prompts",
                 str(prompts), "--steps", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["pixel_change"]["value"] > 0.01  # two different random models
    assert report["info"]["comparison"]["feature_extractor"] is None  # no FID without a feature extractor
    assert report["info"]["comparison"]["baseline_model"] == report["baseline"]["info"]["model"] != report["info"]["model"]
    assert len(report["info"]["weights_sha256"]["unet"]) == 64
    assert (out / "compare-retain.png").is_file() and (out / "compare-target.png").is_file()


def _scored(report: Report) -> Report:
    """The report with the world classifier's metrics on its images (target, retains, worst kept concept)."""
    from erasure.evaluation.classifier_metrics import classifier_metrics, worst_kept_retain_accuracy
    from erasure.world.instruments import load_classifier, predict_labels

    predictions = predict_labels(load_classifier(), report.images)
    expanded = tuple(r for r in report.records for _ in range(SAMPLES))
    report.metrics.update(classifier_metrics(expanded, predictions, ("shape", "circle"), n_resamples=50))
    report.metrics.update(worst_kept_retain_accuracy(expanded, predictions, ("shape", "circle"), n_resamples=50))
    return report


def test_report_opens_with_a_verdict_and_embeds_its_figures(tmp_path):
    shapes = [s for s in NAMED for _ in range(SAMPLES)]
    before = _scored(_report(shapes, NAMED, seed=0))
    # after: the circles became squares, and the stars became hearts (a kept concept lost)
    after_shapes = ["square" if s == "circle" else "heart" if s == "star" else s for s in shapes]
    after = _report(after_shapes, NAMED, seed=0)
    after = _scored(after)
    compare(after, before, features=world_features, feature_extractor="classifier")
    assert before.value("target_accuracy") == 1.0 and after.value("target_accuracy") == 0.0
    after.save(tmp_path / "r", baseline=before)
    md = (tmp_path / "r" / "report.md").read_text()
    head = md.split("## Verdict", 1)[1].split("Model:", 1)[0]
    assert "**Erased**: target accuracy (how often the concept still appears) 1.00 -> 0.00" in head
    assert "worst kept concept shape=star 1.00 -> 0.00" in head
    assert "1 kept concept lost more than 10 points: shape=star" in head
    assert "KID" in head and "FID" in head and "changed visibly" in head
    assert md.index("## Verdict") < md.index("| metric |")
    for name in ("compare-target.png", "compare-retain.png", "grid-target.png", "grid-retain.png"):
        assert f"]({name})" in md and (tmp_path / "r" / name).is_file()
