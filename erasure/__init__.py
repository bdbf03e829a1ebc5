"""erasure: remove concepts from text-to-image diffusion models, measure it, export it.

The public names below are imported on first use (PEP 562), not with the package: ``import erasure.cli``
must not import torch and diffusers (seconds), so the command line answers ``--help`` and user mistakes at
once. ``from erasure import Edit`` and ``erasure.evaluate(...)`` work as before.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "ErasureError": "erasure.errors",
    "SamplerSettings": "erasure.generation",
    "generate_images": "erasure.generation",
    "image_grid": "erasure.generation",
    "save_generation": "erasure.generation",
    "builtin_world_path": "erasure.models",
    "load_pipeline": "erasure.models",
    "Edit": "erasure.edit",
    "Adapter": "erasure.adapters",
    "facilitated_transport": "erasure.adapters",
    "METHODS": "erasure.methods",
    "erase": "erasure.methods",
    "Report": "erasure.evaluation.evaluate",
    "compare": "erasure.evaluation.evaluate",
    "evaluate": "erasure.evaluation.evaluate",
    "export": "erasure.export",
}

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
assert sorted(__all__) == sorted(_PUBLIC)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from erasure.adapters import Adapter, facilitated_transport
    from erasure.edit import Edit
    from erasure.errors import ErasureError
    from erasure.evaluation.evaluate import Report, compare, evaluate
    from erasure.export import export
    from erasure.generation import SamplerSettings, generate_images, image_grid, save_generation
    from erasure.methods import METHODS, erase
    from erasure.models import builtin_world_path, load_pipeline


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'erasure' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


class _Package(types.ModuleType):
    """``erasure.export`` is both a submodule and the function it defines. Importing the submodule binds it
    as an attribute of the package; the eager ``from erasure.export import export`` used to put the function
    back over it, and this keeps it so: ``erasure.export`` stays the function, however it was imported."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _PUBLIC.get(name) == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted({"__version__", *_PUBLIC})
