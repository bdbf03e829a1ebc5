"""Export an erased model in the forms Stable Diffusion users load.

    export(pipe, "outputs/export-circle", edit=edit)   # pipe: the base model the edit was made on

writes one folder:

- ``diffusers/``: ``StableDiffusionPipeline.from_pretrained`` folder, readable by transformers 4.x and 5.x
  (text encoder keys keep ``text_model.``; the tokenizer has ``vocab.json``/``merges.txt``);
- ``model.safetensors`` + ``model-config/``: one original-layout (LDM) checkpoint for AUTOMATIC1111 and
  ComfyUI, and the configs-only folder that makes ``from_single_file(path, config=folder)`` work offline;
  with ``base_single_file``, a copy of the user's own checkpoint with only the edited tensors replaced;
- ``lora/pytorch_lora_weights.safetensors``: peft/diffusers layout for ``pipe.load_lora_weights``;
  dense edits are factored exactly by SVD at the rank they need (closed-form edits are low-rank);
- ``lora-kohya.safetensors``: kohya layout (A1111, ComfyUI) with the true alpha;
- ``edit.safetensors``: only the changed tensors (``erasure.edit.Edit``);
- ``README.md`` (model card) and ``export.json`` (files, sha256, versions).

``edit`` is an :class:`~erasure.edit.Edit` or an adapter: any object with ``peft_state_dict`` (keys as
``get_peft_model_state_dict(unet)`` gives them), ``lora_config`` (a ``LoraConfig.to_dict()``-like dict),
``method``, ``concepts``, ``config``, ``info`` and ``to_edit(pipe)`` (its fused dense change, for the
dense formats); the LoRA formats then use the adapter's own factors.

Everything is built in a temporary folder and renamed into place; every file is hashed when written and
re-read and re-hashed before the rename; nothing is overwritten without ``force``; the pipeline is left
as it was, also on error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from erasure.edit import Edit, pipeline_parameter, tensor_sha256
from erasure.errors import ErasureError
from erasure.files import file_sha256

FORMATS: tuple[str, ...] = ("diffusers", "single-file", "lora", "kohya", "edit")
NEEDS_EDIT = ("lora", "kohya", "edit")
DENSE = ("diffusers", "single-file", "edit")
LORA_FILE = "pytorch_lora_weights.safetensors"
COMPONENTS = ("unet", "text_encoder")  # what LoRA files hold, in diffusers' prefixes

# {component: peft state dict (keys without the component prefix)}, {component: LoraConfig dict}
LoraLayers = dict[str, dict[str, Tensor]]
LoraConfigs = dict[str, dict[str, Any]]


def is_adapter(edit) -> bool:
    """Whether ``edit`` follows the adapter contract (see the module docstring) rather than being an Edit."""
    return edit is not None and hasattr(edit, "peft_state_dict") and hasattr(edit, "lora_config")


def base_model_hashes(pipe) -> dict[str, str]:
    """sha256 of the UNet's and the text encoder's weights, as the evaluator records them in its reports."""
    from erasure.embeddings import text_encoder_fingerprint as weights_fingerprint

    return {"unet": weights_fingerprint(pipe.unet), "text_encoder": weights_fingerprint(pipe.text_encoder)}


def _metadata(edit, pipe, base_hashes: Mapping[str, str]) -> dict[str, str]:
    """What every safetensors file we write carries (safetensors metadata values must be strings)."""
    from erasure.versions import package_versions

    meta = {"erasure_export": "1", "versions": json.dumps(package_versions()),
            "base_model": str(getattr(pipe, "erasure_source", "unknown")),
            "base_model_sha256": json.dumps(dict(base_hashes))}
    if edit is not None:
        meta.update({"method": str(edit.method), "concepts": json.dumps(list(edit.concepts)),
                     "config": json.dumps(dict(edit.config), default=str)})
        if getattr(edit, "base_hashes", None):
            meta["base_hashes"] = json.dumps(dict(edit.base_hashes))
    return meta


def _dense(pipe, edit) -> Edit:
    """The edit as new dense values, with the originals it replaces (read from ``pipe`` when missing)."""
    if is_adapter(edit):
        if not callable(getattr(edit, "to_edit", None)):
            raise ErasureError("this adapter has no to_edit(pipe), which the diffusers, single-file and edit "
                               "formats need; export it as lora or kohya only")
        edit = edit.to_edit(pipe)
    if edit.originals is not None:
        return edit
    return Edit(method=edit.method, concepts=edit.concepts, config=edit.config, tensors=edit.tensors,
                base_hashes=edit.base_hashes, info=edit.info,
                originals={n: pipeline_parameter(pipe, n).detach().clone() for n in edit.tensors})


@contextmanager
def _applied(pipe, dense: Edit | None) -> Iterator[None]:
    """The pipeline with the edit's values in place, restored afterwards even on error."""
    if dense is None:
        yield
        return
    originals = {n: pipeline_parameter(pipe, n).detach().clone() for n in dense.tensors}
    try:
        dense.apply(pipe)
        yield
    finally:
        with torch.no_grad():
            for n, v in originals.items():
                pipeline_parameter(pipe, n).copy_(v)


