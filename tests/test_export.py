"""Exports, checked against the ecosystem's own loaders: same-seed images equal the in-memory edited pipeline."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open

from erasure.edit import make_edit
from erasure.errors import ErasureError
from erasure.export import export
from erasure.modules import cross_attention_kv

TOL = 1e-5  # max abs pixel difference in [0, 1], fp32


def _edit(pipe, seed=0, rank=2):
    g = torch.Generator().manual_seed(seed)
    new = {}
    for name, linear in cross_attention_kv(pipe.unet).items():
        w = linear.weight
        delta = torch.randn(w.shape[0], rank, generator=g) @ torch.randn(rank, w.shape[1], generator=g)
        new[f"unet.{name}.weight"] = w.detach() + 0.05 * delta / rank
    return make_edit(pipe, "test", ["red star"], {"seed": seed}, new)


def _images(pipe):
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return pipe(["a red star", "a blue circle"], num_inference_steps=2, guidance_scale=5.0,
                    generator=torch.Generator().manual_seed(0), output_type="np").images


@pytest.fixture(scope="module")
def exported(pipeline_kind, request, tmp_path_factory):
    from conftest import PIPELINE_KINDS

    if pipeline_kind.name == "world_random" and PIPELINE_KINDS["shapeworld"].available():
        pytest.skip("same topology as shapeworld, which runs with its trained weights (keeps the file fast)")
    pipe = request.getfixturevalue("kind_pipeline")
    edit = _edit(pipe)
    out = tmp_path_factory.mktemp("export") / "out"
    written = export(pipe, out, edit=edit)
    base = _images(pipe)
    edit.apply(pipe)
    edited = _images(pipe)
    edit.restore(pipe)
    assert np.abs(edited - base).max() > 1e-3  # the edit changes the images, so equality below means something
    return pipe, edit, out, written, base, edited


def test_diffusers_folder_loads_with_plain_diffusers(exported):
    from diffusers import StableDiffusionPipeline

    pipe, _, out, written, _, edited = exported
    loaded = StableDiffusionPipeline.from_pretrained(str(written["diffusers"]))
    assert np.abs(_images(loaded) - edited).max() <= TOL
    with safe_open(str(written["diffusers"] / "text_encoder" / "model.safetensors"), framework="pt") as f:
        assert all(k.startswith(("text_model.", "text_projection.")) for k in f.keys())  # transformers 4.x reads it
    assert (written["diffusers"] / "tokenizer" / "vocab.json").is_file()
    assert (written["diffusers"] / "tokenizer" / "merges.txt").is_file()


def test_single_file_loads_with_from_single_file(exported):
    from diffusers import StableDiffusionPipeline

    _, _, out, written, _, edited = exported
    loaded = StableDiffusionPipeline.from_single_file(str(written["single-file"]), config=str(out / "model-config"),
                                                      local_files_only=True)
    assert np.abs(_images(loaded) - edited).max() <= TOL


@pytest.mark.parametrize("fmt", ["lora", "kohya"])
def test_lora_loads_with_load_lora_weights(exported, fmt):
    pipe, _, out, written, base, edited = exported
    weights = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    flags = {name: p.requires_grad for name, p in pipe.unet.named_parameters()}
    pipe.load_lora_weights(str(written[fmt]), adapter_name=f"t-{fmt}")
    try:
        assert np.abs(_images(pipe) - edited).max() <= TOL
    finally:
        pipe.unload_lora_weights()
    after = pipe.unet.state_dict()
    assert after.keys() == weights.keys() and all(torch.equal(after[k], weights[k]) for k in weights)
    # peft leaves the base weights frozen after unloading. On the SD2 topology (a Linear proj_in on a strided
    # input) PyTorch's CPU linear takes another kernel for a frozen weight, 4.6e-6 apart in pixels (measured with
    # requires_grad_(False) alone, no LoRA), so the flags are put back to compare the same computation.
    for name, p in pipe.unet.named_parameters():
        p.requires_grad_(flags[name])
    assert np.abs(_images(pipe) - base).max() == 0


def test_edit_file_metadata_and_hashes(exported):
    from erasure.edit import Edit

    pipe, edit, out, written, _, _ = exported
    loaded = Edit.load(written["edit"])
    assert loaded.method == "test" and loaded.concepts == ("red star",)
    assert all(torch.equal(loaded.tensors[k], edit.tensors[k]) for k in edit.tensors)
    record = json.loads((out / "export.json").read_text())
    assert set(record["formats"]) == {"diffusers", "single-file", "lora", "kohya", "edit"} and record["skipped"] == {}
    assert record["lora"]["exact"] and record["lora"]["rank"] == 2 and record["lora"]["max_abs_error"] < 1e-5
    with safe_open(str(written["kohya"]), framework="pt") as f:
        meta = f.metadata()
    assert meta["method"] == "test" and json.loads(meta["concepts"]) == ["red star"] and "versions" in meta
    card = (out / "README.md").read_text()
    assert "red star" in card and "load_lora_weights" in card and "from_single_file" in card
    for path in out.rglob("*.safetensors"):  # every weights file says what it is and where it came from
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        assert meta["method"] == "test" and "versions" in meta, path
        assert json.loads(meta["base_model_sha256"]).keys() == {"unet", "text_encoder"}, path
    assert set(record["files"]) == {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"export.json"}
    assert all(len(digest) == 64 for digest in record["files"].values())


def test_overwrite_needs_force_and_failures_leave_nothing(tiny_sd1_pipeline, tmp_path, monkeypatch):
    pipe = tiny_sd1_pipeline
    edit = _edit(pipe, seed=1)
    out = tmp_path / "out"
    export(pipe, out, edit=edit, formats=["edit"])
    with pytest.raises(ErasureError, match="already exists"):
        export(pipe, out, edit=edit, formats=["edit"])
    export(pipe, out, edit=edit, formats=["edit", "kohya"], force=True)
    assert (out / "lora-kohya.safetensors").is_file()

    import importlib

    module = importlib.import_module("erasure.export")  # erasure.export is also the function

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, "write_kohya", broken)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="disk full"):
        export(pipe, fresh, edit=edit, formats=["diffusers", "kohya"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no half-written folder, no temp folder
    assert pipeline_unchanged(pipe, edit)


def pipeline_unchanged(pipe, edit) -> bool:
    from erasure.edit import pipeline_parameter

    return all(torch.equal(pipeline_parameter(pipe, n), edit.originals[n]) for n in edit.tensors)


class FakeAdapter:
    """Only the adapter contract export relies on (no check_base, no erasure base class): a LoRA on the
    cross-attention k/v with lora_alpha != r, and (to_v) its own rank and alpha via rank/alpha patterns."""

    method, concepts, config, info = "fake", ("red star",), {"steps": 1}, {}

    def __init__(self, pipe, r=2, alpha=8.0, v_rank=3, v_alpha=1.5):
        g = torch.Generator().manual_seed(3)
        self.peft_state_dict = {}
        for name, linear in cross_attention_kv(pipe.unet).items():
            out_f, in_f = linear.weight.shape
            rank = v_rank if name.endswith("to_v") else r
            self.peft_state_dict[f"{name}.lora_A.weight"] = torch.randn(rank, in_f, generator=g) * 0.1
            self.peft_state_dict[f"{name}.lora_B.weight"] = torch.randn(out_f, rank, generator=g) * 0.1
        self.lora_config = {"r": r, "lora_alpha": alpha, "target_modules": sorted(cross_attention_kv(pipe.unet)),
                            "rank_pattern": {"attn2.to_v": v_rank}, "alpha_pattern": {"attn2.to_v": v_alpha}}

    def to_edit(self, pipe):
        new = {}
        for name, linear in cross_attention_kv(pipe.unet).items():
            a, b = self.peft_state_dict[f"{name}.lora_A.weight"], self.peft_state_dict[f"{name}.lora_B.weight"]
            r, alpha = (3, 1.5) if name.endswith("to_v") else (self.lora_config["r"], self.lora_config["lora_alpha"])
            new[f"unet.{name}.weight"] = linear.weight.detach() + (alpha / r) * (b @ a)
        return make_edit(pipe, self.method, self.concepts, self.config, new)


def test_adapter_exports_with_its_own_factors_and_true_alphas(tiny_sd1_pipeline, tmp_path):
    pipe = tiny_sd1_pipeline
    adapter = FakeAdapter(pipe)
    written = export(pipe, tmp_path / "out", edit=adapter, formats=["lora", "kohya", "diffusers"])
    from erasure.modules import kohya_lora_name

    with safe_open(str(written["kohya"]), framework="pt") as f:
        kohya = {k: f.get_tensor(k) for k in f.keys()}
    # one alpha for all (the most common true alpha, 8, not diffusers' alpha = rank); to_v's lora_up absorbs
    # its own alpha: alpha / rank * up @ down is peft's alpha / r * B @ A for every module
    assert {float(v) for k, v in kohya.items() if k.endswith(".alpha")} == {8.0}
    for module in cross_attention_kv(pipe.unet):
        name = kohya_lora_name(f"unet.{module}")
        down, up, alpha = kohya[f"{name}.lora_down.weight"], kohya[f"{name}.lora_up.weight"], kohya[f"{name}.alpha"]
        a, b = adapter.peft_state_dict[f"{module}.lora_A.weight"], adapter.peft_state_dict[f"{module}.lora_B.weight"]
        scale = 1.5 / 3 if module.endswith("to_v") else 8.0 / 2
        assert down.shape[0] == a.shape[0]
        assert torch.allclose(float(alpha) / down.shape[0] * up @ down, scale * b @ a, atol=1e-6)
    with safe_open(str(written["lora"] / "pytorch_lora_weights.safetensors"), framework="pt") as f:
        config = json.loads(f.metadata()["lora_adapter_metadata"])
    assert config["unet.lora_alpha"] == 8.0 and config["unet.alpha_pattern"] == {"attn2.to_v": 1.5}
    pipe.load_lora_weights(str(written["lora"]), adapter_name="peft")
    via_peft = _images(pipe)
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(written["kohya"]), adapter_name="kohya")
    via_kohya = _images(pipe)
    pipe.unload_lora_weights()
    assert np.abs(via_peft - _images(pipe)).max() > 1e-3  # the adapter does something
    assert np.abs(via_kohya - via_peft).max() <= TOL
    # the dense form (adapter.to_edit) in a diffusers folder gives the same images as the LoRA
    from diffusers import StableDiffusionPipeline

    dense = StableDiffusionPipeline.from_pretrained(str(written["diffusers"]))
    assert np.abs(_images(dense) - via_peft).max() <= TOL
    with pytest.raises(ErasureError, match="dense edits only"):
        export(pipe, tmp_path / "x", edit=adapter, formats=["lora"], lora_rank=1)


def _text_encoder_edit(pipe, seed=7, rank=2):
    """A random low-rank change of every q/k/v projection of the text encoder (SD2: fused in_proj rows)."""
    g = torch.Generator().manual_seed(seed)
    new = {}
    for name, param in pipe.text_encoder.named_parameters():
        if re.search(r"self_attn\.[qkv]_proj\.weight$", name):
            delta = torch.randn(param.shape[0], rank, generator=g) @ torch.randn(rank, param.shape[1], generator=g)
            new[f"text_encoder.{name}"] = param.detach() + 0.2 * delta / rank
    return make_edit(pipe, "test-te", ["red star"], {}, new)


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_text_encoder_edits(kind, built_pipeline, tmp_path):
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers

    from erasure.modules import kohya_lora_name

    pipe = built_pipeline(kind)
    edit = _text_encoder_edit(pipe)  # (patching a base single file with it: test_patching_the_users_base_single_file)
    written = export(pipe, tmp_path / "out", edit=edit, formats=["diffusers", "single-file", "lora", "kohya"])
    base = _images(pipe)
    edit.apply(pipe)
    edited = _images(pipe)
    edit.restore(pipe)
    assert np.abs(edited - base).max() > 1e-3
    from_folder = StableDiffusionPipeline.from_pretrained(str(written["diffusers"]))
    assert np.abs(_images(from_folder) - edited).max() <= TOL
    patched = StableDiffusionPipeline.from_single_file(str(written["single-file"]),
                                                       config=str(tmp_path / "out" / "model-config"),
                                                       local_files_only=True)
    assert np.abs(_images(patched) - edited).max() <= TOL
    with safe_open(str(written["lora"] / "pytorch_lora_weights.safetensors"), framework="pt") as f:
        assert all(k.startswith("text_encoder.text_model.encoder.layers.") for k in f.keys())
    pipe.load_lora_weights(str(written["lora"]), adapter_name="te")
    try:
        assert np.abs(_images(pipe) - edited).max() <= TOL
    finally:
        pipe.unload_lora_weights()
    # diffusers 0.42 cannot load a kohya text-encoder LoRA on q/k/v only ("Could not automatically infer
    # state dict type": it detects the old layout by to_out_lora), so the kohya file is checked directly:
    # diffusers' converter finds every module, and up @ down * alpha / rank is the edit's change.
    with safe_open(str(written["kohya"]), framework="pt") as f:
        kohya = {k: f.get_tensor(k) for k in f.keys()}
    converted, alphas = _convert_non_diffusers_lora_to_diffusers(dict(kohya))
    assert len(converted) == 2 * len(edit.tensors) and len(alphas) == len(edit.tensors)
    for name, delta in edit.deltas().items():
        lora = kohya_lora_name(name.rsplit(".", 1)[0])
        down, up = kohya[f"{lora}.lora_down.weight"].double(), kohya[f"{lora}.lora_up.weight"].double()
        fused = up @ down * float(kohya[f"{lora}.alpha"]) / down.shape[0]
        assert (fused - delta.cpu()).abs().max() < 1e-5


def test_forced_lora_rank_records_its_error(tiny_sd1_pipeline, tmp_path):
    pipe = tiny_sd1_pipeline
    edit = _edit(pipe, seed=4, rank=2)
    lower = export(pipe, tmp_path / "low", edit=edit, formats=["lora"], lora_rank=1)
    record = json.loads((tmp_path / "low" / "export.json").read_text())["lora"]
    assert record["rank"] == 1 and record["rank_needed"] == 2 and not record["exact"] and record["max_abs_error"] > 1e-4
    with safe_open(str(lower["lora"] / "pytorch_lora_weights.safetensors"), framework="pt") as f:
        assert f.metadata()["lora_exact"] == "False" and float(f.metadata()["lora_max_abs_error"]) > 1e-4
        assert {f.get_tensor(k).shape[0] for k in f.keys() if "lora_A" in k} == {1}
    assert "the edit needs 2" in (tmp_path / "low" / "README.md").read_text()
    export(pipe, tmp_path / "high", edit=edit, formats=["lora"], lora_rank=4)  # padded with zeros: still exact
    record = json.loads((tmp_path / "high" / "export.json").read_text())["lora"]
    assert record["rank"] == 4 and record["exact"] and record["max_abs_error"] < 1e-5


def _with_text_encoder_edit(pipe, edit, seed=4):
    """``edit`` plus a change of the first text-encoder layer's q_proj (SD 2.x fuses it into in_proj)."""
    from erasure.edit import pipeline_parameter

    name = next(f"text_encoder.{n}" for n, _ in pipe.text_encoder.named_parameters()
                if n.endswith("layers.0.self_attn.q_proj.weight"))
    w = pipeline_parameter(pipe, name).detach()
    g = torch.Generator().manual_seed(seed)
    return make_edit(pipe, "test", ["red star"], {}, {**edit.tensors, name: w + 0.2 * torch.randn(w.shape, generator=g)})


