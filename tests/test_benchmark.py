"""The benchmark (erasure.benchmark, `erasure benchmark`): methods x concepts through the experiment loop, one
leaderboard whose numbers are the loop's rows, resumed without recomputing, sharded and merged to the same
leaderboard, and one-line errors. The loop's mechanics run on a tiny random pipeline with a cheap measurement;
the world's protocol (judge, prompt sets, seeds) on the built-in world with a prompt limit."""

from __future__ import annotations

import json

import numpy as np

import pytest
import torch

from erasure import ErasureError
from erasure.benchmark import check_out, parse_settings, parse_shard, plan, run_benchmark
from erasure.experiments import Measure
from erasure.methods import METHODS

CELL_KEYS = ("target_accuracy", "in_domain_retain_accuracy", "size_kb", "unet_passes")


@pytest.fixture(scope="module")
def sd1(built_pipeline):
    return built_pipeline("sd1")


def _output(pipe, word: str) -> float:
    """A deterministic number in (0, 1) from the UNet's prediction for ``word`` on fixed noise."""
    from erasure.text import encode_prompts

    x = torch.randn(1, pipe.unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = pipe.unet(x, torch.tensor([500]), encoder_hidden_states=encode_prompts(pipe, [word])).sample
    norm = float(eps.norm())
    return norm / (1.0 + norm)


class _Cheap:
    """measure(plan, concept): a Measure of two 'accuracies' (with n and an interval), counting its runs."""

    def __init__(self):
        self.calls = 0

    def __call__(self, the_plan, concept):
        def run(pipe):
            self.calls += 1
            t = _output(pipe, concept[1])
            return {"target_accuracy": {"value": t, "ci_low": t - 0.1, "ci_high": t + 0.1, "n": 8},
                    "in_domain_retain_accuracy": {"value": _output(pipe, "square"), "ci_low": None, "ci_high": None,
                                                  "n": 8}}
        return Measure({"kind": "cheap", "concept": list(concept)}, run)


SETTINGS = {"uce": {"preserve": []}, "esd-x": dict(METHODS.get("esd-x").test_settings)}


def _run(pipe, out, measure, **kw):
    return run_benchmark(pipe, ["uce", "esd-x"], ["shape=circle", "texture=striped"], out=out, settings=SETTINGS,
                         measure=measure, log=None, **kw)


def _measured(board):
    return {(e["method"], e["concept"]): {k: e["metrics"].get(k) for k in CELL_KEYS} for e in board["entries"]}


@pytest.mark.fast
def test_leaderboard_files_hold_the_rows_numbers_and_a_rerun_recomputes_nothing(sd1, tmp_path, monkeypatch):
    import erasure.methods as methods

    real, erased = methods.erase, []

    def counting_erase(*args, **kwargs):
        erased.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(methods, "erase", counting_erase)
    before = {n: p.detach().clone() for n, p in sd1.unet.named_parameters()}
    measure = _Cheap()
    board = _run(sd1, tmp_path / "b", measure)
    assert erased == ["uce", "esd-x", "uce", "esd-x"] and measure.calls == 6  # 2 methods x 2 concepts + 2 unedited
    assert all(torch.equal(p, before[n]) for n, p in sd1.unet.named_parameters())
    out = tmp_path / "b"
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "target.png", "tradeoff.png", "benchmark.json"):
        assert (out / name).is_file(), name
    rows = {json.loads(f.read_text())["label"]: json.loads(f.read_text()) for f in (out / "rows").glob("*.json")}
    assert len(rows) == 6
    written = json.loads((out / "leaderboard.json").read_text())
    assert [(e["method"], e["concept"]) for e in written["entries"]] == [
        (m, c) for c in ("shape=circle", "texture=striped") for m in ("unedited", "uce", "esd-x")]
    for e in written["entries"]:
        row = rows[e["label"]]
        assert e["metrics"]["target_accuracy"] == row["metrics"]["target_accuracy"]
        assert e["metrics"]["in_domain_retain_accuracy"] == row["metrics"]["in_domain_retain_accuracy"]
        if e["method"] == "unedited":
            assert "size_kb" not in e["metrics"] and "erase_seconds" not in e["metrics"]
            continue
        assert e["metrics"]["size_kb"]["value"] == row["result"]["size_kb"] > 0
        assert e["metrics"]["erase_seconds"]["value"] == row["seconds_erase"]
        assert e["metrics"]["peak_rss_mb"]["value"] == row["result"]["peak_rss_mb"]
        info = row["result"]["info"]
        if e["method"] == "esd-x":  # ESD counts its UNet passes; UCE runs none and records none
            assert e["metrics"]["unet_passes"]["value"] == info["unet_forward_passes"] + info["unet_backward_passes"] > 0
        else:
            assert "unet_passes" not in e["metrics"]
    # an erased cell differs from its unedited row; the md and csv show the same numbers
    md, csv = (out / "leaderboard.md").read_text(), (out / "leaderboard.csv").read_text()
    circle = {e["method"]: e for e in written["entries"] if e["concept"] == "shape=circle"}
    assert circle["uce"]["metrics"]["target_accuracy"]["value"] != circle["unedited"]["metrics"]["target_accuracy"]["value"]
    t = circle["uce"]["metrics"]["target_accuracy"]
    assert f"{t['value']:.2f} [{t['ci_low']:.2f}, {t['ci_high']:.2f}]" in md
    assert "images per number" in md and "target_accuracy 8" in md
    assert csv.splitlines()[0].startswith("method,concept,target_accuracy,target_accuracy_ci_low")
    assert str(t["value"]) in csv
    from PIL import Image

    assert Image.open(out / "target.png").size[0] >= 420 and Image.open(out / "tradeoff.png").format == "PNG"

    # the rerun reads every row back: no erase, no measurement, the same leaderboard
    again = _run(sd1, out, measure)
    assert erased == ["uce", "esd-x", "uce", "esd-x"] and measure.calls == 6
    assert _measured(again) == _measured(board)


