"""Shared test fixtures: tiny Stable Diffusion pipelines with real SD topology, built offline.

Tiny widths keep every run to a fraction of a second, while the real block/layer counts and
module names keep key mappings and module lookups honest. All weights are random and seeded;
nothing ever comes from the Hub.

Tests parametrised over model kinds take the ``pipeline_kind`` fixture (one of
:data:`PIPELINE_KINDS`) and ask for ``kind_pipeline`` / ``kind_folder``; "shapeworld" (the
trained built-in world) is skipped until `scripts/train_world.py` has built it.
"""

import os

# Read by huggingface_hub at import time, so set before anything imports diffusers/transformers.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: the models are tiny, and a second thread on a busy 2-core machine made OpenMP
# stall (a 2-step sample took 13 s instead of 1 s).
torch.set_num_threads(1)

TINY_CROSS_ATTENTION_DIM = 32


def _tiny_unet(**overrides):
    from diffusers import UNet2DConditionModel

    kwargs = dict(
        sample_size=8,
        layers_per_block=2,
        block_out_channels=(32, 32, 64, 64),
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=TINY_CROSS_ATTENTION_DIM,
        attention_head_dim=8,
    )
    return UNet2DConditionModel(**{**kwargs, **overrides})


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        norm_num_groups=8,
        latent_channels=4,
    )


def _tiny_text_encoder(hidden_act: str):
    from transformers import CLIPTextConfig, CLIPTextModel

    from erasure.offline import BOS_TOKEN_ID, CLIP_VOCAB_SIZE, EOS_TOKEN_ID

    return CLIPTextModel(CLIPTextConfig(
        hidden_size=TINY_CROSS_ATTENTION_DIM, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=CLIP_VOCAB_SIZE, bos_token_id=BOS_TOKEN_ID, eos_token_id=EOS_TOKEN_ID, pad_token_id=EOS_TOKEN_ID,
        hidden_act=hidden_act,
    ))


def _assemble(unet, text_encoder, tokenizer, prediction_type: str):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    )
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        vae=_tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval()  # as from_pretrained leaves them
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sd1(tokenizer_dir: Path):
    """SD 1.x topology: 4 blocks x 2 layers, OpenAI-CLIP text encoder (quick-GELU), epsilon."""
    from erasure.offline import clip_tokenizer

    torch.manual_seed(0)
    unet = _tiny_unet()
    torch.manual_seed(1)
    text_encoder = _tiny_text_encoder("quick_gelu")
    return _assemble(unet, text_encoder, clip_tokenizer(tokenizer_dir), "epsilon")


def build_tiny_sd2(tokenizer_dir: Path):
    """SD 2.x topology: per-block head counts, linear projections, OpenCLIP-style GELU encoder,
    tokenizer padding with "!", v-prediction."""
    from erasure.offline import clip_tokenizer

    torch.manual_seed(0)
    unet = _tiny_unet(attention_head_dim=(2, 4, 8, 8), use_linear_projection=True)
    torch.manual_seed(1)
    text_encoder = _tiny_text_encoder("gelu")
    return _assemble(unet, text_encoder, clip_tokenizer(tokenizer_dir, pad_token="!"), "v_prediction")


def build_world_random(tokenizer_dir: Path):
    """The built-in world's architecture (3 blocks x 1 layer, 32 px) with random weights:
    covers its topology before (and without) the trained weights."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    from erasure.offline import clip_tokenizer
    from erasure.world.models import build_inference_scheduler, build_unet, build_vae, clip_config

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        vae=build_vae(), text_encoder=CLIPTextModel(clip_config().text_config), tokenizer=clip_tokenizer(tokenizer_dir),
        unet=build_unet(), scheduler=build_inference_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_clip_folder(folder: Path, seed: int = 3, zero_positions: bool = False) -> Path:
    """A tiny random transformers CLIP (32-px images, 16-d embeddings) saved to ``folder`` with its image processor
    and the offline CLIP tokenizer. ``zero_positions``: without class and position embeddings, which otherwise
    dominate a random model's image features (cosine 0.93 between random images; 0.34 without)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from erasure.offline import clip_tokenizer

    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=49408, max_position_embeddings=77, eos_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    if zero_positions:
        with torch.no_grad():
            model.vision_model.embeddings.class_embedding.zero_()
            model.vision_model.embeddings.position_embedding.weight.zero_()
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    clip_tokenizer(folder.parent / "bpe").save_pretrained(folder)
    return folder


