"""CLIP encoders behind one small interface, for CLIP score and CLIP zero-shot accuracy.

A :class:`ClipBackend` turns images and texts into L2-normalised ``(n, d)`` float32 numpy arrays,
which is what :func:`erasure.evaluation.metrics.clip_score` and ``clip_accuracy`` take. Three backends:

- ``OpenClipBackend("ViT-L-14", "/path/open_clip_pytorch_model.bin")``: an open_clip architecture with
  a local weights file (the literature's CLIP score uses ViT-L/14 weights of OpenAI);
- ``TransformersClipBackend("/path/clip-vit-large-patch14")``: a ``transformers`` CLIPModel folder
  (model, image processor and tokenizer, as ``save_pretrained`` writes them);
- ``WorldClipBackend()``: the built-in world's own CLIP.

``load_clip_backend`` builds one from a spec string: ``"world"``, ``"open_clip:<model_name>"`` (with
``weights``) or ``"transformers:<folder>"``. Nothing here downloads: missing files raise
:class:`ErasureError` naming what is needed. Scores from different backends are not comparable, so each
backend has a ``name`` to pass as the metrics' ``model=`` setting.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from erasure.errors import ErasureError

__all__ = [
    "ClipBackend",
    "OpenClipBackend",
    "TransformersClipBackend",
    "WorldClipBackend",
    "load_clip_backend",
    "to_pil_images",
]

DEFAULT_BATCH_SIZE = 64


@runtime_checkable
class ClipBackend(Protocol):
    """A CLIP dual encoder: images and texts in, L2-normalised ``(n, d)`` float32 embeddings out."""

    #: What produced the embeddings (architecture and weights), for the metrics' ``model=`` setting.
    name: str

    def embed_images(self, images: Any) -> np.ndarray:
        """PIL images, a uint8 ``(n, h, w, 3)`` array, or floats in [0, 1] -> ``(n, d)`` unit vectors."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> ``(n, d)`` unit vectors."""
        ...