@pytest.mark.parametrize("model", ["shapeworld", "tiny_sd2"])
def test_patching_the_users_base_single_file(model, request, tmp_path):
    """The world (and a tiny SD 2.x) exported as one file, then that file patched with a UNet + text encoder edit."""
    from diffusers import StableDiffusionPipeline

    pipe = request.getfixturevalue(f"{model}_pipeline")
    base_files = export(pipe, tmp_path / "base", formats=["single-file"])
    edit = _with_text_encoder_edit(pipe, _edit(pipe, seed=2))
    written = export(pipe, tmp_path / "patched", edit=edit, formats=["single-file"],
                     base_single_file=base_files["single-file"])
    base = _images(pipe)
    edit.apply(pipe)
    edited = _images(pipe)
    edit.restore(pipe)
    assert np.abs(edited - base).max() > 1e-3
    assert pipeline_unchanged(pipe, edit)
    loaded = StableDiffusionPipeline.from_single_file(str(written["single-file"]),
                                                      config=str(tmp_path / "patched" / "model-config"),
                                                      local_files_only=True)
    assert np.abs(_images(loaded) - edited).max() <= TOL
    # only the edited tensors differ from the base file
    with safe_open(str(base_files["single-file"]), framework="pt") as f0, \
            safe_open(str(written["single-file"]), framework="pt") as f1:
        assert set(f0.keys()) == set(f1.keys())
        changed = {k for k in f0.keys() if not torch.equal(f0.get_tensor(k), f1.get_tensor(k))}
    assert len(changed) == len(edit.tensors)


