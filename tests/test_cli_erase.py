"""`erasure erase`, `erasure evaluate` and `erasure list` from the command line."""

import json

import pytest
import torch

from erasure.cli import main
from erasure.edit import Edit


def test_erase_writes_an_edit_that_reloads(tiny_sd1_folder, tmp_path, capsys):
    out = tmp_path / "erase"
    code = main(["erase", "--model", str(tiny_sd1_folder), "--concept", "red star", "--preserve", "blue circle",
                 "--guide", "green heart", "--templates", "{}", "a {}", "--out", str(out)])
    assert code == 0
    assert (out / "edit.safetensors").is_file() and (out / "config.json").is_file()
    edit = Edit.load(out / "edit.safetensors")
    assert edit.concepts == ("red star",) and edit.method == "uce"
    assert edit.config["templates"] == ["{}", "a {}"] and edit.config["preserve"] == ["blue circle"]
    assert edit.config["guide"] == "green heart"
    config = json.loads((out / "config.json").read_text())
    assert config["info"]["erase_rows"] == 2 and config["info"]["preserve_rows"] == 2
    assert "erased red star with uce" in capsys.readouterr().out
    # the same command again: refused, the first result untouched
    before = (out / "edit.safetensors").read_bytes()
    assert main(["erase", "--model", str(tiny_sd1_folder), "--concept", "x", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "edit.safetensors").read_bytes() == before


def test_erase_esd_with_settings(tiny_sd1_folder, tmp_path):
    out = tmp_path / "esd"
    code = main(["erase", "--model", str(tiny_sd1_folder), "--method", "esd-x-strict", "--concept", "red star",
                 "--anchor", "blue square", "--set", "iterations=2", "--set", "ddim_steps=4", "--set", "batch_size=1",
                 "--out", str(out)])
    assert code == 0
    edit = Edit.load(out / "edit.safetensors")
    assert edit.config["iterations"] == 2 and all(".attn2.to_" in n for n in edit.tensors)
    assert edit.config["anchor"] == "blue square"  # --anchor is ESD's anchor (and UCE's guide)
    assert all(torch.isfinite(v).all() for v in edit.tensors.values())


@pytest.mark.parametrize("args, message", [
    (["--concept", ""], "empty concept"),
    (["--concept", "star", "--method", "ucee"], "did you mean 'uce'"),
    (["--concept", "star", "--preserve", "star"], "both erased and preserved"),
    (["--concept", "star", "--lamb", "0", "--no-preserve"], "singular"),
    (["--concept", "star", "--set", "iterations"], "KEY=VALUE"),
    (["--concept", "star", "--evaluate"], "built-in world's concepts only"),
])
def test_erase_bad_input_is_one_line_and_writes_nothing(tiny_sd1_folder, tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["erase", "--model", str(tiny_sd1_folder), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and err.startswith("error:")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_evaluate_needs_a_classifier_off_the_world(tiny_sd1_folder, tmp_path, capsys):
    prompts = tmp_path / "p.csv"
    prompts.write_text("case_number,prompt,evaluation_seed,concept,shape\n0,a red star,1,star,star\n")
    code = main(["evaluate", "--model", str(tiny_sd1_folder), "--prompts", str(prompts), "--concept", "shape=star",
                 "--steps", "2", "--out", str(tmp_path / "ev")])
    assert code == 2 and "need a classifier" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()
    code = main(["evaluate", "--model", str(tiny_sd1_folder), "--prompts", str(prompts), "--steps", "2",
                 "--out", str(tmp_path / "ev")])
    assert code == 0 and (tmp_path / "ev" / "report.json").is_file() and (tmp_path / "ev" / "grid-all.png").is_file()


def test_list_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("uce", "uce-paper", "time", "esd-x", "esd-u", "target_accuracy", "shapeworld-shape-circle", "imagenette"):
        assert name in out


def test_erase_with_an_adapter_method_writes_a_lora_folder(tiny_sd1_folder, tiny_sd1_pipeline, tmp_path, capsys):
    from erasure.adapters import Adapter

    out = tmp_path / "lora"
    code = main(["erase", "--model", str(tiny_sd1_folder), "--method", "lora-esd", "--concept", "red star",
                 "--set", "iterations=2", "--set", "ddim_steps=4", "--set", "batch_size=1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert (out / "adapter" / "pytorch_lora_weights.safetensors").is_file()
    assert "adapter on" in capsys.readouterr().out
    adapter = Adapter.load(out / "adapter")
    assert adapter.method == "lora-esd" and adapter.concepts == ("red star",)
    # diffusers' own loader reads the folder
    tiny_sd1_pipeline.load_lora_weights(str(out / "adapter"), adapter_name="cli")
    tiny_sd1_pipeline.unload_lora_weights()
    assert not any(".base_layer." in k for k in tiny_sd1_pipeline.unet.state_dict())


def test_interrupted_esd_run_resumes_from_its_checkpoints(tiny_sd1_folder, tmp_path, capsys):
    from erasure import load_pipeline
    from erasure.methods import erase

    flags = ["--model", str(tiny_sd1_folder), "--method", "esd-x-strict", "--concept", "red star",
             "--checkpoint-every", "2", "--set", "iterations=4", "--set", "ddim_steps=4", "--set", "batch_size=1"]
    assert main(["erase", *flags, "--out", str(tmp_path / "whole")]) == 0
    assert not (tmp_path / "whole.checkpoints").exists()  # removed once the result is in place
    # the same run interrupted after 3 iterations (its last checkpoint at 2), as the CLI would have left it
    out = tmp_path / "cut"
    erase(load_pipeline(tiny_sd1_folder), "esd-x-strict", "red star", iterations=4, ddim_steps=4, batch_size=1,
          checkpoint_every=2, checkpoint_dir=out.with_name("cut.checkpoints"), stop_after=3, progress=False)
    capsys.readouterr()
    assert main(["erase", *flags, "--out", str(out)]) == 2  # not silently started over
    assert "--resume" in capsys.readouterr().err and not out.exists()
    assert main(["erase", *flags, "--out", str(out), "--resume"]) == 0
    whole, resumed = Edit.load(tmp_path / "whole" / "edit.safetensors"), Edit.load(out / "edit.safetensors")
    for n, v in whole.tensors.items():
        assert torch.allclose(v, resumed.tensors[n], atol=1e-6), n
    assert not out.with_name("cut.checkpoints").exists()
    assert main(["erase", "--model", str(tiny_sd1_folder), "--concept", "star", "--resume",
                 "--out", str(tmp_path / "uce")]) == 2  # a closed-form edit has nothing to resume


def test_a_bit_flipped_edit_or_adapter_is_refused(tiny_sd1_folder, tmp_path, capsys):
    """Every safetensors file erasure writes carries a checksum of its tensors' values (files.CHECKSUM_KEY)."""
    from erasure.files import CHECKSUM_KEY, read_safetensors

    out = tmp_path / "erase"
    assert main(["erase", "--model", str(tiny_sd1_folder), "--concept", "red star", "--out", str(out)]) == 0
    edit_file = out / "edit.safetensors"
    assert CHECKSUM_KEY in read_safetensors(edit_file)[1]
    data = bytearray(edit_file.read_bytes())
    data[-3] ^= 0x04  # one bit of the last tensor's last value
    edit_file.write_bytes(bytes(data))
    capsys.readouterr()
    code = main(["export", "--model", str(tiny_sd1_folder), "--edit", str(edit_file), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "is corrupted" in err, err
    assert not (tmp_path / "x").exists()

    lora = tmp_path / "lora"
    assert main(["erase", "--model", str(tiny_sd1_folder), "--method", "lora-esd", "--concept", "red star",
                 "--set", "iterations=1", "--set", "ddim_steps=2", "--set", "batch_size=1", "--out", str(lora)]) == 0
    weights = lora / "adapter" / "pytorch_lora_weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    code = main(["evaluate", "--model", str(tiny_sd1_folder), "--prompts", str(_one_prompt(tmp_path)), "--edit",
                 str(lora / "adapter"), "--steps", "2", "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "is corrupted" in err, err
    assert not (tmp_path / "ev").exists()


def _one_prompt(folder):
    path = folder / "one.csv"
    path.write_text("case_number,prompt,evaluation_seed,concept\n0,a red star,1,star\n")
    return path


@pytest.mark.slow
def test_sigint_during_erase_exits_130_and_writes_nothing(tiny_sd1_folder, tmp_path):
    """Ctrl-C during a trained erasure: exit 130, one line, no output folder; the checkpoint folder is kept and
    --resume continues it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "erasure.cli", "erase", "--model", str(tiny_sd1_folder), "--method", "esd-x",
               "--concept", "red star", "--set", "iterations=100000", "--set", "pool_reuse=100000", "--set",
               "ddim_steps=4", "--set", "batch_size=1", "--checkpoint-every", "1", "--out", str(out)]
    # a shell without job control starts background jobs with SIGINT ignored, and Python keeps it ignored: give
    # the child the default disposition, as a terminal would
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    checkpoints = out.with_name(out.name + ".checkpoints")
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not (checkpoints / "state.safetensors").exists():
            time.sleep(0.5)
        assert (checkpoints / "state.safetensors").exists(), "no checkpoint after 240 s"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never leave the 100000-iteration run behind
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    # stderr holds the progress bars, then the one line
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted; nothing was written", err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]
    assert (checkpoints / "state.safetensors").exists()  # kept for --resume


@pytest.mark.world
@pytest.mark.slow
def test_erase_evaluate_runs_through_the_experiment_loop(shapeworld_folder, tmp_path, capsys, monkeypatch):
    """``erase --evaluate`` on the built-in world: base and erased model measured by the package's experiment loop
    (erasure.experiments.run_variants, here spied on), the report written with its baseline, the concept gone."""
    import erasure.experiments as experiments

    calls = []
    real = experiments.run_variants

    def spy(pipe, variants, measures, **kwargs):
        calls.append(([v.method for v in variants], dict(kwargs.get("results") or {}), kwargs.get("out")))
        return real(pipe, variants, measures, **kwargs)

    monkeypatch.setattr(experiments, "run_variants", spy)
    out = tmp_path / "erase"
    code = main(["erase", "--method", "uce", "--concept", "circle", "--guide", "square", "--tokens", "subject-to-end",
                 "--preserve-scale", "0.02", "--evaluate", "--steps", "10", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert len(calls) == 1
    methods, results, written = calls[0]
    assert methods == [None, "uce"] and [r.method for r in results.values()] == ["uce"] and written is None
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "edit.safetensors", "eval-circle", "run.json"]
    report = json.loads((out / "eval-circle" / "report.json").read_text())
    base, after = report["baseline"]["metrics"], report["metrics"]
    assert report["info"]["edit"]["method"] == "uce" and report["info"]["edit"]["concepts"] == ["circle"]
    assert report["baseline"]["info"]["edit"] is None
    line = f"  circle: target_accuracy {base['target_accuracy']['value']:.3f} -> {after['target_accuracy']['value']:.3f}"
    assert line in stdout.splitlines()
    assert base["target_accuracy"]["value"] >= 0.75  # the world draws circles ...
    assert after["target_accuracy"]["value"] < base["target_accuracy"]["value"] - 0.3  # ... and after UCE it does not
    assert after["in_domain_retain_accuracy"]["value"] >= base["in_domain_retain_accuracy"]["value"] - 0.2
    assert "fid" in after and list((out / "eval-circle").glob("compare-*.png"))
