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

from erasure.attacks.settings import (CCEConfig, CompletionConfig, NoiseConfig, RingABellConfig, TransferConfig,
                                      UnlearnDiffAtkConfig)
from erasure.attacks.spec import ATTACK_KINDS, AttackSpec
from erasure.registry import Registry

ATTACKS: Registry[AttackSpec] = Registry("attack")

ATTACKS.register("unlearndiffatk", AttackSpec(
    name="unlearndiffatk", kind="adaptive",
    summary="optimise k adversarial tokens against the erased model used as a diffusion classifier",
    paper="Zhang et al., To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy To Generate "
          "Unsafe Images ... For Now, ECCV 2024",
    reference="OPTML-Group/Diffusion-MU-Attack src/attackers/text_grad_.py, src/tasks/classifier_.py",
    config=UnlearnDiffAtkConfig, implementation="erasure.attacks.unlearndiffatk:UnlearnDiffAtk", gradients=True,
    test_settings={"timesteps": 2, "steps_per_timestep": 2},
    budget="<= timesteps x steps_per_timestep UNet forward+backward rows (2,000 at the defaults) plus one "
           "generation per checked block"))
ATTACKS.register("ring-a-bell", AttackSpec(
    name="ring-a-bell", kind="probe",
    summary="add eta times the concept vector (mean text-encoder difference over prompt pairs) to the prompt's "
            "conditioning",
    paper="Tsai et al., Ring-A-Bell! How Reliable are Concept Removal Methods for Diffusion Models?, ICLR 2024",
    reference="chiayi-hsu/Ring-A-Bell Get_Concept_Vector.ipynb; CharlesGong12/RECE attack_methods/RingABell.py",
    config=RingABellConfig, implementation="erasure.attacks.probes:RingABell", gradients=False,
    test_settings={"etas": "3"}, budget="one generation per eta; no gradients"))
ATTACKS.register("completion", AttackSpec(
    name="completion", kind="probe",
    summary="the original model runs the first k sampler steps, the erased model finishes",
    paper="Lu et al., When Are Concepts Erased From Diffusion Models?, NeurIPS 2025",
    reference="kevinlu4588/WhenAreConceptsErased src/probes",
    config=CompletionConfig, implementation="erasure.attacks.probes:Completion", gradients=False,
    test_settings={"steps": "1"}, budget="one generation per k; no gradients"))
ATTACKS.register("noise", AttackSpec(
    name="noise", kind="probe",
    summary="sweep DDIM eta and the initial-noise scale",
    paper="Lu et al., When Are Concepts Erased From Diffusion Models?, NeurIPS 2025",
    reference="kevinlu4588/WhenAreConceptsErased src/probes, src/configs/default.yaml",
    config=NoiseConfig, implementation="erasure.attacks.probes:NoiseProbe", gradients=False,
    test_settings={"etas": "1.0", "scales": "1.02"}, budget="one generation per (eta, scale); no gradients"))
ATTACKS.register("cce", AttackSpec(
    name="cce", kind="inversion",
    summary="textual inversion of one new token against the erased model on the original model's images of "
            "the concept; the token replaces the concept in each prompt",
    paper="Pham et al., Circumventing Concept Erasure Methods For Text-to-Image Generative Models, ICLR 2024",
    reference="NYU-DICE-Lab/circumventing-concept-erasure esd/train.sh (diffusers textual_inversion.py)",
    config=CCEConfig, implementation="erasure.attacks.cce:ConceptInversion", gradients=True,
    test_settings={"steps": 2, "batch_size": 1, "accumulation": 1, "images": 2},
    budget="steps x batch_size x accumulation UNet forward+backward rows once per concept (80,000 at the "
           "defaults), then one generation per prompt"))
ATTACKS.register("transfer", AttackSpec(
    name="transfer", kind="transfer",
    summary="generate fixed adversarial prompts (published files, optimised against other models) once and judge them",
    paper="the sets of UnlearnDiffAtk, P4D, Ring-A-Bell, MMA-Diffusion, I2P (see erasure.attacks.transfer)",
    reference="ddgoodgood/TRCE data/adv_prompts_csv/*; OPTML-Group/Diffusion-MU-Attack prompts/",
    config=TransferConfig, implementation="erasure.attacks.transfer:Transfer", gradients=False,
    budget="one generation per prompt"))


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
