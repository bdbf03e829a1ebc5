"""The registry-driven evaluation and the protocol presets, end to end: judges with known decision rules on
images with known content (a stand-in generator), and on tiny random pipelines with tiny random judges saved
to local files, from Python and from the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import erasure.evaluation.evaluate as evaluate_module
from erasure.errors import ErasureError
from erasure.evaluation.evaluate import evaluate
from erasure.evaluation.judges import CallableJudge
from erasure.generation import SamplerSettings

pytestmark = pytest.mark.fast

COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}
FAST = SamplerSettings(steps=2, guidance=3.0)


class _Pipe:
    """Enough of a pipeline for evaluate's bookkeeping; images come from the stand-in generator."""

    erasure_source = "stand-in"
    erasure_edit = None

    def __init__(self):
        import torch

        self.unet = torch.nn.Linear(2, 2)
        self.text_encoder = torch.nn.Linear(2, 2)


def _write_prompts(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """rows: (prompt, class, group) -> a CSV with case_number, prompt, class, group, evaluation_seed."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_number", "prompt", "class", "group", "evaluation_seed"])
        for i, (prompt, cls, group) in enumerate(rows):
            writer.writerow([i, prompt, cls, group, 100 + i])
    return path


def _stand_in_generator(wrong: dict[int, str]):
    """Generates a solid image of the colour the prompt ends with; image ``i`` in ``wrong`` shows another colour."""
    calls = []

    def generate(pipe, prompts, seeds, settings, batch_size=16, progress=True):
        calls.append(len(prompts))
        colours = [wrong.get(i, p.split()[-1]) for i, p in enumerate(prompts)]
        return np.stack([np.broadcast_to(np.array(COLOURS[c], np.uint8), (16, 16, 3)) for c in colours]).copy()

    generate.calls = calls
    return generate


def dominant_colour(images, concept):
    """A judge's known rule: the concept colour is the image's brightest channel."""
    names = list(COLOURS)
    return np.array([names[int(np.argmax(im.reshape(-1, 3).mean(0)))] == concept for im in images])


dominant_colour.labels = lambda images: [list(COLOURS)[int(np.argmax(im.reshape(-1, 3).mean(0)))] for im in images]


@pytest.fixture
def colour_prompts(tmp_path):
    rows = [(f"a photo of {c}", c, "target" if c == "red" else "neighbour")
            for c in ("red", "green", "blue") for _ in range(4)]
    return _write_prompts(tmp_path / "colours.csv", rows)


def test_judge_metrics_on_known_content(monkeypatch, colour_prompts):
    # two of four red images come out blue (the erasure worked half), one green image comes out blue
    monkeypatch.setattr(evaluate_module, "generate_images", _stand_in_generator({0: "blue", 1: "blue", 4: "blue"}))
    judge = CallableJudge(dominant_colour, attribute="class")
    report = evaluate(_Pipe(), colour_prompts, judge=judge, concept="red", n_resamples=200, progress=False)
    m = report.metrics
    assert m["target_accuracy"].value == 0.5 and m["unlearning_accuracy"].value == 0.5
    assert m["target_accuracy"].n == 4
    assert m["in_domain_retain_accuracy"].value == pytest.approx(7 / 8)
    assert m["in_domain_retain_accuracy[class=green]"].value == 0.75
    assert m["in_domain_retain_accuracy[class=blue]"].value == 1.0
    worst = m["worst_kept_retain_accuracy"]
    assert worst.value == 0.75 and worst.n == 4 and worst.details["worst_concept"] == "class=green"
    assert worst.details["kept"] == {"class=green": {"accuracy": 0.75, "n": 4}, "class=blue": {"accuracy": 1.0, "n": 4}}
    assert m["worst_kept_in_domain_retain_accuracy"].value == 0.75
    assert 0.0 <= worst.ci_low <= 0.75 <= worst.ci_high <= 1.0
    assert report.info["judge"]["judge"] == "callable" and report.info["concept"] == "class=red"
    assert report.info["metric_specs"]["target_accuracy"]["higher_is_better"] is False


def test_named_metrics_and_concept_rate_per_group(monkeypatch, colour_prompts):
    monkeypatch.setattr(evaluate_module, "generate_images", _stand_in_generator({0: "blue", 4: "red"}))
    judge = CallableJudge(dominant_colour)  # decides only: no labels
    report = evaluate(_Pipe(), colour_prompts, judge=judge, concept="red", metrics=["concept_rate"],
                      n_resamples=0, progress=False)
    assert set(report.metrics) == {"concept_rate", "concept_rate[group=target]", "concept_rate[group=neighbour]"}
    assert report.value("concept_rate") == pytest.approx(4 / 12)          # 3 red prompts kept red + 1 green gone red
    assert report.value("concept_rate[group=target]") == 0.75
    assert report.value("concept_rate[group=neighbour]") == pytest.approx(1 / 8)
    with pytest.raises(ErasureError, match="needs per-image labels"):
        evaluate(_Pipe(), colour_prompts, judge=judge, concept="red", metrics=["target_accuracy"], progress=False)


def test_missing_inputs_are_refused_before_generating(monkeypatch, colour_prompts):
    generator = _stand_in_generator({})
    monkeypatch.setattr(evaluate_module, "generate_images", generator)
    judge = CallableJudge(dominant_colour, attribute="class")
    for metrics, message in ((["fid"], "needs reference images"), (["clip_score"], "needs a CLIP"),
                             (["nudity_rate"], "needs a judge"), (["target_accuracy"], "needs a judge"),
                             (["fdi"], "did you mean 'fid'")):
        with pytest.raises(ErasureError, match=message):
            evaluate(_Pipe(), colour_prompts, metrics=metrics, progress=False)
    with pytest.raises(ErasureError, match="needs the concept"):
        evaluate(_Pipe(), colour_prompts, judge=judge, metrics=["target_accuracy"], progress=False)
    with pytest.raises(ErasureError, match="no prompt names class=purple"):
        evaluate(_Pipe(), colour_prompts, judge=judge, concept="purple", progress=False)
    assert generator.calls == []


class ColourClip:
    """A CLIP with a known rule: an image embeds as its mean RGB, a text as the colour it ends with."""

    name = "colour-clip"

    def embed_images(self, images):
        x = np.asarray(images, dtype=np.float64).reshape(len(images), -1, 3).mean(1)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def embed_texts(self, texts):
        return np.array([np.array(COLOURS[t.split()[-1]], float) / np.linalg.norm(COLOURS[t.split()[-1]])
                         for t in texts], dtype=np.float32)


def test_clip_score_and_clip_accuracy_on_known_content(monkeypatch, colour_prompts):
    monkeypatch.setattr(evaluate_module, "generate_images", _stand_in_generator({0: "blue"}))
    report = evaluate(_Pipe(), colour_prompts, clip=ColourClip(), clip_template="{}", n_resamples=100,
                      metrics=["clip_score", "clip_accuracy"], progress=False)
    same = 1.0
    unit = np.array(COLOURS["red"], float) / np.linalg.norm(COLOURS["red"])
    other = float(unit @ (np.array(COLOURS["blue"], float) / np.linalg.norm(COLOURS["blue"])))
    assert report.value("clip_cosine") == pytest.approx((11 * same + other) / 12, abs=1e-6)
    assert report.value("clip_score") == pytest.approx(100 * (11 * same + other) / 12, abs=1e-4)
    assert report.value("clip_accuracy") == pytest.approx(11 / 12)
    assert report.metrics["clip_score"].settings["model"] == "colour-clip"


def test_fid_kid_and_pixel_change_against_a_reference(monkeypatch, colour_prompts, tmp_path):
    from PIL import Image

    from erasure.evaluation.distances import fid, kid

    monkeypatch.setattr(evaluate_module, "generate_images", _stand_in_generator({}))
    rng = np.random.default_rng(0)

    def features(images):  # a fixed random projection of the mean colour, plus per-image noise-free detail
        x = np.asarray(images, float).reshape(len(images), -1, 3).mean(1)
        return np.hstack([x, x**2 / 255.0])

    base = evaluate(_Pipe(), colour_prompts, judge=CallableJudge(dominant_colour, attribute="class"), concept="red",
                    n_resamples=0, progress=False)
    same = evaluate(_Pipe(), colour_prompts, reference=base, features=features, n_resamples=50, progress=False)
    assert same.value("pixel_change") == 0 and same.value("changed_fraction") == 0
    assert same.value("fid") == pytest.approx(0, abs=1e-6)
    folder = tmp_path / "reference"
    folder.mkdir()
    shuffled = base.images[rng.permutation(len(base.images))].copy()
    shuffled[:4] = np.array(COLOURS["green"], np.uint8)  # the reference has more green
    for i, im in enumerate(shuffled):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    moved = evaluate(_Pipe(), colour_prompts, reference=folder, features=features, metrics=["fid", "kid"],
                     n_resamples=50, progress=False)
    expected_fid = fid(features(shuffled), features(base.images), n_resamples=0).value
    assert moved.value("fid") == pytest.approx(expected_fid, rel=1e-9) and expected_fid > 1
    assert moved.value("kid") == pytest.approx(kid(features(shuffled), features(base.images), n_resamples=0).value)
    assert moved.info["reference"] == str(folder)


def test_nudenet_metrics_on_a_real_photo(monkeypatch, tmp_path):
    pytest.importorskip("nudenet")
    from PIL import Image

    photo = np.asarray(Image.open(Path(__file__).parent / "data" / "astronaut_256.jpg").convert("RGB"))

    def generate(pipe, prompts, seeds, settings, batch_size=16, progress=True):
        return np.stack([photo if "astronaut" in p else np.full_like(photo, 200) for p in prompts])

    monkeypatch.setattr(evaluate_module, "generate_images", generate)
    prompts = _write_prompts(tmp_path / "p.csv", [("an astronaut", "", ""), ("a wall", "", ""), ("a wall", "", "")])
    report = evaluate(_Pipe(), prompts, judge="nudenet", n_resamples=100, progress=False)
    assert report.value("nudity_rate") == 0.0 and report.metrics["nudity_rate"].n == 3
    assert len([k for k in report.metrics if k.startswith("exposed[")]) == 9
    assert [k for k in report.metrics if k.startswith("nudity_rate[threshold=")] == [
        f"nudity_rate[threshold={t:g}]" for t in (0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.75, 0.8)]
    assert report.info["judge"]["nudenet_version"]
    # counting the face NudeNet finds on the photo: one image of three, and the sweep falls with the threshold
    from erasure.evaluation.judges import load_judge

    faces = evaluate(_Pipe(), prompts, judge=load_judge("nudenet", classes=("FACE_FEMALE",), threshold=0.3),
                     n_resamples=0, progress=False)
    assert faces.value("nudity_rate") == pytest.approx(1 / 3)
    assert faces.metrics["exposed[FACE_FEMALE]"].details == {"images": 1, "detections": 1}
    sweep = [faces.value(f"nudity_rate[threshold={t:g}]") for t in (0.2, 0.5, 0.8)]
    assert sweep[0] == pytest.approx(1 / 3) and sweep == sorted(sweep, reverse=True)


# --- tiny random pipelines with tiny random judges saved to local files -------------------------------------

def constant_resnet(folder: Path, classes: int, winner: int) -> Path:
    """A torchvision resnet18 whose head reads only its bias: top-1 is ``winner`` on every image."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=classes)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.nn.functional.one_hot(torch.tensor(winner), classes).float() * 4)
    path = folder / f"resnet18-{winner}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_image_classifier_judge_on_a_tiny_pipeline(tiny_sd1_pipeline, tmp_path):
    from erasure.evaluation.judges import load_judge

    labels = tmp_path / "labels.txt"
    labels.write_text("tench\nchurch\nparachute\n")
    rows = [(f"an image of a {c}", c, "") for c in ("church", "tench", "parachute") for _ in range(2)]
    prompts = _write_prompts(tmp_path / "objects.csv", rows)
    judge = load_judge("image-classifier:resnet18", weights=str(constant_resnet(tmp_path, 3, winner=1)),
                       labels=str(labels), resize=32, crop=32)
    report = evaluate(tiny_sd1_pipeline, prompts, judge=judge, concept="church", settings=FAST, n_resamples=100,
                      progress=False)
    # every image is called 'church': the church prompts keep it, the others are all lost
    assert report.value("target_accuracy") == 1.0 and report.metrics["target_accuracy"].n == 2
    assert report.value("in_domain_retain_accuracy") == 0.0
    assert report.value("worst_kept_retain_accuracy") == 0.0
    assert report.images.shape == (6, 64, 64, 3)
    files = report.info["judge"]["files"]
    assert any(p.endswith("resnet18-1.safetensors") for p in files) and any(p.endswith("labels.txt") for p in files)
    parachute = load_judge("image-classifier:resnet18", weights=str(constant_resnet(tmp_path, 3, winner=2)),
                           labels=str(labels), resize=32, crop=32)
    again = evaluate(tiny_sd1_pipeline, prompts, judge=parachute, concept="church", settings=FAST, n_resamples=0,
                     progress=False)
    assert again.value("target_accuracy") == 0.0
    assert again.value("in_domain_retain_accuracy[class=parachute]") == 1.0
    assert again.value("worst_kept_retain_accuracy") == 0.0
    assert again.metrics["worst_kept_retain_accuracy"].details["worst_concept"] == "class=tench"
    np.testing.assert_array_equal(again.images, report.images)  # same seeds, same images
