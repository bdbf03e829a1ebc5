"""Metrics against known values: crafted labels, hand-made embeddings, Gaussians with closed-form FID."""

import math

import numpy as np
import pytest
from PIL import Image

from erasure.errors import ErasureError
from erasure.evaluation.metrics import (
    METRICS,
    MetricResult,
    bootstrap_ci,
    classifier_metrics,
    clip_accuracy,
    clip_score,
    cross_domain_retain_accuracy,
    fid,
    frechet_distance,
    in_domain_retain_accuracy,
    kid,
    per_prompt_change,
    target_accuracy,
    unlearning_accuracy,
)
from erasure.evaluation.prompts import PromptRecord, read_prompt_set

STAR = ("shape", "star")
ATTRIBUTES = ("shape", "colour", "texture", "background")


def record(i, group, **labels):
    return PromptRecord(case_number=i, prompt=f"prompt {i}", evaluation_seed=i, concept="star", group=group,
                        extra={a: labels.get(a, "") for a in ATTRIBUTES})


# (group, expected labels, predicted labels); unnamed attributes get arbitrary predictions.
CASES = [
    ("target", dict(shape="star"), dict(shape="star")),
    ("target", dict(shape="star", colour="red"), dict(shape="star", colour="red")),
    ("target", dict(shape="star", colour="blue"), dict(shape="circle", colour="green")),
    ("target", dict(shape="star"), dict(shape="none")),
    ("synonym", dict(shape="star"), dict(shape="none")),
    ("synonym", dict(shape="star", texture="dotted"), dict(shape="none", texture="dotted")),
    ("neighbour", dict(shape="circle", colour="red"), dict(shape="circle", colour="red")),
    ("neighbour", dict(shape="circle"), dict(shape="star")),
    ("neighbour", dict(shape="square", texture="plain"), dict(shape="square", texture="striped")),
    ("neighbour", dict(shape="heart"), dict(shape="heart")),
    ("other", dict(colour="red"), dict(colour="red")),
    ("other", dict(colour="blue"), dict(colour="green")),
    ("other", dict(texture="striped"), dict(texture="striped")),
    ("other", dict(colour="red", texture="dotted"), dict(colour="red", texture="plain")),
]
FILLER = dict(shape="none", colour="yellow", texture="plain", background="white")


def crafted():
    records = [record(i, group, **expected) for i, (group, expected, _) in enumerate(CASES)]
    predicted = [p for _, _, p in CASES]
    predictions = {a: [p.get(a, FILLER[a]) for p in predicted] for a in ("shape", "colour", "texture")}
    return records, predictions


def values(results):
    return {name: r.value for name, r in results.items()}


def test_target_and_unlearning_accuracy_on_crafted_labels():
    records, predictions = crafted()
    accuracy = target_accuracy(records, predictions, STAR)
    assert values(accuracy) == {"target_accuracy": 0.5, "target_accuracy[group=target]": 0.5,
                                "target_accuracy[group=synonym]": 0.0}
    assert accuracy["target_accuracy"].n == 4
    assert accuracy["target_accuracy"].settings["concept"] == "shape=star"
    pooled = target_accuracy(records, predictions, STAR, groups=None)["target_accuracy"]
    assert pooled.value == pytest.approx(2 / 6) and pooled.n == 6
    ua = unlearning_accuracy(records, predictions, STAR)
    for name, r in accuracy.items():
        u = ua[name.replace("target_accuracy", "unlearning_accuracy")]
        assert u.value == pytest.approx(1 - r.value) and u.n == r.n
        assert (u.ci_low, u.ci_high) == pytest.approx((1 - r.ci_high, 1 - r.ci_low))


def test_in_domain_retain_accuracy_per_value_and_group():
    records, predictions = crafted()
    ira = values(in_domain_retain_accuracy(records, predictions, STAR))
    assert ira == {"in_domain_retain_accuracy": 0.75, "in_domain_retain_accuracy[shape=circle]": 0.5,
                   "in_domain_retain_accuracy[shape=square]": 1.0, "in_domain_retain_accuracy[shape=heart]": 1.0,
                   "in_domain_retain_accuracy[group=neighbour]": 0.75}


def test_cross_domain_retain_accuracy_needs_every_named_attribute_right():
    records, predictions = crafted()
    cra = values(cross_domain_retain_accuracy(records, predictions, STAR))
    assert cra["cross_domain_retain_accuracy"] == 0.5  # red ok, blue->green, striped ok, dotted->plain
    assert cra["cross_domain_retain_accuracy[colour]"] == pytest.approx(2 / 3)
    assert cra["cross_domain_retain_accuracy[texture]"] == 0.5
    assert cra["cross_domain_retain_accuracy[group=target]"] == 0.5  # red ok, blue->green
    assert cra["cross_domain_retain_accuracy[group=synonym]"] == 1.0
    assert cra["cross_domain_retain_accuracy[group=neighbour]"] == 0.5
    assert cra["cross_domain_retain_accuracy[group=other]"] == 0.5


