"""Loading models: every route gives back the same pipeline, and every mistake one actionable line."""

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from erasure.errors import ErasureError
from erasure.models import load_pipeline, resolve_device_dtype
from erasure.modules import save_config_folder, save_single_file

PROMPT = "a photo of a cat"


def _images(pipe, seed: int = 0) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe(PROMPT, num_inference_steps=2, generator=generator, output_type="np").images


def _assert_same_weights(a, b) -> None:
    for name in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        different = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not different, f"{name}: {different[:3]}"


def test_folder_round_trip(pipeline_kind, kind_pipeline, kind_folder):
    loaded = load_pipeline(kind_folder, device="cpu")
    assert loaded.scheduler.config.prediction_type == pipeline_kind.prediction_type
    assert loaded.safety_checker is None
    expected = _images(kind_pipeline)
    assert expected.std() > 0.01, "a constant image would make the comparison meaningless"
    assert np.abs(_images(loaded) - expected).max() <= 1e-5


def test_single_file_round_trip(pipeline_kind, kind_pipeline, tmp_path):
    from safetensors import safe_open

    path = save_single_file(kind_pipeline, tmp_path / "model.safetensors")
    config = save_config_folder(kind_pipeline, tmp_path / "config")
    assert not list(config.rglob("*.safetensors")), "the config folder must not carry weights"
    assert {"vocab.json", "merges.txt"} <= {p.name for p in (config / "tokenizer").iterdir()}
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    text_key = {
        "sd1": "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
        "sd2": "cond_stage_model.model.token_embedding.weight",
    }[pipeline_kind.text_encoder_kind]
    assert text_key in keys
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for k in keys)

    loaded = load_pipeline(path, config=config, device="cpu")
    _assert_same_weights(kind_pipeline, loaded)
    assert loaded.scheduler.config.prediction_type == pipeline_kind.prediction_type
    assert loaded.tokenizer.pad_token == kind_pipeline.tokenizer.pad_token
    assert np.abs(_images(loaded) - _images(kind_pipeline)).max() <= 1e-5


def test_sd2_keeps_v_prediction_and_bang_padding(tiny_sd2_folder, tmp_path):
    loaded = load_pipeline(tiny_sd2_folder, device="cpu")
    assert loaded.scheduler.config.prediction_type == "v_prediction"
    assert loaded.tokenizer.pad_token == "!"
    config = save_config_folder(loaded, tmp_path / "config")
    assert '"v_prediction"' in (config / "scheduler" / "scheduler_config.json").read_text()


def test_the_builtin_name_loads_the_builtin_folder(monkeypatch, tiny_sd1_folder):
    import erasure.models

    monkeypatch.setattr(erasure.models, "builtin_world_path", lambda: tiny_sd1_folder)
    for spec in (None, "shapeworld"):
        assert load_pipeline(spec, device="cpu").unet.config.layers_per_block == 2


def test_hub_id_loads_from_the_local_cache(monkeypatch, tmp_path, tiny_sd1_folder):
    import huggingface_hub.constants

    commit = "0" * 40
    repo = tmp_path / "models--someone--tiny-sd"
    shutil.copytree(tiny_sd1_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert load_pipeline("someone/tiny-sd", device="cpu").unet.config.layers_per_block == 2


def test_dtype_is_applied(tiny_sd1_folder):
    pipe = load_pipeline(tiny_sd1_folder, device="cpu", dtype="bf16")
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.bfloat16}


