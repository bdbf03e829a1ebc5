"""The one place that knows diffusers module names and the original LDM (CompVis) layout.

* :func:`cross_attention_layers` / :func:`cross_attention_kv`: the modules erasure methods edit.
* ``*_to_ldm``: diffusers state dicts -> the single-file layout of the original Stable Diffusion
  checkpoints (what A1111, ComfyUI and ``from_single_file`` read). Block indices are derived
  from the model's config (or its keys), so any number of blocks and layers maps correctly.
* :func:`save_single_file` + :func:`save_config_folder`: a ``.safetensors`` checkpoint and the
  configs-only folder that lets ``from_single_file(path, config=folder, local_files_only=True)``
  rebuild the exact pipeline offline.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Literal, Mapping

import torch
from torch import Tensor, nn

from erasure.errors import ErasureError

if TYPE_CHECKING:
    from diffusers.models.attention_processor import Attention

TextEncoderKind = Literal["sd1", "sd2"]
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."


# --- modules that erasure methods edit -------------------------------------------------------


def cross_attention_layers(unet: nn.Module) -> dict[str, Attention]:
    """The cross-attention (``attn2``) modules by name.

    E.g. ``down_blocks.0.attentions.0.transformer_blocks.0.attn2``; SD 1.x and 2.x have 16.
    """
    from diffusers.models.attention_processor import Attention

    return {name: m for name, m in unet.named_modules() if name.endswith(".attn2") and isinstance(m, Attention)}


def cross_attention_kv(unet: nn.Module) -> dict[str, nn.Linear]:
    """The key/value projections of every cross-attention layer: ``<attn2 name>.to_k`` / ``.to_v``.

    With a peft adapter attached these are peft's wrappers around the ``nn.Linear``.
    """
    out: dict[str, nn.Linear] = {}
    for name, attn in cross_attention_layers(unet).items():
        out[f"{name}.to_k"] = attn.to_k
        out[f"{name}.to_v"] = attn.to_v
    return out


# --- UNet -------------------------------------------------------------------------------------

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_BLOCK = re.compile(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)")
_UNET_SAMPLER = re.compile(r"(down|up)_blocks\.(\d+)\.(downsamplers|upsamplers)\.0\.conv\.(.+)")
_UNET_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)")


def _rename_first(rest: str, table: Mapping[str, str], what: str, key: str) -> str:
    head, _, tail = rest.partition(".")
    if head not in table:
        raise ErasureError(f"cannot map {what} key {key!r} to the original LDM layout (unknown module {head!r})")
    return f"{table[head]}.{tail}"


def _unet_layout(state_dict: Mapping[str, Any], config: Mapping[str, Any] | None) -> tuple[int, set[int]]:
    """(layers_per_block, indices of up blocks with attention), from the config or else the keys."""
    if config is not None:
        layers = config["layers_per_block"]
        if not isinstance(layers, int):
            raise ErasureError(f"layers_per_block={layers} has no original LDM layout; only one int for all blocks is")
        return layers, {i for i, t in enumerate(config["up_block_types"]) if "CrossAttn" in t}
    parts = [m.groups() for k in state_dict if (m := _UNET_BLOCK.match(k))]
    down_layers = [int(layer) for side, _, kind, layer, _ in parts if side == "down" and kind == "resnets"]
    if not down_layers:
        raise ErasureError("cannot infer the UNet layout from a state dict without down-block resnets; pass unet.config")
    up_with_attention = {int(block) for side, block, kind, _, _ in parts if side == "up" and kind == "attentions"}
    return max(down_layers) + 1, up_with_attention


def unet_ldm_key(key: str, layers_per_block: int, up_blocks_with_attention: Collection[int] = ()) -> str:
    """One diffusers UNet key -> its original key (with ``model.diffusion_model.``).

    ``up_blocks_with_attention`` only matters for upsampler keys (their LDM slot follows the attention).
    """
    per_block = layers_per_block + 1  # LDM counts the down/upsampler as one more layer per block
    if m := _UNET_BLOCK.match(key):
        side, block, kind, layer, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        index = 1 + block * per_block + layer if side == "down" else block * per_block + layer
        prefix = f"{'input' if side == 'down' else 'output'}_blocks.{index}"
        if kind == "resnets":
            return f"{UNET_PREFIX}{prefix}.0.{_rename_first(rest, _UNET_RESNET, 'UNet', key)}"
        return f"{UNET_PREFIX}{prefix}.1.{rest}"
    if m := _UNET_SAMPLER.match(key):
        side, block, rest = m.group(1), int(m.group(2)), m.group(4)
        if side == "down":
            return f"{UNET_PREFIX}input_blocks.{1 + block * per_block + layers_per_block}.0.op.{rest}"
        slot = 2 if block in up_blocks_with_attention else 1
        return f"{UNET_PREFIX}output_blocks.{block * per_block + layers_per_block}.{slot}.conv.{rest}"
    if m := _UNET_MID.match(key):
        kind, index, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "resnets" and index < 2:
            return f"{UNET_PREFIX}middle_block.{2 * index}.{_rename_first(rest, _UNET_RESNET, 'UNet', key)}"
        if kind == "attentions" and index == 0:
            return f"{UNET_PREFIX}middle_block.1.{rest}"
    module, _, param = key.rpartition(".")
    if module in _UNET_TOP:
        return f"{UNET_PREFIX}{_UNET_TOP[module]}.{param}"
    raise ErasureError(f"cannot map UNet key {key!r} to the original LDM layout (unsupported UNet architecture)")


def unet_to_ldm(state_dict: Mapping[str, Tensor], config: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict in the original layout (``model.diffusion_model.*``).

    ``config`` (``unet.config``) gives the block layout; without it, it is inferred from the keys,
    which needs a full state dict.
    """
    layers, up_attn = _unet_layout(state_dict, config)
    return {unet_ldm_key(k, layers, up_attn): v for k, v in state_dict.items()}