@pytest.mark.fast
def test_shards_then_merge_equal_the_unsharded_leaderboard(sd1, tmp_path):
    whole = _run(sd1, tmp_path / "whole", _Cheap())
    out = tmp_path / "sharded"
    assert _run(sd1, out, _Cheap(), shard=(1, 2)) is None
    assert not (out / "leaderboard.md").exists() and len(list((out / "rows").glob("*.json"))) == 3
    with pytest.raises(ErasureError, match="3 of 6 cells are not done yet"):
        _run(sd1, out, _Cheap(), merge=True)
    measure = _Cheap()
    assert _run(sd1, out, measure, shard="2/2") is None and measure.calls == 3  # the other three cells only
    merge = _Cheap()
    merged = _run(sd1, out, merge, merge=True)
    assert merge.calls == 0  # assembled from the rows
    assert _measured(merged) == _measured(whole)
    assert (out / "leaderboard.md").is_file()


@pytest.mark.fast
def test_another_benchmark_in_the_folder_is_refused_without_force(sd1, tmp_path):
    out = tmp_path / "b"
    _run(sd1, out, _Cheap(), shard=(1, 3))
    other = plan(["uce"], ["circle"])
    with pytest.raises(ErasureError, match="holds another benchmark .*differs in .*methods.*--force"):
        check_out(out, other)
    with pytest.raises(ErasureError, match="--resume: .* holds another benchmark"):
        check_out(out, other, resume=True)
    assert check_out(out, other, force=True) == (out, False)
    yours = tmp_path / "yours"
    yours.mkdir()
    (yours / "notes.txt").write_text("mine")
    with pytest.raises(ErasureError, match="holds no benchmark"):
        check_out(yours, other)
    with pytest.raises(ErasureError, match="erasure did not write"):
        check_out(yours, other, force=True)
    assert (yours / "notes.txt").read_text() == "mine"
    # --force replaces the benchmark's own files and starts over
    measure = _Cheap()
    run_benchmark(sd1, ["uce"], ["circle"], out=out, settings={"uce": {"preserve": []}}, measure=measure, force=True,
                  log=None)
    assert measure.calls == 2 and len(list((out / "rows").glob("*.json"))) == 2


@pytest.mark.fast
def test_plan_checks_names_with_the_registries():
    p = plan("uce,esd-x", "circle,texture=striped", settings=parse_settings(["uce.guide=square", "esd-x.lr=3e-4"]))
    assert p.methods == ("uce", "esd-x") and p.concepts == (("shape", "circle"), ("texture", "striped"))
    assert p.settings == {"uce": {"guide": "square"}, "esd-x": {"lr": 3e-4}}
    assert [c[0] for c in p.cells()] == ["unedited", "uce", "esd-x"] * 2
    assert parse_shard("2/3") == (2, 3)
    for bad, message in [
        (lambda: plan("uce,nope", "circle"), "unknown method 'nope'"),
        (lambda: plan("uce", "blob"), "not a concept of the built-in world"),
        (lambda: plan("uce", "colour=circle"), "circle is a shape"),
        (lambda: plan("uce", "circle", settings={"uce": {"gide": 1}}), "did you mean 'guide'"),
        (lambda: plan("uce", "circle", settings={"esd-x": {"lr": 1}}), "not among the methods"),
        (lambda: plan("esd-x", "circle", settings={"esd-x": {"lr": float("nan")}}), "finite"),
        (lambda: plan("uce", "circle", attack="nope"), "unknown attack"),
        (lambda: plan("uce", "circle", attack_settings={"a": 1}), "add --attack"),
        (lambda: plan("", "circle"), "no methods given"),
        (lambda: parse_settings(["guide=square"]), "METHOD.KEY=VALUE"),
        (lambda: parse_shard("0/2"), "1 <= I <= N"),
        (lambda: parse_shard("x"), "I/N"),
    ]:
        with pytest.raises(ErasureError, match=message):
            bad()


