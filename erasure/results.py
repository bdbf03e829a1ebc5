"""The result protocol: what every method returns, whatever its family.

- :class:`~erasure.edit.Edit` (``kind == "edit"``): new values for some weights (closed form, ESD);
- :class:`~erasure.adapters.Adapter` (``kind == "adapter"``): LoRA factors attached by peft (LoRA-ESD, SPM, MACE);
- an inference-time result (``kind == "guide"``), for methods that change how the pipeline runs rather than
  its weights, follows the same protocol when the first such method lands.

Every result has ``method``, ``concepts``, ``config``, ``info``, ``apply(pipe)``, ``restore(pipe)`` (exact),
``save(path, force=...)``, and a class method ``load(path)``; :func:`load_result` reads any of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

from erasure.errors import ErasureError


@runtime_checkable
class Result(Protocol):
    """What :func:`erasure.erase` returns."""

    kind: str
    method: str
    concepts: tuple[str, ...]
    config: Mapping[str, Any]
    info: Mapping[str, Any]

    def apply(self, pipe, *, check: bool = True) -> Any: ...

    def restore(self, pipe) -> Any: ...

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path: ...


def load_result(path: str | os.PathLike):
    """The result saved at ``path``: an edit file (``.safetensors`` written by ``Edit.save``) or an adapter
    folder (or its ``pytorch_lora_weights.safetensors``) written by ``Adapter.save``."""
    from erasure.adapters import ADAPTER_FORMAT, LORA_WEIGHT_NAME, Adapter
    from erasure.edit import EDIT_FORMAT, Edit

    path = Path(path)
    file = path / LORA_WEIGHT_NAME if path.is_dir() else path
    if not file.is_file():
        raise ErasureError(f"no erasure result at {path}; give an edit file (edit.safetensors) or an adapter folder")
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ErasureError(f"{file} is not a readable safetensors file ({type(e).__name__})") from None
    if meta.get("format") == EDIT_FORMAT:
        return Edit.load(file)
    if meta.get("erasure_format") == ADAPTER_FORMAT:
        return Adapter.load(path)
    raise ErasureError(f"{file} is not an erasure edit or adapter (no erasure format in its metadata)")
