"""Module names and the diffusers -> original LDM key mapping.

diffusers' own LDM -> diffusers converters (what ``from_single_file`` runs) are the oracle:
mapping a state dict to LDM and back through them must give it back unchanged, for SD 1.x,
SD 2.x and the built-in world's 3-block, 1-layer topology.
"""

import re

import pytest
import torch

from erasure.modules import (
    cross_attention_kv,
    cross_attention_layers,
    text_encoder_to_ldm,
    unet_ldm_key,
    unet_to_ldm,
    vae_to_ldm,
)


BUILT_KINDS = ["sd1", "sd2", "world_random"]  # world_random: the built-in world's 3-block, 1-layer topology


def _strip(state: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in state.items()}


def _assert_identical(original: dict, round_tripped: dict) -> None:
    assert original.keys() == round_tripped.keys(), set(original) ^ set(round_tripped)
    for key, value in original.items():
        assert torch.equal(value, round_tripped[key]), key


@pytest.mark.parametrize("kind", BUILT_KINDS)
def test_unet_mapping_is_inverted_by_diffusers(kind, built_pipeline):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = built_pipeline(kind).unet
    state = unet.state_dict()
    ldm = unet_to_ldm(state, unet.config)
    assert ldm.keys() == unet_to_ldm(state).keys(), "layout inferred from keys must match the config's"
    _assert_identical(state, convert_ldm_unet_checkpoint(ldm, dict(unet.config)))


@pytest.mark.parametrize("kind", ["sd1", "world_random"])
def test_vae_mapping_is_inverted_by_diffusers(kind, built_pipeline):
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    vae = built_pipeline(kind).vae
    state = vae.state_dict()
    ldm = vae_to_ldm(state, vae.config)
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv, as in LDM
    _assert_identical(state, convert_ldm_vae_checkpoint(ldm, dict(vae.config)))


def test_sd1_text_encoder_mapping_keeps_text_model_prefix(tiny_sd1_pipeline):
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

    state = tiny_sd1_pipeline.text_encoder.state_dict()
    ldm = text_encoder_to_ldm(state, "sd1")
    assert all(k.startswith("cond_stage_model.transformer.text_model.") for k in ldm)
    _assert_identical(state, _strip(convert_ldm_clip_checkpoint(ldm), "text_model."))


def test_sd2_text_encoder_mapping_fuses_qkv(tiny_sd2_pipeline):
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    encoder = tiny_sd2_pipeline.text_encoder
    state = encoder.state_dict()
    ldm = text_encoder_to_ldm(state, "sd2")
    width = encoder.config.hidden_size
    assert ldm["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * width, width)
    _assert_identical(state, _strip(convert_open_clip_checkpoint(encoder, ldm), "text_model."))


def test_cross_attention_layers_have_sd_names_and_count(tiny_sd1_pipeline):
    layers = cross_attention_layers(tiny_sd1_pipeline.unet)
    assert len(layers) == 16  # SD 1.x: 6 down, 1 mid, 9 up
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2" in layers
    kv = cross_attention_kv(tiny_sd1_pipeline.unet)
    assert len(kv) == 32
    assert all(m.in_features == tiny_sd1_pipeline.unet.config.cross_attention_dim for m in kv.values())


def test_cross_attention_keys_follow_the_a1111_formula(tiny_sd1_pipeline):
    """The formula A1111's LoRA loader uses for SD 1.x: 3 LDM layers per diffusers block."""
    for name in cross_attention_kv(tiny_sd1_pipeline.unet):
        key = f"{name}.weight"
        inner = key.split(".", 4)[-1] if key.startswith(("down", "up")) else key.split(".", 3)[-1]
        if m := re.match(r"down_blocks\.(\d)\.attentions\.(\d)\.", key):
            expected = f"input_blocks.{3 * int(m[1]) + int(m[2]) + 1}.1.{inner}"
        elif m := re.match(r"up_blocks\.(\d)\.attentions\.(\d)\.", key):
            expected = f"output_blocks.{3 * int(m[1]) + int(m[2])}.1.{inner}"
        else:
            expected = f"middle_block.1.{inner}"
        assert unet_ldm_key(key, layers_per_block=2) == "model.diffusion_model." + expected


# Keys of the released SD 1.5 checkpoint (v1-5-pruned-emaonly), where the converter above is
# lenient: e.g. it accepts an upsampler at either LDM slot, but A1111/ComfyUI do not.
SD15_KEYS = [
    "model.diffusion_model.time_embed.0.weight",
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.input_blocks.3.0.op.weight",
    "model.diffusion_model.input_blocks.7.0.skip_connection.weight",
    "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_v.weight",
    "model.diffusion_model.middle_block.2.emb_layers.1.weight",
    "model.diffusion_model.output_blocks.2.1.conv.weight",
    "model.diffusion_model.output_blocks.5.2.conv.weight",
    "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
    "model.diffusion_model.output_blocks.11.1.proj_out.weight",
    "model.diffusion_model.out.2.weight",
    "first_stage_model.encoder.down.0.downsample.conv.weight",
    "first_stage_model.encoder.mid.attn_1.proj_out.weight",
    "first_stage_model.decoder.mid.block_2.conv2.weight",
    "first_stage_model.decoder.up.3.upsample.conv.weight",
    "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
    "first_stage_model.decoder.norm_out.weight",
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.k_proj.weight",
]


def test_sd1_export_uses_the_released_checkpoint_key_names(tiny_sd1_pipeline):
    from erasure.modules import pipeline_to_ldm_state_dict

    keys = pipeline_to_ldm_state_dict(tiny_sd1_pipeline).keys()
    assert [k for k in SD15_KEYS if k not in keys] == []


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_ldm_location_finds_every_edited_parameter_in_the_converted_file(kind, built_pipeline):
    """What base-single-file patching relies on: each UNet / text-encoder parameter, looked up alone
    (rows of SD 2.x's fused in_proj, transposed text_projection), equals the whole-model conversion."""
    from erasure.edit import pipeline_parameter
    from erasure.modules import ldm_location, pipeline_to_ldm_state_dict

    pipe = built_pipeline(kind)
    ldm = pipeline_to_ldm_state_dict(pipe)
    names = [f"text_encoder.{n}" for n, _ in pipe.text_encoder.named_parameters()]
    names += [f"unet.{n}" for n, _ in pipe.unet.named_parameters()]
    for name in names:
        key, rows, transposed = ldm_location(pipe, name)
        stored = ldm[key].T if transposed else ldm[key]
        stored = stored[rows] if rows is not None else stored
        assert torch.equal(stored.reshape(pipeline_parameter(pipe, name).shape), pipeline_parameter(pipe, name)), name


def test_kohya_lora_names_follow_kohya(tiny_sd1_pipeline):
    from erasure.errors import ErasureError
    from erasure.modules import kohya_lora_name

    assert (kohya_lora_name("unet.down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k")
            == "lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_k")
    for module in ("text_encoder.encoder.layers.3.self_attn.v_proj", "text_encoder.text_model.encoder.layers.3.self_attn.v_proj"):
        assert kohya_lora_name(module) == "lora_te_text_model_encoder_layers_3_self_attn_v_proj"
    with pytest.raises(ErasureError):
        kohya_lora_name("vae.decoder.conv_in")