@pytest.mark.fast
@pytest.mark.parametrize("argv, message", [
    (["--methods", "uce,nope", "--concepts", "circle"], "unknown method 'nope'"),
    (["--methods", "uce", "--concepts", "blob"], "not a concept of the built-in world"),
    (["--methods", "uce", "--concepts", "circle", "--set", "uce.gide=square"], "did you mean 'guide'"),
    (["--methods", "uce", "--concepts", "circle", "--set", "uce.lamb=NaN"], "finite"),
    (["--methods", "uce", "--concepts", "circle", "--shard", "3/2"], "1 <= I <= N"),
    (["--methods", "uce", "--concepts", "circle", "--shard", "1/2", "--merge"], "drop --shard"),
    (["--methods", "uce", "--concepts", "circle", "--resume"], "holds no benchmark to resume"),
    (["--methods", "uce", "--concepts", "circle", "--attack", "nope"], "unknown attack"),
    (["--methods", "uce", "--concepts", "circle", "--attack-set", "tokens=3"], "add --attack"),
    (["--concepts", "circle"], "no methods given"),
    (["--methods", "uce", "--concepts", "circle", "--limit", "0"], "--limit must be >= 1"),
])
def test_cli_mistakes_are_one_line_exit_2(tmp_path, capsys, argv, message):
    from erasure.cli import main

    code = main(["benchmark", *argv, "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "b").exists()


@pytest.mark.fast
def test_cli_refuses_another_benchmark_and_your_folder(tmp_path, capsys):
    from erasure.cli import main

    out = tmp_path / "b"
    out.mkdir()
    (out / "benchmark.json").write_text(json.dumps({"config": plan(["uce"], ["circle"]).config()}))
    code = main(["benchmark", "--methods", "esd-x", "--concepts", "circle", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "holds another benchmark" in err[0] and "--force" in err[0]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    code = main(["benchmark", "--methods", "uce", "--concepts", "circle", "--out", str(tmp_path / "mine"), "--force"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "erasure did not write" in err[0]
    assert (tmp_path / "mine" / "a.txt").read_text() == "x"


# --------------------------------------------------------------------------- on the built-in world


@pytest.mark.world
@pytest.mark.slow
def test_world_benchmark_unedited_row_is_evaluate_on_the_same_seeds(shapeworld_pipeline, tmp_path):
    from erasure.benchmark import EVAL_METRICS, limited
    from erasure.evaluation.evaluate import evaluate
    from erasure.generation import SamplerSettings
    from erasure.world.instruments import load_classifier

    sampler = SamplerSettings(steps=4, guidance=5.0)
    board = run_benchmark(shapeworld_pipeline, ["uce"], ["shape=circle"], out=tmp_path / "w",
                          settings={"uce": {"guide": "square"}}, samples_per_prompt=1, sampler=sampler, limit=2,
                          n_resamples=50, log=None)
    cells = {e["method"]: e["metrics"] for e in board["entries"]}
    assert set(cells) == {"unedited", "uce"}
    for key in ("target_accuracy", "in_domain_retain_accuracy", "cross_domain_retain_accuracy",
                "worst_kept_retain_accuracy", "phrasing:target_accuracy", "phrasing:worst_kept_retain_accuracy"):
        assert cells["unedited"][key]["value"] is not None and cells["unedited"][key]["n"] >= 1, key
    assert cells["unedited"]["worst_kept_retain_accuracy"]["concept"]
    report = evaluate(shapeworld_pipeline, limited("shapeworld-shape-circle", 2), concept=("shape", "circle"),
                      settings=sampler, samples_per_prompt=1, n_resamples=50, progress=False, keep_images=True,
                      classifier=load_classifier(), metrics=list(EVAL_METRICS))  # the fixture loads the world by path
    assert cells["unedited"]["target_accuracy"]["value"] == report.value("target_accuracy")
    assert cells["unedited"]["target_accuracy"]["n"] == report.metrics["target_accuracy"].n == 2
    assert cells["unedited"]["in_domain_retain_accuracy"]["value"] == report.value("in_domain_retain_accuracy")
    assert cells["uce"]["size_kb"]["value"] > 0 and "worst_kept_retain_accuracy" in EVAL_METRICS
    md = (tmp_path / "w" / "leaderboard.md").read_text()
    assert "`uce`" in md and "shape=circle: images per number: target_accuracy 2" in md
    # the worst kept drop: the same as comparing the two evaluations' kept concepts directly
    from erasure.evaluation.evaluate import kept_concepts_dropped
    from erasure.methods import erase

    edit = erase(shapeworld_pipeline, "uce", ["circle"], guide="square")
    edit.apply(shapeworld_pipeline)
    try:
        after = evaluate(shapeworld_pipeline, limited("shapeworld-shape-circle", 2), concept=("shape", "circle"),
                         settings=sampler, samples_per_prompt=1, n_resamples=50, progress=False, keep_images=True,
                         classifier=load_classifier(), metrics=list(EVAL_METRICS))
    finally:
        edit.restore(shapeworld_pipeline)
    assert cells["uce"]["target_accuracy"]["value"] == after.value("target_accuracy")
    every = kept_concepts_dropped(after, report, threshold=-2.0)  # every kept concept, largest drop first
    drop = cells["uce"]["worst_kept_drop"]
    assert drop["value"] == pytest.approx(next(iter(every.values()))["drop"])
    assert every[drop["concept"]]["drop"] == pytest.approx(drop["value"]) and every[drop["concept"]]["n"] == drop["n"]
    assert drop["flagged"] == sorted(k for k, v in every.items() if v["drop"] > 0.10 + 1e-9)
    assert "worst_kept_drop" not in cells["unedited"] and "worst kept drop" in md
    # FID / KID against the unedited model: compare() on the same images, from the rows' float16 features
    from erasure.evaluation.evaluate import compare, world_features

    direct = compare(after, report, features=world_features, feature_extractor="classifier", n_resamples=50)
    assert cells["uce"]["fid"]["value"] == pytest.approx(direct["fid"].value, rel=2e-3)
    assert cells["uce"]["kid"]["value"] == pytest.approx(direct["kid"].value, rel=2e-3, abs=1e-5)
    assert cells["uce"]["fid"]["n"] == direct["fid"].n and "fid" not in cells["unedited"] and "FID vs unedited" in md
    stored = json.loads(next((tmp_path / "w" / "rows").glob("*.json")).read_text())
    assert "_retain_features" in stored["metrics"] and "_retain_features" not in json.dumps(board)


def test_worst_kept_drop_against_the_unedited_model():
    from erasure.benchmark import worst_kept_drop

    before = {"kept": {"shape=cross": {"accuracy": 0.9, "n": 18}, "colour=red": {"accuracy": 1.0, "n": 30},
                       "texture=dotted": {"accuracy": 0.5, "n": 10}}}
    after = {"kept": {"shape=cross": {"accuracy": 0.6, "n": 18}, "colour=red": {"accuracy": 0.85, "n": 30},
                      "texture=dotted": {"accuracy": 0.6, "n": 10}}}
    d = worst_kept_drop(after, before)
    assert d["concept"] == "shape=cross" and d["value"] == pytest.approx(0.3) and d["n"] == 18
    assert (d["before"], d["after"]) == (0.9, 0.6) and d["flagged"] == ["colour=red", "shape=cross"]
    assert worst_kept_drop(after, {"value": 0.5}) is None  # a row stored without the per-concept accuracies
    from erasure.benchmark import _drop_cell

    assert _drop_cell({"metrics": {"w": d}}, "w") == "-30 pts (shape=cross 0.90 -> 0.60, n=18; 2 kept concepts > 10 pts)"
    # rows that kept each image's outcome: the worst drop's exact McNemar p, and which flagged drops have p < 0.05
    before = {"kept": {"shape=cross": {"accuracy": 0.9, "n": 10, "correct": "1111111110"},
                       "colour=red": {"accuracy": 1.0, "n": 4, "correct": "1111"}}}
    after = {"kept": {"shape=cross": {"accuracy": 0.2, "n": 10, "correct": "1100000000"},
                      "colour=red": {"accuracy": 0.75, "n": 4, "correct": "1110"}}}
    d = worst_kept_drop(after, before)
    assert d["concept"] == "shape=cross" and d["p"] == pytest.approx(2 / 2 ** 7)  # 7 lost, 0 gained
    assert d["flagged"] == ["colour=red", "shape=cross"] and d["flagged_p_below_0.05"] == ["shape=cross"]
    assert _drop_cell({"metrics": {"w": d}}, "w") == ("-70 pts (shape=cross 0.90 -> 0.20, n=10, p=0.016; "
                                                      "2 kept concepts > 10 pts, 1 with p < 0.05)")


COLOURS3 = ("red", "green", "blue")


def pixel_sum_colour(images, concept):
    """A judge with a known rule that any change of the pixels moves: the colour is the image's pixel sum mod 3."""
    return np.array([label == concept for label in pixel_sum_colour.labels(images)])


pixel_sum_colour.labels = lambda images: [COLOURS3[int(im.astype(np.int64).sum()) % 3] for im in images]


@pytest.mark.fast
@pytest.mark.slow  # ~15 s: make test runs it
def test_benchmark_on_your_model_is_evaluate_with_the_protocols_judge_on_the_same_seeds(tiny_sd1_folder, tmp_path):
    """On a model that is not the built-in world the benchmark measures with a prompt file and a judge (here a
    callable with a known rule on a tiny random pipeline): every row's numbers are evaluate()'s with that judge,
    prompts and seeds, on the unedited and on the edited model; the concept is the judge's name; the prompt
    file's hash is in the config, so an edited file is another benchmark."""
    from erasure import load_pipeline
    from erasure.evaluation.evaluate import evaluate
    from erasure.generation import SamplerSettings

    prompts = tmp_path / "colours.csv"
    with prompts.open("w") as fh:
        fh.write("case_number,prompt,evaluation_seed,class\n")
        for i, c in enumerate(c for c in COLOURS3 for _ in range(3)):
            fh.write(f"{i},a photo of {c},{10 + i},{c}\n")
    protocol = {"prompts": str(prompts), "judge": f"callable:{__file__}:pixel_sum_colour",
                "judge_settings": {"attribute": "class"}}
    sampler = {"steps": 2, "guidance": 5.0, "height": 32, "width": 32}
    pipe = load_pipeline(tiny_sd1_folder)
    kw = dict(settings={"uce": {"preserve": []}}, sampler=sampler, samples_per_prompt=1, n_resamples=50,
              protocol=protocol, clip="world", log=None)
    board = run_benchmark(pipe, ["uce"], ["red"], out=tmp_path / "b", **kw)
    entries = {e["method"]: e for e in board["entries"]}
    assert set(entries) == {"unedited", "uce"} and entries["uce"]["concept"] == "red"
    assert board["config"]["protocol"]["prompts_sha256"] and board["config"]["concepts"] == ["red"]
    from erasure.evaluation.judges import CallableJudge

    from erasure.evaluation.clip_backends import load_clip_backend

    judge, clip = CallableJudge(pixel_sum_colour, attribute="class"), load_clip_backend("world")
    direct = evaluate(pipe, prompts, concept="red", judge=judge, settings=SamplerSettings(**sampler),
                      n_resamples=50, progress=False, clip=clip)
    edit = METHODS.get("uce").run(pipe, ["red"], preserve=[])
    edit.apply(pipe)
    try:
        edited = evaluate(pipe, prompts, concept="red", judge=judge, settings=SamplerSettings(**sampler),
                          n_resamples=50, progress=False, clip=clip)
    finally:
        edit.restore(pipe)
    for name in ("target_accuracy", "in_domain_retain_accuracy", "worst_kept_retain_accuracy", "clip_score"):
        assert entries["unedited"]["metrics"][name]["value"] == pytest.approx(direct.value(name)), name
        assert entries["uce"]["metrics"][name]["value"] == pytest.approx(edited.value(name)), name
        assert entries["uce"]["metrics"][name]["n"] == direct.metrics[name].n
    values = {m: [entries[m]["metrics"][k]["value"] for k in ("target_accuracy", "in_domain_retain_accuracy")]
              for m in entries}
    assert values["uce"] != values["unedited"]  # measured: [1/3, 1/6] unedited, [1, 2/3] after UCE
    assert "worst_kept_drop" in entries["uce"]["metrics"]
    assert "fid" not in entries["uce"]["metrics"] and "features" not in board["config"]  # no features: no FID/KID
    # the same command resumes; an edited prompt file is another benchmark (refused without force)
    assert run_benchmark(pipe, ["uce"], ["red"], out=tmp_path / "b", **kw)["entries"] == board["entries"]
    prompts.write_text(prompts.read_text().replace("a photo of blue", "a picture of blue"))
    with pytest.raises(ErasureError, match="holds another benchmark"):
        run_benchmark(pipe, ["uce"], ["red"], out=tmp_path / "b", **kw)


@pytest.mark.fast
def test_protocol_benchmark_checks_its_inputs_before_any_model(tmp_path):
    with pytest.raises(ErasureError, match="prompt file .* not found"):
        plan(["uce"], ["church"], protocol={"prompts": str(tmp_path / "nope.csv"), "judge": "nudenet"})
    prompts = tmp_path / "p.csv"
    prompts.write_text("case_number,prompt,evaluation_seed\n0,a church,1\n")
    with pytest.raises(ErasureError, match="needs a judge"):
        plan(["uce"], ["church"], protocol={"prompts": str(prompts)})
    with pytest.raises(ErasureError, match="unknown judge"):
        plan(["uce"], ["church"], protocol={"prompts": str(prompts), "judge": "resnet"})
    with pytest.raises(ErasureError, match="transfer attack needs a transfer set"):
        plan(["uce"], ["church"], attack="transfer", protocol={"prompts": str(prompts), "judge": "nudenet"})
    assert plan(["uce"], ["church"], attack="completion",
                protocol={"prompts": str(prompts), "judge": "nudenet"}).config()["attack"] == "completion"
    p = plan(["uce"], ["church", "style=Van_Gogh"], protocol={"prompts": str(prompts), "judge": "nudenet"})
    assert p.concepts == (("", "church"), ("style", "Van_Gogh")) and p.config()["concepts"] == ["church", "style=Van_Gogh"]


@pytest.mark.fast
def test_cli_benchmark_on_your_model_with_a_prompt_file_and_a_judge(tiny_sd1_folder, tmp_path, capsys):
    """`erasure benchmark --model FOLDER --prompts-file F --judge callable:...`: the leaderboard's rows are the
    judge's numbers on that file (the same as the Python API's, tested above), the concept the judge's name; on
    a model that is not the world, a benchmark without a prompt file and judge is a one-line error."""
    from erasure.cli import main

    prompts = tmp_path / "colours.csv"
    prompts.write_text("case_number,prompt,evaluation_seed,class\n"
                       + "".join(f"{i},a photo of {c},{10 + i},{c}\n" for i, c in enumerate(COLOURS3 * 2)))
    base = ["benchmark", "--model", str(tiny_sd1_folder), "--methods", "uce", "--concepts", "red"]
    code = main([*base, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--prompts-file FILE --judge NAME" in err[0], err
    code = main([*base, "--judge", "nudenet", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "add --prompts-file FILE" in err[0], err
    out = tmp_path / "b"
    assert main([*base, "--prompts-file", str(prompts), "--judge", f"callable:{__file__}:pixel_sum_colour",
                 "--judge-set", "attribute=class", "--set", "uce.preserve=[]", "--steps", "2", "--image-size", "32",
                 "--clip", "world", "--out", str(out)]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["config"]["concepts"] == ["red"] and board["config"]["samples_per_prompt"] == 1
    assert board["config"]["protocol"]["judge_settings"] == {"attribute": "class"}
    rows = {e["method"]: e["metrics"] for e in board["entries"]}
    assert rows["unedited"]["target_accuracy"]["n"] == 2 and rows["uce"]["in_domain_retain_accuracy"]["n"] == 4
    assert "worst_kept_drop" in rows["uce"] and "red" in (out / "leaderboard.md").read_text()
    # --clip: a CLIP score column (its values against evaluate()'s: the Python API test above)
    assert board["config"]["clip"] == "world" and rows["unedited"]["clip_score"]["n"] == 6
    assert "CLIP score" in (out / "leaderboard.md").read_text()


# --------------------------------------------------------------------------- FID/KID on your model


def _tiny_transformers_clip(folder):
    """The tiny CLIP without class and position embeddings (with them, FIDs between random images are near 1e-4,
    where float16 storage moves them by more than 2e-3 relative)."""
    from conftest import build_tiny_clip_folder

    return build_tiny_clip_folder(folder, seed=3, zero_positions=True)


def _colour_prompts(path, per_colour=3, template="a photo of {}"):
    path.write_text("case_number,prompt,evaluation_seed,class\n" + "".join(
        f"{i},{template.format(c)},{10 + i},{c}\n" for i, c in enumerate(c for c in COLOURS3 for _ in range(per_colour))))
    return path


@pytest.mark.fast
@pytest.mark.slow  # ~20 s
def test_benchmark_fid_kid_on_your_model_are_the_features_of_both_models_images(tiny_sd1_folder, tmp_path):
    """With ``features`` (a CLIP's image tower) the rows on a prompt file store the features of all their images,
    and the edited row's FID/KID are distances.fid/kid on the features of the two models' images (the same
    prompts and seeds, computed here by hand), up to the rows' float16 storage; the unedited row has none."""
    from erasure import load_pipeline
    from erasure.benchmark import FEATURES, decode_features
    from erasure.evaluation.clip_backends import load_clip_backend
    from erasure.evaluation.distances import fid, kid
    from erasure.evaluation.evaluate import evaluate
    from erasure.evaluation.judges import CallableJudge
    from erasure.generation import SamplerSettings

    spec = f"transformers:{_tiny_transformers_clip(tmp_path / 'clip')}"
    prompts = _colour_prompts(tmp_path / "colours.csv", per_colour=4)
    protocol = {"prompts": str(prompts), "judge": f"callable:{__file__}:pixel_sum_colour",
                "judge_settings": {"attribute": "class"}}
    sampler = {"steps": 2, "guidance": 5.0, "height": 32, "width": 32}
    pipe = load_pipeline(tiny_sd1_folder)
    kw = dict(settings={"uce": {"preserve": []}}, sampler=sampler, samples_per_prompt=2, n_resamples=50,
              protocol=protocol, log=None)
    board = run_benchmark(pipe, ["uce"], ["red"], out=tmp_path / "b", features=spec, **kw)
    entries = {e["method"]: e["metrics"] for e in board["entries"]}
    assert board["config"]["features"] == spec and board["config"]["features_weights"] is None
    assert "fid" not in entries["unedited"] and "kid" not in entries["unedited"]

    judge, settings = CallableJudge(pixel_sum_colour, attribute="class"), SamplerSettings(**sampler)
    before = evaluate(pipe, prompts, concept="red", judge=judge, settings=settings, samples_per_prompt=2,
                      n_resamples=0, progress=False, keep_images=True)
    edit = METHODS.get("uce").run(pipe, ["red"], preserve=[])
    edit.apply(pipe)
    try:
        after = evaluate(pipe, prompts, concept="red", judge=judge, settings=settings, samples_per_prompt=2,
                         n_resamples=0, progress=False, keep_images=True)
    finally:
        edit.restore(pipe)
    backend = load_clip_backend(spec)
    fa, fb = backend.embed_images(before.images), backend.embed_images(after.images)
    assert fa.shape == fb.shape == (24, 16)  # every image of the file: 12 prompts x 2, no retain subset
    direct_fid, direct_kid = fid(fa, fb, n_resamples=0), kid(fa, fb, n_resamples=0)
    assert not np.array_equal(before.images, after.images)
    assert direct_fid.value > 1e-3 and abs(direct_kid.value) > 1e-3  # the edit moved the images (measured 2.1e-3, -5.6e-3)
    name = f"{spec} image embeddings"
    assert entries["uce"]["fid"]["value"] == pytest.approx(direct_fid.value, rel=2e-3)
    assert entries["uce"]["kid"]["value"] == pytest.approx(direct_kid.value, rel=2e-3, abs=1e-5)
    assert entries["uce"]["fid"]["n"] == entries["uce"]["kid"]["n"] == 24
    assert entries["uce"]["fid"]["feature_extractor"] == entries["uce"]["kid"]["feature_extractor"] == name
    # each row stored every image's features, in order (float16)
    rows = {json.loads(f.read_text())["label"]: json.loads(f.read_text()) for f in (tmp_path / "b" / "rows").glob("*.json")}
    np.testing.assert_allclose(decode_features(rows["unedited / red"]["metrics"][FEATURES]), fa, atol=2e-3)
    np.testing.assert_allclose(decode_features(rows["uce / red"]["metrics"][FEATURES]), fb, atol=2e-3)
    md = (tmp_path / "b" / "leaderboard.md").read_text()
    assert "FID vs unedited" in md and "KID vs unedited" in md and FEATURES not in json.dumps(board)
    # the features are part of the benchmark's identity: the same folder without them is another benchmark
    with pytest.raises(ErasureError, match="holds another benchmark .*differs in features"):
        run_benchmark(pipe, ["uce"], ["red"], out=tmp_path / "b", **kw)


@pytest.mark.fast
def test_features_change_nothing_of_a_benchmark_without_them(tmp_path):
    """A plan without features has the config (and its rows the measurement config) it had before features
    existed, so existing benchmarks' rows are reused; with features both say which."""
    from erasure.benchmark import concept_measure, protocol_measure
    from erasure.evaluation.judges import file_sha256

    prompts = _colour_prompts(tmp_path / "p.csv", per_colour=1)
    protocol = {"prompts": str(prompts), "judge": "nudenet"}
    proto = {"guidance_from_file": False, "judge": "nudenet", "judge_settings": {}, "metrics": None, "preset": None,
             "prompts": str(prompts), "prompts_sha256": file_sha256(prompts), "scheduler": None, "subset": False}
    common = {"limit": None, "n_resamples": 1000, "sampler": None, "samples_per_prompt": 2, "seed": 0}
    p = plan(["uce"], ["red"], protocol=protocol, clip="world")
    assert p.config() == {**common, "attack": None, "attack_settings": {}, "clip": "world", "clip_weights": None,
                          "concepts": ["red"], "methods": ["uce"], "model": None, "protocol": proto,
                          "settings": {"uce": {}}}
    assert protocol_measure(p, ("", "red")).config == {
        **common, "clip": "world", "clip_weights": None, "concept": "red", "kind": "benchmark", "protocol": proto,
        "stores": "kept-concept accuracies"}
    w = plan(["uce"], ["circle"])
    assert w.config() == {**common, "attack": None, "attack_settings": {}, "concepts": ["shape=circle"],
                          "methods": ["uce"], "model": None, "settings": {"uce": {}}}
    assert concept_measure(w, ("shape", "circle")).config["stores"] == (
        "kept-concept accuracies; retain-image features (world classifier) for FID/KID")
    # with features: in the plan's config and the rows' measurement (so rows of other features are not reused)
    folder = tmp_path / "clip"
    folder.mkdir()
    f = plan(["uce"], ["red"], protocol=protocol, clip="world", features=f"transformers:{folder}")
    assert f.config() == {**p.config(), "features": f"transformers:{folder}", "features_weights": None}
    m = protocol_measure(f, ("", "red")).config
    assert m["features"] == f"transformers:{folder}" and "of all images" in m["stores"]
    assert {k: v for k, v in m.items() if k not in ("features", "features_weights", "stores")} == {
        k: v for k, v in protocol_measure(p, ("", "red")).config.items() if k != "stores"}


@pytest.mark.fast
def test_features_are_checked_before_any_model(tmp_path):
    prompts = _colour_prompts(tmp_path / "p.csv", per_colour=1)
    protocol = {"prompts": str(prompts), "judge": "nudenet"}
    import importlib.util

    pth = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    pth.write_bytes(b"not read by the check")
    if importlib.util.find_spec("pytorch_fid") is None:  # the oldest-versions job: no dev extra
        with pytest.raises(ErasureError, match="needs pytorch-fid: pip install pytorch-fid"):
            plan(["uce"], ["red"], protocol=protocol, features="inception", features_weights=str(pth), allow_pickle=True)
        inception = []
    else:
        inception = [
            (dict(protocol=protocol, features="inception"), "download pt_inception-2015-12-05-6726825d.pth"),
            (dict(protocol=protocol, features="inception", features_weights=str(tmp_path / "none.pth")), "not found"),
            (dict(protocol=protocol, features="inception", features_weights=str(pth)), "pass --allow-pickle")]
    for kw, message in inception + [
        (dict(features="transformers:x"), "the world classifier's features"),
        (dict(protocol=protocol, features="open_clip:ViT-B-32"), "needs its weights file"),
        (dict(protocol=protocol, features=f"transformers:{tmp_path / 'nope'}"), "features folder .* not found"),
        (dict(protocol=protocol, features=f"transformers:{tmp_path}", features_weights=str(pth)), "no weights file"),
        (dict(protocol=protocol, features="resnet"), "unknown features 'resnet'"),
        (dict(protocol=protocol, features_weights=str(pth)), "add --features"),
    ]:
        with pytest.raises(ErasureError, match=message):
            plan(["uce"], ["red"], **kw)
    if not inception:
        return
    p = plan(["uce"], ["red"], protocol=protocol, features="inception", features_weights=str(pth), allow_pickle=True)
    assert p.allow_pickle and "allow_pickle" not in p.config() and p.config()["features_weights"] == str(pth)
    from erasure.benchmark import features_name

    assert features_name(p) == "pytorch-fid InceptionV3 pool3 (pt_inception-2015-12-05-6726825d.pth)"


@pytest.mark.fast
def test_cli_features_mistakes_are_one_line_before_the_model_loads(tiny_sd1_folder, tmp_path, capsys, monkeypatch):
    import erasure.cli as cli

    def no_loading(*args, **kwargs):
        raise ErasureError("the model would load now")

    monkeypatch.setattr(cli, "_load_model", no_loading)
    prompts = _colour_prompts(tmp_path / "p.csv", per_colour=1)
    pth = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    pth.write_bytes(b"not read by the check")
    mine = ["--model", str(tiny_sd1_folder), "--prompts-file", str(prompts), "--judge",
            f"callable:{__file__}:pixel_sum_colour", "--judge-set", "attribute=class"]
    import importlib.util

    if importlib.util.find_spec("pytorch_fid") is not None:
        inception = [
            ([*mine, "--features", "inception"], "download pt_inception-2015-12-05-6726825d.pth"),
            ([*mine, "--features", "inception", "--features-weights", str(pth)], "pass --allow-pickle"),
            ([*mine, "--features", "inception", "--features-weights", str(pth), "--allow-pickle"],
             "the model would load now")]  # every check passed: only now would the model load
    else:  # the oldest-versions job: no dev extra
        inception = [([*mine, "--features", "inception", "--features-weights", str(pth), "--allow-pickle"],
                      "needs pytorch-fid: pip install pytorch-fid"),
                     ([*mine, "--features", f"transformers:{tmp_path}"], "the model would load now")]
    for argv, message in inception + [
        (["--features", "inception"], "world classifier's features"),  # the built-in world
        ([*mine, "--features", "inception", "--features-weights", str(tmp_path / "x.pth")],
         f"--features-weights {tmp_path / 'x.pth'} not found"),
        ([*mine, "--features", "open_clip:ViT-B-32"], "needs its weights file"),
        ([*mine, "--features-weights", str(pth)], "add --features"),
    ]:
        code = cli.main(["benchmark", "--methods", "uce", "--concepts", "red", *argv, "--out", str(tmp_path / "b")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)


@pytest.mark.fast
@pytest.mark.slow  # ~15 s
def test_benchmark_attack_on_your_model_is_erasure_attack_on_the_concepts_rows(tiny_sd1_folder, tmp_path):
    """--attack on a prompt file: each row's attack:pre_asr / attack:asr are attack()'s with the protocol's judge
    on the rows whose label names the concept (their seeds), against the unedited model; a file that labels no
    row with the concept is attacked on every row."""
    from erasure import load_pipeline
    from erasure.attacks import attack
    from erasure.benchmark import attack_rows
    from erasure.evaluation.judges import CallableJudge
    from erasure.generation import SamplerSettings

    prompts = _colour_prompts(tmp_path / "colours.csv", per_colour=2)
    protocol = {"prompts": str(prompts), "judge": f"callable:{__file__}:pixel_sum_colour",
                "judge_settings": {"attribute": "class"}}
    sampler = {"steps": 2, "guidance": 5.0, "height": 32, "width": 32}
    a_settings = {"timesteps": 2, "steps_per_timestep": 1, "vocabulary": "words"}
    pipe = load_pipeline(tiny_sd1_folder)
    board = run_benchmark(pipe, ["uce"], ["red"], out=tmp_path / "b", settings={"uce": {"preserve": []}},
                          sampler=sampler, n_resamples=50, protocol=protocol, attack="unlearndiffatk",
                          attack_settings=a_settings, log=None)
    entries = {e["method"]: e["metrics"] for e in board["entries"]}
    judge = CallableJudge(pixel_sum_colour, attribute="class")
    texts, seeds = attack_rows(str(prompts), judge, "red")
    assert texts == ["a photo of red"] * 2 and seeds == [10, 11]  # the two rows labelled red, their seeds
    edit = METHODS.get("uce").run(pipe, ["red"], preserve=[])
    direct = attack(pipe, "unlearndiffatk", "red", texts, seeds, result=edit, judge=judge,
                    settings=SamplerSettings(**sampler), attack_settings=a_settings, n_resamples=50)
    for name in ("pre_asr", "asr"):
        assert entries["uce"][f"attack:{name}"]["value"] == pytest.approx(direct.value(name)), name
        assert entries["uce"][f"attack:{name}"]["n"] == 2
    # the unedited row: its own pre-ASR is its baseline accuracy on those rows (the judge on plain images)
    plain = attack(pipe, "unlearndiffatk", "red", texts, seeds, original_pipe=pipe, judge=judge,
                   settings=SamplerSettings(**sampler), attack_settings=a_settings, n_resamples=50)
    assert entries["unedited"]["attack:pre_asr"]["value"] == pytest.approx(plain.value("pre_asr"))
    assert plain.value("pre_asr") != direct.value("pre_asr")  # measured: 0.0 unedited, 1.0 after this UCE
    assert "attack" in board["config"] and "pre-ASR" in (tmp_path / "b" / "leaderboard.md").read_text()
    # no row labelled with the concept: every row is attacked
    unlabelled = tmp_path / "u.csv"
    unlabelled.write_text("case_number,prompt,evaluation_seed\n0,a red thing,3\n1,a blue thing,4\n")
    assert attack_rows(str(unlabelled), judge, "green") == (["a red thing", "a blue thing"], [3, 4])
