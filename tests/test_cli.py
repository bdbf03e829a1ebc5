"""The command line as a user meets it: bad invocations, config files, help, exit codes.

Every bad invocation must give one line on stderr that starts with ``error:`` (no traceback, no usage
dump), exit with code 2, and leave nothing behind: no --out folder and no temporary folder next to it.
"""

import json

import pytest

from erasure.cli import main

# (arguments, a phrase the one-line message must contain). The output folder is added by the test.
BAD_INVOCATIONS = [
    ([], "choose a command"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["erase"], "no concept given"),
    (["erase", "--concept", "circle", "--method", "ucee"], "did you mean 'uce'"),
    (["erase", "--concept", "circle", "--steps", "abc"], "invalid int value: 'abc'"),
    (["erase", "--concept", "circle", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["erase", "--concept", "circle", "--config-file", "{tmp}/missing.json"], "not found"),
    (["erase", "--concept", "circle", "--config-file", "{tmp}/unknown_key.json"], "unknown key 'bogus'"),
    (["erase", "--concept", "circle", "--config-file", "{tmp}/broken.yaml"], "is not valid YAML"),
    (["erase", "--concept", "circle", "--config-file", "{tmp}/a_list.json"], "must hold a mapping"),
    (["erase", "--concept", "circle", "--config-file", "{tmp}/wrong_type.json"], "must be of type int"),
    (["erase", "--concept", "circle", "--model", "{tmp}/no/such/model"], "not found"),
    (["erase", "--concept", "circle", "--set", "nosuch=1"], "unknown setting(s) ['nosuch']"),
    (["erase", "--concept", "circle", "--set", "iterations"], "KEY=VALUE"),
    (["erase", "--concept", "circle", "--tokens", "bogus"], "unknown token selection 'bogus'"),
    (["erase", "--concept", "circle", "--lamb", "-1"], "lamb must be >= 0"),
    (["erase", "--concept", "circle", "--method", "esd", "--set", "lr=-1"], "lr must be > 0"),
    (["erase", "--concept", ""], "empty concept"),
    (["generate"], "no prompts given"),
    (["generate", "--prompt", "a star", "--steps", "0"], "steps must be >= 1"),
    (["generate", "--prompt", "a star", "--num-seeds", "0"], "--num-seeds must be >= 1"),
    (["generate", "--prompts-file", "{tmp}/missing.txt"], "not found"),
    (["generate", "--prompt", "a star", "--dtype", "fp8"], "unknown dtype 'fp8'"),
    (["generate", "--prompt", "a star", "--device", "tpu"], "unknown device 'tpu'"),
    (["generate", "--prompt", "a star", "--model", "{tmp}/model.ckpt"], "pickled checkpoint"),
    (["generate", "--prompt", "a star", "--guidance", "-1"], "guidance must be >= 0"),
    (["evaluate"], "no prompt set given"),
    (["evaluate", "--prompts", "shapeworld-shape-circl"], "unknown prompt set"),
    (["evaluate", "--prompts", "shapeworld-shape-circle", "--concept", "shape"], "ATTRIBUTE=VALUE"),
    (["evaluate", "--prompts", "shapeworld-shape-circle", "--concept", "colour=circle"], "no prompt names colour=circle"),
    (["evaluate", "--prompts", "shapeworld-shape-circle", "--edit", "{tmp}/missing.safetensors"], "not found"),
    (["evaluate", "--prompts", "shapeworld-shape-circle", "--edit", "{tmp}/corrupt.safetensors"],
     "not a readable safetensors file"),
    (["evaluate", "--prompts", "shapeworld-shape-circle", "--compare"], "needs --edit"),
    (["export", "--format", "lora,onnx"], "unknown export format 'onnx'"),
    (["export", "--edit", "{tmp}/missing.safetensors"], "not found"),
    (["export", "--lora-rank", "0", "--edit", "{tmp}/corrupt.safetensors"], "--lora-rank must be >= 1"),
    (["export", "--report", "{tmp}/a_list.json", "--base-single-file", "{tmp}/none.safetensors"], "not found"),
]


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "unknown_key.json").write_text(json.dumps({"steps": 3, "bogus": 1}))
    (tmp_path / "broken.yaml").write_text("steps: [\n")
    (tmp_path / "a_list.json").write_text("[1, 2]")
    (tmp_path / "wrong_type.json").write_text(json.dumps({"samples-per-prompt": "many"}))
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x02not really a pickle")
    (tmp_path / "corrupt.safetensors").write_bytes(b"garbage")
    return tmp_path


def test_there_are_at_least_twenty_bad_invocations():
    assert len(BAD_INVOCATIONS) >= 20


@pytest.mark.parametrize("args, message", BAD_INVOCATIONS, ids=[" ".join(a) or "(none)" for a, _ in BAD_INVOCATIONS])
def test_bad_invocation_is_one_line_exit_2_and_writes_nothing(bad_files, capsys, args, message):
    tmp = bad_files
    before = {p.name for p in tmp.iterdir()}
    out = tmp / "out"
    argv = [a.replace("{tmp}", str(tmp)) for a in args]
    if argv and argv[0] in ("erase", "generate", "evaluate", "export"):
        argv += ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error:") and message in err[-1], err
    if argv:  # only the bare `erasure` prints its help above the error line
        assert len(err) == 1, err
    assert not out.exists()
    assert {p.name for p in tmp.iterdir()} == before  # no temporary folder left next to --out


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
    for command in ("generate", "erase", "evaluate", "export", "list"):
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
