"""erasure: remove concepts from text-to-image diffusion models, measure it, export it."""

__version__ = "0.1.0"

from erasure.errors import ErasureError  # noqa: E402
from erasure.generation import SamplerSettings, generate_images, image_grid, save_generation  # noqa: E402
from erasure.models import builtin_world_path, load_pipeline  # noqa: E402
from erasure.edit import Edit  # noqa: E402
from erasure.adapters import Adapter, facilitated_transport  # noqa: E402
from erasure.methods import METHODS, erase  # noqa: E402
from erasure.evaluation.evaluate import Report, compare, evaluate  # noqa: E402
from erasure.export import export  # noqa: E402

__all__ = [
    "METHODS",
    "Adapter",
    "Edit",
    "ErasureError",
    "Report",
    "SamplerSettings",
    "builtin_world_path",
    "compare",
    "erase",
    "evaluate",
    "export",
    "facilitated_transport",
    "generate_images",
    "image_grid",
    "load_pipeline",
    "save_generation",
]