def test_perfect_predictions_score_one_on_a_world_prompt_set():
    prompts = read_prompt_set("shapeworld-shape-star")
    predictions = {a: [r.extra[a] or FILLER[a] for r in prompts] for a in ATTRIBUTES}
    results = classifier_metrics(prompts, predictions, STAR, n_resamples=50)  # a PromptSet works as records
    for name in ("target_accuracy", "in_domain_retain_accuracy", "cross_domain_retain_accuracy"):
        assert results[name].value == 1.0 and results[name].ci_low == 1.0 == results[name].ci_high
    assert results["unlearning_accuracy"].value == 0.0
    assert {f"target_accuracy[group={g}]" for g in ("target", "synonym", "held-out")} <= set(results)
    assert {f"cross_domain_retain_accuracy[group={g}]" for g in prompts.groups()} <= set(results)
    assert results["target_accuracy"].n == sum(r.group == "target" for r in prompts)


def test_classifier_metrics_leave_out_what_no_prompt_qualifies_for():
    records, predictions = crafted()
    only_targets = [r for r in records if r.group == "target" and r.extra["colour"] == ""]
    shape = {"shape": ["star", "none"]}
    assert set(classifier_metrics(only_targets, shape, STAR, n_resamples=0)) == {
        "unlearning_accuracy", "unlearning_accuracy[group=target]", "target_accuracy", "target_accuracy[group=target]"}
    with pytest.raises(ErasureError, match="no prompt names a shape other than star"):
        in_domain_retain_accuracy(only_targets, shape, STAR)


def test_classifier_metric_mistakes_are_one_line_errors():
    records, predictions = crafted()
    with pytest.raises(ErasureError, match="no prompt names shape=starr; did you mean 'star'"):
        target_accuracy(records, predictions, ("shape", "starr"))
    with pytest.raises(ErasureError, match="have 13 entries but there are 14 prompt records"):
        target_accuracy(records, {**predictions, "colour": predictions["colour"][:-1]}, STAR)
    with pytest.raises(ErasureError, match="no predictions for attribute 'shape'"):
        target_accuracy(records, {"colour": predictions["colour"]}, STAR)
    with pytest.raises(ErasureError, match="concept must be an"):
        target_accuracy(records, predictions, "star")
    assert target_accuracy(records, predictions, ["shape", "star"], n_resamples=0)["target_accuracy"].value == 0.5


def test_bootstrap_interval_of_a_bernoulli_mean_has_the_normal_width():
    p, n = 0.3, 10_000
    sample = (np.random.default_rng(1).random(n) < p).astype(float)
    low, high = bootstrap_ci(sample, n_resamples=1000, seed=0)
    assert low < p < high and low < sample.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / n), rel=0.1)
    assert bootstrap_ci(sample, seed=0) == (low, high) != bootstrap_ci(sample, seed=1)
    assert all(math.isnan(x) for x in bootstrap_ci(sample, n_resamples=0))


def test_bootstrap_of_a_two_sample_statistic_resamples_each_sample():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 900)
    low, high = bootstrap_ci((a, b), lambda x, y: x.mean() - y.mean(), n_resamples=500)
    assert low < 1.0 < high
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(1 / 400 + 1 / 900), rel=0.15)


def test_frechet_distance_matches_closed_forms():
    assert frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.zeros(2), np.diag([4.0, 1.0])) == pytest.approx(2.0)
    assert frechet_distance(np.ones(3), np.eye(3), np.zeros(3), np.eye(3)) == pytest.approx(3.0)


def test_fid_of_gaussian_samples():
    n, d = 2000, 16
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    # Finite-sample bias of FID for two samples of N(0, I): 2d/n from the means, ~d(d+1)/(2n) from the covariances.
    expected_bias = 2 * d / n + d * (d + 1) / (2 * n)
    same = fid(a, b, n_resamples=100)
    assert 0.5 * expected_bias < same.value < 2 * expected_bias
    assert same.ci_low < same.value < same.ci_high and same.n == n
    shifted = fid(a, b + 0.5, n_resamples=100)  # ||mu||^2 = 16 * 0.25 = 4
    assert shifted.value == pytest.approx(4.0 + expected_bias, abs=0.4)
    assert shifted.ci_low < 4.0 < shifted.ci_high
    assert shifted.details["mean_term"] == pytest.approx(4.0, abs=0.4)
    identical = fid(a, a, n_resamples=0)
    assert identical.value < 1e-9 and math.isnan(identical.ci_low)


