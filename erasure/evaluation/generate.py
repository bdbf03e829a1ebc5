"""Generate the images of a prompt list into a folder: batched, resumable, and spread over processes.

:func:`generate_to_folder` keeps ``out_dir/images/NNNNN.png`` (index ``NNNNN`` of the input lists) and
``out_dir/manifest.json``, which records the folder's recipe (model name, sampler settings, batch size)
and for each image its prompt, seed, file and the sha256 of the file's bytes.

**Resuming.** Run the same call again and it checks every recorded image against its sha256 and
generates only the missing or damaged ones. A folder holds one recipe: asking for another model,
other settings, another batch size, or another prompt/seed at an index it already holds is an
:class:`~erasure.errors.ErasureError` (pick another folder or delete it), never a silent mix.
PNGs and the manifest are written atomically (temp file + ``os.replace``) and the manifest is
rewritten after every batch, so an interruption loses at most the batch in flight and never leaves
a half-written file that counts as done.

**Several processes.** Launch the same script with ``accelerate launch`` or
``python -m torch.distributed.run``: each process takes its share of the missing indices
(``PartialState.split_between_processes``), generates it and writes its PNGs; then the main process
writes the merged manifest (hashing the new PNG files) and every process returns the full array,
read back from disk. Without a launcher it is one process, unchanged. On CPU-only machines the
processes talk over gloo; on GPUs each process uses its own device (``PartialState().device``).

**Why the batch size is part of the recipe.** Each image gets its own seeded generator, so it does
not depend on its neighbours or its position in a batch. The *shape* of the computation still
matters: CPU (oneDNN/MKL) and GPU (cuBLAS/cuDNN) kernels pick different algorithms for different
batch sizes, which moves a few pixels by one uint8 level (seen on CPU: 4 to 14 of 250k values
between batch sizes 1..7 and 8 with the tiny test models). So every pipeline call here has exactly
``batch_size`` prompts: a short batch (the last one of each process) is padded by repeating its
last prompt and the padded images are dropped. An image is then bit-for-bit a pure function of
(model, prompt, seed, settings, batch size) - the same whatever the number of processes, which
images were missing, or in which batch it landed - and the folder records its batch size.
A batch that is a full ``batch_size`` gives the same images as :func:`erasure.generate_images`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from erasure.errors import ErasureError
from erasure.evaluation.prompts import PromptSet
from erasure.generation import SamplerSettings, generate_images
from erasure.versions import package_versions

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
IMAGES_DIR = "images"
PARTS_DIR = ".parts"  # per-process records of the run in progress (non-main processes), merged by the main one
FORMAT = "erasure-generation-folder/1"
DEFAULT_BATCH_SIZE = 16
RESERVED_KEYS = frozenset({"index", "prompt", "seed", "file", "sha256"})


def generate_to_folder(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | os.PathLike,
    settings: SamplerSettings = SamplerSettings(),
    *,
    model: str,
    batch_size: int | None = None,
    progress: bool = True,
    extra: Sequence[dict[str, Any]] | None = None,
    return_images: bool = True,
) -> np.ndarray | None:
    """Generate one image per (prompt, seed) pair into ``out_dir``, resuming what is already there.

    Args:
        pipe: a diffusers Stable Diffusion pipeline (as from :func:`erasure.load_pipeline`). Under a
            multi-GPU launcher it is moved to this process's device if it is on another GPU.
        prompts, seeds: equal-length lists; image ``k`` is ``prompts[k]`` sampled from ``seeds[k]``.
        out_dir: the folder; created if missing. An existing folder must be one this function wrote
            with the same ``model``, ``settings`` and batch size, and the same prompt/seed at every
            index it holds (it may hold fewer or more indices than asked).
        settings: the sampler settings.
        model: the model's name as recorded in the manifest; part of the folder's recipe.
        batch_size: prompts per pipeline call, per process. ``None``: the folder's batch size when it
            has one, else 16. It is part of the recipe (see the module docstring), so an explicit value
            different from the folder's is an error.
        progress: show one progress bar (main process only) over this process's share.
        extra: optional per-image metadata (one JSON-serialisable dict per prompt) stored in the
            image's manifest record, e.g. ``case_number`` or ``concept``. Not part of the recipe: a rerun
            rewrites it. Keys may not be ``index``, ``prompt``, ``seed``, ``file`` or ``sha256``.
        return_images: when False, return None instead of reading every image back (large sets).

    Returns:
        uint8 array (N, H, W, 3) of all N images in input order, read back from disk. Every process
        returns the full array (after the main one has written the manifest).

    Raises:
        ErasureError: bad arguments, or a folder holding another recipe or other prompts; raised on
            every process.
    """
    prompts = list(prompts)
    seeds = [int(s) for s in seeds]
    settings.validate()
    if len(prompts) != len(seeds):
        raise ErasureError(f"got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt")
    if batch_size is not None and batch_size < 1:
        raise ErasureError(f"batch size must be >= 1 (got {batch_size})")
    extras = _check_extra(extra, len(prompts))
    out = Path(out_dir)

    state = _distributed_state(pipe)
    pipe = _to_process_device(pipe, state)
    n_proc = state.num_processes

    # 1. The main process checks the folder and decides what is missing; the others learn it by broadcast
    #    (so an error reaches every process instead of leaving the others waiting at a barrier).
    plan: Any = None
    manifest: dict[str, Any] = {}
    if state.is_main_process:
        try:
            manifest, missing, batch = _prepare(out, model, settings, batch_size, prompts, seeds, extras, pipe,
                                                n_proc)
            plan = (missing, batch)
        except ErasureError as e:
            plan = ErasureError(str(e))
        except Exception as e:  # anything else: tell the other processes, then raise the real thing here
            plan = RuntimeError(f"the main process failed preparing {out}: {type(e).__name__}: {e}")
            _broadcast(plan, state)
            raise
    plan = _broadcast(plan, state)
    if isinstance(plan, BaseException):
        raise plan
    missing, batch = plan
    if state.is_main_process:
        have = len(prompts) - len(missing)
        logger.info("%s: %d of %d images already there; generating %d with batch size %d on %d process(es)",
                    out, have, len(prompts), len(missing), batch, n_proc)

    # 2. Every process generates its share, batch by batch, recording progress after every batch.
    with state.split_between_processes(missing) as share:
        share = list(share)
    images_dir = out / IMAGES_DIR
    done: list[dict[str, Any]] = []
    bar = None
    if progress and state.is_main_process and missing:
        from tqdm.auto import tqdm

        desc = "generating" if n_proc == 1 else f"generating (process 0 of {n_proc}, {len(missing)} in all)"
        bar = tqdm(total=len(share), desc=desc, unit="img")
    try:
        for start in range(0, len(share), batch):
            chunk = share[start : start + batch]
            padded = chunk + [chunk[-1]] * (batch - len(chunk))
            images = generate_images(pipe, [prompts[k] for k in padded], [seeds[k] for k in padded], settings,
                                     batch_size=batch, progress=False)
            for k, image in zip(chunk, images):
                data = _png_bytes(image)
                _atomic_write(images_dir / _file_name(k), data)
                done.append(_record(k, prompts[k], seeds[k], hashlib.sha256(data).hexdigest(), extras[k]))
            if state.is_main_process:
                _merge_records(manifest, done)
                manifest["runs"][-1]["generated"] = len(done)
                _write_json(out / MANIFEST_NAME, manifest)
            else:
                _write_json(out / PARTS_DIR / f"process-{state.process_index}.json",
                            {**_recipe(model, settings, batch), "records": done})
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()

    # 3. The main process writes the merged manifest, hashing the files the others wrote.
    state.wait_for_everyone()
    if state.is_main_process:
        mine = {r["index"] for r in done}
        for k in missing:
            if k in mine:
                continue
            path = images_dir / _file_name(k)
            if path.is_file():
                manifest["images"].append(_record(k, prompts[k], seeds[k], _sha256(path), extras[k]))
            else:  # not raised here: the other processes wait at the barrier below, then all fail reading it back
                logger.error("%s is missing after generation (did a process fail?); rerun to resume", path)
        manifest["images"].sort(key=lambda r: r["index"])
        recorded = {r["index"] for r in manifest["images"]}
        manifest["runs"][-1]["generated"] = sum(k in recorded for k in missing)
        manifest["runs"][-1]["complete"] = all(k in recorded for k in range(len(prompts)))
        _write_json(out / MANIFEST_NAME, manifest)
        shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
    state.wait_for_everyone()
    if not return_images:
        return None
    return load_folder_images(out, count=len(prompts))


def generate_prompt_set(
    pipe,
    prompt_set: PromptSet,
    out_dir: str | os.PathLike,
    settings: SamplerSettings = SamplerSettings(),
    *,
    model: str,
    batch_size: int | None = None,
    progress: bool = True,
    return_images: bool = True,
) -> np.ndarray | None:
    """:func:`generate_to_folder` for a :class:`PromptSet`: one image per record, from its seed.

    Each manifest record also gets the set's ``case_number``, ``concept``, ``group`` and
    ``evaluation_guidance``, and the set's name is recorded as ``prompt_set``. The sampler's
    ``settings.guidance`` applies to every image: a set whose rows ask for another guidance
    (``evaluation_guidance``) is an error, so that the column is never silently ignored.
    """
    asked = sorted({r.evaluation_guidance for r in prompt_set if r.evaluation_guidance is not None})
    if any(g != settings.guidance for g in asked):
        shown = ", ".join(f"{g:g}" for g in asked[:6]) + (", ..." if len(asked) > 6 else "")
        raise ErasureError(
            f"prompt set '{prompt_set.name}' asks for guidance {shown} (evaluation_guidance) but settings.guidance is "
            f"{settings.guidance:g}; set guidance to match, or split the set by guidance and generate each part "
            "into its own folder"
        )
    extra = [
        {"case_number": r.case_number, "concept": r.concept, "group": r.group,
         "evaluation_guidance": r.evaluation_guidance, "prompt_set": prompt_set.name}
        for r in prompt_set
    ]
    return generate_to_folder(pipe, prompt_set.prompts, prompt_set.seeds, out_dir, settings, model=model,
                              batch_size=batch_size, progress=progress, extra=extra, return_images=return_images)


def load_folder_images(out_dir: str | os.PathLike, count: int | None = None) -> np.ndarray:
    """The images of a generation folder as uint8 (N, H, W, 3), index order.

    ``count``: read indices ``0..count-1`` (default: every index the manifest records, which must
    run from 0 without gaps). Does not check hashes (generation did).
    """
    out = Path(out_dir)
    if count is None:
        manifest = _read_manifest(out / MANIFEST_NAME)
        if manifest is None:
            raise ErasureError(f"{out} has no {MANIFEST_NAME}; give the folder generate_to_folder wrote")
        indices = sorted(r["index"] for r in manifest.get("images", []))
        if indices != list(range(len(indices))):
            raise ErasureError(f"{out} is incomplete (its manifest skips indices); rerun its generation to finish it")
        count = len(indices)
    if count == 0:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    images = []
    for k in range(count):
        path = out / IMAGES_DIR / _file_name(k)
        try:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB")))
        except FileNotFoundError:
            raise ErasureError(f"{path} is missing; rerun the generation of {out} to fill it in") from None
    return np.stack(images)


# ---------------------------------------------------------------------------------------------- folder


def _prepare(
    out: Path,
    model: str,
    settings: SamplerSettings,
    batch_size: int | None,
    prompts: list[str],
    seeds: list[int],
    extras: list[dict[str, Any]],
    pipe,
    num_processes: int,
) -> tuple[dict[str, Any], list[int], int]:
    """Main process: check/claim the folder, verify what it holds; returns (manifest, missing, batch size)."""
    if out.exists() and not out.is_dir():
        raise ErasureError(f"{out} is a file, not a folder; choose another output folder")
    manifest = _read_manifest(out / MANIFEST_NAME) if out.is_dir() else None
    if manifest is None and out.is_dir():
        foreign = [p for p in out.rglob("*") if p.is_file() and not _is_ours_temporary(p, out)]
        if foreign:
            raise ErasureError(
                f"{out} is not empty and has no {MANIFEST_NAME} (not a generation folder: it holds e.g. "
                f"{foreign[0].relative_to(out)}); choose another output folder or delete it"
            )
    versions = package_versions()
    run = {"processes": num_processes, "device": str(pipe.device), "versions": versions, "generated": 0,
           "complete": False}
    if manifest is None:
        batch = batch_size or DEFAULT_BATCH_SIZE
        manifest = {**_recipe(model, settings, batch), "versions": versions, "runs": [], "images": []}
    else:
        batch = _check_recipe(out, manifest, model, settings, batch_size)
        _warn_if_environment_changed(out, manifest, run)
    manifest["runs"].append(run)

    records: dict[int, dict[str, Any]] = {r["index"]: r for r in manifest["images"]}
    records.update(_read_parts(out, manifest))
    valid: dict[int, dict[str, Any]] = {}
    for k, r in sorted(records.items()):
        if k >= len(prompts):
            valid[k] = r  # beyond this request: kept as it is, unchecked
            continue
        if r["prompt"] != prompts[k] or int(r["seed"]) != seeds[k]:
            raise ErasureError(
                f"{out} holds image {k} for prompt {r['prompt']!r} seed {r['seed']}, not prompt {prompts[k]!r} seed "
                f"{seeds[k]}; choose another output folder or delete it"
            )
        path = out / r["file"]
        if path.is_file() and _sha256(path) == r.get("sha256"):
            valid[k] = _record(k, prompts[k], seeds[k], r["sha256"], extras[k])
    missing = [k for k in range(len(prompts)) if k not in valid]
    corrupt = [k for k in missing if k in records]
    if corrupt:
        logger.warning("%s: %d recorded image(s) missing or damaged, regenerating them (e.g. index %d)",
                       out, len(corrupt), corrupt[0])

    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    for tmp in list(out.glob(".*.tmp")) + list((out / IMAGES_DIR).glob(".*.tmp")):
        tmp.unlink(missing_ok=True)  # left by an interrupted write
    manifest["images"] = [valid[k] for k in sorted(valid)]
    _write_json(out / MANIFEST_NAME, manifest)  # claims the folder for this recipe before any PNG is written
    shutil.rmtree(out / PARTS_DIR, ignore_errors=True)  # merged into the manifest just written
    return manifest, missing, batch


def _recipe(model: str, settings: SamplerSettings, batch_size: int) -> dict[str, Any]:
    return {"format": FORMAT, "model": model, "settings": _jsonable(asdict(settings)), "batch_size": batch_size}


def _check_recipe(out: Path, manifest: dict[str, Any], model: str, settings: SamplerSettings,
                  batch_size: int | None) -> int:
    """The folder's batch size, or ErasureError when the folder holds another recipe."""
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("images"), list):
        raise ErasureError(
            f"{out} holds images written by something else than generate_to_folder (no '{FORMAT}' manifest); "
            "choose another output folder or delete it"
        )
    wanted = _recipe(model, settings, batch_size if batch_size is not None else manifest.get("batch_size"))
    differences = []
    if manifest.get("model") != wanted["model"]:
        differences.append(f"model {manifest.get('model')!r} (asked: {model!r})")
    held = manifest.get("settings") or {}
    for key in sorted(set(held) | set(wanted["settings"])):
        if held.get(key) != wanted["settings"].get(key):
            differences.append(f"{key}={held.get(key)!r} (asked: {wanted['settings'].get(key)!r})")
    if manifest.get("batch_size") != wanted["batch_size"]:
        differences.append(f"batch size {manifest.get('batch_size')} (asked: {batch_size}; images depend on it)")
    if differences:
        raise ErasureError(
            f"{out} holds images made with {', '.join(differences)}; choose another output folder, or delete it "
            "to start again"
        )
    return int(manifest["batch_size"])


