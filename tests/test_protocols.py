"""The registry-driven evaluation and the protocol presets, end to end: judges with known decision rules on
images with known content (a stand-in generator), and on tiny random pipelines with tiny random judges saved
to local files, from Python and from the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import erasure.evaluation.evaluate as evaluate_module
from erasure.errors import ErasureError
from erasure.evaluation.evaluate import evaluate
from erasure.evaluation.judges import CallableJudge
from erasure.evaluation.prompts import read_prompt_set
from erasure.generation import SamplerSettings

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


@pytest.mark.fast
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
    assert worst.details["kept"] == {"class=green": {"accuracy": 0.75, "n": 4, "correct": "0111"},
                                     "class=blue": {"accuracy": 1.0, "n": 4, "correct": "1111"}}
    assert m["worst_kept_in_domain_retain_accuracy"].value == 0.75
    assert 0.0 <= worst.ci_low <= 0.75 <= worst.ci_high <= 1.0
    assert report.info["judge"]["judge"] == "callable" and report.info["concept"] == "class=red"
    assert report.info["metric_specs"]["target_accuracy"]["higher_is_better"] is False


@pytest.mark.fast
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


@pytest.mark.fast
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


@pytest.mark.fast
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


@pytest.mark.fast
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


@pytest.mark.fast
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


@pytest.mark.fast
@pytest.mark.slow  # 6-7 s: make test runs it, make test-fast does not
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


# --- protocol presets: the real prompt files, and runs from the CLI ----------------------------------------

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "prompts"
REAL_FILES = {  # file -> (preset, the role it must be recognised as, rows)
    "imagenette.csv": ("imagenette", "uce-imagenette", 5000),
    "small_imagenet_prompts.csv": ("imagenette", "esd-small-imagenet", 100),
    "unlearndiffatk_church.csv": ("imagenette", "unlearndiffatk-church", 50),
    "i2p_4703.csv": ("i2p-nudity", "i2p", 4703),
    "unlearndiffatk_nudity.csv": ("i2p-nudity", "unlearndiffatk-nudity", 142),
    "big_artist_prompts.csv": ("artists", "esd-big-artists", 100),
    "unlearndiffatk_vangogh.csv": ("artists", "unlearndiffatk-vangogh", 50),
    "coco_10k.csv": ("coco", "coco-10k", 9969),
    "coco_30k.csv": ("coco", "coco-30k", 30000),
}


@pytest.mark.fast
@pytest.mark.parametrize("file", sorted(REAL_FILES))
def test_presets_recognise_the_published_files(file):
    from erasure.evaluation.presets import protocol_run

    path = REAL_DIR / file
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared reference prompt files)")
    preset, role, rows = REAL_FILES[file]
    run, prompt_set = protocol_run(preset, path)
    assert (run.role, run.rows, run.rows_expected, run.subset) == (role, rows, rows, False)
    assert len(prompt_set) == rows and run.version == "1"
    assert run.sampler["steps"] in (50, 100) and run.sampler["guidance"] == 7.5 and run.sampler["scheduler"] == "lms"
    record = run.record(steps=None)
    assert record["comparable_with_the_papers"] is True and record["name"] == preset


@pytest.mark.fast
def test_imagenette_classes_are_torchvision_imagenet_names_at_the_presets_indices():
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    from erasure.evaluation.judges import _normalise_label
    from erasure.evaluation.presets import load_preset

    preset = load_preset("imagenette")
    index = {_normalise_label(name): i for i, name in enumerate(_IMAGENET_CATEGORIES)}
    assert {c: index[_normalise_label(c)] for c in preset.settings["concepts"]} == preset.settings["imagenet_class_index"]


@pytest.mark.fast
def test_preset_file_checks_are_one_line_errors(tmp_path):
    from erasure.evaluation.presets import protocol_run

    few = _write_prompts(tmp_path / "few.csv", [("an image of a church", "church", "")] * 3)
    with pytest.raises(ErasureError, match="has 3 rows, but the protocol's uce-imagenette file has 5000.*--subset"):
        protocol_run("imagenette", few)
    run, _ = protocol_run("imagenette", few, subset=True)
    assert run.subset and run.record()["comparable_with_the_papers"] is False
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("prompt,seed\na cat,1\n")
    with pytest.raises(ErasureError, match="fit no prompt file of preset 'imagenette'"):
        protocol_run("imagenette", wrong)
    with pytest.raises(ErasureError, match="fit no prompt file of preset 'unlearncanvas' \\(answer-set: case_number, "
                                           "prompt, evaluation_seed, style, object\\)"):
        protocol_run("unlearncanvas", few)
    from erasure.evaluation.presets import ProtocolPreset

    with pytest.raises(ErasureError, match="preset 'draft' is not runnable yet"):
        protocol_run(ProtocolPreset(name="draft", description="", prompt_files=()), few)
    with pytest.raises(ErasureError, match="--preset imagenette needs --prompts-file FILE"):
        protocol_run("imagenette", None)


def _imagenette_file(path: Path) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_number", "prompt", "class", "evaluation_seed"])
        for i, cls in enumerate(["church", "church", "tench", "parachute"]):
            writer.writerow([i, f"an image of a {cls}", cls, 7 + i])
    return path


@pytest.mark.slow
def test_imagenette_protocol_from_the_cli(tiny_sd1_folder, tmp_path, capsys):
    """The issue's command on a tiny random SD1 model, with a tiny 'ResNet' (1000 classes) whose top-1 is always
    ImageNet 497 (church): the church prompts keep it (target accuracy 1), the other classes are lost (0)."""
    pytest.importorskip("scipy")  # diffusers' LMS scheduler (the protocol's) needs it
    from erasure.cli import main

    weights = constant_resnet(tmp_path, 1000, winner=497)
    prompts = _imagenette_file(tmp_path / "imagenette.csv")
    erase = tmp_path / "erase"
    assert main(["erase", "--model", str(tiny_sd1_folder), "--concept", "church", "--guide", "tench",
                 "--templates", "an image of a {}", "--no-preserve", "--out", str(erase)]) == 0
    out = tmp_path / "eval"
    command = ["evaluate", "--model", str(tiny_sd1_folder), "--preset", "imagenette", "--prompts-file", str(prompts),
               "--judge", "image-classifier:resnet18", "--judge-weights", str(weights), "--concept", "church",
               "--edit", str(erase / "edit.safetensors"), "--compare", "--steps", "2", "--image-size", "64",
               "--out", str(out)]
    assert main(command) == 2  # 4 rows, not the published 5000
    assert "has 4 rows" in capsys.readouterr().err and not out.exists()
    assert main([*command, "--subset"]) == 0
    report = json.loads((out / "report.json").read_text())
    metrics, info = report["metrics"], report["info"]
    assert metrics["target_accuracy"]["value"] == 1.0 and metrics["target_accuracy"]["n"] == 2
    assert metrics["in_domain_retain_accuracy"]["value"] == 0.0
    assert metrics["worst_kept_retain_accuracy"]["value"] == 0.0
    assert report["baseline"]["metrics"]["target_accuracy"]["value"] == 1.0
    assert {"pixel_change", "changed_fraction"} <= set(metrics)
    protocol = info["protocol"]
    assert (protocol["name"], protocol["version"], protocol["prompt_file_role"]) == ("imagenette", "1", "uce-imagenette")
    assert protocol["subset"] is True and protocol["comparable_with_the_papers"] is False
    assert protocol["overrides"] == {"steps": 2, "height": 64, "width": 64}
    assert info["scheduler"] == "LMSDiscreteScheduler" and info["settings"]["guidance"] == 7.5
    assert info["judge"]["settings"]["resize"] == 232 and info["judge"]["settings"]["labels"] == "imagenet"
    assert info["edit"]["method"] == "uce"
    assert (out / "report.md").is_file() and list(out.glob("compare-*.png"))


@pytest.mark.fast
def test_cli_protocol_mistakes_are_one_line_errors(tiny_sd1_folder, tmp_path, capsys):
    from erasure.cli import main

    prompts = _imagenette_file(tmp_path / "imagenette.csv")
    base = ["evaluate", "--model", str(tiny_sd1_folder), "--prompts-file", str(prompts), "--out", str(tmp_path / "o")]
    cases = [
        (["--preset", "imagenette", "--subset"], "measures one erased concept; name it with --concept"),
        (["--preset", "imagenette", "--subset", "--concept", "church"], "needs its weights file"),
        (["--preset", "imagenete"], "did you mean 'imagenette'"),
        (["--judge", "image-classifier:resnet18", "--judge-set", "resise=3", "--concept", "church"],
         "unknown setting 'resise'.*did you mean 'resize'"),
        (["--judge", "nudenet", "--metric", "nudity_rat"], "did you mean 'nudity_rate'"),
        (["--metric", "clip_score"], "needs a CLIP: pass --clip"),
        (["--metric", "fid"], "needs reference images"),
        (["--judge", "nudenet", "--judge-weights", str(prompts)], "takes no weights file"),
        (["--preset", "coco", "--subset"], "fit no prompt file of preset 'coco'"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert __import__("re").search(message, err), (extra, err)
    assert not (tmp_path / "o").exists()


def _i2p_file(path: Path) -> Path:
    columns = ["Unnamed: 0", "prompt", "categories", "hard", "inappropriate_percentage", "nudity_percentage",
               "q16_percentage", "sd_safety_percentage", "prompt_toxicity", "lexica_url", "evaluation_seed",
               "evaluation_guidance", "sd_image_width", "sd_image_height", "sd_model", "case_number"]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i, (prompt, guidance) in enumerate([("a portrait in a garden", 7.5), ("a beach at noon", 9.0),
                                                ("a statue in a museum", 7.5)]):
            writer.writerow([i, prompt, "sexual", 0, 50, 50, 0, 0, 0.1, "", 100 + i, guidance, 512, 512, "SD1.4", i])
    return path


@pytest.mark.slow
def test_i2p_nudity_protocol_from_the_cli(tiny_sd1_folder, tmp_path):
    pytest.importorskip("nudenet")
    pytest.importorskip("scipy")
    from erasure.cli import main

    out = tmp_path / "nudity"
    assert main(["evaluate", "--model", str(tiny_sd1_folder), "--preset", "i2p-nudity", "--prompts-file",
                 str(_i2p_file(tmp_path / "nudity.csv")), "--subset", "--steps", "2", "--image-size", "64",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    metrics, info = report["metrics"], report["info"]
    assert info["protocol"]["prompt_file_role"] == "unlearndiffatk-nudity"
    assert info["judge"]["settings"]["threshold"] == 0.45  # UnlearnDiffAtk's, for its file
    assert info["judge"]["nudenet_version"] and info["guidance_from_file"] is True
    assert metrics["nudity_rate"]["n"] == 3 and metrics["nudity_rate"]["settings"]["threshold"] == 0.45
    sweep = [metrics[f"nudity_rate[threshold={t:g}]"]["value"] for t in (0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.75, 0.8)]
    assert sweep == sorted(sweep, reverse=True) and sweep[3] == metrics["nudity_rate"]["value"]
    assert len([k for k in metrics if k.startswith("exposed[")]) == 9


@pytest.mark.fast
def test_per_row_guidance_generates_each_row_at_its_own_guidance(tiny_sd1_pipeline, tmp_path):
    """guidance_from_file: each image equals the one generated alone at its row's guidance."""
    from erasure.generation import generate_images

    prompts = read_prompt_set(_i2p_file(tmp_path / "g.csv"))
    report = evaluate(tiny_sd1_pipeline, prompts, metrics=["concept_rate"], judge=CallableJudge(dominant_colour),
                      concept="red", settings=FAST, guidance_from_file=True, n_resamples=0, progress=False)
    assert report.info["guidance_from_file"] is True
    for i, record in enumerate(prompts.records):
        alone = generate_images(tiny_sd1_pipeline, [record.prompt], [record.evaluation_seed],
                                SamplerSettings(steps=2, guidance=record.evaluation_guidance), progress=False)
        assert np.abs(alone[0].astype(int) - report.images[i].astype(int)).max() <= 1


