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

Everything is built in a temporary folder and renamed into place; every file is re-read and checked
against what was meant to be written before the rename; nothing is overwritten without ``force``.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from erasure.edit import Edit, pipeline_parameter, tensor_sha256
from erasure.errors import ErasureError

FORMATS: tuple[str, ...] = ("diffusers", "single-file", "lora", "kohya", "edit")
NEEDS_EDIT = ("lora", "kohya", "edit")
LORA_FILE = "pytorch_lora_weights.safetensors"


def _is_adapter(edit) -> bool:
    return edit is not None and hasattr(edit, "peft_state_dict") and hasattr(edit, "lora_config")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _metadata(edit, pipe) -> dict[str, str]:
    from erasure.versions import package_versions

    meta = {"erasure_export": "1", "versions": json.dumps(package_versions()),
            "base_model": str(getattr(pipe, "erasure_source", None))}
    if edit is not None:
        meta.update({"method": edit.method, "concepts": json.dumps(list(edit.concepts)),
                     "config": json.dumps(dict(edit.config), default=str),
                     "base_hashes": json.dumps(dict(getattr(edit, "base_hashes", {}) or {}))})
    return meta


@contextmanager
def _applied(pipe, edit) -> Iterator[None]:
    """The pipeline with the edit's values in place (dense), restored afterwards even on error."""
    if edit is None:
        yield
        return
    dense = edit.to_edit(pipe) if _is_adapter(edit) else edit
    originals = {n: pipeline_parameter(pipe, n).detach().clone() for n in dense.tensors}
    dense.apply(pipe)
    try:
        yield
    finally:
        with torch.no_grad():
            for n, v in originals.items():
                pipeline_parameter(pipe, n).copy_(v)


# --- dense formats ---------------------------------------------------------------------------


def write_diffusers(pipe, folder: Path) -> Path:
    """``save_pretrained`` in safetensors, then the cross-version fixes (see module docstring)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from erasure.modules import _write_bpe_files

    pipe.save_pretrained(folder, safe_serialization=True)
    te_file = folder / "text_encoder" / "model.safetensors"
    if te_file.is_file():
        with safe_open(str(te_file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if any(not (k.startswith("text_model.") or k.startswith("text_projection.")) for k in tensors):
            tensors = {(k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k): v
                       for k, v in tensors.items()}
            save_file(tensors, str(te_file), metadata={"format": "pt", **meta})
    _write_bpe_files(pipe.tokenizer, folder / "tokenizer")
    return folder


def _unet_ldm_keys(pipe, names: Sequence[str]) -> dict[str, str]:
    from erasure.modules import _unet_layout, unet_ldm_key

    layers, up_with_attention = _unet_layout(pipe.unet.state_dict(), pipe.unet.config)
    out = {}
    for name in names:
        if not name.startswith("unet."):
            raise ErasureError(f"patching a base single file supports UNet edits only; {name} is not in the UNet "
                               "(export without --base-single-file to convert the whole model)")
        out[name] = unet_ldm_key(name[len("unet."):], layers, up_with_attention)
    return out


def write_single_file(pipe, path: Path, config_folder: Path, *, dense: Edit | None, base_single_file,
                      metadata: Mapping[str, str]) -> Path:
    """The original-layout checkpoint (+ configs folder); with a base file, a patched copy of it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from erasure.modules import save_config_folder, save_single_file

    save_config_folder(pipe, config_folder)
    if base_single_file is None:
        return save_single_file(pipe, path, metadata=dict(metadata))
    base = Path(base_single_file)
    if not base.is_file():
        raise ErasureError(f"base single file {base} not found; give the .safetensors the model was loaded from")
    try:
        with safe_open(str(base), framework="pt") as f:
            base_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise ErasureError(f"base single file {base} is not a readable safetensors file ({type(e).__name__})") from None
    if dense is not None:
        for name, key in _unet_ldm_keys(pipe, list(dense.tensors)).items():
            if key not in tensors:
                raise ErasureError(f"base single file {base} has no tensor {key} (for {name}); "
                                   "is it the checkpoint this model was loaded from?")
            old = tensors[key]
            original = dense.originals[name] if dense.originals is not None else None
            if original is not None and not torch.equal(old, original.to("cpu", old.dtype).reshape(old.shape)):
                raise ErasureError(f"base single file {base} differs from the loaded model at {key}; "
                                   "pass the checkpoint the model (and the edit) came from")
            tensors[key] = dense.tensors[name].detach().to("cpu", old.dtype).reshape(old.shape).contiguous()
    save_file(tensors, str(path), metadata={**base_meta, **metadata})
    return path


