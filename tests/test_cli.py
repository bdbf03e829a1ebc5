"""The command line as a user meets it: config files, help, `erasure list`, the defaults every command
shares, and the next commands it prints. The bad invocations are one table in tests/test_cli_faults.py.
"""

import json
import shlex

import pytest

from erasure.cli import main


def test_config_file_fills_flags_and_the_command_line_wins(tiny_sd1_folder, tmp_path, capsys):
    config = tmp_path / "erase.yaml"
    config.write_text(f"model: {tiny_sd1_folder}\nconcept: [red star]\npreserve: blue circle\n"
                      "templates: ['{}', 'a {}']\nlamb: 0.25\nset: {erase_scale: 0.5}\n")
    out = tmp_path / "erase"
    assert main(["erase", "--config-file", str(config), "--lamb", "0.75", "--out", str(out)]) == 0
    from erasure.edit import Edit

    edit = Edit.load(out / "edit.safetensors")
    assert edit.concepts == ("red star",)
    assert edit.config["preserve"] == ["blue circle"] and edit.config["templates"] == ["{}", "a {}"]
    assert edit.config["lamb"] == 0.75 and edit.config["erase_scale"] == 0.5
    # run.json is itself a config file: the same run again gives the same edit
    run = json.loads((out / "run.json").read_text())
    assert run["lamb"] == 0.75 and run["concept"] == ["red star"]
    again = tmp_path / "again"
    assert main(["erase", "--config-file", str(out / "run.json"), "--out", str(again)]) == 0
    edit2 = Edit.load(again / "edit.safetensors")
    assert edit2.config == edit.config
    assert all((edit2.tensors[k] == v).all() for k, v in edit.tensors.items())


def test_help_shows_examples_for_every_command(capsys):
    for command in ("generate", "erase", "evaluate", "export", "list", "attack"):
        with pytest.raises(SystemExit) as stop:
            main([command, "--help"])
        assert stop.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"erasure {command}" in text.split("examples:")[1]


