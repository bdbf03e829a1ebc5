"""Safe writes: every output appears whole or not at all, is replaced only when asked, and never
destroys what it should not.

One place for every command and every ``save``:

* :func:`check_output` refuses outputs that must never be written or replaced (the current folder or one
  of its parents, the home folder, a filesystem root, a git checkout, a folder that holds an input of the
  same command, a symbolic link, a folder erasure did not write) and probes that the place is writable,
  before any long work starts. Every refusal is one line that names the path and says what to do.
* :func:`atomic_folder` and :func:`atomic_file` write into a temporary name beside the output and rename it
  in place at the end. Replacing is rename-old-aside, rename-new-in, delete-old, so a crash at any moment
  leaves one complete version (and the next run puts an old version that was set aside back).
  Temporaries left by killed runs are removed. Outputs get the user's umask (0644 / 0755 by default).
* :func:`write_safetensors` / :func:`read_safetensors` store, and check on load, a sha256 of the tensors'
  values in the file's metadata, so a corrupted file is refused instead of silently loaded.

This module imports neither torch nor safetensors at import time: the command line checks its outputs
before the (slow) import of torch.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from erasure.errors import ErasureError

# Files at the top of a folder that erasure wrote (generate, evaluate, export, erase, Adapter.save).
# ``--force`` replaces such a folder (or an empty one); any other folder holds the user's own files.
ERASURE_OUTPUT_MARKERS = ("manifest.json", "report.json", "export.json", "run.json", "pytorch_lora_weights.safetensors")

# The metadata key of the tensors' checksum in every safetensors file we write.
CHECKSUM_KEY = "erasure_tensors_sha256"

# Bytes written by the write probe: an already-full disk fails on the first block, not on an empty file.
_PROBE_BYTES = 4096

# errno values that are the machine's fault rather than the user's (exit code 1 instead of 2).
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO}


class StorageFault(ErasureError):
    """The machine could not store an output (disk full, quota, I/O error): still one line, exit code 1."""

    exit_code = 1


# --- checks before the work -----------------------------------------------------------------

def check_output(
    out: str | os.PathLike | None,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    kind: str = "folder",
    need_bytes: int = 0,
    flag: str = "--out",
    replaceable: Iterable[str] = ERASURE_OUTPUT_MARKERS,
) -> Path:
    """``out`` as a Path, once it is known that writing it is safe and possible; a one-line ErasureError
    (:class:`StorageFault` for a full disk) otherwise.

    Refused whatever ``force`` says: an empty path; the current folder, one of its parents, the home
    folder or a filesystem root; a git checkout; a folder that holds one of ``inputs`` (or, when it
    exists, lies inside one); a symbolic link. Refused without ``force``: an existing output. Refused with
    ``force``: an existing output of the other ``kind`` ("folder" or "file"), and a non-empty folder with
    none of the ``replaceable`` marker files at its top (so ``--force`` cannot delete a user's folder).
    Then a write probe in the output's nearest existing parent catches read-only, unwritable and full
    places before the work starts; ``need_bytes`` > 0 also checks the free space.
    """
    if out is None or not str(out).strip():
        raise ErasureError(f"{flag} is empty; give the {kind} to write, e.g. {flag} outputs/NAME")
    path = Path(out).expanduser()
    real = Path(os.path.realpath(path))
    name = str(out)
    _refuse_protected(name, real, flag)
    for item in inputs:
        if item is None or not str(item).strip() or not os.path.lexists(Path(item).expanduser()):
            continue  # a name (a Hub id, "shapeworld") or a missing file: nothing there to destroy
        source = Path(os.path.realpath(Path(item).expanduser()))
        if source == real or real in source.parents:
            raise ErasureError(f"{flag} {name} holds the input {item} of this command; writing there would destroy "
                               f"it: choose another {flag}")
        if os.path.lexists(path) and source in real.parents:
            raise ErasureError(f"{flag} {name} lies inside the input {item} of this command; replacing it would "
                               f"change that input: choose another {flag}")
    if path.is_symlink():
        raise ErasureError(f"{flag} {name} is a symbolic link (to {os.readlink(path)}); give the real path or "
                           f"another {flag}, so that replacing it cannot touch the link's target")
    if path.exists():
        if not force:
            raise ErasureError(f"{name} already exists; choose another {flag} or pass --force to replace it")
        is_folder = path.is_dir()
        if kind == "folder" and not is_folder:
            raise ErasureError(f"{flag} {name} is a file, not a folder; remove it yourself or choose another {flag}")
        if kind == "file" and is_folder:
            raise ErasureError(f"{flag} {name} is a folder, not a file; remove it yourself or choose another {flag}")
        if is_folder and not _written_by_erasure(path, tuple(replaceable)):
            markers = ", ".join(replaceable)
            raise ErasureError(f"{flag} {name} holds files erasure did not write (none of {markers}); --force "
                               f"replaces erasure's own outputs only: remove it yourself or choose another {flag}")
    probe_writable(path.parent, need_bytes=need_bytes, flag=flag, target=name)
    return path


def _refuse_protected(name: str, real: Path, flag: str) -> None:
    """The places no output may ever be: writing or replacing them loses the user's work."""
    cwd = Path(os.path.realpath(os.getcwd()))
    if real == Path(real.anchor):
        raise ErasureError(f"{flag} {name} is a filesystem root; give a folder of its own, e.g. {flag} outputs/NAME")
    if real == cwd or real in cwd.parents:
        what = "the current folder" if real == cwd else "a parent of the current folder"
        raise ErasureError(f"{flag} {name} is {what}; give a new folder of its own, e.g. {flag} outputs/NAME")
    home = Path(os.path.realpath(Path.home()))
    if real == home or real in home.parents:
        what = "your home folder" if real == home else "a parent of your home folder"
        raise ErasureError(f"{flag} {name} is {what}; give a new folder of its own, e.g. {flag} outputs/NAME")
    if (real / ".git").exists():
        raise ErasureError(f"{flag} {name} is a git checkout; give a new folder of its own, e.g. {flag} outputs/NAME")


def _written_by_erasure(folder: Path, markers: tuple[str, ...]) -> bool:
    try:
        entries = [p.name for p in folder.iterdir()]
    except OSError:
        return False
    return not entries or any(m in entries for m in markers)


def probe_writable(folder: str | os.PathLike, *, need_bytes: int = 0, flag: str = "--out",
                   target: str | None = None) -> Path:
    """The nearest existing folder at or above ``folder``, once a small file could be written and removed
    there (and ``need_bytes`` fit); a one-line ErasureError naming the place and what to do otherwise."""
    target = target or str(folder)
    place = Path(os.path.abspath(Path(folder).expanduser()))
    while not os.path.lexists(place) and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise ErasureError(f"cannot create {target}: {place} is a file, not a folder; choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".erasure-write-probe-", dir=place)
        try:
            os.write(fd, b"\0" * _PROBE_BYTES)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise _storage_error(e, place, target, flag) from None
    if need_bytes > 0:
        free = shutil.disk_usage(place).free
        if free < need_bytes:
            raise StorageFault(f"{place} has {_size(free)} free but {target} needs about {_size(need_bytes)}; "
                               f"free some space or choose another {flag}")
    return place


def _storage_error(e: BaseException, place: Path | str, target: str, flag: str = "--out") -> ErasureError:
    """One line for an OS error met while writing ``target`` in ``place``: the user's (exit 2) or the
    machine's (exit 1)."""
    code = getattr(e, "errno", None)
    if code is None and _is_disk_full(e):
        code = errno.ENOSPC
    reason = os.strerror(code) if isinstance(code, int) else (str(e).splitlines() or [type(e).__name__])[0]
    if code in (errno.ENOSPC, errno.EDQUOT):
        return StorageFault(f"no space left to write {target} in {place} ({reason}); free some space or choose "
                            f"another {flag}; nothing was written")
    if code in _MACHINE_ERRNOS:
        return StorageFault(f"could not write {target} in {place} ({reason}); check the disk; nothing was written")
    if code == errno.EROFS:
        return ErasureError(f"{place} is on a read-only filesystem, so {target} cannot be written there; "
                            f"choose a writable {flag}")
    if code in (errno.EACCES, errno.EPERM):
        return ErasureError(f"no permission to write {target} in {place}; choose a folder you can write to as {flag}")
    return ErasureError(f"cannot write {target} in {place} ({reason}); choose another {flag}")


def _is_disk_full(e: BaseException) -> bool:
    # safetensors (Rust) reports a full disk as SafetensorError("... Os { code: 28, kind: StorageFull ... }").
    text = str(e)
    return "No space left on device" in text or "os error 28" in text or "code: 28" in text or "StorageFull" in text


def _while_writing(e: BaseException, folder: Path) -> bool:
    """Whether ``e`` is a failure to write under ``folder`` (turned into one line), not an unrelated error
    raised inside the block (reading an input, a bug), which keeps its own message."""
    if isinstance(e, ErasureError):
        return False
    if _is_disk_full(e):
        return True
    if not isinstance(e, OSError):
        return False
    if e.filename is None:
        return e.errno in _MACHINE_ERRNOS or e.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    where = Path(os.path.abspath(e.filename))
    return where == folder.absolute() or folder.absolute() in where.parents


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


# --- permissions ----------------------------------------------------------------------------

def current_umask() -> int:
    """The process's umask (read by setting it and putting it back: POSIX has no other way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (and, for a folder, everything in it) the modes a plain write would have had: files
    0666 and folders 0777 less the umask. tempfile makes 0600 files and 0700 folders, which another user or a
    service account (A1111, ComfyUI) could not read."""
    mask = current_umask()
    path = Path(path)
    if path.is_symlink():
        return
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for root, dirs, files in os.walk(path):
            for d in dirs:
                if not os.path.islink(os.path.join(root, d)):
                    os.chmod(os.path.join(root, d), 0o777 & ~mask)
            for f in files:
                if not os.path.islink(os.path.join(root, f)):
                    os.chmod(os.path.join(root, f), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


# --- temporaries of killed runs -------------------------------------------------------------

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old)-(?:(?P<pid>\d+)-)?[^/]*$")


def _temporary_name(out: Path, what: str) -> str:
    # The writer's pid is in the name, so a later run can tell a dead run's leftovers from a live one's.
    return f".{out.name}.{what}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temporaries(out: str | os.PathLike, *, report=None) -> list[Path]:
    """Remove the temporaries that killed runs left beside ``out`` (``.NAME.tmp-PID-*``; an old version set
    aside as ``.NAME.old-PID-*`` is put back when ``out`` is missing, deleted otherwise). Leftovers of a live
    process are kept; leftovers whose writer is unknown (written before the pid was in the name) are named
    in a warning. Returns what was removed or restored; ``report`` (default: stderr) gets one line each."""
    out = Path(out)
    say = report or (lambda line: print(line, file=sys.stderr))
    done: list[Path] = []
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return done
    for entry in sorted(siblings):
        match = _TEMPORARY.match(entry.name)
        if not match or match["name"] != out.name:
            continue
        pid = match["pid"]
        if pid is None:
            say(f"warning: {entry} looks like the temporary of an earlier, interrupted run; remove it if no "
                f"erasure command is writing {out} now")
            continue
        if _alive(int(pid)):
            continue
        if match["what"] == "old" and not os.path.lexists(out):
            os.rename(entry, out)  # the killed run had set the old version aside but not put the new one in
            say(f"note: restored {out} from {entry.name}, set aside by an interrupted run")
        else:
            _remove(entry)
            say(f"note: removed {entry}, left by an interrupted run")
        done.append(entry)
    return done


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p ``folder``; returns the folders it created, deepest first, so a failed write can remove them."""
    missing = []
    place = folder
    while not os.path.lexists(place) and place != place.parent:
        missing.append(place)
        place = place.parent
    for p in reversed(missing):
        os.mkdir(p)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            break


# --- atomic writes --------------------------------------------------------------------------

@contextmanager
def atomic_folder(
    out: str | os.PathLike,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    need_bytes: int = 0,
    replaceable: Iterable[str] = ERASURE_OUTPUT_MARKERS,
) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; when the block ends without error it becomes ``out`` (the old
    ``out`` is set aside, the new one renamed in, the old one deleted), with the user's umask. On any error
    the temporary folder (and any parent this call created) is removed and an existing ``out`` is left
    exactly as it was. The checks of :func:`check_output` run first; OS errors during the block become one
    line (:class:`StorageFault` for a full disk)."""
    out = check_output(out, force=force, inputs=inputs, need_bytes=need_bytes, replaceable=replaceable)
    created: list[Path] = []
    tmp: Path | None = None
    ok = False
    try:
        created = _make_parents(out.parent)
        clean_stale_temporaries(out)
        tmp = Path(tempfile.mkdtemp(prefix=_temporary_name(out, "tmp"), dir=out.parent))
        yield tmp
        apply_umask(tmp)
        replace_folder(tmp, out)
        ok = True
    except Exception as e:  # noqa: BLE001 - OSError, or a library's own type for a full disk (safetensors)
        if _while_writing(e, out.parent):
            raise _storage_error(e, out.parent, str(out)) from None
        raise
    finally:
        if tmp is not None and os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            _remove_empty(created)


def replace_folder(new: str | os.PathLike, out: str | os.PathLike) -> None:
    """Put folder ``new`` at ``out``: rename an existing ``out`` aside, rename ``new`` in, delete the old one.
    At every moment one complete version exists (a crash between the renames leaves the old one as
    ``.NAME.old-PID-*``, which the next write puts back)."""
    new, out = Path(new), Path(out)
    if not os.path.lexists(out):
        os.rename(new, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=_temporary_name(out, "old"), dir=out.parent))
    aside.rmdir()  # a unique name, free again for the rename
    os.rename(out, aside)
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(aside, out)
        raise
    _remove(aside)


@contextmanager
def atomic_file(
    path: str | os.PathLike,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    need_bytes: int = 0,
    flag: str = "path",
) -> Iterator[Path]:
    """Yield a temporary file name beside ``path``; when the block ends without error that file replaces
    ``path`` in one rename (with the user's umask). On any error the temporary file is removed and an
    existing ``path`` is left as it was. The checks of :func:`check_output` (for a file) run first."""
    path = check_output(path, force=force, inputs=inputs, kind="file", need_bytes=need_bytes, flag=flag)
    created: list[Path] = []
    tmp: Path | None = None
    ok = False
    try:
        created = _make_parents(path.parent)
        clean_stale_temporaries(path)
        fd, name = tempfile.mkstemp(prefix=_temporary_name(path, "tmp"), dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        apply_umask(tmp)
        os.replace(tmp, path)
        ok = True
    except Exception as e:  # noqa: BLE001 - see atomic_folder
        if _while_writing(e, path.parent):
            raise _storage_error(e, path.parent, str(path), flag) from None
        raise
    finally:
        if tmp is not None and os.path.lexists(tmp):
            tmp.unlink()
        if not ok:
            _remove_empty(created)


def write_bytes(path: str | os.PathLike, data: bytes, *, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path, force=force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, force: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_file`)."""
    return write_bytes(path, text.encode("utf-8"), force=force)


# --- JSON -----------------------------------------------------------------------------------

def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by None, so the JSON we write is JSON:
    ``json.dumps`` would write bare ``NaN``, which strict readers (browsers, jq, most languages) reject."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps_json(data: Any, *, indent: int | None = 1) -> str:
    """JSON text of ``data`` with non-finite floats as null (see :func:`json_safe`) and other objects as str."""
    return json.dumps(json_safe(data), indent=indent, default=str, allow_nan=False)


def write_json(path: str | os.PathLike, data: Any, *, force: bool = False, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON (non-finite floats as null) to ``path`` atomically."""
    return write_text(path, dumps_json(data, indent=indent) + "\n", force=force)


# --- checksums ------------------------------------------------------------------------------

def bytes_sha256(data: bytes) -> str:
    """sha256 of ``data`` (hex)."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensor_bytes(tensor) -> bytes:
    """The raw bytes of a tensor's values (any dtype, bfloat16 included), in row-major order."""
    import torch

    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def tensors_checksum(tensors: Mapping[str, Any]) -> str:
    """sha256 (hex) over the tensors' names, dtypes, shapes and values, in name order: equal exactly when a
    reader gets the same tensors back. Stored in every safetensors file we write (``CHECKSUM_KEY``)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        header = json.dumps([name, str(t.dtype).removeprefix("torch."), list(t.shape)])
        h.update(header.encode("utf-8"))
        h.update(tensor_bytes(t))
    return h.hexdigest()


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    *,
    force: bool = False,
) -> Path:
    """Write ``tensors`` (moved to the CPU, made contiguous) and ``metadata`` (values as strings) to a
    safetensors file atomically, with the tensors' checksum added under ``CHECKSUM_KEY``.

    The file gets the checks and the one-line errors of :func:`atomic_file`."""
    from safetensors.torch import save_file

    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    meta = {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (metadata or {}).items()}
    meta[CHECKSUM_KEY] = tensors_checksum(cpu)
    with atomic_file(path, force=force) as tmp:
        save_file(cpu, str(tmp), metadata=meta)
    return Path(path)


def read_safetensors(path: str | os.PathLike, what: str = "", *, verify: bool = True) -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a safetensors file. A missing or unreadable file, or (when ``verify``) one whose
    tensors do not match the checksum stored with them, is a one-line ErasureError. Files without a stored
    checksum (written by other tools or older versions) are read as they are."""
    from safetensors import safe_open

    path = Path(path)
    label = f"{what + ' ' if what else ''}{path}"
    if not path.is_file():
        raise ErasureError(f"{label} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ErasureError(f"{path} is not a readable safetensors file ({type(e).__name__}); re-create or "
                           "re-download it") from None
    stored = meta.get(CHECKSUM_KEY)
    if verify and stored is not None and tensors_checksum(tensors) != stored:
        raise ErasureError(f"{label} is corrupted: its tensors do not match the checksum written with them "
                           f"({CHECKSUM_KEY}); re-create or re-download it")
    return tensors, meta


__all__ = ["CHECKSUM_KEY", "ERASURE_OUTPUT_MARKERS", "StorageFault", "apply_umask", "atomic_file", "atomic_folder",
           "bytes_sha256", "check_output", "clean_stale_temporaries", "current_umask", "dumps_json", "file_sha256",
           "json_safe", "probe_writable", "read_safetensors", "refuse_existing", "replace_folder", "tensor_bytes",
           "tensors_checksum", "write_bytes", "write_json", "write_safetensors", "write_text"]


def refuse_existing(out: str | os.PathLike, force: bool) -> Path:
    """The output folder ``out`` as a Path once :func:`check_output` passed (the name older callers use)."""
    return check_output(out, force=force)