# --- LoRA formats ------------------------------------------------------------------------------


def _module(name: str) -> tuple[str, str]:
    """``unet.<module>.weight`` -> (``<module>``, ``weight``)."""
    if not name.startswith("unet."):
        raise ErasureError(f"LoRA export covers UNet edits; {name} is not a UNet parameter "
                           "(export it as diffusers, single-file or edit)")
    module, _, param = name[len("unet."):].rpartition(".")
    return module, param


def dense_to_lora(pipe, edit: Edit, rank: int | None = None, rtol: float = 1e-6):
    """(peft state dict, LoraConfig dict, info) for a dense edit: exact SVD factors, padded to one rank.

    Every module gets the same rank r (the largest any change needs, or ``rank``) with zero padding, and
    lora_alpha = r (scale 1), so any loader's alpha/r convention gives the same weights. Bias changes go to
    ``lora_B.bias`` (peft's ``lora_bias``). Parameters a LoRA cannot hold (norms, convolutions) are refused.
    """
    originals = {n: pipeline_parameter(pipe, n).detach().clone() for n in edit.tensors}
    weights, biases = {}, {}
    for name, new in edit.tensors.items():
        module, param = _module(name)
        if param == "weight" and new.dim() == 2:
            weights[name] = module
        elif param == "bias" and new.dim() == 1:
            biases[module] = (new.double() - originals[name].to(new.device).double()).float()
        else:
            raise ErasureError(f"{name} ({tuple(new.shape)}) cannot be held by a LoRA on linear layers; "
                               "export this edit as diffusers, single-file or edit instead")
    dense_weights = Edit(method=edit.method, concepts=edit.concepts, config=edit.config,
                         tensors={n: edit.tensors[n] for n in weights},
                         base_hashes={n: edit.base_hashes[n] for n in weights}, originals=None)
    factors = dense_weights.low_rank(rank, originals={n: originals[n] for n in weights}, rtol=rtol)
    r = max([f[1].shape[0] for f in factors.values()] or [1])
    state: dict[str, Tensor] = {}
    error = 0.0
    modules = sorted(set(weights.values()) | set(biases))
    for module in modules:
        wname = f"unet.{module}.weight"
        lin = pipeline_parameter(pipe, wname)
        out_f, in_f = lin.shape
        up = torch.zeros(out_f, r)
        down = torch.zeros(r, in_f)
        if wname in factors:
            u, d = factors[wname]
            up[:, : u.shape[1]], down[: d.shape[0]] = u.cpu(), d.cpu()
            delta = (edit.tensors[wname].double().cpu() - originals[wname].double().cpu())
            error = max(error, float((up.double() @ down.double() - delta).abs().max()))
        state[f"{module}.lora_A.weight"] = down.contiguous()
        state[f"{module}.lora_B.weight"] = up.contiguous()
        if biases:
            state[f"{module}.lora_B.bias"] = biases.get(module, torch.zeros(out_f)).cpu().contiguous()
    config = {"r": r, "lora_alpha": r, "target_modules": modules, "lora_bias": bool(biases)}
    return state, config, {"rank": r, "max_abs_error": error, "exact": rank is None}


def _lora_of(pipe, edit, rank):
    if _is_adapter(edit):
        return dict(edit.peft_state_dict), dict(edit.lora_config), {"rank": edit.lora_config.get("r"), "exact": True}
    return dense_to_lora(pipe, edit, rank)


def write_peft_lora(folder: Path, state: Mapping[str, Tensor], config: Mapping[str, Any],
                    metadata: Mapping[str, str]) -> Path:
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open
    from safetensors.torch import save_file

    layers = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, unet_lora_adapter_metadata=dict(config))
    file = folder / LORA_FILE
    with safe_open(str(file), framework="pt") as f:  # add our metadata next to diffusers' own
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(file), metadata={**meta, **metadata})
    return file


def _module_alpha(config: Mapping[str, Any], module: str, rank: int) -> float:
    """The alpha peft uses for ``module`` (alpha_pattern / rank_pattern aware)."""
    def pick(pattern, default):
        for key, value in (pattern or {}).items():
            if re.fullmatch(f"(.*\\.)?{key}", module):
                return value
        return default

    alpha = pick(config.get("alpha_pattern"), config.get("lora_alpha", rank))
    if config.get("use_rslora"):
        return float(alpha) * rank / rank ** 0.5  # kohya's alpha/r must equal peft's alpha/sqrt(r)
    return float(alpha)