# --- VAE --------------------------------------------------------------------------------------

_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
_VAE_TOP = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}


def _vae_key(key: str, num_up_blocks: int) -> str:
    resnet = lambda rest: rest.replace("conv_shortcut", "nin_shortcut")  # noqa: E731
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{resnet(m[3])}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    # LDM numbers decoder blocks from the lowest resolution up; diffusers in execution order.
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{num_up_blocks - 1 - int(m[1])}.block.{m[2]}.{resnet(m[3])}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{num_up_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.([01])\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{resnet(m[3])}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(\w+)(?:\.0)?\.(weight|bias)", key):
        if m[2] in _VAE_ATTN:
            return f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
    if m := re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)\.(weight|bias)", key):
        return f"{m[1]}.{_VAE_TOP[m[2]]}.{m[3]}"
    if re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", key):
        return key
    raise ErasureError(f"cannot map VAE key {key!r} to the original LDM layout (unsupported VAE architecture)")


def vae_to_ldm(state_dict: Mapping[str, Tensor], config: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
    """A diffusers ``AutoencoderKL`` state dict in the original layout (``first_stage_model.*``).

    The mid-block attention projections become 1x1 convolutions, as in the original model.
    """
    if config is not None:
        num_up = len(config["up_block_types"])
    else:
        up_blocks = {int(m[1]) for k in state_dict if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))}
        num_up = max(up_blocks, default=-1) + 1
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = _vae_key(key, num_up)
        if ".mid.attn_1." in new and new.endswith(".weight") and ".norm." not in new and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)
        out[VAE_PREFIX + new] = value
    return out


# --- text encoder -----------------------------------------------------------------------------

_OPENCLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_OPENCLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def detect_text_encoder_kind(text_encoder: nn.Module) -> TextEncoderKind:
    """``"sd2"`` for an OpenCLIP-style encoder (GELU, as SD 2.x), else ``"sd1"`` (OpenAI CLIP, quick-GELU)."""
    return "sd2" if getattr(text_encoder.config, "hidden_act", "quick_gelu") == "gelu" else "sd1"


def _hf_text_key(key: str) -> str:
    """transformers 5 dropped ``text_model.`` from ``CLIPTextModel`` keys; the checkpoint layout keeps it."""
    if key.startswith("text_model.") or key.startswith("text_projection."):
        return key
    return "text_model." + key