def _tiny_transformers_clip(folder: Path) -> Path:
    from conftest import build_tiny_clip_folder

    return build_tiny_clip_folder(folder, seed=3)


@pytest.mark.slow
def test_artists_protocol_from_the_cli_equals_its_clip_oracle(tiny_sd1_folder, tmp_path):
    """The artists preset with a tiny random CLIP folder as judge (zero-shot among the file's artists) and as the
    CLIP score's model: every number equals the same CLIP applied by hand to the images the run kept."""
    pytest.importorskip("scipy")
    from PIL import Image

    from erasure.cli import main
    from erasure.evaluation.clip_backends import TransformersClipBackend

    clip = _tiny_transformers_clip(tmp_path / "clip")
    artists = ["Van Gogh", "Pablo Picasso", "Rembrandt"]
    prompts = tmp_path / "artists.csv"
    with prompts.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["", "case_number", "prompt", "evaluation_seed", "artist"])
        for i, artist in enumerate(a for a in artists for _ in range(2)):
            writer.writerow([i, i, f"a landscape by {artist}", 30 + i, artist])
    out, images = tmp_path / "eval", tmp_path / "images"
    assert main(["evaluate", "--model", str(tiny_sd1_folder), "--preset", "artists", "--prompts-file", str(prompts),
                 "--subset", "--judge", f"clip-zero-shot:transformers:{clip}", "--concept", "Van Gogh",
                 "--steps", "2", "--image-size", "64", "--images-dir", str(images), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    metrics, info = report["metrics"], report["info"]
    kept = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((images / "model" / "images").glob("*.png"))])
    assert kept.shape == (6, 64, 64, 3)
    backend = TransformersClipBackend(clip)
    image_embeds = backend.embed_images(kept)
    texts = backend.embed_texts([f"a painting in the style of {a}" for a in artists])
    predicted = [artists[i] for i in (image_embeds @ texts.T).argmax(1)]
    truth = [a for a in artists for _ in range(2)]
    assert metrics["target_accuracy"]["value"] == np.mean([p == "Van Gogh" for p in predicted[:2]])
    assert metrics["in_domain_retain_accuracy"]["value"] == pytest.approx(np.mean([p == t for p, t in
                                                                                 zip(predicted[2:], truth[2:])]))
    cosine = np.einsum("ij,ij->i", image_embeds, backend.embed_texts([f"a landscape by {a}" for a in truth]))
    assert metrics["clip_cosine"]["value"] == pytest.approx(cosine.mean(), abs=1e-6)
    assert metrics["clip_score"]["value"] == pytest.approx((100 * np.maximum(cosine, 0)).mean(), abs=1e-4)
    assert info["judge"]["settings"]["classes"] == artists and info["clip"] == f"transformers:{clip.name}"
    assert info["protocol"]["name"] == "artists" and info["protocol"]["prompt_file_role"] == "esd-big-artists"
    # a rerun resumes from the kept images: nothing is generated again, the same numbers come out
    again = tmp_path / "again"
    assert main(["evaluate", "--model", str(tiny_sd1_folder), "--preset", "artists", "--prompts-file", str(prompts),
                 "--subset", "--judge", f"clip-zero-shot:transformers:{clip}", "--concept", "Van Gogh",
                 "--steps", "2", "--image-size", "64", "--images-dir", str(images), "--out", str(again)]) == 0
    assert json.loads((again / "report.json").read_text())["metrics"]["clip_score"] == metrics["clip_score"]


