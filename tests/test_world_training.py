"""World training utilities: exact resumption, the caption truth table, the lr schedule."""

import numpy as np
import pytest
import torch

from erasure.world import train as T
from erasure.world.render import Scene


def _tiny_vae_stage(run, steps):
    cfg = T.StageConfig(steps=steps, batch_size=2, lr=1e-3, warmup=1, seed=3, checkpoint_every=2, log_every=1,
                        extra={"kl_weight": 1e-6, "edge_weight": 1.0})
    return T.train_vae(run, cfg)


def test_an_interrupted_stage_resumes_exactly(tmp_path, monkeypatch):
    from erasure.world import models

    torch.set_num_threads(1)
    small = lambda: __import__("diffusers").AutoencoderKL(  # noqa: E731
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=32)
    monkeypatch.setattr(models, "build_vae", small)
    straight = _tiny_vae_stage(tmp_path / "a", 4)
    _tiny_vae_stage(tmp_path / "b", 2)  # "interrupted" after its checkpoint at step 2
    resumed = _tiny_vae_stage(tmp_path / "b", 4)
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
    assert (tmp_path / "b" / "vae" / "log.jsonl").read_text().count('"step": 4') == 1


def test_caption_truth_table():
    scenes = [Scene("star", "red", "plain", "white"), Scene("circle", "red", "striped", "black")]
    names = [{"shape": "star", "colour": None, "texture": None, "background": None},
             {"shape": None, "colour": "red", "texture": None, "background": None},
             {"shape": None, "colour": None, "texture": "striped", "background": "black"}]
    assert T._caption_matches(scenes, names).tolist() == [[True, False], [True, True], [False, True]]


def test_lr_warms_up_then_decays_to_a_tenth():
    cfg = T.StageConfig(steps=100, batch_size=1, lr=1.0, warmup=10)
    lrs = [T._lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert abs(T._lr_at(100, cfg) - 0.1) < 1e-9


def test_degrade_keeps_range_and_shape():
    x = torch.rand(8, 3, 32, 32)
    y = T.degrade(x, np.random.default_rng(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def _train_world_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "train_world.py"
    spec = importlib.util.spec_from_file_location("train_world_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("flags", [
    ["--stages", "unet", "--steps", "unet=10", "--lr", "unet=-1"],   # a good flag, then a bad one
    ["--stages", "unet", "--seed", "unet=x"],
    ["--stages", "unet", "--init-unet", "/nonexistent/unet"],
    ["--steps", "unet=10"],                                           # lanes would ignore it
])
def test_train_world_refuses_bad_flags_and_writes_nothing(tmp_path, capsys, flags):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        _train_world_script().main(["--run", str(run), *flags])
    assert info.value.code == 2
    assert not run.exists()  # no tokenizer folder, no logged override
    assert len(capsys.readouterr().err.strip().splitlines()[-1]) > 20