def test_kid_is_zero_for_one_distribution_and_positive_for_a_shift():
    n, d = 1000, 16
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    same = kid(a, b, n_resamples=500)
    assert abs(same.value) < 0.01 and same.ci_low < 0.0 < same.ci_high
    assert same.settings["subset_size"] == n and same.details["subset_std"] == pytest.approx(0.0, abs=1e-12)
    shifted = kid(a, b + 0.5, n_resamples=200)
    assert shifted.value > 0.5 and shifted.ci_low > 0.3


def test_kid_equals_the_unbiased_mmd_and_subsets_estimate_it():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((60, 4)), rng.standard_normal((60, 4)) + 0.3
    kernel = lambda x, y: (x @ y.T / 4 + 1) ** 3  # noqa: E731
    m = len(a)
    k_aa, k_bb, k_ab = kernel(a, a), kernel(b, b), kernel(a, b)
    unbiased = ((k_aa.sum() - np.trace(k_aa)) + (k_bb.sum() - np.trace(k_bb))) / (m * (m - 1)) - 2 * k_ab.mean()
    assert kid(a, b, n_resamples=0).value == pytest.approx(unbiased, rel=1e-10)
    subsets = kid(a, b, subset_size=30, num_subsets=50, n_resamples=0)
    assert subsets.settings["subset_size"] == 30
    assert subsets.value == pytest.approx(unbiased, abs=3 * subsets.details["subset_std"] / math.sqrt(50))


def test_clip_score_conventions_on_hand_made_embeddings():
    images = np.array([[2.0, 0.0], [1.0, 0.0]])  # norms need not be 1
    texts = np.array([[0.5, math.sqrt(0.75)], [-0.5, math.sqrt(0.75)]])  # cos 0.5 and -0.5
    first = clip_score(images[:1], texts[:1], n_resamples=0)
    assert first["clip_score"].value == pytest.approx(50.0) and first["clip_cosine"].value == pytest.approx(0.5)
    both = clip_score(images, texts, model="hand-made", n_resamples=0)
    assert both["clip_score"].value == pytest.approx(25.0)  # the negative cosine counts as 0
    assert both["clip_cosine"].value == pytest.approx(0.0)  # the raw cosine keeps its sign
    assert both["clip_score"].settings["model"] == "hand-made"
    assert clip_score(images, texts[0], n_resamples=0)["clip_cosine"].value == pytest.approx(0.5)


def test_clip_accuracy_counts_top1_matches():
    classes = np.eye(3)
    images = np.array([[1.0, 0.1, 0.0], [0.1, 1.0, 0.0], [0.0, 0.9, 0.2]])
    assert clip_accuracy(images, classes, [0, 1, 2], n_resamples=0).value == pytest.approx(2 / 3)
    named = clip_accuracy(images, classes, ["cat", "dog", "dog"], class_names=["cat", "dog", "fish"], n_resamples=0)
    assert named.value == 1.0
    with pytest.raises(ErasureError, match="not in class_names"):
        clip_accuracy(images, classes, ["cat", "dog", "cow"], class_names=["cat", "dog", "fish"])


def test_per_prompt_change_on_image_pairs():
    before = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    after = before.copy()
    after[2] += 51  # every pixel moves by 0.2
    after[3, 0, 0, 0] = 1  # a rounding-level change
    change = per_prompt_change(before, after, n_resamples=0)
    assert change["pixel_change"].value == pytest.approx((0.2 + 1 / 255 / 192) / 4)
    assert change["changed_fraction"].value == 0.25 and change["changed_fraction"].n == 4
    as_pil = per_prompt_change([Image.fromarray(x) for x in before], after.astype(float) / 255, n_resamples=0)
    assert as_pil["changed_fraction"].value == 0.25
    with pytest.raises(ErasureError, match="differ in shape"):
        per_prompt_change(before, after[:3])


def test_metric_registry_and_result():
    assert {"target_accuracy", "unlearning_accuracy", "in_domain_retain_accuracy", "cross_domain_retain_accuracy",
            "clip_score", "clip_accuracy", "fid", "kid", "per_prompt_change"} <= set(METRICS.names())
    assert METRICS.get("fid").function is fid and METRICS.get("fid").higher_is_better is False
    with pytest.raises(ErasureError, match="unknown metric 'fdi'; did you mean 'fid'"):
        METRICS.get("fdi")
    result = MetricResult("x", 0.5, 0.25, 0.75, 10, settings={"seed": 0})
    assert str(result) == "x = 0.5 [0.25, 0.75] (n=10)"
    assert result.to_dict()["settings"] == {"seed": 0}