@pytest.mark.world
@pytest.mark.slow
def test_coco_protocol_from_the_cli_compares_with_the_unedited_model(tiny_sd1_folder, shapeworld_folder, tmp_path):
    """COCO captions on a tiny SD1 model with the world's CLIP as the CLIP score's model and the FID features:
    an edit that changes nothing measurable gives zero change and FID 0 against the unedited model."""
    pytest.importorskip("scipy")
    from erasure.cli import main

    prompts = tmp_path / "coco.csv"
    with prompts.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_number", "source", "prompt", "evaluation_seed"])
        for i, caption in enumerate(["a red star on white", "a blue circle", "a green heart", "a striped square"]):
            writer.writerow([i, "coco", caption, 50 + i])
    erase = tmp_path / "erase"
    # preserve_scale 0 and erase_scale 0: UCE leaves the weights as they are (a no-op edit)
    assert main(["erase", "--model", str(tiny_sd1_folder), "--concept", "zebra", "--guide", "horse", "--templates", "{}",
                 "--no-preserve", "--erase-scale", "0", "--out", str(erase)]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tiny_sd1_folder), "--preset", "coco", "--prompts-file", str(prompts),
                 "--subset", "--clip", "world", "--features", "world", "--edit", str(erase / "edit.safetensors"),
                 "--compare", "--steps", "2", "--image-size", "64", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    metrics, info = report["metrics"], report["info"]
    assert info["protocol"]["prompt_file_role"] == "coco-10k" and info["clip"] == "world"
    assert metrics["clip_score"]["n"] == 4 and metrics["clip_score"]["settings"]["model"] == "world"
    assert metrics["clip_score"]["value"] == pytest.approx(report["baseline"]["metrics"]["clip_score"]["value"], abs=1e-4)
    assert metrics["pixel_change"]["value"] <= 1 / 255 and metrics["fid"]["value"] == pytest.approx(0, abs=1e-3)
    assert metrics["fid"]["settings"]["feature_extractor"] == "world image embeddings"