def test_list_names_methods_metrics_prompt_sets_and_presets(capsys):
    assert main(["list"]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    assert {"methods", "metrics", "prompt sets", "presets"} <= {k.strip() for k in lines}
    assert "uce" in lines["methods"] and "esd-x" in lines["methods"]
    assert "shapeworld-shape-circle" in lines["prompt sets"]


def test_list_methods_and_one_method_from_the_spec(capsys):
    from erasure.methods import METHODS

    assert main(["list", "--methods", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in described] == list(METHODS.names())
    assert {d["name"]: d["trains"] for d in described} == {n: METHODS.get(n).trains for n in METHODS.names()}
    assert main(["list", "--method", "esd-x", "--json"]) == 0
    esd = json.loads(capsys.readouterr().out)
    assert esd == json.loads(json.dumps(METHODS.get("esd-x").describe()))
    assert main(["list", "--method", "esd-x"]) == 0
    text = capsys.readouterr().out
    for setting in esd["settings"]:
        assert f"    {setting['name']} = " in text
    assert main(["list", "--methods"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == len(METHODS) and all(row.split()[0] in METHODS for row in rows)


@pytest.mark.parametrize("given, expected", [
    ([], (25, 5.0)),  # the built-in world's defaults (erasure.evaluation.evaluate.WORLD_SETTINGS)...
    (["--guidance", "0"], (25, 0.0)),  # ...and an explicit 0 is kept, not replaced by a default
    (["--steps", "3", "--guidance", "1.5"], (3, 1.5)),
])
def test_every_command_takes_the_worlds_sampler_defaults_and_keeps_an_explicit_zero(given, expected):
    from erasure.cli import _sampler_settings, parse_args
    from erasure.evaluation.evaluate import WORLD_SETTINGS
    from erasure.generation import SamplerSettings

    assert (WORLD_SETTINGS.steps, WORLD_SETTINGS.guidance) == (25, 5.0)
    for command in (["generate", "--prompt", "x"], ["erase", "--concept", "circle"],
                    ["evaluate", "--prompts", "shapeworld-shape-circle"]):
        args = parse_args([*command, *given])
        settings = _sampler_settings(args, world=True)
        assert (settings.steps, settings.guidance) == expected, command
        other = _sampler_settings(args, world=False)  # another model: diffusers' defaults for what is not given
        defaults = SamplerSettings()
        assert other.steps == (expected[0] if "--steps" in given else defaults.steps)
        assert other.guidance == (expected[1] if "--guidance" in given else defaults.guidance)


def test_concept_takes_a_name_or_attribute_value_in_erase_and_evaluate(tmp_path, monkeypatch):
    from erasure.cli import check_erase, check_evaluate, parse_args

    monkeypatch.chdir(tmp_path)
    for text in ("circle", "shape=circle", " shape = circle "):
        args = parse_args(["erase", "--concept", text, "--evaluate", "--out", "never-written"])
        check_erase(args)
        assert args.concepts == ["circle"] and args.labels == [("shape", "circle")]
        args = parse_args(["evaluate", "--prompts", "shapeworld-shape-circle", "--concept", text, "--out", "never"])
        check_evaluate(args)
        assert args.label == ("shape", "circle")


@pytest.mark.parametrize("method", [
    ["--method", "uce"],
    ["--method", "esd-x", "--set", "iterations=1", "--set", "ddim_steps=2", "--set", "batch_size=1"],  # biases too
])
def test_the_printed_export_command_runs_as_printed(tiny_sd1_folder, tmp_path, capsys, monkeypatch, method):
    """The next command `erasure erase` prints names the same (non-world) model, so it runs as printed."""
    monkeypatch.chdir(tmp_path)
    assert main(["erase", "--model", str(tiny_sd1_folder), "--concept", "red star", "--device", "cpu", *method,
                 "--out", "my erase"]) == 0
    hint = [line for line in capsys.readouterr().out.splitlines() if line.startswith("export it: ")]
    assert len(hint) == 1
    words = shlex.split(hint[0].removeprefix("export it: "))
    assert words[:2] == ["erasure", "export"] and "--model" in words
    assert main(words[1:]) == 0, capsys.readouterr().err
    out = tmp_path / words[words.index("--out") + 1]
    assert out.name == "my erase-export" and (out / "export.json").is_file() and (out / "edit.safetensors").is_file()


def test_the_printed_export_command_of_an_adapter_on_a_single_file_runs_as_printed(tiny_sd1_folder, tmp_path, capsys,
                                                                                   monkeypatch):
    """A single-file checkpoint needs --config to load offline: the printed command carries it."""
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--model", str(tiny_sd1_folder), "--format", "single-file", "--out", "base"]) == 0
    model, config = tmp_path / "base" / "model.safetensors", tmp_path / "base" / "model-config"
    capsys.readouterr()
    assert main(["erase", "--model", str(model), "--config", str(config), "--method", "lora-esd", "--concept",
                 "red star", "--set", "iterations=2", "--set", "ddim_steps=2", "--set", "batch_size=1",
                 "--out", "lora"]) == 0
    hint = [line for line in capsys.readouterr().out.splitlines() if line.startswith("export it: ")]
    words = shlex.split(hint[0].removeprefix("export it: "))
    assert words[words.index("--model") + 1] == str(model) and words[words.index("--config") + 1] == str(config)
    assert words[words.index("--edit") + 1] == "lora/adapter"  # as the user named --out: run from the same folder
    assert main(words[1:]) == 0, capsys.readouterr().err
    assert (tmp_path / "lora-export" / "lora" / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.fast
def test_attack_is_a_subcommand_with_one_line_errors(tmp_path, capsys):
    assert main(["attack", "--attack", "nosuch", "--concept", "circle", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown attack 'nosuch'" in err and "unlearndiffatk" in err
    assert not (tmp_path / "a").exists()