def _read_parts(out: Path, manifest: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Records that non-main processes of an interrupted run wrote, for this folder's recipe."""
    found: dict[int, dict[str, Any]] = {}
    recipe = {k: manifest[k] for k in ("format", "model", "settings", "batch_size")}
    for path in sorted((out / PARTS_DIR).glob("process-*.json")):
        part = _read_manifest(path)
        if part is None or {k: part.get(k) for k in recipe} != recipe:
            logger.warning("ignoring %s (unreadable or another recipe)", path)
            continue
        found.update({r["index"]: r for r in part.get("records", [])})
    return found


def _merge_records(manifest: dict[str, Any], records: list[dict[str, Any]]) -> None:
    by_index = {r["index"]: r for r in manifest["images"]}
    by_index.update({r["index"]: r for r in records})
    manifest["images"] = [by_index[k] for k in sorted(by_index)]


def _warn_if_environment_changed(out: Path, manifest: dict[str, Any], run: dict[str, Any]) -> None:
    first = (manifest.get("runs") or [{}])[0]
    changed = []
    old_versions = manifest.get("versions") or {}
    for name, version in run["versions"].items():
        if old_versions.get(name, version) != version:
            changed.append(f"{name} {old_versions[name]} -> {version}")
    if first.get("device") and first["device"].split(":")[0] != run["device"].split(":")[0]:
        changed.append(f"device {first['device']} -> {run['device']}")
    if changed:
        warnings.warn(
            f"resuming {out} in another environment ({'; '.join(changed)}): the images generated now may differ "
            "slightly from those already there", stacklevel=3,
        )


def _record(index: int, prompt: str, seed: int, sha256: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"index": index, "prompt": prompt, "seed": int(seed), "file": f"{IMAGES_DIR}/{_file_name(index)}",
            "sha256": sha256, **extra}


def _check_extra(extra: Sequence[dict[str, Any]] | None, n: int) -> list[dict[str, Any]]:
    if extra is None:
        return [{} for _ in range(n)]
    extra = [dict(e) for e in extra]
    if len(extra) != n:
        raise ErasureError(f"got {len(extra)} extra records for {n} prompts; pass one dict per prompt")
    for e in extra:
        clash = RESERVED_KEYS & set(e)
        if clash:
            raise ErasureError(f"extra metadata may not use the key(s) {', '.join(sorted(clash))}; rename them")
        try:
            json.dumps(e)
        except (TypeError, ValueError) as err:
            raise ErasureError(f"extra metadata must be JSON-serialisable ({err}); convert its values") from None
    return extra


def _jsonable(value: Any) -> Any:
    """As it reads back from JSON (so that recorded and requested recipes compare equal)."""
    return json.loads(json.dumps(value))


# ---------------------------------------------------------------------------------------------- files


def _file_name(index: int) -> str:
    return f"{index:05d}.png"


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _atomic_write(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Write ``data`` to a temp file next to ``path``, then rename it over ``path``.

    PNGs are not fsynced: after a power cut a lost PNG fails its hash check and is regenerated.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, value: Any) -> None:
    _atomic_write(path, json.dumps(value, indent=1).encode("utf-8"), sync=True)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is no such file; ErasureError when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ErasureError(f"{path} is not valid JSON ({e}); delete its folder or choose another one") from None
    if not isinstance(value, dict):
        raise ErasureError(f"{path} is not a generation manifest; delete its folder or choose another one")
    return value


def _is_ours_temporary(path: Path, out: Path) -> bool:
    rel = path.relative_to(out)
    return (path.name.startswith(".") and path.name.endswith(".tmp")) or rel.parts[0] == PARTS_DIR


# ---------------------------------------------------------------------------------------------- processes


def _distributed_state(pipe):
    """The process state (erasure.distributed.process_state) for ``pipe``'s device."""
    from erasure.distributed import process_state

    return process_state(pipe.device)


def _to_process_device(pipe, state):
    """Under a multi-process launch, move a pipeline on another accelerator of the same kind to ours."""
    if state.num_processes > 1 and pipe.device.type == state.device.type != "cpu" and pipe.device != state.device:
        logger.info("moving the pipeline from %s to %s (process %d)", pipe.device, state.device, state.process_index)
        pipe = pipe.to(state.device)
    return pipe


def _broadcast(value: Any, state) -> Any:
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]
