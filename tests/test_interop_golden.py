"""Golden key layouts for loaders that cannot be installed here (ComfyUI).

ComfyUI is not installable in this environment (no wheel; its requirements pull a GPU stack), so instead of
loading our files with it, these tests read our single-file checkpoint and kohya LoRA with the key logic
ComfyUI itself uses, transcribed from comfyanonymous/ComfyUI@006dd0ae6cf66f66ea0d2ad7db73dea920de9936:

- ``comfy/model_detection.py``: ``unet_prefix_from_state_dict`` (the most common of the known prefixes,
  ``model.diffusion_model.`` for LDM checkpoints) and ``detect_unet_config`` (the UNet config read from
  ``input_blocks.0.0.weight``, ``N.0.op.weight``, ``N.0.in_layers.0.weight``, ``N.0.out_layers.3.weight``,
  ``N.1.transformer_blocks.*``, ``...attn2.to_k.weight``, ``N.1.proj_in.weight``, ``middle_block.1.*``,
  ``out.2.weight``, ``label_emb.0.0.weight``), then matched against its SD15 / SD21 configs;
- ``comfy/lora.py``: ``model_lora_keys_unet`` (``lora_unet_`` + the diffusers module path with ``.`` -> ``_``)
  and ``model_lora_keys_clip`` (``lora_te_text_model_encoder_layers_{i}_{LORA_CLIP_MAP[...]}``), read as
  ``.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``.

The widths of the tiny test models differ from SD 1.5's (32 channels, not 320), so the SD15 match is checked
on the structural fields (blocks, transformer depths, projection kind, no class embedding, 4 in/out
channels) and the widths against the model's own config. The real-size check (SD15 detected, every UNet
tensor equal) was done once with ComfyUI 0.3.64 (issue 16).
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open

from erasure.export import export
from erasure.modules import cross_attention_kv

# ComfyUI's SD15 / SD21 unet configs (model_detection.unet_config_from_diffusers_unet), structural fields only
COMFY_SD_STRUCTURE = {"num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
                      "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "transformer_depth_middle": 1,
                      "in_channels": 4, "out_channels": 4, "adm_in_channels": None}
LORA_CLIP_MAP = {"mlp.fc1": "mlp_fc1", "mlp.fc2": "mlp_fc2", "self_attn.k_proj": "self_attn_k_proj",
                 "self_attn.q_proj": "self_attn_q_proj", "self_attn.v_proj": "self_attn_v_proj",
                 "self_attn.out_proj": "self_attn_out_proj"}


def _count_blocks(keys, prefix_string):
    count = 0
    while any(k.startswith(prefix_string.format(count)) for k in keys):
        count += 1
    return count


def unet_prefix_from_state_dict(state):
    candidates = ["model.diffusion_model.", "model.model."]
    counts = {c: sum(k.startswith(c) for k in state) for c in candidates}
    top = max(counts, key=counts.get)
    return top if counts[top] > 5 else "model."


def detect_unet_config(state, key_prefix):
    """ComfyUI's detect_unet_config for LDM UNets (the branch SD 1.x / 2.x take), shapes from ``state``."""
    keys = list(state)
    if f"{key_prefix}input_blocks.0.0.weight" not in keys:
        return None

    def transformer_depth(prefix):
        transformer_prefix = prefix + "1.transformer_blocks."
        if not any(k.startswith(transformer_prefix) for k in keys):
            return None
        depth = _count_blocks(keys, transformer_prefix + "{}")
        context_dim = state[f"{transformer_prefix}0.attn2.to_k.weight"][1]
        linear = len(state[f"{prefix}1.proj_in.weight"]) == 2
        return depth, context_dim, linear

    config = {"adm_in_channels": state[f"{key_prefix}label_emb.0.0.weight"][1]
              if f"{key_prefix}label_emb.0.0.weight" in keys else None}
    model_channels, in_channels = state[f"{key_prefix}input_blocks.0.0.weight"][:2]
    out_channels = state[f"{key_prefix}out.2.weight"][0] if f"{key_prefix}out.2.weight" in keys else 4
    num_res_blocks, channel_mult, depth_in, depth_out = [], [], [], []
    context_dim, linear = None, False
    last_res_blocks = last_channel_mult = 0
    n_input = _count_blocks(keys, f"{key_prefix}input_blocks" + ".{}.")
    for count in range(n_input):
        prefix = f"{key_prefix}input_blocks.{count}."
        prefix_output = f"{key_prefix}output_blocks.{n_input - count - 1}."
        block_keys = [k for k in keys if k.startswith(prefix)]
        block_keys_output = [k for k in keys if k.startswith(prefix_output)]
        if f"{prefix}0.op.weight" in block_keys:
            num_res_blocks.append(last_res_blocks)
            channel_mult.append(last_channel_mult)
            last_res_blocks = last_channel_mult = 0
            out = transformer_depth(prefix_output)
            depth_out.append(out[0] if out else 0)
        else:
            if f"{prefix}0.in_layers.0.weight" in block_keys:
                last_res_blocks += 1
                last_channel_mult = state[f"{prefix}0.out_layers.3.weight"][0] // model_channels
                out = transformer_depth(prefix)
                depth_in.append(out[0] if out else 0)
                if out and context_dim is None:
                    context_dim, linear = out[1], out[2]
            if f"{prefix_output}0.in_layers.0.weight" in block_keys_output:
                out = transformer_depth(prefix_output)
                depth_out.append(out[0] if out else 0)
    num_res_blocks.append(last_res_blocks)
    channel_mult.append(last_channel_mult)
    if f"{key_prefix}middle_block.1.proj_in.weight" in keys:
        middle = _count_blocks(keys, f"{key_prefix}middle_block.1.transformer_blocks." + "{}")
    elif f"{key_prefix}middle_block.0.in_layers.0.weight" in keys:
        middle = -1
    else:
        middle = -2
    config.update(in_channels=in_channels, out_channels=out_channels, model_channels=model_channels,
                  num_res_blocks=num_res_blocks, transformer_depth=depth_in, transformer_depth_output=depth_out,
                  channel_mult=channel_mult, transformer_depth_middle=middle, use_linear_in_transformer=linear,
                  context_dim=context_dim)
    return config


