"""Safe writes: an output folder appears whole or not at all, and is replaced only when asked."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from erasure.errors import ErasureError


def refuse_existing(out: str | os.PathLike, force: bool) -> Path:
    """``out`` as a Path; ErasureError if it exists and ``force`` is not set."""
    out = Path(out)
    if out.exists() and not force:
        raise ErasureError(f"{out} already exists; choose another --out or pass --force to replace it")
    return out


@contextmanager
def atomic_folder(out: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` in one rename, on any
    error it is removed and ``out`` is left as it was."""
    out = refuse_existing(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_safetensors(path: str | os.PathLike, what: str = "") -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a missing or unreadable file is a one-line ErasureError."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ErasureError(f"{what + ' ' if what else ''}{path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ErasureError(f"{path} is not a readable safetensors file ({type(e).__name__})") from None