def test_wrong_or_incomplete_base_single_file_is_refused(tiny_sd1_pipeline, tmp_path):
    from safetensors.torch import load_file, save_file

    pipe = tiny_sd1_pipeline
    base_file = export(pipe, tmp_path / "base", formats=["single-file"])["single-file"]
    edit = _with_text_encoder_edit(pipe, _edit(pipe, seed=2))
    # a checkpoint of another model is refused, and nothing is written
    other = _edit(pipe, seed=5)
    other.apply(pipe)
    try:
        wrong = export(pipe, tmp_path / "other", formats=["single-file"])["single-file"]
    finally:
        other.restore(pipe)
    with pytest.raises(ErasureError, match="differs from the weights the edit was made from"):
        export(pipe, tmp_path / "bad", edit=edit, formats=["single-file"], base_single_file=wrong)
    assert not (tmp_path / "bad").exists()
    # a checkpoint lacking an edited tensor is refused
    tensors = load_file(str(base_file))
    te_key = next(k for k in tensors if k.endswith("layers.0.self_attn.q_proj.weight"))
    del tensors[te_key]
    save_file(tensors, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ErasureError, match="has no tensor"):
        export(pipe, tmp_path / "bad", edit=edit, formats=["single-file"], base_single_file=tmp_path / "partial.safetensors")
    with pytest.raises(ErasureError, match="not found"):
        export(pipe, tmp_path / "bad", edit=edit, formats=["single-file"], base_single_file=tmp_path / "none.safetensors")
    assert not (tmp_path / "bad").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "other", "partial.safetensors"]
    assert pipeline_unchanged(pipe, edit)