@pytest.mark.fast
def test_comparison_flags_kept_concepts_that_lost_more_than_ten_points(monkeypatch, colour_prompts):
    from erasure.evaluation.evaluate import compare

    judge = CallableJudge(dominant_colour, attribute="class")
    kw = dict(judge=judge, concept="red", n_resamples=0, progress=False)
    monkeypatch.setattr(evaluate_module, "generate_images", _stand_in_generator({}))
    before = evaluate(_Pipe(), colour_prompts, **kw)
    # after: red erased, two of four green images lost (-50 points), one of four blue images too (-25)
    monkeypatch.setattr(evaluate_module, "generate_images",
                        _stand_in_generator({0: "blue", 1: "blue", 2: "blue", 3: "blue", 4: "red", 5: "red", 8: "red"}))
    after = evaluate(_Pipe(), colour_prompts, **kw)
    compare(after, before, n_resamples=0)
    # p: the exact McNemar test of the paired images (2 lost, none gained: 2 x 1/4; 1 lost: 2 x 1/2)
    assert after.info["kept_concepts_dropped"] == {
        "class=green": {"before": 1.0, "after": 0.5, "drop": 0.5, "n": 4, "p": 0.5},
        "class=blue": {"before": 1.0, "after": 0.75, "drop": 0.25, "n": 4, "p": 1.0}}
    assert "class=green 1.00 -> 0.50 (n=4, p=0.5)" in after.markdown(before)
    # the changed images on the retain prompts are counted too: 3 of 8
    assert after.value("changed_fraction") == pytest.approx(3 / 8)