def _shapes(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}


@pytest.mark.parametrize("kind, linear", [("sd1", False), ("sd2", True)])
def test_single_file_is_detected_as_comfyui_detects_sd(kind, linear, built_pipeline, tmp_path):
    pipe = built_pipeline(kind)
    path = export(pipe, tmp_path / "out", formats=["single-file"])["single-file"]
    state = _shapes(path)
    prefix = unet_prefix_from_state_dict(state)
    assert prefix == "model.diffusion_model."
    config = detect_unet_config(state, prefix)
    assert {k: config[k] for k in COMFY_SD_STRUCTURE} == COMFY_SD_STRUCTURE
    assert config["use_linear_in_transformer"] is linear  # SD15: conv proj_in; SD21: linear
    unet = pipe.unet.config
    assert config["model_channels"] == unet.block_out_channels[0]
    assert config["channel_mult"] == [c // unet.block_out_channels[0] for c in unet.block_out_channels]
    assert config["context_dim"] == unet.cross_attention_dim
    # every UNet tensor under ComfyUI's prefix, and the VAE / CLIP under the ones its SD1/SD2 classes strip
    assert sum(k.startswith(prefix) for k in state) == len(pipe.unet.state_dict())
    assert sum(k.startswith("first_stage_model.") for k in state) == len(pipe.vae.state_dict())
    clip_prefix = "cond_stage_model.transformer.text_model." if kind == "sd1" else "cond_stage_model.model."
    assert any(k.startswith(clip_prefix) for k in state)


def test_kohya_keys_are_the_ones_comfyui_maps(built_pipeline, tmp_path):
    from erasure.edit import make_edit

    pipe = built_pipeline("sd1")
    g = torch.Generator().manual_seed(0)
    new = {f"unet.{n}.weight": m.weight.detach() + 0.01 * torch.randn(m.weight.shape[0], 1, generator=g)
           @ torch.randn(1, m.weight.shape[1], generator=g) for n, m in cross_attention_kv(pipe.unet).items()}
    for name, p in pipe.text_encoder.named_parameters():
        if re.search(r"layers\.0\.(self_attn\.(q|k|v|out)_proj|mlp\.fc1)\.weight$", name):
            new[f"text_encoder.{name}"] = p.detach() + 0.01 * torch.randn(p.shape[0], 1, generator=g) @ torch.randn(
                1, p.shape[1], generator=g)
    edit = make_edit(pipe, "test", ["star"], {}, new)
    path = export(pipe, tmp_path / "out", edit=edit, formats=["kohya"])["kohya"]
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    # model_lora_keys_unet: lora_unet_ + the diffusers path ('.' -> '_') of every UNet weight
    comfy_unet = {"lora_unet_" + k[: -len(".weight")].replace(".", "_") for k in pipe.unet.state_dict()
                  if k.endswith(".weight")}
    # model_lora_keys_clip (SD1: clip_l): lora_te_text_model_encoder_layers_{b}_{LORA_CLIP_MAP[c]}
    layers = pipe.text_encoder.config.num_hidden_layers
    comfy_clip = {f"lora_te_text_model_encoder_layers_{b}_{v}" for b in range(layers) for v in LORA_CLIP_MAP.values()}
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys}
    assert modules and modules <= comfy_unet | comfy_clip
    assert len(modules & comfy_clip) == 5 and len(modules & comfy_unet) == len(cross_attention_kv(pipe.unet))
    for m in modules:  # what ComfyUI's LoRAAdapter.load reads for each module
        assert {f"{m}.lora_down.weight", f"{m}.lora_up.weight", f"{m}.alpha"} <= keys
    assert len(keys) == 3 * len(modules)
