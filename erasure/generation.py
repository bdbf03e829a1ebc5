"""Generate images: each image is a pure function of (model, prompt, seed, sampler settings).

Every image gets its own ``torch.Generator`` seeded with its seed, so the image does not
depend on the batch it was generated in, nor on which process generated it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from erasure.errors import ErasureError
from erasure.files import atomic_folder, dumps_json
from erasure.versions import package_versions


@dataclass(frozen=True)
class SamplerSettings:
    """How images are sampled. ``guidance`` is classifier-free guidance (1.0 = off)."""

    steps: int = 25
    guidance: float = 7.5
    eta: float = 0.0
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None

    def validate(self) -> None:
        if self.steps < 1:
            raise ErasureError(f"steps must be >= 1 (got {self.steps})")
        if self.guidance < 0:
            raise ErasureError(f"guidance must be >= 0 (got {self.guidance})")


def _generator_device(pipe) -> str:
    return "cuda" if pipe.device.type == "cuda" else "cpu"


@torch.no_grad()
def generate_images(
    pipe,
    prompts: list[str],
    seeds: list[int],
    settings: SamplerSettings = SamplerSettings(),
    batch_size: int = 16,
    progress: bool = True,
) -> np.ndarray:
    """Generate one image per (prompt, seed) pair; returns uint8 (N, H, W, 3).

    ``prompts`` and ``seeds`` have equal length (pair them up yourself for grids).
    """
    settings.validate()
    if len(prompts) != len(seeds):
        raise ErasureError(f"got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt")
    if batch_size < 1:
        raise ErasureError(f"batch size must be >= 1 (got {batch_size})")
    pipe.set_progress_bar_config(disable=True)
    out: list[np.ndarray] = []
    bar = None
    if progress and len(prompts) > batch_size:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="generating", unit="img")
    dev = _generator_device(pipe)
    for i in range(0, len(prompts), batch_size):
        p = prompts[i : i + batch_size]
        gens = [torch.Generator(dev).manual_seed(int(s)) for s in seeds[i : i + batch_size]]
        neg = [settings.negative_prompt] * len(p) if settings.negative_prompt is not None else None
        images = pipe(
            p,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            eta=settings.eta,
            negative_prompt=neg,
            generator=gens,
            height=settings.height,
            width=settings.width,
            output_type="np",
        ).images
        out.append(np.clip(np.rint(images * 255), 0, 255).astype(np.uint8))
        if bar is not None:
            bar.update(len(p))
    if bar is not None:
        bar.close()
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), dtype=np.uint8)


def image_grid(
    images: np.ndarray, rows: int, cols: int, row_labels: list[str] | None = None, scale: int | None = None,
    col_labels: list[str] | None = None,
) -> Image.Image:
    """Tile images row-major into a grid; small images are upscaled (nearest) so they can be seen.

    ``row_labels`` are written whole, wrapped over as many lines as the tile's height holds (only a label
    longer than that ends in "..."); ``col_labels`` (one per column) make a header row above the tiles."""
    import textwrap

    n, h, w, _ = images.shape
    if n != rows * cols:
        raise ValueError(f"{n} images do not fill a {rows}x{cols} grid")
    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"{len(col_labels)} column labels for {cols} columns")
    if scale is None:
        scale = max(1, 128 // max(h, w))
    hs, ws = h * scale, w * scale
    line_h, char_w = 12, 6  # PIL's default bitmap font
    label_w = 0
    font = ImageFont.load_default()
    wrapped: list[list[str]] = []
    if row_labels:
        label_w = min(360, 8 + char_w * max(len(t) for t in row_labels))
        width = max(1, (label_w - 8) // char_w)
        fits = max(1, hs // line_h)
        for text in row_labels:
            lines = textwrap.wrap(text, width=width, break_long_words=True) or [""]
            if len(lines) > fits:
                lines = lines[:fits]
                lines[-1] = lines[-1][: max(0, width - 3)] + "..."
            wrapped.append(lines)
    top = line_h + 4 if col_labels else 0
    grid = Image.new("RGB", (label_w + cols * (ws + 2), top + rows * (hs + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for k in range(n):
        r, c = divmod(k, cols)
        tile = Image.fromarray(images[k]).resize((ws, hs), Image.NEAREST)
        grid.paste(tile, (label_w + c * (ws + 2), top + r * (hs + 2)))
    for c, text in enumerate(col_labels or []):
        draw.text((label_w + c * (ws + 2) + 2, 2), text[: max(1, ws // char_w)], fill=(0, 0, 0), font=font)
    for r, lines in enumerate(wrapped):
        y = top + r * (hs + 2) + max(0, (hs - line_h * len(lines)) // 2)
        for i, line in enumerate(lines):
            draw.text((4, y + i * line_h), line, fill=(0, 0, 0), font=font)
    return grid


def save_generation(
    images: np.ndarray,
    prompts: list[str],
    seeds: list[int],
    out_dir: str | Path,
    *,
    settings: SamplerSettings,
    model: str,
    grid_shape: tuple[int, int] | None = None,
    force: bool = False,
) -> Path:
    """Write ``images/NNNNN.png``, ``grid.png`` and ``manifest.json`` atomically into ``out_dir``.

    Refuses to replace an existing folder unless ``force``.
    """
    with atomic_folder(out_dir, force=force) as tmp:
        (tmp / "images").mkdir()
        records = []
        for k, (im, p, s) in enumerate(zip(images, prompts, seeds)):
            name = f"images/{k:05d}.png"
            Image.fromarray(im).save(tmp / name)
            records.append({"index": k, "prompt": p, "seed": int(s), "file": name})
        if grid_shape is not None:
            rows, cols = grid_shape
            labels = [prompts[r * cols] for r in range(rows)]
            image_grid(images, rows, cols, row_labels=labels).save(tmp / "grid.png")
        manifest = {"model": model, "settings": asdict(settings), "images": records, "versions": package_versions()}
        (tmp / "manifest.json").write_text(dumps_json(manifest))  # NaN as null: bare NaN is not JSON
    return Path(out_dir)

