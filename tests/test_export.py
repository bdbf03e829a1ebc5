"""Exports, checked against the ecosystem's own loaders: same-seed images equal the in-memory edited pipeline."""

import json

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
def exported(kind_pipeline, tmp_path_factory):
    pipe = kind_pipeline
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
    pipe.load_lora_weights(str(written[fmt]), adapter_name=f"t-{fmt}")
    try:
        assert np.abs(_images(pipe) - edited).max() <= TOL
    finally:
        pipe.unload_lora_weights()
    assert np.abs(_images(pipe) - base).max() == 0


def test_edit_file_metadata_and_hashes(exported):
    from erasure.edit import Edit

    pipe, edit, out, written, _, _ = exported
    loaded = Edit.load(written["edit"])
    assert loaded.method == "test" and loaded.concepts == ("red star",)
    assert all(torch.equal(loaded.tensors[k], edit.tensors[k]) for k in edit.tensors)
    record = json.loads((out / "export.json").read_text())
    assert set(record["formats"]) == {"diffusers", "single-file", "lora", "kohya", "edit"}
    assert record["lora"]["exact"] and record["lora"]["rank"] == 2 and record["lora"]["max_abs_error"] < 1e-5
    with safe_open(str(written["kohya"]), framework="pt") as f:
        meta = f.metadata()
    assert meta["method"] == "test" and json.loads(meta["concepts"]) == ["red star"] and "versions" in meta
    card = (out / "README.md").read_text()
    assert "red star" in card and "load_lora_weights" in card and "from_single_file" in card


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
    """What erasure.adapters.Adapter offers export: a LoRA trained with lora_alpha != r."""

    method, concepts, config, info = "fake", ("red star",), {}, {}

    def __init__(self, pipe, r=2, alpha=8.0):
        g = torch.Generator().manual_seed(3)
        self.peft_state_dict = {}
        for name, linear in cross_attention_kv(pipe.unet).items():
            out_f, in_f = linear.weight.shape
            self.peft_state_dict[f"{name}.lora_A.weight"] = torch.randn(r, in_f, generator=g) * 0.1
            self.peft_state_dict[f"{name}.lora_B.weight"] = torch.randn(out_f, r, generator=g) * 0.1
        self.lora_config = {"r": r, "lora_alpha": alpha, "target_modules": sorted(cross_attention_kv(pipe.unet))}

    def check_base(self, pipe):
        pass


def test_kohya_alpha_is_the_true_alpha_not_the_rank(tiny_sd1_pipeline, tmp_path):
    pipe = tiny_sd1_pipeline
    adapter = FakeAdapter(pipe, r=2, alpha=8.0)
    written = export(pipe, tmp_path / "out", edit=adapter, formats=["lora", "kohya"])
    with safe_open(str(written["kohya"]), framework="pt") as f:
        alphas = {float(f.get_tensor(k)) for k in f.keys() if k.endswith(".alpha")}
    assert alphas == {8.0}
    pipe.load_lora_weights(str(written["lora"]), adapter_name="peft")
    via_peft = _images(pipe)
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(written["kohya"]), adapter_name="kohya")
    via_kohya = _images(pipe)
    pipe.unload_lora_weights()
    assert np.abs(via_peft - _images(pipe)).max() > 1e-3  # the adapter does something
    assert np.abs(via_kohya - via_peft).max() <= TOL


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
