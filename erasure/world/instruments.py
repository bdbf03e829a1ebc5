"""The built-in world's measuring instruments: the attribute classifier and the CLIP dual encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from erasure.errors import ErasureError
from erasure.world.assemble import DEFAULT_WORLD_DIR, text_transformer
from erasure.world.models import AttributeClassifier


def world_dir(path: str | Path | None = None) -> Path:
    folder = Path(path) if path is not None else DEFAULT_WORLD_DIR
    if not (folder / "world.json").exists():
        raise ErasureError(
            f"built-in world weights not found in {folder}; train them with `python scripts/train_world.py`"
        )
    return folder


def images_to_tensor(images) -> torch.Tensor:
    """PIL images, a uint8 (N, H, W, 3) array, or a float (N, 3, H, W) tensor in [0, 1] -> float tensor."""
    if isinstance(images, torch.Tensor):
        return images.float()
    if isinstance(images, np.ndarray):
        arr = images
    else:
        arr = np.stack([np.asarray(im.convert("RGB")) for im in images])
    if arr.dtype != np.uint8:  # float arrays in [0, 1], as pipelines return with output_type="np"
        arr = np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


def _fit_size(x: torch.Tensor, size: int = 32) -> torch.Tensor:
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def load_classifier(path: str | Path | None = None) -> AttributeClassifier:
    folder = world_dir(path)
    meta = json.loads((folder / "classifier.json").read_text())
    classes = meta.get("classes")  # a world 2 classifier has more heads (mark, halo) and more shapes
    attributes = None if classes is None else {a: tuple(c if a == "background" else c[:-1]) for a, c in classes.items()}
    model = AttributeClassifier(width=meta["width"], attributes=attributes)
    model.load_state_dict(load_file(str(folder / "classifier.safetensors")))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def classify(classifier: AttributeClassifier, images, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per-attribute probabilities, {attribute: (N, classes)}; class names in ``classifier.classes``."""
    x = _fit_size(images_to_tensor(images))
    outs: dict[str, list[torch.Tensor]] = {a: [] for a in classifier.classes}
    for i in range(0, len(x), batch_size):
        logits = classifier(x[i : i + batch_size])
        for a in classifier.classes:
            outs[a].append(logits[a].softmax(-1))
    return {a: torch.cat(v) for a, v in outs.items()}


@torch.no_grad()
def classifier_features(classifier: AttributeClassifier, images, batch_size: int = 256) -> np.ndarray:
    """The classifier's penultimate features, (N, 4*width): the built-in world's FID/KID feature extractor."""
    x = _fit_size(images_to_tensor(images))
    return torch.cat([classifier.forward_features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def predict_labels(classifier: AttributeClassifier, images) -> dict[str, list[str]]:
    """Each head's predicted class per image; a world 2 classifier (it has a ``mark`` head) also gives
    ``identity``: the identity whose whole look and mark the image shows, or "none"."""
    probs = classify(classifier, images)
    out = {a: [classifier.classes[a][i] for i in p.argmax(-1).tolist()] for a, p in probs.items()}
    if "mark" in out:
        from erasure.world.render import WORLD2

        out["identity"] = [WORLD2.identity_of(s, c, t, m) or "none"
                           for s, c, t, m in zip(out["shape"], out["colour"], out["texture"], out["mark"])]
    return out


def load_clip(path: str | Path | None = None):
    """The world's CLIP (a ``transformers.CLIPModel``): image tower from ``clip_image.safetensors``,
    text tower from the pipeline's text encoder."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextModel

    folder = world_dir(path)
    config = CLIPConfig.from_dict(json.loads((folder / "clip.json").read_text()))
    model = CLIPModel(config)
    text = CLIPTextModel.from_pretrained(folder / "pipeline" / "text_encoder")
    model.text_model.load_state_dict(text_transformer(text).state_dict())
    missing, unexpected = model.load_state_dict(load_file(str(folder / "clip_image.safetensors")), strict=False)
    if unexpected or any(not k.startswith("text_model.") for k in missing):
        raise ErasureError(f"CLIP image weights in {folder} do not match clip.json; retrain or reinstall the world")
    return model.eval().requires_grad_(False)


def clip_pixels(images) -> torch.Tensor:
    """Images -> the pixel values the world's CLIP was trained on (32x32, [-1, 1])."""
    return _fit_size(images_to_tensor(images)) * 2 - 1


@torch.no_grad()
def clip_embed_images(clip, images, batch_size: int = 256) -> torch.Tensor:
    x = clip_pixels(images)
    feats = [clip.get_image_features(pixel_values=x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    feats = [f.pooler_output if hasattr(f, "pooler_output") else f for f in feats]
    return torch.nn.functional.normalize(torch.cat(feats), dim=-1)


@torch.no_grad()
def clip_embed_texts(clip, tokenizer, texts: list[str]) -> torch.Tensor:
    ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    f = clip.get_text_features(input_ids=ids)
    f = f.pooler_output if hasattr(f, "pooler_output") else f
    return torch.nn.functional.normalize(f, dim=-1)

