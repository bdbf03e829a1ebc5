"""The attack registry: every attack's spec, registered once (see :mod:`erasure.attacks.spec`). No torch here."""

from __future__ import annotations

from erasure.attacks.settings import (CCEConfig, CompletionConfig, NoiseConfig, RingABellConfig, TransferConfig,
                                      UnlearnDiffAtkConfig)
from erasure.attacks.spec import AttackSpec
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