@pytest.mark.fast
@pytest.mark.parametrize("lost, gained, same", [(0, 0, 5), (3, 0, 7), (8, 1, 3), (12, 4, 0), (5, 5, 2), (1, 9, 0)])
def test_paired_drop_p_value_is_the_exact_mcnemar_test(lost, gained, same):
    """The per-concept p of a flagged drop equals scipy's exact binomial test of min(lost, gained) of lost + gained
    at 1/2 (the exact McNemar test), whatever the order of the images; unpaired runs get none."""
    import random

    binomtest = pytest.importorskip("scipy.stats").binomtest  # the dev extra has scipy; the oldest job does not

    from erasure.evaluation.evaluate import paired_drop_p_value

    pairs = [("1", "0")] * lost + [("0", "1")] * gained + [("1", "1")] * same + [("0", "0")] * same
    random.Random(lost * 31 + gained).shuffle(pairs)
    before, after = "".join(b for b, _ in pairs), "".join(a for _, a in pairs)
    expected = 1.0 if lost + gained == 0 else binomtest(min(lost, gained), lost + gained, 0.5).pvalue
    assert paired_drop_p_value(before, after) == pytest.approx(expected, rel=1e-12)
    assert paired_drop_p_value(before, after + "1") is None and paired_drop_p_value(None, after) is None


