"""The method contract: every registered method, on the tiny SD 1.x and 2.x pipelines, in fp32, bf16 and fp16,
with its spec's ``test_settings``. A new method gets all of this by registering.

- it returns the kind its spec declares and changes only the parameters it declares;
- the pipeline is left exactly as it was (values, dtypes, requires_grad, no wrapped forward, processors);
- apply changes the model's output, restore undoes it bit for bit;
- save then :func:`erasure.results.load_result` gives an equal result that applies to the same weights;
- the same seed gives a bit-identical result;
- an edit made on an fp32 load applies to a bf16/fp16 load of the same checkpoint and is refused on another;
- a bad setting is a one-line ErasureError before any work.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from erasure import ErasureError, load_pipeline
from erasure.methods import METHODS, erase
from erasure.methods.spec import config_fields
from erasure.precision import module_state
from erasure.results import load_result

METHOD_NAMES = METHODS.names()
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CONCEPT = "red star"
_RESULTS: dict = {}
_PIPES: dict = {}


def _pipe(folder_of, kind: str, dtype: str):
    key = (kind, dtype)
    if key not in _PIPES:
        pipe = load_pipeline(folder_of(kind), device="cpu", dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        _PIPES[key] = pipe
    return _PIPES[key]


def _settings(name: str) -> dict:
    spec = METHODS.get(name)
    out = dict(spec.test_settings)
    if "progress" in spec.options:
        out["progress"] = False
    return out


def _result(folder_of, name: str, kind: str, dtype: str):
    key = (name, kind, dtype)
    if key not in _RESULTS:
        pipe = _pipe(folder_of, kind, dtype)
        _RESULTS[key] = erase(pipe, name, CONCEPT, **_settings(name))
    return _RESULTS[key]


def _declared(pipe, name: str) -> set[str]:
    """``unet.<param>`` names the method may change, from its spec and settings."""
    from erasure.modules import adapter_target_modules, cross_attention_kv, parameter_group

    spec = METHODS.get(name)
    settings = {**{k: spec.default(k) for k in config_fields(spec.config)}, **spec.test_settings}
    if spec.family == "closed-form":
        return {f"unet.{m}.weight" for m, mod in cross_attention_kv(pipe.unet).items()
                if settings["edit_keys"] or m.endswith("to_v")}
    if name == "mace":
        return {f"unet.{m}.weight" for m in cross_attention_kv(pipe.unet)}
    if settings.get("adapter"):
        return {f"unet.{m}.weight" for m in adapter_target_modules(pipe.unet, settings["adapter"])}
    return {f"unet.{n}" for n in parameter_group(pipe.unet, settings["group"])}


def _changed_names(result) -> set[str]:
    if result.kind == "edit":
        return set(result.tensors)
    return {f"unet.{m}.weight" for m in result.modules}


def _unet_output(pipe) -> torch.Tensor:
    from erasure.methods.esd import _encode

    torch.manual_seed(0)
    dtype = pipe.unet.dtype
    size = pipe.unet.config.sample_size
    x = torch.randn(1, pipe.unet.config.in_channels, size, size).to(dtype)
    with torch.no_grad():
        return pipe.unet(x, torch.tensor([500]), encoder_hidden_states=_encode(pipe, [CONCEPT])).sample.float()


@pytest.fixture(scope="module")
def folder_of(saved_folder):
    return saved_folder


# make test-fast: SD 1.x, without the five slowest trained methods (3-8 s each; one of each family stays fast):
# those are marked slow there and run in make test
SLOW_SD1 = ("esd", "esd-full", "esd-u", "mace", "spm")


@pytest.mark.parametrize("kind, name", [
    pytest.param("sd1", n, id=f"sd1-{n}", marks=[pytest.mark.fast, *([pytest.mark.slow] if n in SLOW_SD1 else [])])
    for n in METHOD_NAMES] + [pytest.param("sd2", n, id=f"sd2-{n}") for n in METHOD_NAMES])
def test_result_kind_changes_and_pipeline_left_alone(folder_of, name, kind):
    pipe = _pipe(folder_of, kind, "fp32")
    before_values = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    before_state = module_state(pipe.unet)
    result = _result(folder_of, name, kind, "fp32")
    spec = METHODS.get(name)
    assert result.kind == spec.result
    assert result.method == name and result.concepts == (CONCEPT,)
    assert _changed_names(result) <= _declared(pipe, name)
    assert module_state(pipe.unet) == before_state
    assert all(torch.equal(p, before_values[n]) for n, p in pipe.unet.named_parameters())


# fp16 on SD 1.x only: the CPU's fp16 kernels are slow, and SD 2.x's topology is covered in fp32 and bf16
KIND_DTYPES = [("sd1", "fp32"), ("sd1", "bf16"), ("sd1", "fp16"), ("sd2", "fp32"), ("sd2", "bf16")]


@pytest.mark.parametrize("kind, dtype", KIND_DTYPES)
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_apply_changes_output_and_restore_is_exact(folder_of, name, kind, dtype):
    pipe = _pipe(folder_of, kind, dtype)
    before_state = module_state(pipe.unet)
    result = _result(folder_of, name, kind, dtype)
    if dtype != "fp32":  # the result is in the model's dtype and the pipeline kept its own
        assert all(p.dtype == DTYPES[dtype] for p in pipe.unet.parameters())
        assert result.info.get("model_dtype", dtype) in (dtype, str(DTYPES[dtype]).removeprefix("torch."))
    params_before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    out_before = _unet_output(pipe)
    result.apply(pipe)
    try:
        out_after = _unet_output(pipe)
        assert torch.isfinite(out_after).all()
        assert not torch.equal(out_before, out_after), f"{name} changed nothing"
    finally:
        result.restore(pipe)
    assert all(torch.equal(p, params_before[n]) for n, p in pipe.unet.named_parameters())
    assert torch.equal(_unet_output(pipe), out_before)
    assert module_state(pipe.unet) == before_state


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_save_load_round_trip(folder_of, name, dtype, tmp_path):
    pipe = _pipe(folder_of, "sd1", dtype)
    result = _result(folder_of, name, "sd1", dtype)
    path = tmp_path / ("edit.safetensors" if result.kind == "edit" else "adapter")
    result.save(path)
    loaded = load_result(path)
    assert type(loaded) is type(result) and loaded == result
    assert loaded.kind == result.kind and dict(loaded.config) == dict(result.config)
    reference = _unet_output(result.apply(pipe) or pipe)
    result.restore(pipe)
    loaded.apply(pipe)
    try:
        assert torch.equal(_unet_output(pipe), reference)
    finally:
        loaded.restore(pipe) if loaded.kind == "adapter" else result.restore(pipe)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_same_seed_same_result(folder_of, name):
    pipe = _pipe(folder_of, "sd1", "fp32")
    first = _result(folder_of, name, "sd1", "fp32")
    again = erase(pipe, name, CONCEPT, **_settings(name))
    assert again == first


@pytest.mark.parametrize("half", ["bf16", "fp16"])
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_fp32_result_applies_to_a_half_load_and_not_to_another_model(folder_of, name, half):
    result = _result(folder_of, name, "sd1", "fp32")
    pipe = _pipe(folder_of, "sd1", half)
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    result.apply(pipe)  # the same checkpoint in another dtype: accepted
    result.restore(pipe)
    assert all(torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters())
    other = _pipe(folder_of, "sd1", "fp32")
    other_params = dict(other.unet.named_parameters())
    name0 = sorted(_changed_names(result))[0][len("unet."):]
    with torch.no_grad():
        saved = other_params[name0].detach().clone()
        other_params[name0].mul_(1.001)  # "another model": one weight differs slightly
    try:
        with pytest.raises(ErasureError, match="differs from the weights"):
            result.apply(other)
    finally:
        with torch.no_grad():
            other_params[name0].copy_(saved)


@pytest.mark.fast
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_bad_settings_are_one_line_errors_before_any_work(name, monkeypatch):
    spec = METHODS.get(name)
    monkeypatch.setattr(type(spec), "function", lambda self: pytest.fail("the method ran despite a bad setting"))
    fields = config_fields(spec.config)
    cases = [{"no_such_setting": 1}]
    for field_name, field in fields.items():
        meta = field.metadata
        if meta.get("minimum") is not None:
            cases.append({field_name: meta["minimum"] - 1})
        if meta.get("choices"):
            cases.append({field_name: "not-a-choice"})
        if float in meta.get("types", ()):
            cases.append({field_name: float("nan")})
    for settings in cases:
        with pytest.raises(ErasureError) as info:
            METHODS.get(name).run(None, CONCEPT, **settings)
        assert "\n" not in str(info.value) and str(info.value), settings


@pytest.mark.fast
def test_every_spec_is_complete_and_describable():
    import json

    from erasure.methods import settings as settings_module
    from erasure.modules import ADAPTER_TARGETS, PARAMETER_GROUPS

    assert settings_module.PARAMETER_GROUPS == PARAMETER_GROUPS
    assert settings_module.ADAPTER_TARGET_NAMES == tuple(ADAPTER_TARGETS)
    for name in METHOD_NAMES:
        spec = METHODS.get(name)
        d = json.loads(json.dumps(spec.describe()))
        assert d["name"] == name and d["family"] and d["paper"] and d["reference"].startswith("https://")
        assert {s["name"] for s in d["settings"]} == set(config_fields(spec.config))
        assert all(s["help"] for s in d["settings"]), name
        assert spec.function() is not None  # the implementation imports
        assert dataclasses.is_dataclass(spec.config)


@pytest.mark.fast
def test_a_non_finite_result_cannot_exist(tmp_path):
    """Made, loaded, applied or exported: an edit or adapter holding NaN is refused in one line."""
    from safetensors.torch import load_file, save_file

    from erasure.adapters import Adapter
    from erasure.edit import Edit

    with pytest.raises(ErasureError, match="non-finite"):
        Edit(method="x", concepts=("c",), config={}, tensors={"unet.w": torch.tensor([1.0, float("nan")])},
             base_hashes={"unet.w": "0"})
    with pytest.raises(ErasureError, match="non-finite"):
        Adapter(method="x", concepts=("c",), config={}, lora_config={"r": 1, "lora_alpha": 1.0},
                peft_state_dict={"m.lora_A.weight": torch.ones(1, 2), "m.lora_B.weight": torch.full((2, 1), float("inf"))},
                base_hashes={"unet.m.weight": "0"})
    good = Edit(method="x", concepts=("c",), config={}, tensors={"unet.w": torch.ones(2)}, base_hashes={"unet.w": "0"})
    path = good.save(tmp_path / "e.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["unet.w"][0] = float("nan")
    meta.pop("erasure_tensors_sha256", None)  # a NaN written by another tool: no checksum of ours to fail first
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ErasureError, match="non-finite"):
        load_result(path)


def test_concepts_the_model_cannot_read_are_refused(saved_folder, shapeworld_folder):
    shapeworld_pipeline = load_pipeline(device="cpu")  # by name: the world's profile comes with it
    with pytest.raises(ErasureError, match="'zebra' is not a word the shapeworld model was trained on"):
        erase(shapeworld_pipeline, "uce", "zebra")
    with pytest.raises(ErasureError, match="not a word"):
        erase(shapeworld_pipeline, "esd-x", "🦓", **_settings("esd-x"))
    erase(shapeworld_pipeline, "uce", "red disc")  # synonyms and the grammar's words are known
    long = " ".join(["red star"] * 60)
    with pytest.raises(ErasureError, match="tokens, over the text encoder's 77"):
        erase(_pipe(saved_folder, "sd1", "fp32"), "uce", long)


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if METHODS.get(n).resumable])
def test_interrupted_then_resumed_equals_uninterrupted(folder_of, name, tmp_path):
    """Every resumable method: stopped after 2 of 4 iterations (a time limit, a kill after the checkpoint),
    resumed from its checkpoint folder, it gives the uninterrupted result bit for bit."""
    pipe = _pipe(folder_of, "sd1", "fp32")
    settings = {**_settings(name), "iterations": 4, "checkpoint_every": 1}
    full = erase(pipe, name, CONCEPT, checkpoint_dir=tmp_path / "full", **settings)
    erase(pipe, name, CONCEPT, checkpoint_dir=tmp_path / "cut", stop_after=2, **settings)
    resumed = erase(pipe, name, CONCEPT, checkpoint_dir=tmp_path / "cut", resume=True, **settings)
    assert resumed == full