def test_model_card_shows_the_evaluators_metrics(tiny_sd1_pipeline, tmp_path):
    from erasure.evaluation.bootstrap import MetricResult
    from erasure.evaluation.evaluate import Report

    pipe = tiny_sd1_pipeline
    edit = _edit(pipe, seed=6)
    as_dict = {"metrics": {"concept_accuracy": {"value": 0.125, "ci_low": 0.05, "ci_high": 0.25}}}
    export(pipe, tmp_path / "a", edit=edit, formats=["edit"], report=as_dict)
    card = (tmp_path / "a" / "README.md").read_text()
    assert "concept_accuracy" in card and "0.125" in card and "[0.050, 0.250]" in card
    report = Report(metrics={"clip_score": MetricResult("clip_score", 0.3125, 0.25, 0.375, 10)}, info={})
    export(pipe, tmp_path / "b", edit=edit, formats=["edit"], report=report)
    card = (tmp_path / "b" / "README.md").read_text()
    assert "clip_score" in card and "0.312" in card and "Edit.load" in card and "`test`" in card
    export(pipe, tmp_path / "c", edit=edit, formats=["edit"], report={"clip_score": 0.31})  # plain {metric: value}
    assert "| clip_score | 0.310 |" in (tmp_path / "c" / "README.md").read_text()
    assert json.loads((tmp_path / "c" / "export.json").read_text())["report"] == {"clip_score": {"value": 0.31}}