def _world_ready() -> bool:
    from erasure.models import builtin_world_path

    return (builtin_world_path() / "model_index.json").is_file()


@dataclass(frozen=True)
class PipelineKind:
    """One model family the tests run over. ``build`` is None for models loaded from disk."""

    name: str
    prediction_type: str
    text_encoder_kind: str
    build: Callable[[Path], object] | None = None
    available: Callable[[], bool] = lambda: True
    unavailable_reason: str = ""


PIPELINE_KINDS: dict[str, PipelineKind] = {
    "sd1": PipelineKind("sd1", "epsilon", "sd1", build=build_tiny_sd1),
    "sd2": PipelineKind("sd2", "v_prediction", "sd2", build=build_tiny_sd2),
    "world_random": PipelineKind("world_random", "epsilon", "sd1", build=build_world_random),
    "shapeworld": PipelineKind(
        "shapeworld", "epsilon", "sd1", available=_world_ready,
        unavailable_reason="built-in world weights not built yet; run `python scripts/train_world.py`",
    ),
}


@pytest.fixture(scope="session")
def built_pipeline(tmp_path_factory) -> Callable[[str], object]:
    """``built_pipeline(kind)``: the session's one pipeline of a buildable kind (do not modify it)."""
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = PIPELINE_KINDS[name].build(tmp_path_factory.mktemp(f"{name}-tokenizer"))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def saved_folder(built_pipeline, tmp_path_factory) -> Callable[[str], Path]:
    """``saved_folder(kind)``: ``built_pipeline(kind)`` saved with ``save_pretrained`` (read-only)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            folder = tmp_path_factory.mktemp(f"{name}-saved") / "pipeline"
            built_pipeline(name).save_pretrained(folder)
            cache[name] = folder
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tiny_sd1_pipeline(built_pipeline):
    return built_pipeline("sd1")


@pytest.fixture(scope="session")
def tiny_sd2_pipeline(built_pipeline):
    return built_pipeline("sd2")


@pytest.fixture(scope="session")
def tiny_sd1_folder(saved_folder) -> Path:
    return saved_folder("sd1")


@pytest.fixture(scope="session")
def tiny_sd2_folder(saved_folder) -> Path:
    return saved_folder("sd2")


@pytest.fixture(scope="session")
def shapeworld_folder() -> Path:
    from erasure.models import builtin_world_path

    if not _world_ready():
        pytest.skip(PIPELINE_KINDS["shapeworld"].unavailable_reason)
    return builtin_world_path()


@pytest.fixture(scope="session")
def shapeworld_pipeline(shapeworld_folder):
    from erasure.models import load_pipeline

    pipe = load_pipeline(shapeworld_folder, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session", params=list(PIPELINE_KINDS))
def pipeline_kind(request) -> PipelineKind:
    kind = PIPELINE_KINDS[request.param]
    if not kind.available():
        pytest.skip(kind.unavailable_reason)
    return kind


@pytest.fixture(scope="session")
def kind_pipeline(pipeline_kind, built_pipeline, request):
    """The in-memory pipeline of ``pipeline_kind`` (shared by the session: do not modify it)."""
    if pipeline_kind.build is None:
        return request.getfixturevalue(f"{pipeline_kind.name}_pipeline")
    return built_pipeline(pipeline_kind.name)


@pytest.fixture(scope="session")
def kind_folder(pipeline_kind, saved_folder, request) -> Path:
    """A diffusers folder holding ``kind_pipeline`` (read-only)."""
    if pipeline_kind.build is None:
        return request.getfixturevalue(f"{pipeline_kind.name}_folder")
    return saved_folder(pipeline_kind.name)