@pytest.mark.parametrize(
    "device, dtype, cuda, expected",
    [
        (None, None, False, ("cpu", torch.float32)),
        (None, None, True, ("cuda", torch.float16)),
        ("cuda", "bf16", True, ("cuda", torch.bfloat16)),
        ("cpu", "fp16", False, ("cpu", torch.float16)),
        ("cpu", "float16", False, ("cpu", torch.float16)),
        ("cpu", "FP32", False, ("cpu", torch.float32)),
        ("cpu", "auto", False, ("cpu", torch.float32)),
        ("cpu", torch.bfloat16, False, ("cpu", torch.bfloat16)),
    ],
)
def test_resolve_device_dtype(monkeypatch, device, dtype, cuda, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    dev, dt = resolve_device_dtype(device, dtype)
    assert (dev.type, dt) == expected


@dataclass(frozen=True)
class Case:
    """What a bad-input case may use: a fresh tmp folder, a good tiny SD1 folder, the built pipelines."""

    tmp: Path
    good: Path
    built: Callable[[str], object]

    def write(self, name: str, data: bytes) -> Path:
        (self.tmp / name).write_bytes(data)
        return self.tmp / name

    def not_sd_safetensors(self) -> Path:
        from safetensors.torch import save_file

        save_file({"foo": torch.zeros(2)}, str(self.tmp / "other.safetensors"))
        return self.tmp / "other.safetensors"

    def sd1_checkpoint(self) -> Path:
        return save_single_file(self.built("sd1"), self.tmp / "sd1.safetensors")

    def configs_folder(self, kind: str) -> Path:
        return save_config_folder(self.built(kind), self.tmp / f"{kind}-config")

    def pickled_folder(self) -> Path:
        """The good folder with its UNet re-saved as a pickle (.bin)."""
        from safetensors.torch import load_file

        folder = Path(shutil.copytree(self.good, self.tmp / "pickled"))
        weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
        torch.save(load_file(str(weights)), folder / "unet" / "diffusion_pytorch_model.bin")
        weights.unlink()
        return folder


# name -> (load_pipeline arguments for a Case, words the one-line message must contain)
BAD_INPUTS: dict[str, tuple[Callable[[Case], dict], str]] = {
    "missing path": (lambda c: dict(spec=c.tmp / "nope"), "not found"),
    "missing checkpoint": (lambda c: dict(spec="nope.safetensors", config=c.good), "not found"),
    "folder without model_index.json": (lambda c: dict(spec=c.tmp), "model_index.json"),
    "corrupt safetensors": (
        lambda c: dict(spec=c.write("bad.safetensors", np.random.default_rng(0).bytes(4096)), config=c.good),
        "not a readable .safetensors",
    ),
    "safetensors that is no SD checkpoint": (
        lambda c: dict(spec=c.not_sd_safetensors(), config=c.good), "not a full Stable Diffusion checkpoint"
    ),
    "checkpoint and config of different architectures": (
        lambda c: dict(spec=c.sd1_checkpoint(), config=c.configs_folder("world_random")), "could not load checkpoint"
    ),
    "configs-only folder as the model": (lambda c: dict(spec=c.configs_folder("sd1")), "--config"),
    "pickled weights in a folder": (lambda c: dict(spec=c.pickled_folder()), "could not load diffusers folder"),
    "ckpt without allow_pickle": (lambda c: dict(spec=c.write("m.ckpt", b"x"), config=c.good), "allow_pickle"),
    "single file without config": (lambda c: dict(spec=c.not_sd_safetensors()), "--config"),
    "config without model_index.json": (lambda c: dict(spec=c.not_sd_safetensors(), config=c.tmp), "model_index.json"),
    "unknown file type": (lambda c: dict(spec=c.write("m.txt", b"x")), "not a model"),
    "uncached hub id": (lambda c: dict(spec="nobody/nothing"), "offline"),
    "bad dtype": (lambda c: dict(spec=c.good, dtype="fp8"), "dtype"),
    "bad device": (lambda c: dict(spec=c.good, device="gpu"), "device"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_one_line_erasure_errors(case, tmp_path, tiny_sd1_folder, built_pipeline):
    make_kwargs, needle = BAD_INPUTS[case]
    kwargs = make_kwargs(Case(tmp_path, tiny_sd1_folder, built_pipeline))
    with pytest.raises(ErasureError) as info:
        load_pipeline(kwargs.pop("spec"), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert needle in message


def test_pickles_load_when_allowed(tmp_path, tiny_sd1_folder, built_pipeline):
    from safetensors.torch import load_file

    case = Case(tmp_path, tiny_sd1_folder, built_pipeline)
    assert load_pipeline(case.pickled_folder(), device="cpu", allow_pickle=True).unet is not None
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(case.sd1_checkpoint()))}, ckpt)
    loaded = load_pipeline(ckpt, config=tiny_sd1_folder, device="cpu", allow_pickle=True)
    _assert_same_weights(built_pipeline("sd1"), loaded)


def test_cuda_requested_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ErasureError, match="CUDA is not available"):
        resolve_device_dtype("cuda", None)


def test_missing_builtin_world_says_how_to_build_it(monkeypatch, tmp_path):
    import erasure.models

    monkeypatch.setattr(erasure.models, "builtin_world_path", lambda: tmp_path / "pipeline")
    with pytest.raises(ErasureError, match="scripts/train_world.py") as info:
        load_pipeline(None)
    assert "\n" not in str(info.value)


def test_offline_clip_tokenizer_matches_openai_and_open_clip():
    from open_clip.tokenizer import SimpleTokenizer

    from erasure.offline import clip_tokenizer

    tokenizer = clip_tokenizer()
    assert tokenizer(PROMPT).input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    reference = SimpleTokenizer()
    for text in ["A Red STAR, striped!", "hello   world 123", "don't stop", "naïve café"]:
        assert tokenizer(text).input_ids[1:-1] == reference.encode(text), text
