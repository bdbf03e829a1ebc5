"""CLIP backends: open_clip and transformers models from local files (tiny, random, built here), the
built-in world's CLIP, and the errors for missing weights."""

import json

import numpy as np
import pytest
import torch

from erasure.errors import ErasureError
from erasure.evaluation.clip_backends import (
    ClipBackend,
    OpenClipBackend,
    TransformersClipBackend,
    WorldClipBackend,
    load_clip_backend,
)

open_clip = pytest.importorskip("open_clip")

TINY_OPEN_CLIP = "erasure-test-tiny-clip"
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TEXTS = ["a photo of a cat", "a red square", "an astronaut"]


def _images(n=5, size=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _assert_unit_rows(embeds, n, d):
    assert isinstance(embeds, np.ndarray) and embeds.dtype == np.float32
    assert embeds.shape == (n, d)
    np.testing.assert_allclose(np.linalg.norm(embeds, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_open_clip_weights(tmp_path_factory):
    """A tiny random open_clip architecture registered under TINY_OPEN_CLIP, and its weights files."""
    folder = tmp_path_factory.mktemp("open_clip")
    config = folder / f"{TINY_OPEN_CLIP}.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(config)
    # A second architecture (other embedding width), for weights that do not fit.
    other = folder / f"{TINY_OPEN_CLIP}-wide.json"
    other.write_text(json.dumps({**TINY_OPEN_CLIP_CONFIG, "embed_dim": 24}))
    open_clip.add_model_config(other)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_OPEN_CLIP)
    pt = folder / "tiny.pt"
    torch.save(model.state_dict(), pt)
    from safetensors.torch import save_file

    st = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, st)
    return {"pt": pt, "safetensors": st}


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_open_clip_backend_matches_open_clip(tiny_open_clip_weights, fmt):
    weights = tiny_open_clip_weights[fmt]
    backend = OpenClipBackend(TINY_OPEN_CLIP, weights)
    assert isinstance(backend, ClipBackend)
    assert TINY_OPEN_CLIP in backend.name and weights.name in backend.name
    images = _images()
    image_embeds, text_embeds = backend.embed_images(images), backend.embed_texts(TEXTS)
    _assert_unit_rows(image_embeds, len(images), 16)
    _assert_unit_rows(text_embeds, len(TEXTS), 16)

    # The same images through open_clip directly: identical embeddings.
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(TINY_OPEN_CLIP, pretrained=str(weights))
    model.eval()
    tokenizer = open_clip.get_tokenizer(TINY_OPEN_CLIP)
    with torch.no_grad():
        direct_images = model.encode_image(torch.stack([preprocess(Image.fromarray(im)) for im in images]))
        direct_texts = model.encode_text(tokenizer(TEXTS))
    np.testing.assert_array_equal(image_embeds, torch.nn.functional.normalize(direct_images, dim=-1).numpy())
    np.testing.assert_array_equal(text_embeds, torch.nn.functional.normalize(direct_texts, dim=-1).numpy())

    # The weights were loaded: a fresh random model gives other embeddings.
    torch.manual_seed(123)
    other = open_clip.create_model(TINY_OPEN_CLIP).eval()
    with torch.no_grad():
        assert not torch.allclose(other.encode_text(tokenizer(TEXTS)), direct_texts)


def test_open_clip_backend_accepts_every_image_form(tiny_open_clip_weights):
    from PIL import Image

    backend = load_clip_backend(f"open_clip:{TINY_OPEN_CLIP}", tiny_open_clip_weights["pt"])
    images = _images(n=3)
    reference = backend.embed_images(images)
    np.testing.assert_array_equal(backend.embed_images([Image.fromarray(im) for im in images]), reference)
    np.testing.assert_array_equal(backend.embed_images(images.astype(np.float32) / 255.0), reference)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    np.testing.assert_array_equal(backend.embed_images(tensor), reference)
    # One HWC image is a batch of one (not compared with row 0 of the batch of three: CPU kernels round
    # differently by batch size, 4e-8 on some machines; the batching check below bounds that).
    np.testing.assert_array_equal(backend.embed_images(images[0]), backend.embed_images(images[:1]))
    # Batching does not change the result (beyond float rounding).
    backend.batch_size = 2
    np.testing.assert_allclose(backend.embed_images(images), reference, atol=1e-6)


def test_open_clip_tokenizer_works_offline():
    # The BPE vocabulary ships inside the open_clip wheel: no download for the real ViT-L-14 tokenizer.
    tokens = open_clip.get_tokenizer("ViT-L-14")(["a photo of a cat"])
    assert tokens.shape == (1, 77) and tokens[0, 0].item() == 49406


def test_open_clip_missing_weights_names_the_file(tmp_path):
    missing = tmp_path / "open_clip_pytorch_model.bin"
    with pytest.raises(ErasureError, match="open_clip ViT-L-14 needs its weights file") as error:
        OpenClipBackend("ViT-L-14", missing)
    assert str(missing) in str(error.value) and "--clip-weights" in str(error.value)
    with pytest.raises(ErasureError, match="needs its weights file; pass --clip-weights PATH"):
        load_clip_backend("open_clip:ViT-L-14")
    # A pretrained *tag* is not a file either: never downloaded.
    with pytest.raises(ErasureError, match="not found: openai"):
        load_clip_backend("open_clip:ViT-L-14", "openai")


def test_open_clip_unknown_model_and_bad_weights(tiny_open_clip_weights, tmp_path):
    with pytest.raises(ErasureError, match="no model config .ViT-L-41.; did you mean .*ViT-L-14"):
        OpenClipBackend("ViT-L-41", tiny_open_clip_weights["pt"])
    # Weights of another architecture: one actionable line, not a traceback.
    with pytest.raises(ErasureError, match="could not load"):
        OpenClipBackend(f"{TINY_OPEN_CLIP}-wide", tiny_open_clip_weights["pt"])


@pytest.fixture(scope="module")
def tiny_transformers_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from erasure.offline import clip_tokenizer

    folder = tmp_path_factory.mktemp("hf_clip")
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=49408, max_position_embeddings=77, eos_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    clip_tokenizer(tmp_path_factory.mktemp("bpe")).save_pretrained(folder)
    return folder


def test_transformers_backend_matches_clip_model(tiny_transformers_clip):
    from transformers import CLIPImageProcessor, CLIPModel

    from erasure.offline import clip_tokenizer

    backend = load_clip_backend(f"transformers:{tiny_transformers_clip}")
    assert isinstance(backend, TransformersClipBackend) and isinstance(backend, ClipBackend)
    images = _images()
    image_embeds, text_embeds = backend.embed_images(images), backend.embed_texts(TEXTS)
    _assert_unit_rows(image_embeds, len(images), 16)
    _assert_unit_rows(text_embeds, len(TEXTS), 16)

    # The model's own forward pass on the same inputs gives the same (normalised) embeddings.
    model = CLIPModel.from_pretrained(tiny_transformers_clip).eval()
    pixels = CLIPImageProcessor.from_pretrained(tiny_transformers_clip)(images=list(images), return_tensors="pt")
    tokens = clip_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=pixels.pixel_values, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
    np.testing.assert_allclose(image_embeds, out.image_embeds.numpy(), atol=1e-6)
    np.testing.assert_allclose(text_embeds, out.text_embeds.numpy(), atol=1e-6)


def test_transformers_backend_missing_folder(tmp_path, tiny_transformers_clip):
    missing = tmp_path / "clip-vit-large-patch14"
    with pytest.raises(ErasureError, match="no CLIP model folder") as error:
        TransformersClipBackend(missing)
    assert str(missing) in str(error.value)
    # A model folder without its image processor: says what to save there.
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(tiny_transformers_clip, partial)
    (partial / "preprocessor_config.json").unlink()
    with pytest.raises(ErasureError, match="preprocessor_config.json"):
        TransformersClipBackend(partial)


def test_load_clip_backend_rejects_bad_specs(tmp_path):
    with pytest.raises(ErasureError, match="unknown CLIP backend 'clip'"):
        load_clip_backend("clip")
    with pytest.raises(ErasureError, match="unknown CLIP backend"):
        load_clip_backend("open_clip:")
    with pytest.raises(ErasureError, match="takes no weights file"):
        load_clip_backend(f"transformers:{tmp_path}", weights=tmp_path / "w.bin")


def _world_weights_present() -> bool:
    from erasure.world.assemble import DEFAULT_WORLD_DIR

    return all((DEFAULT_WORLD_DIR / name).is_file() for name in ("world.json", "clip.json", "clip_image.safetensors"))


@pytest.mark.skipif(not _world_weights_present(), reason="built-in world weights absent; run scripts/train_world.py")
def test_world_backend_zero_shot_shapes():
    from erasure.evaluation.metrics import clip_accuracy
    from erasure.world.quality import fresh_renders, zero_shot_prompts
    from erasure.world.render import ATTRIBUTES

    backend = load_clip_backend("world")
    assert isinstance(backend, WorldClipBackend) and isinstance(backend, ClipBackend)
    scenes, images = fresh_renders(200, seed=4242)
    image_embeds = backend.embed_images(images)
    _assert_unit_rows(image_embeds, 200, image_embeds.shape[1])
    shapes = list(ATTRIBUTES["shape"])
    class_embeds = np.stack([backend.embed_texts(zero_shot_prompts("shape", s)).mean(0) for s in shapes])
    labels = [scene.labels()["shape"] for scene in scenes]
    result = clip_accuracy(image_embeds, class_embeds, labels, class_names=shapes, model=backend.name,
                           n_resamples=200)
    assert result.value > 0.9, result
    assert result.ci_low <= result.value <= result.ci_high
    # Same embeddings as the world's instruments.
    from erasure.world.instruments import clip_embed_images

    np.testing.assert_allclose(image_embeds[:8], clip_embed_images(backend.model, images[:8]).numpy(), atol=1e-6)
