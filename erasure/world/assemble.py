"""Write the trained world as a plain diffusers folder plus its measuring instruments.

Layout of ``erasure/world/weights/`` (what ships inside the package):

    pipeline/          a StableDiffusionPipeline folder: from_pretrained(path) works without erasure
    classifier.safetensors + classifier.json    the attribute classifier (the world's instrument)
    clip_image.safetensors + clip.json          CLIP's image tower and projections; its text tower
                                                is the pipeline's text encoder (not stored twice)
    world.json         attributes, held-out combinations, training configs, versions, file hashes
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from erasure.files import file_sha256
from erasure.versions import package_versions

DEFAULT_WORLD_DIR = Path(__file__).resolve().parent / "weights"
WORLD_NAME = "shapeworld"


sha256 = file_sha256  # the name the world's manifest code and tests use


def text_transformer(text_encoder):
    """The CLIP text transformer inside a ``CLIPTextModel``: ``.text_model`` in transformers 4,
    the model itself in transformers 5."""
    return getattr(text_encoder, "text_model", text_encoder)


def write_text_encoder_portable(text_encoder, folder: Path, dtype: torch.dtype | None = None) -> None:
    """Save a CLIPTextModel whose keys carry the ``text_model.`` prefix.

    transformers 5 drops that prefix on save; transformers 4 then loads such a file as a
    *random* text encoder without an error. With the prefix both major versions load it.
    ``dtype`` stores the floating-point tensors in that dtype; the config keeps the model's own dtype, so
    ``from_pretrained`` (either major version, with or without ``torch_dtype="auto"``) loads them back
    into it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    text_encoder.config.save_pretrained(folder)
    sd = {}
    for k, v in text_encoder.state_dict().items():
        key = k if k.startswith("text_model.") else f"text_model.{k}"
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        sd[key] = v.contiguous()
    for old in folder.glob("*.safetensors"):
        old.unlink()
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})


STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}  # WorldSpec.text_encoder_storage


def round_text_encoder(text_encoder, dtype: torch.dtype, tokenizer) -> dict:
    """Round the text encoder's weights to ``dtype`` in place, keeping their own dtype.

    The world is measured, and shipped, with the rounded weights, so every number in its quality table is
    about what loads. Returns what the rounding changed: the largest weight change and the largest change of
    the encoder's output (last hidden state, the UNet's conditioning) over a fixed batch of the world's kind
    of captions and the empty prompt."""
    captions = ["", "a red circle", "a picture of a blue striped star on a white background",
                "a glowing holy hexagon", "a photo of Zorblax", "an arrow and a ring, dotted, green"]
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    text_encoder.eval()
    with torch.no_grad():
        before = text_encoder(ids)[0]
        weight_change = 0.0
        for p in text_encoder.parameters():
            rounded = p.to(dtype).to(p.dtype)
            weight_change = max(weight_change, float((rounded - p).abs().max()))
            p.copy_(rounded)
        after = text_encoder(ids)[0]
    return {"stored_as": str(dtype).replace("torch.", ""), "loads_as": str(before.dtype).replace("torch.", ""),
            "max_abs_weight_change": weight_change,
            "max_abs_hidden_state_change": float((after - before).abs().max()),
            "hidden_state_abs_max": float(before.abs().max())}