def test_attached_lora_layers_are_refused(tiny_sd1_pipeline, tmp_path):
    pipe = tiny_sd1_pipeline
    written = export(pipe, tmp_path / "lora", edit=_edit(pipe), formats=["lora"])
    pipe.load_lora_weights(str(written["lora"]), adapter_name="attached")
    try:
        with pytest.raises(ErasureError, match="unload_lora_weights"):
            export(pipe, tmp_path / "x", formats=["diffusers"])
    finally:
        pipe.unload_lora_weights()
    assert not (tmp_path / "x").exists()


def test_bad_requests_are_one_line_errors(tiny_sd1_pipeline, shapeworld_pipeline, tmp_path):
    with pytest.raises(ErasureError, match="need an edit"):
        export(tiny_sd1_pipeline, tmp_path / "a", formats=["lora"])
    with pytest.raises(ErasureError, match="unknown export format"):
        export(tiny_sd1_pipeline, tmp_path / "b", formats=["onnx"])
    edit = _edit(tiny_sd1_pipeline)
    with pytest.raises(ErasureError):  # an edit made on another model
        export(shapeworld_pipeline, tmp_path / "c", edit=edit, formats=["edit"])
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- ESD edits (bias changes)


@pytest.fixture(scope="module")
def esd_export(tmp_path_factory):
    """An esd-x edit (to_q/k/v/out weights and to_out biases) of a fresh tiny SD 1.x, exported in every format."""
    from pathlib import Path

    from conftest import build_tiny_sd1

    from erasure.methods import erase

    pipe = build_tiny_sd1(tmp_path_factory.mktemp("esd-tokenizer"))
    edit = erase(pipe, "esd-x", ["circle"], iterations=2, batch_size=1, ddim_steps=4, progress=False)
    out = tmp_path_factory.mktemp("esd-export") / "out"
    written = export(pipe, out, edit=edit)
    base = _images(pipe)
    edit.apply(pipe)
    edited = _images(pipe)
    edit.restore(pipe)
    assert np.abs(edited - base).max() > 1e-3
    assert any(n.endswith(".bias") for n in edit.tensors) and any(n.endswith("to_q.weight") for n in edit.tensors)
    return pipe, edit, Path(out), written, base, edited


