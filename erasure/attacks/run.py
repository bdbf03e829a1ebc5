"""One loop for every attack: per prompt, the original's image, the erased model's image of the unmodified prompt
(pre-attack success), then the attack on the prompts that did not already succeed; per-prompt results written
atomically as they finish (so an interrupted run resumes), prompts sharded over processes.

Progress lives in ``OUT.progress/`` (``config.json`` with the run's hash, ``prompts/NNNNN.json`` and its
images); the finished report is written to ``OUT`` atomically and the progress folder removed. A rerun with
the same attack, settings, prompts, model weights and judge resumes; anything else is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from erasure.attacks.core import AttackContext, ModelPair
from erasure.attacks.judging import default_judge, judge_name
from erasure.attacks.report import AttackReport, IMAGE_ROLES, budget, run_metrics
from erasure.errors import ErasureError
from erasure.generation import SamplerSettings


def _is_world(pipe) -> bool:
    return getattr(pipe, "erasure_source", None) == "shapeworld"


def _weights(pipe) -> dict[str, str]:
    from erasure.embeddings import text_encoder_fingerprint

    return {"unet": text_encoder_fingerprint(pipe.unet)[:16], "text_encoder": text_encoder_fingerprint(pipe.text_encoder)[:16]}


def run_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    from erasure.files import atomic_file

    with atomic_file(path, force=True) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _load_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def _progress_folder(out: Path) -> Path:
    return out.with_name(out.name + ".progress")


def _open_progress(progress: Path, config: dict[str, Any], resume: bool, is_main: bool) -> None:
    from erasure.files import write_json

    marker = progress / "config.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get("hash") == config["hash"] and resume:
            return
        if saved.get("hash") != config["hash"] and resume:
            raise ErasureError(f"{progress} holds an interrupted attack run with other settings, prompts, model or "
                               "judge; rerun with the same ones to resume it, or pass --no-resume to start over")
        if is_main:
            shutil.rmtree(progress)
    if is_main:
        (progress / "prompts").mkdir(parents=True, exist_ok=True)
        write_json(marker, config, force=True)


def _done(progress: Path, index: int) -> dict[str, Any] | None:
    path = progress / "prompts" / f"{index:05d}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _write_done(progress: Path, record: dict[str, Any], images: dict[str, np.ndarray]) -> None:
    from erasure.files import write_json

    for role, image in images.items():
        _save_png(progress / "prompts" / f"{record['index']:05d}-{role}.png", image)
    write_json(progress / "prompts" / f"{record['index']:05d}.json", record, force=True)  # written last: the marker


def _images_of(progress: Path, index: int) -> dict[str, np.ndarray]:
    out = {}
    for role in IMAGE_ROLES:
        path = progress / "prompts" / f"{index:05d}-{role}.png"
        if path.is_file():
            out[role] = _load_png(path)
    return out


def run_attack(
    pipe,
    attack: str,
    concept: str,
    prompts: Sequence[str],
    seeds: Sequence[int] | None = None,
    *,
    result=None,
    original_pipe=None,
    judge=None,
    settings: SamplerSettings | None = None,
    attack_settings: dict[str, Any] | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    force: bool = False,
    resume: bool = True,
    n_resamples: int = 1000,
    prompt_source: str | None = None,
    progress: bool = False,
    image_cache: dict | None = None,
) -> AttackReport:
    """Run ``attack`` on ``prompts`` (one seed each, default 0, 1, ...) against the erased model: ``pipe`` with
    ``result`` applied (an Edit or Adapter, applied and restored here; ``pipe`` is left unedited), or ``pipe``
    itself when already erased with ``original_pipe`` the unedited one. ``judge.decide(images, concept)`` says
    whether the concept came back. With ``out`` the report is written there and the run resumes after an
    interruption; under ``torchrun``/``accelerate launch`` each process takes every N-th prompt.

    ``image_cache``: a dict to share between runs (several attacks on one erasure): the original model's and the
    erased model's images of the unmodified prompts, which every run makes, are generated once per (weights,
    prompt, seed, sampler) and taken from it after that. Generation is deterministic, so the images and every
    decision are the same; a record's UNet rows count only what its run generated, and its ``reused`` lists the
    images it took from the cache."""
    from erasure.attacks.catalog import ATTACKS
    from erasure.distributed import process_state

    spec = ATTACKS.get(attack)
    config = spec.make_config(attack_settings)
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ErasureError("no prompts to attack; give at least one prompt")
    seeds = list(range(len(prompts))) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(prompts):
        raise ErasureError(f"got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt")
    from erasure.text import check_prompt_lengths

    check_prompt_lengths(pipe.tokenizer, prompts)
    if settings is None:
        from erasure.evaluation.evaluate import WORLD_SETTINGS

        settings = WORLD_SETTINGS if _is_world(pipe) else SamplerSettings()
    settings.validate()
    if judge is None:
        judge = default_judge(pipe)
    models = ModelPair(pipe, result, original_pipe=original_pipe)
    erased_weights = _weights(models.use("erased"))
    run_config = {"attack": attack, "kind": spec.kind, "settings": asdict(config), "concept": concept,
                  "prompts": prompts, "seeds": seeds, "sampler": asdict(settings), "seed": int(seed),
                  "judge": judge_name(judge), "model": getattr(pipe, "erasure_source", None),
                  "erasure": None if result is None else {"method": result.method, "concepts": list(result.concepts)},
                  "erased_weights": erased_weights, "prompt_source": prompt_source}
    run_config["hash"] = run_hash(run_config)
    device = next(pipe.unet.parameters()).device
    state = process_state(device)
    out_path = Path(out) if out is not None else None
    if state.num_processes > 1 and out_path is None:
        raise ErasureError("an attack over several processes needs out= (a folder every process can write)")
    progress_dir = _progress_folder(out_path) if out_path is not None else None
    if out_path is not None:
        from erasure.files import check_output

        check_output(out_path, force=force)
        _open_progress(progress_dir, run_config, resume, state.is_main_process)
        state.wait_for_everyone()
    cache_weights = {} if image_cache is None else {  # what the cached images are keyed by
        "erased": erased_weights, "original": _weights(models.use("original")) if models.has_original else None}
    context = AttackContext(models=models, judge=judge, concept=concept, settings=settings, prompts=prompts,
                            seeds=seeds, seed=seed, image_cache=image_cache, weights=cache_weights)
    implementation = spec.implementation_class()(config)
    mine = list(range(len(prompts)))[state.process_index::state.num_processes]
    records: dict[int, dict[str, Any]] = {}
    images: dict[int, dict[str, np.ndarray]] = {}
    todo = [i for i in mine if progress_dir is None or _done(progress_dir, i) is None]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"attack {attack}", unit="prompt")
    for counted in {id(p): p for p in (pipe, original_pipe) if p is not None}.values():
        context.counter.attach(counted.unet)
    try:
        prepared = {"unet_forward": 0, "unet_forward_backward": 0, "seconds": 0.0}
        if todo and spec.kind != "transfer":
            started, (forward0, backward0) = time.perf_counter(), context.counter.snapshot()
            implementation.prepare(context)
            forward1, backward1 = context.counter.snapshot()
            prepared = {"unet_forward": forward1 - forward0, "unet_forward_backward": backward1 - backward0,
                        "seconds": round(time.perf_counter() - started, 3)}
        for i in todo:
            record, prompt_images = _one_prompt(context, implementation, spec.kind, i)
            record["process"] = state.process_index
            records[i], images[i] = record, prompt_images
            if progress_dir is not None:
                _write_done(progress_dir, record, prompt_images)
            if bar is not None:
                bar.update(1)
    finally:
        context.counter.detach()
        models.finish()
        if bar is not None:
            bar.close()
    if progress_dir is not None:
        state.wait_for_everyone()
        for i in range(len(prompts)):
            if i not in records:
                done = _done(progress_dir, i)
                if done is None:
                    raise ErasureError(f"prompt {i} has no result in {progress_dir}; rerun to finish it")
                records[i], images[i] = done, _images_of(progress_dir, i)
    ordered = [records[i] for i in sorted(records)]
    info = {"concept": concept, "model": run_config["model"], "erasure": run_config["erasure"],
            "judge": run_config["judge"], "sampler": asdict(settings), "config": run_config,
            "spec": {"paper": spec.paper, "reference": spec.reference, "budget": spec.budget},
            "budget": {**budget(ordered), "prepare": prepared, "prepare_note": "once per run (this process), "
                                                                      "before the prompts: e.g. CCE's inversion"},
            "processes": state.num_processes}
    from erasure.versions import package_versions

    info["versions"] = package_versions()
    report = AttackReport(attack=attack, kind=spec.kind, records=ordered,
                          metrics=run_metrics(spec.kind, ordered, n_resamples=n_resamples, seed=seed), info=info,
                          images=images)
    if out_path is not None:
        state.wait_for_everyone()  # every process has read the progress folder before it goes
    if out_path is not None and state.is_main_process:
        report.save(out_path, force=force)
        shutil.rmtree(progress_dir, ignore_errors=True)
    if out_path is not None:
        state.wait_for_everyone()
    return report


def _one_prompt(context: AttackContext, implementation, kind: str, index: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    start = time.perf_counter()
    forward0, backward0 = context.counter.snapshot()
    prompt, seed = context.prompts[index], context.seeds[index]
    images: dict[str, np.ndarray] = {}
    if context.models.has_original:
        images["original"] = context.original_image(index)
    erased = context.plain_image(index)
    images["erased"] = erased
    pre = bool(context.decide(erased[None])[0])
    attempt = None
    if kind != "transfer" and not pre:
        attempt = implementation.attack_prompt(context, index)
        if attempt.image is not None:
            images["attack"] = attempt.image
    forward1, backward1 = context.counter.snapshot()
    context.original_images.pop(index, None)
    record = {"index": index, "prompt": prompt, "seed": int(seed), "pre_success": pre,
              "attack_success": None if attempt is None else bool(attempt.success),
              "success": pre or bool(attempt is not None and attempt.success),
              "adversarial_prompt": None if attempt is None else attempt.prompt,
              "step": None if attempt is None else attempt.step, "tries": 0 if attempt is None else attempt.tries,
              "unet_forward": forward1 - forward0, "unet_forward_backward": backward1 - backward0,
              "seconds": round(time.perf_counter() - start, 3),
              "details": {} if attempt is None else attempt.details}
    if context.image_cache is not None:
        record["reused"] = sorted(context.reused.get(index, ()))
    return record, images
