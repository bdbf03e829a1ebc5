"""assemble_world on a tiny fake run: the world's folder loads with plain diffusers, and world 2's text
encoder is stored in float16 but loads back as float32 with exactly the rounded weights it was measured with."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import _tiny_unet, _tiny_vae


def _fake_run(run):
    from transformers import CLIPConfig, CLIPModel

    from erasure.offline import BOS_TOKEN_ID, CLIP_VOCAB_SIZE, EOS_TOKEN_ID
    from erasure.world import models, render

    torch.manual_seed(0)
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                vocab_size=CLIP_VOCAB_SIZE, bos_token_id=BOS_TOKEN_ID, eos_token_id=EOS_TOKEN_ID,
                pad_token_id=EOS_TOKEN_ID)
    vision = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, image_size=32,
                  patch_size=8)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    # weights of different magnitudes, so that float16 rounding changes them measurably
    with torch.no_grad():
        for p in clip.parameters():
            p.mul_(1.7).add_(0.013)
    clip.save_pretrained(run / "clip" / "model")
    image_clip = CLIPModel(clip.config)
    image_clip.load_state_dict(clip.state_dict())
    image_clip.save_pretrained(run / "clip_image" / "model")
    _tiny_vae().save_pretrained(run / "vae" / "model")
    _tiny_unet(cross_attention_dim=32).save_pretrained(run / "unet" / "model")
    (run / "unet" / "scaling_factor.json").write_text(json.dumps({"scaling_factor": 0.5}))
    (run / "classifier").mkdir(parents=True)
    clf = models.AttributeClassifier(attributes=render.WORLD2.attributes)
    save_file({k: v.contiguous() for k, v in clf.state_dict().items()}, str(run / "classifier" / "model.safetensors"))
    return clip


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2])
def test_assembled_world_loads_and_world2_text_encoder_is_float16(tmp_path, world):
    from diffusers import StableDiffusionPipeline

    from erasure.world.assemble import assemble_world

    run = tmp_path / "run"
    clip = _fake_run(run)
    out = assemble_world(run, tmp_path / "world", {"unet": {"world": world}})
    meta = json.loads((out / "world.json").read_text())
    assert meta["world"] == world
    te_file = out / "pipeline" / "text_encoder" / "model.safetensors"
    with safe_open(str(te_file), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    trained = clip.text_model.state_dict()

    pipe = StableDiffusionPipeline.from_pretrained(out / "pipeline", safety_checker=None)  # plain diffusers, no dtype
    te = pipe.text_encoder
    assert te.dtype == torch.float32 and pipe.unet.dtype == torch.float32
    loaded = {k.removeprefix("text_model."): v for k, v in te.state_dict().items()}
    key = "embeddings.token_embedding.weight"
    if world == 1:
        assert dtypes == {torch.float32}
        assert "text_encoder_storage" not in meta
        assert torch.equal(loaded[key], trained[key])
    else:
        assert dtypes == {torch.float16}
        for k, v in trained.items():
            assert torch.equal(loaded[k], v.half().float()), k
        assert not torch.equal(loaded[key], trained[key])  # the rounding did something, so the test can fail
        storage = meta["text_encoder_storage"]
        assert storage["stored_as"] == "float16" and storage["loads_as"] == "float32"
        largest = max(float(v.abs().max()) for v in trained.values() if v.is_floating_point())
        assert 0 < storage["max_abs_weight_change"] <= largest * 2 ** -11  # float16's relative rounding bound
        assert 0 < storage["max_abs_hidden_state_change"] < 0.05 * storage["hidden_state_abs_max"]
        # the file is about half the float32 size
        assert te_file.stat().st_size < 0.55 * sum(v.numel() * 4 for v in trained.values())
    # the manifest's hashes are of the files as written
    from erasure.world.assemble import sha256
    assert meta["files"]["pipeline/text_encoder/model.safetensors"] == sha256(te_file)
    # the pipeline runs
    images = pipe("a red circle", num_inference_steps=2, height=64, width=64, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 64, 64, 3)