def _snippet(card: str, fmt: str) -> str:
    """The python block the model card shows for ``fmt``, less its first line (the base model's loading)."""
    block = card.split(f"**{fmt}**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    return block.split("\n", 1)[1]


def test_esd_export_writes_every_format_that_holds_it(esd_export):
    pipe, edit, out, written, _, edited = esd_export
    assert set(written) == {"diffusers", "single-file", "lora", "edit"}
    assert set(written.skipped) == {"kohya"} and "bias" in written.skipped["kohya"]
    record = json.loads((out / "export.json").read_text())
    assert record["skipped"] == written.skipped and set(record["formats"]) == set(written)
    assert "## Not written" in (out / "README.md").read_text() and "kohya" in (out / "README.md").read_text()
    assert not (out / "lora-kohya.safetensors").exists()
    from diffusers import StableDiffusionPipeline

    assert np.abs(_images(StableDiffusionPipeline.from_pretrained(str(written["diffusers"]))) - edited).max() <= TOL
    single = StableDiffusionPipeline.from_single_file(str(written["single-file"]), config=str(out / "model-config"),
                                                      local_files_only=True)
    assert np.abs(_images(single) - edited).max() <= TOL


def test_esd_lora_has_no_bias_layers_and_its_biases_lie_beside_it(esd_export):
    pipe, edit, out, written, _, _ = esd_export
    with safe_open(str(written["lora"] / "pytorch_lora_weights.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        config = json.loads(f.metadata()["lora_adapter_metadata"])
    assert keys and not any(".bias" in k for k in keys)  # no lora_bias: fusable, and loadable in diffusers 0.31
    assert not config.get("unet.lora_bias", False)
    weights = {n for n in edit.tensors if n.endswith(".weight")}
    assert len(keys) == 2 * len(weights)
    with safe_open(str(written["lora"] / "unet_biases.safetensors"), framework="pt") as f:
        biases = {k: f.get_tensor(k) for k in f.keys()}
    assert {f"unet.{k}" for k in biases} == {n for n in edit.tensors if n.endswith(".bias")}
    assert all(torch.equal(v, edit.tensors[f"unet.{k}"].float()) for k, v in biases.items())


def test_esd_lora_loads_and_fuses_as_the_model_card_says(esd_export, monkeypatch):
    """The card's own lines (biases, then load_lora_weights with weight_name, offline) give the edited images,
    attached and after fuse_lora(); without the biases they would not."""
    pipe, edit, out, written, base, edited = esd_export
    from erasure.edit import pipeline_parameter

    saved = {n: pipeline_parameter(pipe, n).detach().clone() for n in edit.tensors}
    monkeypatch.chdir(out)
    code = _snippet((out / "README.md").read_text(), "lora")
    assert 'weight_name="pytorch_lora_weights.safetensors"' in code and code.index("pipe.unet.load_state_dict(") < code.index(
        "pipe.load_lora_weights(")
    try:
        exec(code.replace("pipe.fuse_lora()", ""), {"pipe": pipe})
        assert np.abs(_images(pipe) - edited).max() <= TOL
        pipe.fuse_lora()
        pipe.unload_lora_weights()
        assert np.abs(_images(pipe) - edited).max() <= TOL
    finally:
        pipe.unload_lora_weights()
        with torch.no_grad():
            for n, v in saved.items():
                pipeline_parameter(pipe, n).copy_(v)
    assert np.abs(_images(pipe) - base).max() == 0


def test_formats_that_cannot_hold_an_edit_are_skipped_or_refused(tiny_sd1_pipeline, tmp_path):
    pipe = tiny_sd1_pipeline
    edit = _edit(pipe)
    norm = next(n for n, _ in pipe.unet.named_parameters() if n.endswith("norm1.weight"))
    from erasure.edit import pipeline_parameter

    value = pipeline_parameter(pipe, f"unet.{norm}").detach()
    with_norm = make_edit(pipe, "test", ["red star"], {}, {**edit.tensors, f"unet.{norm}": value + 0.1})
    written = export(pipe, tmp_path / "a", edit=with_norm, formats=["lora", "kohya", "edit"])
    assert set(written) == {"edit"} and set(written.skipped) == {"lora", "kohya"}
    assert "norm1.weight" in written.skipped["lora"] and "not a linear" in written.skipped["lora"]
    with pytest.raises(ErasureError, match="no requested format can hold") as info:
        export(pipe, tmp_path / "b", edit=with_norm, formats=["kohya"])
    assert "\n" not in str(info.value) and not (tmp_path / "b").exists()