def text_encoder_to_ldm(state_dict: Mapping[str, Tensor], kind: TextEncoderKind = "sd1") -> dict[str, Tensor]:
    """A transformers CLIP text encoder state dict in the original layout.

    ``"sd1"``: ``cond_stage_model.transformer.text_model.<hf key>`` (always with ``text_model.``,
    which ``from_single_file`` uses to detect the encoder). ``"sd2"``: OpenCLIP's
    ``cond_stage_model.model.*`` with fused ``in_proj`` q/k/v. (diffusers drops an OpenCLIP
    ``resblocks.23`` on load, as SD 2.x uses the penultimate layer; SD 2.x encoders in diffusers
    form have 23 layers, 0-22, so nothing is lost.)
    """
    hf = {_hf_text_key(k): v for k, v in state_dict.items()}
    if kind == "sd1":
        return {SD1_TEXT_PREFIX + k: v for k, v in hf.items()}
    if kind != "sd2":
        raise ErasureError(f"unknown text encoder kind {kind!r}; use 'sd1' or 'sd2'")
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in hf.items():
        key = key.removeprefix("text_model.")
        if key == "embeddings.position_ids":
            continue
        if key in _OPENCLIP_TOP:
            out[_OPENCLIP_TOP[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()  # OpenCLIP multiplies x @ proj
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            if m[2] not in _OPENCLIP_LAYER:
                raise ErasureError(f"cannot map text encoder key {key!r} to the OpenCLIP layout")
            out[f"transformer.resblocks.{m[1]}.{_OPENCLIP_LAYER[m[2]]}.{m[3]}"] = value
        else:
            raise ErasureError(f"cannot map text encoder key {key!r} to the OpenCLIP layout")
    for (layer, param), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ErasureError(f"text encoder layer {layer} lacks one of q/k/v {param}; cannot fuse it to in_proj")
        out[f"transformer.resblocks.{layer}.attn.in_proj_{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return {SD2_TEXT_PREFIX + k: v for k, v in out.items()}


def text_encoder_ldm_location(key: str, kind: TextEncoderKind = "sd1") -> tuple[str, slice | None, bool]:
    """Where one text-encoder parameter lives in the original layout: (key, rows, transposed).

    ``rows`` is the slice of a fused OpenCLIP ``in_proj`` (SD 2.x q/k/v), ``transposed`` is set for
    SD 2.x's ``text_projection``; both are what :func:`text_encoder_to_ldm` does to the whole dict.
    """
    hf = _hf_text_key(key)
    if kind == "sd1":
        return SD1_TEXT_PREFIX + hf, None, False
    if kind != "sd2":
        raise ErasureError(f"unknown text encoder kind {kind!r}; use 'sd1' or 'sd2'")
    bare = hf.removeprefix("text_model.")
    if bare in _OPENCLIP_TOP:
        return SD2_TEXT_PREFIX + _OPENCLIP_TOP[bare], None, False
    if bare == "text_projection.weight":
        return SD2_TEXT_PREFIX + "text_projection", None, True
    if m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", bare):
        return f"{SD2_TEXT_PREFIX}transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", slice(None), False
    if (m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", bare)) and m[2] in _OPENCLIP_LAYER:
        return f"{SD2_TEXT_PREFIX}transformer.resblocks.{m[1]}.{_OPENCLIP_LAYER[m[2]]}.{m[3]}", None, False
    raise ErasureError(f"cannot map text encoder key {key!r} to the OpenCLIP layout")


def ldm_location(pipe, name: str) -> tuple[str, slice | None, bool]:
    """Where the pipeline parameter ``name`` (``unet.<key>`` or ``text_encoder.<key>``) lives in an
    original-layout single file: (key, rows of a fused tensor or None, stored transposed).

    What patching a user's own checkpoint with an edit needs; consistent with :func:`pipeline_to_ldm_state_dict`.
    """
    component, _, key = name.partition(".")
    if component == "unet":
        layers, up_attn = _unet_layout({}, pipe.unet.config)
        return unet_ldm_key(key, layers, up_attn), None, False
    if component == "text_encoder":
        kind = detect_text_encoder_kind(pipe.text_encoder)
        location, rows, transposed = text_encoder_ldm_location(key, kind)
        if rows is not None:  # q, k, v are stacked in that order in OpenCLIP's in_proj
            width = pipe.text_encoder.config.hidden_size
            part = "qkv".index(re.search(r"([qkv])_proj\.", key)[1])
            rows = slice(part * width, (part + 1) * width)
        return location, rows, transposed
    raise ErasureError(f"{name} is not a UNet or text encoder parameter; only those have a single-file location")


def kohya_lora_name(module: str) -> str:
    """A LoRA's module name in the kohya layout that AUTOMATIC1111 and ComfyUI read.

    ``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k`` ->
    ``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k``; text-encoder modules
    always carry ``text_model`` (``lora_te_text_model_encoder_layers_0_self_attn_k_proj``), as kohya's
    scripts write them whatever transformers version is installed.
    """
    component, _, path = module.partition(".")
    if component == "unet":
        return "lora_unet_" + path.replace(".", "_")
    if component == "text_encoder":
        return "lora_te_" + _hf_text_key(path + ".").rstrip(".").replace(".", "_")
    raise ErasureError(f"{module} is not a UNet or text encoder module; kohya LoRAs hold only those")


# --- whole pipelines --------------------------------------------------------------------------


def pipeline_to_ldm_state_dict(pipe, text_encoder_kind: TextEncoderKind | None = None) -> dict[str, Tensor]:
    """UNet + VAE + text encoder of a Stable Diffusion pipeline as one original-layout state dict.

    The text-encoder layout defaults to :func:`detect_text_encoder_kind` of the pipeline's encoder.
    """
    kind = text_encoder_kind or detect_text_encoder_kind(pipe.text_encoder)
    state = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    state.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    state.update(text_encoder_to_ldm(pipe.text_encoder.state_dict(), kind))
    return state


def save_single_file(
    pipe,
    path: str | os.PathLike,
    *,
    text_encoder_kind: TextEncoderKind | None = None,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write the pipeline as one original-layout ``.safetensors`` (atomically: temp file, then rename).

    Load it back with ``from_single_file(path, config=<save_config_folder output>)``.
    ``dtype`` casts floating tensors (e.g. ``torch.float16`` for a half-size file).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ErasureError(f"single-file export must end in .safetensors (got {path.name})")
    tensors = {}
    for key, value in pipeline_to_ldm_state_dict(pipe, text_encoder_kind).items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_config_folder(pipe, folder: str | os.PathLike) -> Path:
    """Write the configs-only diffusers folder (no weights) that a single-file checkpoint loads with.

    ``model_index.json``, the UNet/VAE/text-encoder configs, the scheduler (with its
    ``prediction_type``) and the tokenizer, including ``vocab.json``/``merges.txt`` so that
    transformers 4.x can read it too. The safety checker is left out, as in the checkpoint.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_config(folder)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["safety_checker"] = [None, None]
    index["requires_safety_checker"] = False
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    pipe.unet.save_config(folder / "unet")
    pipe.vae.save_config(folder / "vae")
    pipe.text_encoder.config.save_pretrained(folder / "text_encoder")
    pipe.scheduler.save_pretrained(folder / "scheduler")
    pipe.tokenizer.save_pretrained(folder / "tokenizer")
    _write_bpe_files(pipe.tokenizer, folder / "tokenizer")
    if getattr(pipe, "feature_extractor", None) is not None:
        pipe.feature_extractor.save_pretrained(folder / "feature_extractor")
    return folder


def _write_bpe_files(tokenizer, folder: Path) -> None:
    """transformers 5 saves only ``tokenizer.json``; add the ``vocab.json``/``merges.txt`` pair from it."""
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


# --- parameter groups that fine-tuning methods train --------------------------------------

PARAMETER_GROUPS: tuple[str, ...] = ("esd-x", "esd-x-strict", "esd-u", "esd-u-original", "esd-u-all", "full")
_LINEAR_OR_CONV = ("Linear", "Conv2d", "LoRACompatibleLinear", "LoRACompatibleConv")


def parameter_group(unet: nn.Module, group: str) -> dict[str, nn.Parameter]:
    """The UNet parameters a fine-tuning erasure trains, by ESD's group names.

    - ``esd-x``: every parameter of the cross-attention modules (``attn2``: to_q, to_k, to_v, to_out); the
      current script's esd-x (Linear/Conv2d modules with ``attn2`` in their name) is the same set on SD;
    - ``esd-x-strict``: only the cross-attention key/value projections;
    - ``esd-u``: the current script's set exactly: the weights and biases of every Linear / Conv2d module
      outside cross-attention (``get_esd_trainable_parameters`` in esd_sd.py, rohitgandikota/erasing 25613d2),
      so no norm layer; conv_in, conv_out and the time embedding are in;
    - ``esd-u-original``: the original code's ``noxattn`` (train-scripts/train-esd.py, b8aeab6): every parameter
      except cross-attention, the time embedding and the output head (LDM ``out.``: conv_norm_out, conv_out);
      norms and conv_in are in;
    - ``esd-u-all``: every parameter outside cross-attention (this toolkit's esd-u before it followed the script);
    - ``full``: every parameter.
    """
    if group not in PARAMETER_GROUPS:
        raise ErasureError(f"unknown parameter group {group!r}; choose one of {', '.join(PARAMETER_GROUPS)}")
    attn2 = tuple(f"{name}." for name in cross_attention_layers(unet))
    kv = tuple(f"{name}." for name in cross_attention_kv(unet))
    linear_or_conv = {f"{name}.{p}" for name, m in unet.named_modules()
                      if type(_unwrapped(m)).__name__ in _LINEAR_OR_CONV and ".lora_" not in name
                      for p, _ in m.named_parameters(recurse=False)}
    original_excluded = ("time_embedding.", "conv_norm_out.", "conv_out.")
    out = {}
    for name, param in unet.named_parameters():
        in_attn2 = name.startswith(attn2)
        keep = {"esd-x": in_attn2, "esd-x-strict": name.startswith(kv),
                "esd-u": not in_attn2 and name in linear_or_conv,
                "esd-u-original": not in_attn2 and not name.startswith(original_excluded),
                "esd-u-all": not in_attn2, "full": True}[group]
        if keep:
            out[name] = param
    return out


# --- adapter targets (LoRA / SPM / MACE) ------------------------------------------------------

ADAPTER_TARGETS: dict[str, str] = {
    "attn2-kv": "cross-attention key/value projections (ESD-x-strict, MACE)",
    "attn2": "every projection of cross-attention: to_q, to_k, to_v, to_out.0 (ESD-x)",
    "transformer-linear": "every Linear and 1x1 Conv2d inside every transformer block (SPM)",
}


def _unwrapped(module: nn.Module) -> nn.Module:
    """The layer itself, also when peft has wrapped it (``<name>.base_layer``)."""
    return getattr(module, "base_layer", module)


def adapter_target_modules(unet: nn.Module, pattern: str) -> list[str]:
    """Names of the UNet layers an adapter of ``pattern`` (one of :data:`ADAPTER_TARGETS`) wraps.

    Names are plain diffusers module paths (``down_blocks.0.attentions.0.proj_in``), also while peft
    wrappers are attached; the order is the UNet's.
    """
    if pattern not in ADAPTER_TARGETS:
        raise ErasureError(f"unknown adapter target pattern {pattern!r}; choose one of {', '.join(ADAPTER_TARGETS)}")
    if pattern == "attn2-kv":
        return list(cross_attention_kv(unet))
    if pattern == "attn2":
        out = []
        for name in cross_attention_layers(unet):
            out += [f"{name}.to_q", f"{name}.to_k", f"{name}.to_v", f"{name}.to_out.0"]
        return out
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    blocks = [f"{n}." for n, m in unet.named_modules() if isinstance(m, Transformer2DModel)]
    out = []
    for name, module in unet.named_modules():
        if not name.startswith(tuple(blocks)) or ".base_layer" in name or ".lora_" in name:
            continue
        layer = _unwrapped(module)
        if isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1)):
            out.append(name)
    return out


def target_layer(unet: nn.Module, name: str) -> nn.Module:
    """The (unwrapped) layer ``name`` of ``unet``; ErasureError if the UNet has none."""
    try:
        return _unwrapped(unet.get_submodule(name))
    except AttributeError:
        raise ErasureError(f"the UNet has no module {name}; this adapter was made for a model of another "
                           "topology") from None