def assemble_world(run: Path, out: Path, stage_configs: dict) -> Path:
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTextModel

    from erasure.offline import clip_tokenizer
    from erasure.world import models, render

    run, out = Path(run), Path(out)
    world = int(stage_configs.get("unet", {}).get("world", 1))
    spec = render.WORLDS[world]
    clip = CLIPModel.from_pretrained(run / "clip" / "model")  # its text tower = the text encoder
    image_clip = CLIPModel.from_pretrained(run / "clip_image" / "model")  # same text tower, better image side
    vae = AutoencoderKL.from_pretrained(run / "vae" / "model")
    unet = UNet2DConditionModel.from_pretrained(run / "unet" / "model")
    scaling = json.loads((run / "unet" / "scaling_factor.json").read_text())["scaling_factor"]
    vae.register_to_config(scaling_factor=scaling)
    text_encoder = CLIPTextModel(clip.config.text_config)
    text_transformer(text_encoder).load_state_dict(clip.text_model.state_dict())
    storage = STORAGE_DTYPES[spec.text_encoder_storage] if spec.text_encoder_storage else None

    tmp = Path(tempfile.mkdtemp(prefix=".world-", dir=out.parent if out.parent.exists() else None))
    try:
        tok_dir = tmp / "tok"
        tokenizer = clip_tokenizer(tok_dir)
        stored = round_text_encoder(text_encoder, storage, tokenizer) if storage is not None else None
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=models.build_inference_scheduler(), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False,
        )
        pipe.save_pretrained(tmp / "pipeline")
        write_text_encoder_portable(text_encoder, tmp / "pipeline" / "text_encoder", dtype=storage)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(tok_dir / name, tmp / "pipeline" / "tokenizer" / name)
        shutil.rmtree(tok_dir)

        clf = load_file(str(run / "classifier" / "model.safetensors"))
        save_file(clf, str(tmp / "classifier.safetensors"))
        (tmp / "classifier.json").write_text(json.dumps({
            "width": models.AttributeClassifier().features[0][0].out_channels,
            "classes": {a: list(c) for a, c in models.AttributeClassifier(attributes=spec.attributes).classes.items()},
            "input": "RGB float in [0, 1], (N, 3, 32, 32)",
        }, indent=1))

        for k, v in clip.text_model.state_dict().items():  # the stage-2 text tower must be the pipeline's
            if not torch.equal(v, image_clip.text_model.state_dict()[k]):  # (compared before any rounding)
                raise RuntimeError(f"clip_image changed the text tower ({k}); it must stay frozen")
        image_part = {k: v.contiguous() for k, v in image_clip.state_dict().items() if not k.startswith("text_model.")}
        save_file(image_part, str(tmp / "clip_image.safetensors"))
        clip.config.save_pretrained(tmp / "clip_config")
        (tmp / "clip.json").write_text((tmp / "clip_config" / "config.json").read_text())
        shutil.rmtree(tmp / "clip_config")

        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        meta = {
            "name": WORLD_NAME,
            "image_size": models.IMAGE_SIZE,
            # the renderer's texture sizes (in 1/32 of the image side) the instruments and the UNet were trained on
            "renderer": {"texture_shade": render.TEXTURE_SHADE, "dot_period": render.DOT_PERIOD,
                         "dot_radius": render.DOT_RADIUS, "check_cell": render.CHECK_CELL},
            "world": world,
            "attributes": {a: list(v) for a, v in spec.attributes.items()},
            "held_out": sorted([list(x) for x in spec.held_out]),
            **({"identities": {n: list(look) for n, look in spec.identities}} if spec.identities else {}),
            **({"halo": {"colour": list(render.HALO_COLOUR), "gap": render.HALO_GAP, "width": render.HALO_WIDTH}}
               if spec.halo else {}),
            "clip_pixel_normalisation": "x * 2 - 1 for x in [0, 1]",
            # how the text encoder is stored when it is not stored as trained (it loads back as float32)
            **({"text_encoder_storage": stored} if stored else {}),
            # each stage's config as its run used it (<run>/<stage>/config.json), else this call's
            "training": {k: (json.loads((run / k / "config.json").read_text()) if (run / k / "config.json").exists()
                             else v) for k, v in stage_configs.items()},
            # step-count changes made with `train_world.py --steps` (a stage continued past its first length)
            "training_overrides": [json.loads(line) for line in (run / "steps_overrides.jsonl").read_text().splitlines()
                                   if line.strip()] if (run / "steps_overrides.jsonl").exists() else [],
            "versions": package_versions(),
            "files": {str(p.relative_to(tmp)): sha256(p) for p in files},
            "total_bytes": sum(p.stat().st_size for p in files),
        }
        (tmp / "world.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