def to_pil_images(images: Any) -> list:
    """A list of RGB PIL images from PIL images, uint8 ``(n, h, w, 3)`` arrays (0..255), float
    ``(n, h, w, 3)`` arrays in [0, 1] (diffusers' ``output_type="np"``) or float ``(n, 3, h, w)`` tensors
    in [0, 1]. A single image (no batch axis) becomes a list of one."""
    from PIL import Image

    if hasattr(images, "convert"):
        return [images.convert("RGB")]
    if isinstance(images, (list, tuple)) and images and all(hasattr(im, "convert") for im in images):
        return [im.convert("RGB") for im in images]
    if isinstance(images, torch.Tensor):
        tensor = images.detach().cpu()
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
            raise ErasureError(f"image tensors must be (n, 3, h, w) in [0, 1], got shape {tuple(tensor.shape)}")
        images = tensor.permute(0, 2, 3, 1).numpy()
    array = np.asarray(images)
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4) or len(array) == 0:
        raise ErasureError(f"images must be a non-empty (n, h, w, 3) array or a list of PIL images, "
                           f"got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return [Image.fromarray(np.ascontiguousarray(a[..., :3])) for a in array]


def _normalised(features: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32)


def _features(output: Any) -> torch.Tensor:
    """transformers >= 5 returns a model output from ``get_*_features``; older versions a tensor."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ErasureError("embed_texts takes a non-empty list of strings")
    return texts


class OpenClipBackend:
    """An open_clip model from a built-in architecture name and a local weights file.

    ``weights`` is a checkpoint file (``.bin``/``.pt``/``.pth``/``.safetensors``, e.g. the
    ``open_clip_pytorch_model.bin`` of ``laion/CLIP-ViT-L-14-laion2B-s32B-b82K`` or of OpenAI's ViT-L/14
    as open_clip distributes it). Images go through open_clip's own eval transform, texts through its
    tokenizer (the BPE ships inside the open_clip wheel).
    """

    def __init__(self, model_name: str, weights: str | Path | None, *, device: str | torch.device = "cpu",
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        import open_clip

        if weights is None or not Path(weights).is_file():
            missing = "" if weights is None else f" (not found: {weights})"
            raise ErasureError(f"open_clip {model_name} needs its weights file; pass --clip-weights PATH{missing}")
        known = open_clip.list_models()
        if model_name not in known:
            close = difflib.get_close_matches(model_name, known, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ErasureError(f"open_clip has no model config '{model_name}'; {hint}"
                               "use a name from open_clip.list_models() (or register yours with open_clip.add_model_config)")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(weights), device=device)
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except (RuntimeError, ValueError, KeyError, OSError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ErasureError(f"open_clip {model_name} could not load {weights}: {first_line}; "
                               "check the file holds weights of this architecture") from error
        # eval() under no_grad, as open_clip's examples use it: requires_grad_(False) would switch the
        # text tower to another attention kernel whose results differ by ~1e-6 from the usual call.
        self.model = model.eval()
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model_name = model_name
        self.weights = Path(weights)
        self.name = f"open_clip:{model_name} ({self.weights.name})"

    @torch.no_grad()
    def embed_images(self, images: Any) -> np.ndarray:
        pil = to_pil_images(images)
        out = []
        for i in range(0, len(pil), self.batch_size):
            x = torch.stack([self.preprocess(im) for im in pil[i : i + self.batch_size]]).to(self.device)
            out.append(self.model.encode_image(x))
        return _normalised(torch.cat(out))

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = _texts(texts)
        out = [self.model.encode_text(self.tokenizer(texts[i : i + self.batch_size]).to(self.device))
               for i in range(0, len(texts), self.batch_size)]
        return _normalised(torch.cat(out))


class TransformersClipBackend:
    """A ``transformers`` CLIPModel folder (``config.json`` + weights, ``preprocessor_config.json`` and a
    tokenizer), loaded with ``local_files_only=True``."""

    def __init__(self, folder: str | Path, *, device: str | torch.device = "cpu",
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ErasureError(f"no CLIP model folder at {folder} (config.json missing); "
                               "pass a folder written by CLIPModel.save_pretrained")
        if not (folder / "preprocessor_config.json").is_file():
            raise ErasureError(f"{folder} has no preprocessor_config.json; save the CLIPProcessor "
                               "(or CLIPImageProcessor) of this model into the folder")
        try:
            self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
            self.image_processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ErasureError(f"could not load the CLIP model in {folder}: {first_line}; "
                               "the folder needs the model, its image processor and its tokenizer") from error
        self.device = torch.device(device)
        self.model.to(self.device)
        self.batch_size = batch_size
        self.folder = folder
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        self.name = f"transformers:{folder.name}"

    @torch.no_grad()
    def embed_images(self, images: Any) -> np.ndarray:
        pil = to_pil_images(images)
        out = []
        for i in range(0, len(pil), self.batch_size):
            pixels = self.image_processor(images=pil[i : i + self.batch_size], return_tensors="pt").pixel_values
            out.append(_features(self.model.get_image_features(pixel_values=pixels.to(self.device))))
        return _normalised(torch.cat(out))

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = _texts(texts)
        out = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[i : i + self.batch_size], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
            out.append(_features(self.model.get_text_features(
                input_ids=tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device))))
        return _normalised(torch.cat(out))


class WorldClipBackend:
    """The built-in world's CLIP (``erasure.world.instruments``), with the world pipeline's tokenizer.

    ``folder`` is the world's weights folder (default: the installed one)."""

    def __init__(self, folder: str | Path | None = None, *, batch_size: int = 256) -> None:
        from transformers import CLIPTokenizer

        from erasure.world import instruments

        world = instruments.world_dir(folder)
        self.model = instruments.load_clip(world)
        self.tokenizer = CLIPTokenizer.from_pretrained(world / "pipeline" / "tokenizer", local_files_only=True)
        self.batch_size = batch_size
        self.name = "world"

    def embed_images(self, images: Any) -> np.ndarray:
        from erasure.world.instruments import clip_embed_images

        if isinstance(images, (list, tuple)) and images and not hasattr(images[0], "convert"):
            images = np.stack([np.asarray(im) for im in images])
        return _normalised(clip_embed_images(self.model, images, batch_size=self.batch_size))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        from erasure.world.instruments import clip_embed_texts

        texts = _texts(texts)
        out = [clip_embed_texts(self.model, self.tokenizer, texts[i : i + self.batch_size])
               for i in range(0, len(texts), self.batch_size)]
        return _normalised(torch.cat(out))


def load_clip_backend(spec: str, weights: str | Path | None = None, *,
                      device: str | torch.device = "cpu") -> ClipBackend:
    """A backend from ``"world"``, ``"open_clip:<model_name>"`` (``weights``: its checkpoint file) or
    ``"transformers:<folder>"``."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "open_clip" and rest:
        return OpenClipBackend(rest, weights, device=device)
    if weights is not None:
        raise ErasureError(f"CLIP backend '{spec}' takes no weights file; --clip-weights is for open_clip:<model_name>")
    if kind == "world" and not rest:
        return WorldClipBackend()
    if kind == "transformers" and rest:
        return TransformersClipBackend(rest, device=device)
    raise ErasureError(f"unknown CLIP backend '{spec}'; use world, open_clip:<model_name> "
                       "(e.g. open_clip:ViT-L-14 with --clip-weights PATH) or transformers:<folder>")
