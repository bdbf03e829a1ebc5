"""Attacks on erased models: does the erased concept come back? Registered by name like the methods.

    from erasure.attacks import attack
    report = attack(pipe, "unlearndiffatk", "circle", prompts, result=edit)   # edit: what erasure.erase returned
    report.value("pre_asr"), report.value("asr")                               # with report.metrics[...] CIs
    report.save("outputs/attack-circle")

Every attack works for any concept on any pipeline the toolkit loads, judged by any object with
``decide(images, concept) -> bool array`` (the built-in world's classifier by default there). Kinds (see
:mod:`erasure.attacks.spec`): ``adaptive`` (UnlearnDiffAtk), ``probe`` (Ring-A-Bell's concept vector, diffusion
completion, the noise probe: no gradients), ``inversion`` (CCE) and ``transfer`` (published prompt files).
Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from erasure.attacks.catalog import ATTACKS
from erasure.attacks.spec import ATTACK_KINDS, AttackSpec


def attack(pipe, name: str, concept: str, prompts: Sequence[str] | str | Path | None = None,
           seeds: Sequence[int] | None = None, **kwargs: Any):
    """Run attack ``name`` for ``concept`` (see :func:`erasure.attacks.run.run_attack` for the keywords:
    ``result``, ``judge``, ``settings``, ``attack_settings``, ``seed``, ``out``, ...). ``prompts`` is a list of
    prompts, a prompt set name or CSV file (its seeds are used), or for ``transfer`` a transfer-set name
    (see :data:`erasure.attacks.transfer.TRANSFER_SETS`)."""
    from erasure.attacks.prompting import resolve_prompts
    from erasure.attacks.run import run_attack

    ATTACKS.get(name)
    texts, file_seeds, source = resolve_prompts(prompts, concept, transfer=ATTACKS.get(name).kind == "transfer",
                                                datasets_dir=kwargs.pop("datasets_dir", None),
                                                limit=kwargs.pop("limit", None), pipe=pipe)
    return run_attack(pipe, name, concept, texts, seeds if seeds is not None else file_seeds,
                      prompt_source=source, **kwargs)


__all__ = ["ATTACKS", "ATTACK_KINDS", "AttackSpec", "attack"]