# Full-rank covariances agree to 1e-6. With n < d both covariances are singular, and the square roots of their
# ~24 zero eigenvalues turn float64 round-off (~1e-13) into ~3e-7 each: neither pytorch-fid (scipy sqrtm) nor we
# can be closer than ~5e-6 to a 40-digit mpmath value there (measured: ours -4.3e-6, pytorch-fid -6.2e-6).
@pytest.mark.parametrize("n, d, tolerance", [(200, 16, 1e-6), (500, 64, 1e-6), (40, 64, 2e-5)])
def test_frechet_distance_equals_pytorch_fid(n, d, tolerance):
    """Our Fréchet distance on the same features equals pytorch-fid's calculate_frechet_distance."""
    pytorch_fid = pytest.importorskip("pytorch_fid.fid_score", reason="pytorch-fid is in the dev extra")
    rng = np.random.default_rng(d)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3
    b = rng.normal(0.2, 1.1, size=(n + 7, d)) @ rng.normal(size=(d, d)) * 0.3
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    theirs = float(pytorch_fid.calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b))
    assert theirs > 1
    assert frechet_distance(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(theirs, abs=tolerance, rel=0)
    assert fid(a, b, n_resamples=0).value == pytest.approx(theirs, abs=tolerance, rel=0)


@pytest.mark.slow
def test_inception_features_equal_pytorch_fids_own_model(tmp_path, monkeypatch):
    """Our Inception features from a local file equal pytorch-fid's InceptionV3 (pool3, 2048-d) with the same
    weights (random here; pytorch-fid's download replaced by them), on the same images."""
    import torch
    from safetensors.torch import save_file

    fid_inception = pytest.importorskip("pytorch_fid.inception", reason="pytorch-fid is in the dev extra")
    from erasure.evaluation.distances import InceptionFeatures

    # pytorch-fid's own FID Inception, built with its download replaced: its parameter names and shapes
    captured = {}

    class _Captured(Exception):
        pass

    original_load = torch.nn.Module.load_state_dict

    def capture(self, state_dict, *args, **kwargs):
        captured.update({k: v.clone() for k, v in self.state_dict().items()})
        raise _Captured()

    monkeypatch.setattr(fid_inception, "load_state_dict_from_url", lambda *a, **k: {})
    monkeypatch.setattr(torch.nn.Module, "load_state_dict", capture)
    with pytest.raises(_Captured):
        fid_inception.fid_inception_v3()
    monkeypatch.setattr(torch.nn.Module, "load_state_dict", original_load)
    generator = torch.Generator().manual_seed(0)
    state = {}
    for k, v in captured.items():
        if "running_var" in k:
            state[k] = torch.rand(v.shape, generator=generator) + 0.5
        elif v.is_floating_point():
            state[k] = torch.randn(v.shape, generator=generator) * (0.02 if v.ndim > 1 else 0.1)
        else:
            state[k] = v
    path = tmp_path / "fid-inception.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    ours = InceptionFeatures(str(path))(images)
    monkeypatch.setattr(fid_inception, "load_state_dict_from_url", lambda *a, **k: state)
    theirs_model = fid_inception.InceptionV3([3]).eval()
    with torch.no_grad():
        theirs = theirs_model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)[0].flatten(1).numpy()
    assert ours.shape == (3, 2048) and np.abs(theirs).max() > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    with pytest.raises(ErasureError, match="pt_inception-2015-12-05-6726825d.pth.*--features-weights"):
        InceptionFeatures(str(tmp_path / "missing.pth"))


def test_worst_kept_retain_accuracy_on_crafted_labels():
    """Kept concepts are the labels named by prompts that do not name the erased star: the lowest of their
    accuracies, with that concept's own n (CASES above)."""
    from erasure.evaluation.metrics import worst_kept_retain_accuracy

    records, predictions = crafted()
    out = worst_kept_retain_accuracy(records, predictions, STAR, n_resamples=0)
    kept = out["worst_kept_retain_accuracy"].details["kept"]
    # "correct": each image's outcome in image order (for pairing two runs on the same seeds)
    assert kept["shape=circle"] == {"accuracy": 0.5, "n": 2, "correct": "10"}
    assert kept["shape=heart"] == {"accuracy": 1.0, "n": 1, "correct": "1"}
    assert kept["colour=blue"] == {"accuracy": 0.0, "n": 1, "correct": "0"}  # the 'other' blue prompt, not the blue star
    assert kept["texture=plain"] == {"accuracy": 0.0, "n": 1, "correct": "0"} and "texture=dotted" in kept
    assert out["worst_kept_retain_accuracy"].value == 0.0 and out["worst_kept_retain_accuracy"].n == 1
    in_domain = out["worst_kept_in_domain_retain_accuracy"]
    assert in_domain.value == 0.5 and in_domain.details["worst_concept"] == "shape=circle"
    assert set(in_domain.details["kept"]) == {"shape=circle", "shape=square", "shape=heart"}