def write_kohya(path: Path, state: Mapping[str, Tensor], config: Mapping[str, Any],
                metadata: Mapping[str, str]) -> Path:
    """kohya keys (``lora_unet_<module>.lora_down/lora_up/alpha``) with each module's true alpha."""
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {}
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in state})
    for module in modules:
        down, up = state[f"{module}.lora_A.weight"], state[f"{module}.lora_B.weight"]
        if f"{module}.lora_B.bias" in state and state[f"{module}.lora_B.bias"].abs().max() > 0:
            raise ErasureError(f"the edit changes the bias of {module}, which the kohya layout cannot hold; "
                               "export it as lora (peft), diffusers, single-file or edit")
        name = "lora_unet_" + module.replace(".", "_")
        tensors[f"{name}.lora_down.weight"] = down.detach().cpu().contiguous()
        tensors[f"{name}.lora_up.weight"] = up.detach().cpu().contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(_module_alpha(config, module, down.shape[0]))
    meta = {**metadata, "ss_network_module": "networks.lora", "ss_network_dim": str(config.get("r")),
            "ss_network_alpha": str(config.get("lora_alpha"))}
    save_file(tensors, str(path), metadata=meta)
    return path


# --- model card --------------------------------------------------------------------------------


def _report_metrics(report) -> dict[str, dict]:
    if report is None:
        return {}
    if hasattr(report, "metrics") and not isinstance(report, dict):
        return {k: {"value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high} for k, v in report.metrics.items()}
    metrics = report.get("metrics", {}) if isinstance(report, dict) else {}
    return {k: v for k, v in metrics.items() if isinstance(v, dict) and "value" in v}


def model_card(edit, pipe, files: Mapping[str, Path], report, lora_info: Mapping[str, Any] | None) -> str:
    what = ", ".join(edit.concepts) if edit is not None else "nothing (the model as loaded)"
    lines = [f"# Erased model: {what}", "",
             f"- base model: `{getattr(pipe, 'erasure_source', None)}`"]
    if edit is not None:
        lines += [f"- method: `{edit.method}`", f"- concepts erased: {', '.join(f'`{c}`' for c in edit.concepts)}",
                  f"- config: `{json.dumps(dict(edit.config), default=str)}`"]
    if lora_info:
        lines.append(f"- LoRA rank {lora_info.get('rank')}"
                     + (f", max abs difference from the dense edit {lora_info['max_abs_error']:.2e}"
                        if "max_abs_error" in lora_info else ""))
    metrics = _report_metrics(report)
    if metrics:
        lines += ["", "## How well (erasure's evaluator)", "", "| metric | value | 95% CI |", "|---|---|---|"]
        for k, v in metrics.items():
            lines.append(f"| {k} | {v['value']:.3f} | [{v.get('ci_low', float('nan')):.3f}, "
                         f"{v.get('ci_high', float('nan')):.3f}] |")
    lines += ["", "## Loading", ""]
    snippets = {
        "diffusers": 'from diffusers import StableDiffusionPipeline\n'
                     'pipe = StableDiffusionPipeline.from_pretrained("diffusers")',
        "single-file": 'from diffusers import StableDiffusionPipeline\n'
                       'pipe = StableDiffusionPipeline.from_single_file("model.safetensors", config="model-config", '
                       'local_files_only=True)\n# AUTOMATIC1111 / ComfyUI: put model.safetensors in models/Stable-diffusion',
        "lora": 'pipe = StableDiffusionPipeline.from_pretrained("<the base model>")\npipe.load_lora_weights("lora")',
        "kohya": "# AUTOMATIC1111 / ComfyUI: put lora-kohya.safetensors in models/Lora and load it at weight 1\n"
                 'pipe.load_lora_weights("lora-kohya.safetensors")  # diffusers reads it too',
        "edit": 'from erasure import Edit, load_pipeline\npipe = load_pipeline("<the base model>")\n'
                'Edit.load("edit.safetensors").apply(pipe)',
    }
    for fmt in files:
        lines += [f"**{fmt}** (`{files[fmt].name}`)", "", "```python", snippets[fmt], "```", ""]
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
) -> dict[str, Path]:
    """Write ``edit`` (an :class:`~erasure.edit.Edit` or an adapter) on base ``pipe`` in ``formats`` to ``out``.

    Returns {format: path}. With ``edit=None`` the pipeline is exported as it is (diffusers, single-file).
    """
    from erasure.files import atomic_folder

    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ErasureError(f"unknown export format(s) {unknown}; choose from {', '.join(FORMATS)}")
    if edit is None and any(f in NEEDS_EDIT for f in formats):
        raise ErasureError(f"formats {', '.join(f for f in formats if f in NEEDS_EDIT)} need an edit; pass edit= "
                           "(--edit FILE from `erasure erase`) or export only diffusers / single-file")
    if lora_rank is not None and lora_rank < 1:
        raise ErasureError(f"lora rank must be >= 1 (got {lora_rank})")
    if any(".base_layer." in k or ".lora_" in k for k in pipe.unet.state_dict()):
        raise ErasureError("the pipeline has LoRA layers attached; call pipe.unload_lora_weights() (after "
                           "pipe.fuse_lora() to keep their effect) before exporting")
    if edit is not None:
        edit.check_base(pipe)
    meta = _metadata(edit, pipe)
    dense = None
    if edit is not None and any(f in ("diffusers", "single-file", "edit") for f in formats):
        dense = edit.to_edit(pipe) if _is_adapter(edit) else edit
        if dense.originals is None:
            dense = Edit(method=dense.method, concepts=dense.concepts, config=dense.config, tensors=dense.tensors,
                         base_hashes=dense.base_hashes, info=dense.info,
                         originals={n: pipeline_parameter(pipe, n).detach().clone() for n in dense.tensors})
    written: dict[str, Path] = {}
    lora_info = None
    with atomic_folder(out, force=force) as tmp:
        rel: dict[str, Path] = {}
        with _applied(pipe, dense if any(f in ("diffusers", "single-file") for f in formats) else None):
            if "diffusers" in formats:
                rel["diffusers"] = write_diffusers(pipe, tmp / "diffusers").relative_to(tmp)
            if "single-file" in formats:
                rel["single-file"] = write_single_file(pipe, tmp / "model.safetensors", tmp / "model-config",
                                                       dense=dense, base_single_file=base_single_file,
                                                       metadata=meta).relative_to(tmp)
        if "lora" in formats or "kohya" in formats:
            state, config, lora_info = _lora_of(pipe, edit, lora_rank)
            lora_meta = {**meta, "lora_rank": str(lora_info.get("rank")),
                         "lora_max_abs_error": str(lora_info.get("max_abs_error", 0.0))}
            if "lora" in formats:
                write_peft_lora(tmp / "lora", state, config, lora_meta)
                rel["lora"] = Path("lora")
            if "kohya" in formats:
                rel["kohya"] = write_kohya(tmp / "lora-kohya.safetensors", state, config, lora_meta).relative_to(tmp)
        if "edit" in formats:
            rel["edit"] = dense.save(tmp / "edit.safetensors").relative_to(tmp)
        (tmp / "README.md").write_text(model_card(edit, pipe, rel, report, lora_info))
        files = {str(p.relative_to(tmp)): _sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        _verify_safetensors(tmp)
        from erasure.versions import package_versions

        (tmp / "export.json").write_text(json.dumps(
            {"formats": {k: str(v) for k, v in rel.items()}, "files": files, "versions": package_versions(),
             "metadata": meta, "lora": lora_info}, indent=1, default=str))
        written = {k: Path(out) / v for k, v in rel.items()}
    _verify_hashes(Path(out))
    return written


def _verify_safetensors(folder: Path) -> None:
    """Every safetensors file we wrote opens and reads back."""
    from safetensors import safe_open

    for path in folder.rglob("*.safetensors"):
        try:
            with safe_open(str(path), framework="pt") as f:
                for k in f.keys():
                    f.get_tensor(k)
        except Exception as e:  # noqa: BLE001
            raise ErasureError(f"export wrote an unreadable file {path.name} ({type(e).__name__}); nothing was kept") from None


def _verify_hashes(folder: Path) -> None:
    record = json.loads((folder / "export.json").read_text())
    for name, digest in record["files"].items():
        if _sha256_file(folder / name) != digest:
            raise ErasureError(f"{folder / name} changed after writing (sha256 mismatch); export again")


__all__ = ["FORMATS", "dense_to_lora", "export", "model_card", "write_diffusers", "write_kohya", "write_peft_lora",
           "write_single_file"]