def add_safetensors_metadata(path: Path, metadata: Mapping[str, str]) -> Path:
    """Merge ``metadata`` into a safetensors file's header without loading its tensors.

    The header is JSON after an 8-byte length; tensor offsets count from the end of the header, so a new
    header (padded to 8 bytes, as safetensors does) followed by the unchanged data bytes is a valid file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.meta-tmp")
    with open(path, "rb") as src:
        (size,) = struct.unpack("<Q", src.read(8))
        header = json.loads(src.read(size))
        header["__metadata__"] = {**(header.get("__metadata__") or {}), **{k: str(v) for k, v in metadata.items()}}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        try:
            with open(tmp, "wb") as dst:
                dst.write(struct.pack("<Q", len(raw)))
                dst.write(raw)
                shutil.copyfileobj(src, dst, 1 << 24)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, path)
    return path


# --- dense formats ---------------------------------------------------------------------------


def write_diffusers(pipe, folder: Path, metadata: Mapping[str, str] | None = None) -> Path:
    """``save_pretrained`` in safetensors, then the cross-version fixes (see module docstring) and our
    metadata in every weights file."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from erasure.modules import _write_bpe_files

    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    te_file = folder / "text_encoder" / "model.safetensors"
    if te_file.is_file():
        with safe_open(str(te_file), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            if any(not k.startswith(("text_model.", "text_projection.")) for k in keys):
                # transformers 5 writes unprefixed keys, which transformers 4 loads as a random encoder
                tensors = {(k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k):
                           f.get_tensor(k) for k in keys}
            else:
                tensors = None
        if tensors is not None:
            save_file(tensors, str(te_file), metadata={"format": "pt", **meta})
    _write_bpe_files(pipe.tokenizer, folder / "tokenizer")
    if metadata:
        for path in sorted(folder.rglob("*.safetensors")):
            add_safetensors_metadata(path, metadata)
    return folder


def _check_base_tensor(dense: Edit, name: str, key: str, old: Tensor, base: Path) -> None:
    """The base file must hold the weights the edit was made from (its hash, or its exact values)."""
    if tensor_sha256(old) == dense.base_hashes.get(name):
        return
    original = dense.originals[name] if dense.originals is not None else None
    if original is not None and old.shape == original.shape and torch.equal(old.to(original.dtype), original.cpu()):
        return  # same weights in another storage dtype (e.g. an fp32 file loaded as fp16)
    raise ErasureError(f"base single file {base} differs from the weights the edit was made from at {key}; "
                       "pass the checkpoint the model (and the edit) came from")


def write_single_file(pipe, path: Path, config_folder: Path, *, dense: Edit | None, base_single_file=None,
                      metadata: Mapping[str, str] | None = None) -> Path:
    """The original-layout checkpoint (+ configs folder); with a base file, a patched copy of it.

    Without ``base_single_file`` the (edited) pipeline is converted whole; with it, only the edited
    tensors are mapped to their LDM keys (:func:`erasure.modules.ldm_location`) and replaced, after
    checking that the base file holds the values the edit replaced.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    from erasure.modules import ldm_location, save_config_folder, save_single_file

    save_config_folder(pipe, config_folder)
    if base_single_file is None:
        return save_single_file(pipe, path, metadata=dict(metadata or {}))
    base = Path(base_single_file)
    if not base.is_file():
        raise ErasureError(f"base single file {base} not found; give the .safetensors the model was loaded from")
    try:
        with safe_open(str(base), framework="pt") as f:
            base_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ErasureError(f"base single file {base} is not a readable safetensors file ({type(e).__name__})") from None
    for name, value in (dense.tensors.items() if dense is not None else ()):
        key, rows, transposed = ldm_location(pipe, name)
        if key not in tensors:
            raise ErasureError(f"base single file {base} has no tensor {key} (for {name}); "
                               "is it the checkpoint this model was loaded from?")
        stored = tensors[key]
        view = stored.T if transposed else stored
        view = view[rows] if rows is not None else view
        old = view.reshape(value.shape) if view.numel() == value.numel() else view
        if old.shape != value.shape:
            raise ErasureError(f"base single file {base} has {key} of shape {tuple(view.shape)}, the edit "
                               f"{tuple(value.shape)}; is it the checkpoint this model was loaded from?")
        _check_base_tensor(dense, name, key, old, base)
        patched = stored.clone()
        target = patched.T if transposed else patched
        target = target[rows] if rows is not None else target
        target.copy_(value.detach().to("cpu", stored.dtype).reshape(target.shape))
        tensors[key] = patched.contiguous()
    save_file(tensors, str(path), metadata={**base_meta, **(metadata or {})})
    return path


# --- LoRA formats ------------------------------------------------------------------------------


def _split(name: str) -> tuple[str, str, str]:
    """``unet.<module>.weight`` -> (``unet``, ``<module>``, ``weight``)."""
    component, _, rest = name.partition(".")
    module, _, param = rest.rpartition(".")
    if component not in COMPONENTS:
        raise ErasureError(f"LoRA files hold UNet and text encoder layers; {name} is neither "
                           "(export this edit as diffusers, single-file or edit)")
    return component, module, param


def _lora_module_name(component: str, module: str) -> str:
    """Text-encoder LoRA modules are keyed with ``text_model.`` (what transformers 4 names them and what
    diffusers strips for transformers 5) and targeted by the bare path, which peft suffix-matches in both."""
    if component == "text_encoder" and not module.startswith("text_model."):
        return "text_model." + module
    return module


def _lora_unsupported(name: str, shape: tuple[int, ...]) -> str | None:
    """Why parameter ``name`` (of ``shape``) cannot be part of a LoRA export, or None if it can: a LoRA holds
    UNet / text-encoder weights of linear layers and 1x1 convolutions (and, beside it, bias values)."""
    component, _, rest = name.partition(".")
    param = rest.rpartition(".")[2]
    if component not in COMPONENTS:
        return f"{name} is in neither the UNet nor the text encoder"
    if param == "weight" and (len(shape) == 2 or (len(shape) == 4 and tuple(shape[2:]) == (1, 1))):
        return None
    if param == "bias" and len(shape) == 1:
        return None
    return f"{name} {tuple(shape)} is not a linear or 1x1-convolution weight (a LoRA factors only those)"


def lora_bias_values(pipe, edit: Edit) -> dict[str, dict[str, Tensor]]:
    """The edit's changed biases as {component: {name in ``pipe.<component>.state_dict()``: new value}}.

    A LoRA cannot carry them everywhere (peft's ``lora_bias`` puts a bias on every target module, so
    ``fuse_lora()`` refuses the bias-less to_q / to_k / to_v, and diffusers 0.31 cannot load it), so they are
    written beside the LoRA as a partial state dict, which ``pipe.unet.load_state_dict(..., strict=False)``
    reads in every diffusers version."""
    out: dict[str, dict[str, Tensor]] = {}
    for name, new in edit.tensors.items():
        component, module, param = _split(name)
        if param == "bias":
            out.setdefault(component, {})[f"{module}.bias"] = new.detach().to("cpu", torch.float32).contiguous()
    return out


def dense_to_lora(pipe, edit: Edit, rank: int | None = None, rtol: float = 1e-6
                  ) -> tuple[LoraLayers, LoraConfigs, dict[str, Any]]:
    """A dense edit's weight changes as LoRA layers: exact SVD factors (:meth:`Edit.low_rank`), padded to one rank.

    Every module gets the same rank r (the largest any change needs, or ``rank``), the unused columns
    zero, and lora_alpha = r (scale 1). One rank instead of peft's ``rank_pattern``: kohya files have no
    rank pattern, every loader (diffusers, A1111, ComfyUI) reads one rank and one alpha per module the
    same way, and the padding costs only zeros (closed-form edits need about the same rank everywhere).
    With ``rank`` below the rank a change needs, the truncation error is returned in ``info``.
    Weights of linear layers and 1x1 convolutions are factored; bias changes are not LoRA layers (see
    :func:`lora_bias_values`; ``info["bias_modules"]`` counts them). Other parameters (norms, larger
    convolutions) cannot be a LoRA: refused.
    """
    weights: dict[str, tuple[str, str, tuple[int, ...]]] = {}
    dense = _dense(pipe, edit)
    originals = dict(dense.originals)
    n_biases = 0
    for name, new in edit.tensors.items():
        reason = _lora_unsupported(name, tuple(new.shape))
        if reason is not None:
            raise ErasureError(f"{reason}; export this edit as diffusers, single-file or edit instead")
        component, module, param = _split(name)
        if param == "weight":
            weights[name] = (component, module, tuple(new.shape))
        else:
            n_biases += 1
    flat = Edit(method=dense.method, concepts=dense.concepts, config=dense.config,
                tensors={n: dense.tensors[n].reshape(s[0], -1) for n, (_, _, s) in weights.items()},
                base_hashes={n: dense.base_hashes[n] for n in weights},
                originals={n: originals[n].reshape(s[0], -1) for n, (_, _, s) in weights.items()})
    factors = flat.low_rank(None, rtol=rtol)
    needed = max([d.shape[0] for _, d in factors.values()] or [1])
    if rank is not None and rank < needed:
        factors = flat.low_rank(rank)
    r = rank if rank is not None else needed
    deltas = flat.deltas()
    layers: LoraLayers = {}
    error = 0.0
    modules = sorted({(c, m) for c, m, _ in weights.values()})
    for component, module in modules:
        wname = f"{component}.{module}.weight"
        shape = tuple(pipeline_parameter(pipe, wname).shape)
        out_f, in_f = shape[0], int(torch.tensor(shape[1:]).prod())
        up, down = torch.zeros(out_f, r), torch.zeros(r, in_f)
        if wname in factors:
            u, d = factors[wname]
            up[:, : u.shape[1]], down[: d.shape[0]] = u.cpu(), d.cpu()
            error = max(error, float((up.double() @ down.double() - deltas[wname].cpu()).abs().max()))
        if len(shape) == 4:  # 1x1 convolution: peft's conv LoRA has (r, in, 1, 1) and (out, r, 1, 1)
            down, up = down.reshape(r, in_f, 1, 1), up.reshape(out_f, r, 1, 1)
        key = _lora_module_name(component, module)
        state = layers.setdefault(component, {})
        state[f"{key}.lora_A.weight"] = down.contiguous()
        state[f"{key}.lora_B.weight"] = up.contiguous()
    configs: LoraConfigs = {}
    for component in layers:
        targets = sorted({m for c, m in modules if c == component})
        configs[component] = {"r": r, "lora_alpha": r, "target_modules": targets}
    info = {"rank": r, "rank_needed": needed, "max_abs_error": error, "exact": rank is None or rank >= needed,
            "bias_modules": n_biases}
    return layers, configs, info


def adapter_lora(adapter) -> tuple[LoraLayers, LoraConfigs, dict[str, Any]]:
    """An adapter's own factors and config (no SVD): its ``peft_state_dict`` holds UNet layers."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in adapter.peft_state_dict.items()}
    config = dict(adapter.lora_config)
    ranks = sorted({int(v.shape[0]) for k, v in state.items() if k.endswith(".lora_A.weight")})
    return {"unet": state}, {"unet": config}, {"rank": config.get("r"), "ranks": ranks, "exact": True,
                                               "max_abs_error": 0.0}


def write_peft_lora(folder: Path, layers: LoraLayers, configs: LoraConfigs,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """``pytorch_lora_weights.safetensors`` for ``pipe.load_lora_weights(folder)``, with each component's
    LoraConfig in diffusers' ``lora_adapter_metadata`` (so lora_alpha and rank patterns survive)."""
    from diffusers import StableDiffusionPipeline

    kwargs: dict[str, Any] = {}
    for component in COMPONENTS:
        if component in layers:
            kwargs[f"{component}_lora_layers"] = {k: v.detach().to("cpu").contiguous() for k, v in layers[component].items()}
            kwargs[f"{component}_lora_adapter_metadata"] = dict(configs[component])
    StableDiffusionPipeline.save_lora_weights(folder, **kwargs)
    file = Path(folder) / LORA_FILE
    if metadata:
        add_safetensors_metadata(file, metadata)
    return file


def _module_alpha(config: Mapping[str, Any], module: str, rank: int) -> float:
    """The alpha that gives kohya loaders (scale = alpha / rank) peft's scale for ``module``
    (``alpha_pattern`` and ``use_rslora`` aware)."""
    def pick(pattern, default):
        for key, value in (pattern or {}).items():
            if re.fullmatch(f"(.*\\.)?{key}", module):
                return value
        return default

    alpha = float(pick(config.get("alpha_pattern"), config.get("lora_alpha", rank)))
    if config.get("use_rslora"):
        return alpha * rank / rank ** 0.5  # peft scales by alpha / sqrt(r)
    return alpha


def write_kohya(path: Path, layers: LoraLayers, configs: LoraConfigs,
                metadata: Mapping[str, str] | None = None) -> Path:
    """kohya keys (``lora_unet_<module>`` / ``lora_te_text_model_<module>``: ``.lora_down.weight``,
    ``.lora_up.weight``, ``.alpha``) with the true alpha: kohya loaders scale by alpha / rank.

    diffusers' ``convert_state_dict_to_kohya`` writes alpha = rank, wrong whenever lora_alpha != r. Where
    modules need different alphas (``alpha_pattern``, ``use_rslora`` with a ``rank_pattern``), every module
    gets the most common one and the others' ``lora_up`` absorbs the ratio: A1111 and ComfyUI read any
    per-module alpha, but diffusers 0.42 misnames the alpha pattern it builds from a kohya file and
    silently drops it, so one alpha is the layout every loader reads the same way.
    """
    from collections import Counter

    from safetensors.torch import save_file

    from erasure.modules import kohya_lora_name

    entries = []
    for component, state in layers.items():
        for module in sorted({k.rsplit(".lora_", 1)[0] for k in state}):
            down, up = state[f"{module}.lora_A.weight"], state[f"{module}.lora_B.weight"]
            bias = state.get(f"{module}.lora_B.bias")
            if bias is not None and bias.abs().max() > 0:
                raise ErasureError(f"the edit changes the bias of {module}, which the kohya layout cannot hold; "
                                   "export it as lora (peft), diffusers, single-file or edit")
            alpha = _module_alpha(configs[component], module, down.shape[0])
            entries.append((kohya_lora_name(f"{component}.{module}"), down, up, alpha))
    common = Counter(alpha for *_, alpha in entries).most_common(1)[0][0] if entries else 1.0
    tensors: dict[str, Tensor] = {}
    for name, down, up, alpha in entries:
        up = up.detach().cpu()
        if alpha != common:
            up = (up.double() * (alpha / common)).to(up.dtype)
        tensors[f"{name}.lora_down.weight"] = down.detach().cpu().contiguous()
        tensors[f"{name}.lora_up.weight"] = up.contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(common)
    unet_config = configs.get("unet") or next(iter(configs.values()), {})
    meta = {**(metadata or {}), "ss_network_module": "networks.lora", "ss_network_dim": str(unet_config.get("r")),
            "ss_network_alpha": str(common)}
    save_file(tensors, str(path), metadata=meta)
    return path


# --- model card --------------------------------------------------------------------------------


def report_metrics(report) -> dict[str, dict[str, float]]:
    """{metric: {value, ci_low?, ci_high?}} from a Report, its ``to_dict()``, or a plain {metric: number}."""
    if report is None:
        return {}
    if hasattr(report, "metrics") and not isinstance(report, Mapping):
        return {k: {"value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high} for k, v in report.metrics.items()}
    if not isinstance(report, Mapping):
        raise ErasureError(f"report must be an evaluation Report or a dict of metrics, not {type(report).__name__}")
    metrics = report.get("metrics", report)
    out = {}
    for name, value in metrics.items():
        if isinstance(value, Mapping) and "value" in value:
            out[name] = {k: float(value[k]) for k in ("value", "ci_low", "ci_high") if value.get(k) is not None}
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = {"value": float(value)}
    return out


_SNIPPETS = {
    "diffusers": 'from diffusers import StableDiffusionPipeline\n'
                 'pipe = StableDiffusionPipeline.from_pretrained("diffusers")',
    "single-file": 'from diffusers import StableDiffusionPipeline\n'
                   'pipe = StableDiffusionPipeline.from_single_file("model.safetensors", config="model-config", '
                   'local_files_only=True)\n# AUTOMATIC1111 / ComfyUI: put model.safetensors in models/Stable-diffusion',
    # weight_name: diffusers 0.31 guesses the file name through the Hub, which fails with HF_HUB_OFFLINE=1
    "lora": 'pipe = StableDiffusionPipeline.from_pretrained("<the base model>")\n'
            f'pipe.load_lora_weights("lora", weight_name="{LORA_FILE}")  # weight_name: needed offline\n'
            'pipe.fuse_lora()  # optional: bake it in (pipe.unload_lora_weights() afterwards frees the layers)',
    "kohya": "# AUTOMATIC1111 / ComfyUI: put lora-kohya.safetensors in models/Lora and use it at weight 1\n"
             'pipe.load_lora_weights(".", weight_name="lora-kohya.safetensors")  # diffusers reads UNet LoRAs in '
             'this layout too',
    "edit": 'from erasure import Edit, load_pipeline\npipe = load_pipeline("<the base model>")\n'
            'Edit.load("edit.safetensors").apply(pipe)',
}
LORA_BIAS_SNIPPET = (
    "# the edit also changes biases, which no LoRA layout loads in every diffusers: their new values lie beside\n"
    "# the LoRA; load them first (with LoRA layers attached the names gain .base_layer). unload_lora_weights()\n"
    "# does not undo them.\n"
    "from safetensors.torch import load_file\n"
    'result = pipe.{component}.load_state_dict(load_file("{path}"), strict=False)\n'
    "assert not result.unexpected_keys  # every bias found")


def bias_file_name(component: str) -> str:
    return f"{component}_biases.safetensors"


class ExportResult(dict):
    """{format: path} of what :func:`export` wrote, with ``skipped``: {format: why it was not written}."""

    def __init__(self, written: Mapping[str, Path], skipped: Mapping[str, str]) -> None:
        super().__init__(written)
        self.skipped: dict[str, str] = dict(skipped)


def unsupported_formats(edit, formats: Sequence[str]) -> dict[str, str]:
    """{format: reason} for each of ``formats`` that cannot hold ``edit`` (an Edit or adapter)."""
    if edit is None or is_adapter(edit):
        return {}
    reasons: dict[str, str] = {}
    lora_reasons = [r for r in (_lora_unsupported(n, tuple(t.shape)) for n, t in edit.tensors.items()) if r]
    biases = sorted(n for n in edit.tensors if n.endswith(".bias"))
    for fmt in formats:
        if fmt in ("lora", "kohya") and lora_reasons:
            more = f" (and {len(lora_reasons) - 1} more)" if len(lora_reasons) > 1 else ""
            reasons[fmt] = lora_reasons[0] + more
        elif fmt == "kohya" and biases:
            reasons[fmt] = (f"the edit changes {len(biases)} biases (e.g. {biases[0]}), which the kohya layout "
                            "cannot hold; the lora format writes them beside the LoRA")
    return reasons


def model_card(edit, pipe, files: Mapping[str, Path], report=None, lora_info: Mapping[str, Any] | None = None,
               base_hashes: Mapping[str, str] | None = None, skipped: Mapping[str, str] | None = None,
               bias_files: Mapping[str, Path] | None = None) -> str:
    """README.md of an export: what was erased and how, the base model, the evaluator's numbers, how to load."""
    what = ", ".join(edit.concepts) if edit is not None else "nothing (the model as loaded)"
    lines = [f"# Erased model: {what}", "", f"- base model: `{getattr(pipe, 'erasure_source', 'unknown')}`"]
    for component, digest in (base_hashes or {}).items():
        lines.append(f"- base {component} weights sha256: `{digest}`")
    if edit is not None:
        lines += [f"- method: `{edit.method}`", f"- concepts erased: {', '.join(f'`{c}`' for c in edit.concepts)}",
                  f"- config: `{json.dumps(dict(edit.config), default=str)}`"]
    if lora_info:
        line = f"- LoRA rank {lora_info.get('rank')}"
        if not lora_info.get("exact", True):
            line += (f" (the edit needs {lora_info.get('rank_needed')}; max abs weight difference from the dense "
                     f"edit {lora_info.get('max_abs_error', 0.0):.2e})")
        lines.append(line)
    metrics = report_metrics(report)
    if metrics:
        lines += ["", "## How well (erasure's evaluator)", "", "| metric | value | 95% CI |", "|---|---|---|"]
        for name, m in metrics.items():
            ci = f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]" if "ci_low" in m and "ci_high" in m else ""
            lines.append(f"| {name} | {m['value']:.3f} | {ci} |")
    lines += ["", "## Loading", ""]
    for fmt, path in files.items():
        snippet = _SNIPPETS[fmt]
        if fmt == "lora" and bias_files:
            first, rest = snippet.split("\n", 1)  # the base model, then the biases, then the LoRA
            biases = [LORA_BIAS_SNIPPET.format(component=c, path=p) for c, p in bias_files.items()]
            snippet = "\n".join([first, *biases, rest])
        lines += [f"**{fmt}** (`{path}`)", "", "```python", snippet, "```", ""]
    if skipped:
        lines += ["## Not written", ""]
        lines += [f"- **{fmt}**: {reason}" for fmt, reason in skipped.items()]
        lines.append("")
    lines.append("Written by `erasure export`; `export.json` lists every file with its sha256.")
    return "\n".join(lines) + "\n"


# --- the entry point ---------------------------------------------------------------------------


def export(
    pipe,
    out: str | Path,
    *,
    edit=None,
    formats: Sequence[str] = FORMATS,
    base_single_file: str | Path | None = None,
    lora_rank: int | None = None,
    report=None,
    force: bool = False,
) -> ExportResult:
    """Write ``edit`` (an :class:`~erasure.edit.Edit` or an adapter) made on base ``pipe`` to ``out`` in ``formats``.

    Returns {format: path}, with ``.skipped`` {format: reason} for the requested formats that cannot hold the
    edit (kohya cannot hold bias changes; no LoRA holds a norm or a 3x3 convolution): those are listed in
    ``export.json`` and the model card, the others written; if none can be, nothing is written (ErasureError).
    With ``edit=None`` the pipeline is exported as it is (diffusers, single-file).
    ``lora_rank`` forces the rank of a LoRA made from a dense edit (lower than needed: approximate, the
    error is recorded); ``report`` (an evaluation Report or a dict of metrics) goes into the model card.
    ``pipe`` is left unchanged, also on error; nothing is written unless every written format succeeds.
    """
    from erasure.files import atomic_folder, refuse_existing
    from erasure.versions import package_versions

    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ErasureError(f"unknown export format(s) {unknown}; choose from {', '.join(FORMATS)}")
    if edit is None and any(f in NEEDS_EDIT for f in formats):
        raise ErasureError(f"formats {', '.join(f for f in formats if f in NEEDS_EDIT)} need an edit; pass edit= "
                           "(an Edit or adapter; --edit FILE on the command line) or export only diffusers / single-file")
    if lora_rank is not None and (is_adapter(edit) or lora_rank < 1):
        raise ErasureError("lora_rank must be >= 1 and applies to dense edits only (an adapter keeps its own rank)")
    if base_single_file is not None and "single-file" not in formats:
        raise ErasureError("base_single_file is used by the single-file format only; add it to formats")
    skipped = unsupported_formats(edit, formats)
    if skipped and len(skipped) == len(formats):
        raise ErasureError("no requested format can hold this edit: " +
                           "; ".join(f"{f}: {r}" for f, r in skipped.items()) + "; add diffusers, single-file or edit")
    formats = tuple(f for f in formats if f not in skipped)
    refuse_existing(out, force)  # before any long work
    if any(".base_layer." in k or ".lora_" in k for k in pipe.unet.state_dict()):
        raise ErasureError("the pipeline has LoRA layers attached; call pipe.unload_lora_weights() (after "
                           "pipe.fuse_lora() to keep their effect) before exporting")
    if edit is not None and callable(getattr(edit, "check_base", None)):
        edit.check_base(pipe)
    base_hashes = base_model_hashes(pipe)
    meta = _metadata(edit, pipe, base_hashes)
    dense = _dense(pipe, edit) if edit is not None and any(f in DENSE for f in formats) else None
    lora_info = None
    bias_files: dict[str, Path] = {}
    with atomic_folder(out, force=force) as tmp:
        rel: dict[str, Path] = {}
        written: dict[str, str] = {}  # relative path -> sha256 when written

        def record(fmt: str, path: Path) -> None:
            rel[fmt] = path.relative_to(tmp)
            for p in ([path] if path.is_file() else sorted(path.rglob("*"))):
                if p.is_file():
                    written[str(p.relative_to(tmp))] = file_sha256(p)

        with _applied(pipe, dense if any(f in ("diffusers", "single-file") for f in formats) else None):
            if "diffusers" in formats:
                record("diffusers", write_diffusers(pipe, tmp / "diffusers", meta))
            if "single-file" in formats:
                record("single-file", write_single_file(pipe, tmp / "model.safetensors", tmp / "model-config",
                                                        dense=dense, base_single_file=base_single_file, metadata=meta))
                record("single-file-config", tmp / "model-config")
        if "lora" in formats or "kohya" in formats:
            layers, configs, lora_info = adapter_lora(edit) if is_adapter(edit) else dense_to_lora(pipe, edit, lora_rank)
            lora_meta = {**meta, "lora_rank": str(lora_info.get("rank")), "lora_exact": str(lora_info["exact"]),
                         "lora_max_abs_error": str(lora_info.get("max_abs_error", 0.0))}
            if "lora" in formats:
                write_peft_lora(tmp / "lora", layers, configs, lora_meta)
                if not is_adapter(edit):
                    from safetensors.torch import save_file

                    for component, values in lora_bias_values(pipe, edit).items():
                        path = tmp / "lora" / bias_file_name(component)
                        save_file(values, str(path), metadata={**lora_meta, "erasure_lora_biases": component})
                        bias_files[component] = path.relative_to(tmp)
                    lora_info = {**lora_info, "bias_files": {c: str(p) for c, p in bias_files.items()}}
                record("lora", tmp / "lora")
            if "kohya" in formats:
                record("kohya", write_kohya(tmp / "lora-kohya.safetensors", layers, configs, lora_meta))
        if "edit" in formats:
            path = dense.save(tmp / "edit.safetensors")
            add_safetensors_metadata(path, {k: v for k, v in meta.items() if k not in dense.metadata()})
            record("edit", path)
        rel.pop("single-file-config", None)
        (tmp / "README.md").write_text(model_card(edit, pipe, rel, report, lora_info, base_hashes, skipped, bias_files))
        record("card", tmp / "README.md")
        rel.pop("card")
        _verify(tmp, written)
        (tmp / "export.json").write_text(json.dumps(
            {"formats": {k: str(v) for k, v in rel.items()}, "skipped": skipped, "files": written,
             "versions": package_versions(), "metadata": meta, "lora": lora_info, "report": report_metrics(report)},
            indent=1, default=str) + "\n")
    return ExportResult({k: Path(out) / v for k, v in rel.items()}, skipped)


def _verify(folder: Path, written: Mapping[str, str]) -> None:
    """Before the rename: every file still has the sha256 it had when written, and every safetensors file
    reads back whole. Any mismatch fails the export (and the temporary folder is removed)."""
    from safetensors import safe_open

    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    if on_disk != set(written):
        raise ErasureError(f"export left unrecorded or missing files {sorted(on_disk ^ set(written))[:3]}; nothing was kept")
    for name, digest in written.items():
        path = folder / name
        if file_sha256(path) != digest:
            raise ErasureError(f"{name} changed after it was written (sha256 mismatch); nothing was kept, export again")
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt") as f:
                    for k in f.keys():
                        f.get_tensor(k)
            except Exception as e:  # noqa: BLE001
                raise ErasureError(f"export wrote an unreadable file {name} ({type(e).__name__}); nothing was kept") from None


__all__ = ["FORMATS", "ExportResult", "adapter_lora", "add_safetensors_metadata", "base_model_hashes",
           "dense_to_lora", "export", "is_adapter", "lora_bias_values", "model_card", "report_metrics",
           "unsupported_formats", "write_diffusers", "write_kohya", "write_peft_lora", "write_single_file"]