def _constant_vit(folder: Path, labels: list[str], winner: int) -> Path:
    """A tiny transformers ViT image classifier whose top-1 is always ``labels[winner]``."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    id2label = dict(enumerate(labels))
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=len(labels), id2label=id2label,
                       label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.nn.functional.one_hot(torch.tensor(winner), len(labels)).float() * 3)
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.mark.fast
@pytest.mark.slow  # 6-7 s: make test runs it, make test-fast does not
def test_unlearncanvas_style_metrics_with_a_combined_judge_from_the_cli(tiny_sd1_folder, tmp_path):
    """UA, IRA and CRA of UnlearnCanvas with a style and an object classifier (tiny ViT folders that always say
    Monet and Cats): erasing Van Gogh, UA 1, IRA 1 (the Monet prompts), CRA 4/6 (the Dogs prompts fail)."""
    from erasure.cli import main

    style = _constant_vit(tmp_path / "style", ["Van_Gogh", "Monet", "Seed_Images"], winner=1)
    objects = _constant_vit(tmp_path / "object", ["Cats", "Dogs"], winner=0)
    prompts = tmp_path / "uc.csv"
    with prompts.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_number", "prompt", "evaluation_seed", "style", "object"])
        for i, (s, o) in enumerate([("Van_Gogh", "Cats")] * 2 + [("Monet", "Dogs")] * 2 + [("Monet", "Cats")] * 2):
            writer.writerow([i, f"A {o} image in {s} style.", 188 + i, s, o])
    judges = json.dumps({"style": f"image-classifier:transformers:{style}",
                         "object": f"image-classifier:transformers:{objects}"})
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tiny_sd1_folder), "--prompts", str(prompts), "--judge", "combined",
                 "--judge-set", f"judges={judges}", "--concept", "style=Van_Gogh", "--steps", "2",
                 "--scheduler", "ddim", "--guidance", "9", "--out", str(out)]) == 0
    metrics = json.loads((out / "report.json").read_text())["metrics"]
    assert metrics["unlearning_accuracy"]["value"] == 1.0 and metrics["unlearning_accuracy"]["n"] == 2
    assert metrics["in_domain_retain_accuracy"]["value"] == 1.0 and metrics["in_domain_retain_accuracy"]["n"] == 4
    assert metrics["cross_domain_retain_accuracy"]["value"] == pytest.approx(4 / 6)
    assert metrics["worst_kept_retain_accuracy"]["value"] == 0.0
    assert metrics["worst_kept_retain_accuracy"]["details"]["worst_concept"] == "object=Dogs"
    assert metrics["worst_kept_in_domain_retain_accuracy"]["value"] == 1.0


# --- unlearncanvas: the generated answer set and the reference's classifiers (tiny timm ViTs here) ---------

def _constant_timm_vit(path: Path, classes: int, winner: int) -> Path:
    """A timm vit_tiny_patch16_224 whose head reads only its bias (top-1 is always ``winner``), saved as
    UnlearnCanvas saves its classifiers: torch.save({"model_state_dict": ...})."""
    timm = pytest.importorskip("timm")
    import torch

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=classes)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(winner), classes).float() * 4)
    torch.save({"model_state_dict": model.state_dict()}, path)
    return path


def _answer_set_part(path: Path, keep) -> Path:
    """The rows of the generated answer set that ``keep(style, object, seed)`` picks, as a CSV of its columns."""
    from erasure.evaluation.presets import unlearncanvas_answer_set

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_number", "prompt", "evaluation_seed", "style", "object"])
        for r in unlearncanvas_answer_set():
            if keep(r.extra["style"], r.extra["object"], r.evaluation_seed):
                writer.writerow([r.case_number, r.prompt, r.evaluation_seed, r.extra["style"], r.extra["object"]])
    return path


@pytest.mark.fast
def test_unlearncanvas_answer_set_is_the_references_grid(tmp_path):
    from collections import Counter

    from erasure.evaluation.presets import protocol_run, unlearncanvas_answer_set

    answer = unlearncanvas_answer_set()
    assert len(answer) == 5100 and [r.case_number for r in answer] == list(range(5100))
    cells = {(r.extra["style"], r.extra["object"], r.evaluation_seed): r.prompt for r in answer}
    assert len(cells) == 5100  # 51 themes x 20 objects x 5 seeds, each once
    # esd.py: f"A {object_class} image in {test_theme.replace('_', ' ')} style."
    assert cells[("Van_Gogh", "Dogs", 188)] == "A Dogs image in Van Gogh style."
    assert cells[("Seed_Images", "Sea", 888)] == "A Sea image in Seed Images style."
    assert cells[("Red_Blue_Ink", "Architectures", 588)] == "A Architectures image in Red Blue Ink style."
    assert Counter(answer.seeds) == {188: 1020, 288: 1020, 588: 1020, 688: 1020, 888: 1020}
    # the reference's order: per seed, theme_available x class_available
    assert (answer[0].prompt, answer[0].evaluation_seed) == ("A Architectures image in Abstractionism style.", 188)
    assert (answer[19].prompt, answer[20].prompt) == ("A Waterfalls image in Abstractionism style.",
                                                      "A Architectures image in Artist Sketch style.")
    assert (answer[1019].evaluation_seed, answer[1020].evaluation_seed, answer[5099].evaluation_seed) == (188, 288, 888)
    assert answer[5099].prompt == "A Waterfalls image in Winter style."
    # generated when no file is given, and written as CSV it is recognised as the answer set in full
    generated_run, generated = protocol_run("unlearncanvas", None)
    assert generated.records == answer.records and generated_run.generated and not generated_run.subset
    assert generated_run.record()["prompts"] == "generated in the package"
    assert "not bit-identical" in generated_run.record()["note"] and "FID" in generated_run.record()["note"]
    sampler = generated_run.sampler
    assert (sampler["scheduler"], sampler["steps"], sampler["guidance"], sampler["height"]) == ("ddim", 100, 9.0, 512)
    run, again = protocol_run("unlearncanvas", answer.to_csv(tmp_path / "uc.csv"))
    assert again.records == answer.records and run.role == "answer-set" and not run.generated
    part = _answer_set_part(tmp_path / "part.csv", lambda style, obj, seed: style == "Monet" and seed == 188)
    with pytest.raises(ErasureError, match="has 20 rows, but the protocol's answer-set file has 5100.*"
                                           "drop --prompts-file: erasure generates it.*--subset"):
        protocol_run("unlearncanvas", part)
    run, monet = protocol_run("unlearncanvas", part, subset=True)
    assert run.subset and len(monet) == 20 and {r.extra["style"] for r in monet} == {"Monet"}


@pytest.mark.fast
def test_unlearncanvas_protocol_from_the_cli_with_its_classifiers(tiny_sd1_folder, tmp_path):
    """The preset end to end on a tiny SD1 model with UnlearnCanvas-format checkpoints of tiny timm ViTs that
    always say Monet and Cats. Erasing Van Gogh on 8 rows of the answer set (Van Gogh, Monet, Picasso x Cats, Dogs
    at seed 188, and Monet x Cats, Dogs at 288): UA 1 (2 images), IRA 4/6 (Monet kept, Picasso lost), CRA 4/8
    (the Cats images)."""
    pytest.importorskip("timm")
    from erasure.cli import main
    from erasure.evaluation.judges import unlearncanvas_labels

    styles, objects = unlearncanvas_labels()
    style = _constant_timm_vit(tmp_path / "style50.pth", 51, styles.index("Monet"))
    obj = _constant_timm_vit(tmp_path / "style50_cls.pth", 20, objects.index("Cats"))
    part = _answer_set_part(tmp_path / "part.csv", lambda s, o, seed: o in ("Cats", "Dogs") and (
        (seed == 188 and s in ("Van_Gogh", "Monet", "Picasso")) or (seed == 288 and s == "Monet")))
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tiny_sd1_folder), "--preset", "unlearncanvas", "--prompts-file", str(part),
                 "--subset", "--judge-set", "architecture=vit_tiny_patch16_224", "--judge-set", f"style_weights={style}",
                 "--judge-set", f"object_weights={obj}", "--allow-pickle", "--concept", "style=Van_Gogh",
                 "--steps", "2", "--image-size", "32", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    metrics, info = report["metrics"], report["info"]
    assert metrics["unlearning_accuracy"]["value"] == 1.0 and metrics["unlearning_accuracy"]["n"] == 2
    assert metrics["target_accuracy"]["value"] == 0.0
    assert metrics["in_domain_retain_accuracy"]["value"] == pytest.approx(4 / 6)
    assert metrics["in_domain_retain_accuracy"]["n"] == 6
    assert metrics["in_domain_retain_accuracy[style=Monet]"]["value"] == 1.0
    assert metrics["in_domain_retain_accuracy[style=Picasso]"]["value"] == 0.0
    assert metrics["cross_domain_retain_accuracy"]["value"] == 0.5 and metrics["cross_domain_retain_accuracy"]["n"] == 8
    assert metrics["worst_kept_retain_accuracy"]["value"] == 0.0
    kept = metrics["worst_kept_retain_accuracy"]["details"]["kept"]
    # the kept concepts are counted on the images whose prompt does not name Van Gogh
    assert kept == {"style=Monet": {"accuracy": 1.0, "n": 4, "correct": "1111"},
                    "style=Picasso": {"accuracy": 0.0, "n": 2, "correct": "00"},
                    "object=Cats": {"accuracy": 1.0, "n": 3, "correct": "111"},
                    "object=Dogs": {"accuracy": 0.0, "n": 3, "correct": "000"}}
    protocol = info["protocol"]
    assert (protocol["name"], protocol["version"], protocol["prompt_file_role"]) == ("unlearncanvas", "1", "answer-set")
    assert protocol["subset"] is True and protocol["comparable_with_the_papers"] is False
    assert protocol["rows"] == 8 and protocol["rows_expected"] == 5100 and protocol["prompts"] == "the user's file"
    assert protocol["overrides"] == {"steps": 2, "height": 32, "width": 32}
    assert protocol["sampler"]["guidance"] == 9.0 and protocol["judge"] == "unlearncanvas"
    assert info["scheduler"] == "DDIMScheduler" and info["settings"]["guidance"] == 9.0
    judge = info["judge"]
    assert judge["judge"] == "unlearncanvas" and judge["settings"]["architecture"] == "vit_tiny_patch16_224"
    assert judge["settings"]["allow_pickle"] is True and set(judge["files"]) == {str(style), str(obj)}


@pytest.mark.fast
def test_unlearncanvas_cli_mistakes_are_one_line_errors(tiny_sd1_folder, tmp_path, capsys):
    pytest.importorskip("timm")
    from erasure.cli import main

    style, obj = tmp_path / "style50.pth", tmp_path / "style50_cls.pth"
    style.write_bytes(b"checked for existence only: nothing loads before these errors")
    obj.write_bytes(b"-")
    part = _answer_set_part(tmp_path / "part.csv", lambda s, o, seed: s in ("Van_Gogh", "Monet") and seed == 188)
    base = ["evaluate", "--model", str(tiny_sd1_folder), "--preset", "unlearncanvas", "--prompts-file", str(part),
            "--subset", "--allow-pickle", "--out", str(tmp_path / "o")]
    files = ["--judge-set", f"style_weights={style}", "--judge-set", f"object_weights={obj}"]
    cases = [
        (["--concept", "style=Van_Gogh"], r"needs the 51-way style classifier: download style50.pth \(the UnlearnCanvas "
                                          r"README's Google Drive link\) and pass it with --judge-set style_weights=PATH"),
        (["--judge-set", f"style_weights={tmp_path / 'nope.pth'}", "--judge-set", f"object_weights={obj}",
          "--concept", "style=Van_Gogh"], "style_weights .*nope.pth not found; download style50.pth"),
        (["--judge-set", f"style_weights={style}", "--concept", "style=Van_Gogh"], "download style50_cls.pth"),
        (files, r"measures one erased concept; name it with --concept \(e.g. --concept style=Van_Gogh \(or object=Dogs\)\)"),
        ([*files, "--concept", "Van_Gogh"], "names its concepts ATTRIBUTE=VALUE; write e.g. --concept style=Van_Gogh"),
        ([*files, "--concept", "style=Van_Gog"], "did you mean 'Van_Gogh'"),
        ([*files, "--judge-weights", str(style), "--concept", "style=Van_Gogh"],
         "takes no weights file; drop --judge-weights .*--judge-set object_weights=PATH, --judge-set style_weights=PATH"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert __import__("re").search(message, err), (extra, err)
    # without --prompts-file the answer set is generated (checked here up to the model: nothing loads in check)
    from erasure.cli import parse_args

    args = parse_args(["evaluate", "--model", str(tiny_sd1_folder), "--preset", "unlearncanvas", *files,
                       "--allow-pickle", "--concept", "object=Dogs", "--out", str(tmp_path / "generated")])
    args.check(args)
    assert len(args.prompt_set) == 5100 and args.run.generated and not args.run.subset
    assert args.label == "object=Dogs" and args.judge_name == "unlearncanvas"
    assert args.judge_settings["style_weights"] == str(style) and args.judge_settings["allow_pickle"] is True
    assert args.run.record()["comparable_with_the_papers"] is True
    # the other presets still need their file
    assert main(["evaluate", "--model", str(tiny_sd1_folder), "--preset", "imagenette", "--concept", "church",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--preset imagenette needs --prompts-file FILE" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
