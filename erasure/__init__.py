"""erasure: remove concepts from text-to-image diffusion models, measure it, export it."""

__version__ = "0.1.0"

from erasure.errors import ErasureError  # noqa: E402
from erasure.generation import SamplerSettings, generate_images, image_grid, save_generation  # noqa: E402
from erasure.models import builtin_world_path, load_pipeline  # noqa: E402

__all__ = [
    "ErasureError",
    "SamplerSettings",
    "builtin_world_path",
    "generate_images",
    "image_grid",
    "load_pipeline",
    "save_generation",
]
