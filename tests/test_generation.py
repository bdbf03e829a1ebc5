"""Generation: an image depends on (model, prompt, seed, settings) only; outputs are written safely."""

import json

import numpy as np
import pytest

from erasure.cli import main
from erasure.errors import ErasureError
from erasure.generation import SamplerSettings, generate_images, image_grid, save_generation

FAST = SamplerSettings(steps=2, guidance=5.0)


def test_image_does_not_depend_on_batch_size_or_neighbours(kind_pipeline):
    prompts = ["a red star", "a blue heart", "a dotted square"]
    seeds = [3, 4, 5]
    together = generate_images(kind_pipeline, prompts, seeds, FAST, batch_size=3)
    alone = np.concatenate([generate_images(kind_pipeline, [p], [s], FAST, batch_size=1) for p, s in zip(prompts, seeds)])
    assert together.dtype == np.uint8 and together.shape[0] == 3
    assert np.abs(together.astype(int) - alone.astype(int)).max() <= 1  # uint8 rounding of fp32 noise
    other_seed = generate_images(kind_pipeline, prompts[:1], [99], FAST)
    assert np.abs(other_seed.astype(int) - together[:1].astype(int)).max() > 10


def test_mismatched_prompts_and_seeds_is_a_user_error(tiny_sd1_pipeline):
    with pytest.raises(ErasureError, match="one seed per prompt"):
        generate_images(tiny_sd1_pipeline, ["a", "b"], [1], FAST)
    with pytest.raises(ErasureError, match="steps"):
        generate_images(tiny_sd1_pipeline, ["a"], [1], SamplerSettings(steps=0))


def test_grid_layout():
    images = np.stack([np.full((8, 8, 3), 40 * k, np.uint8) for k in range(6)])
    grid = np.asarray(image_grid(images, rows=2, cols=3, scale=2))
    assert grid.shape == (2 * 18, 3 * 18, 3)
    assert (grid[18 + 1, 2 * 18 + 1] == 200).all()  # row 1, col 2 holds image 5


def test_save_refuses_to_overwrite_and_is_atomic(tmp_path):
    images = np.zeros((2, 8, 8, 3), np.uint8)
    out = tmp_path / "gen"
    save_generation(images, ["a", "b"], [0, 1], out, settings=FAST, model="m", grid_shape=(2, 1))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["seed"] for r in manifest["images"]] == [0, 1] and manifest["settings"]["steps"] == 2
    with pytest.raises(ErasureError, match="--force"):
        save_generation(images, ["a", "b"], [0, 1], out, settings=FAST, model="m")
    save_generation(images[:1], ["c"], [5], out, settings=FAST, model="m", force=True)
    assert len(list((out / "images").iterdir())) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["gen"]  # no temp folders left behind


def test_cli_generate_writes_grid_and_manifest(tiny_sd1_folder, tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["generate", "--model", str(tiny_sd1_folder), "--prompt", "a red star", "--prompt", "a blue heart",
                 "--num-seeds", "2", "--steps", "2", "--out", str(out)])
    assert code == 0
    assert (out / "grid.png").exists() and len(list((out / "images").iterdir())) == 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(r["prompt"], r["seed"]) for r in manifest["images"]] == [
        ("a red star", 0), ("a red star", 1), ("a blue heart", 0), ("a blue heart", 1)]


@pytest.mark.parametrize("argv, message", [
    (["generate", "--steps", "2"], "no prompts"),
    (["generate", "--prompt", "x", "--model", "/nonexistent/model"], "/nonexistent/model"),
    (["generate", "--prompt", "x", "--prompts-file", "/nonexistent.txt"], "not found"),
    (["generate", "--prompt", "x", "--num-seeds", "0"], "--num-seeds"),
    (["generate", "--prompt", "x", "--steps", "0"], "steps"),
])
def test_cli_bad_input_gives_one_line_error_and_code_2(argv, message, tmp_path, capsys):
    out = tmp_path / "never"
    code = main(argv + ["--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not out.exists()


def test_cli_refuses_existing_output_without_force(tiny_sd1_folder, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["generate", "--model", str(tiny_sd1_folder), "--prompt", "x", "--out", str(out)])
    assert code == 2 and "--force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
