"""Erasure methods, registered once each with a :class:`~erasure.methods.spec.MethodSpec`.

``erase(pipe, "uce", ["circle"])`` returns a result (:mod:`erasure.results`): an :class:`~erasure.edit.Edit`
(dense new weights) or an :class:`~erasure.adapters.Adapter` (LoRA factors), not applied
(``result.apply(pipe)``), so one loaded model can be edited several ways.

Importing this module does not import torch: the specs (and their settings) are plain data, and a method's
implementation is imported when it runs. A new method registers one spec here (or from a plugin with
``METHODS.register(name, spec)``) and gets the CLI, ``erasure list`` and every contract test.
"""

from __future__ import annotations

from typing import Sequence

from erasure.methods.settings import ClosedFormConfig, ESDConfig, MACEConfig, check_esd_settings
from erasure.methods.spec import MethodSpec
from erasure.registry import Registry

METHODS: Registry[MethodSpec] = Registry("method")

_UCE_PAPER = "Gandikota et al., Unified Concept Editing in Diffusion Models, WACV 2024"
_UCE_REPO = "https://github.com/rohitgandikota/unified-concept-editing"
_ESD_PAPER = "Gandikota et al., Erasing Concepts from Diffusion Models, ICCV 2023"
_ESD_REPO = "https://github.com/rohitgandikota/erasing"
_CLOSED_FORM_CHANGES = "cross-attention to_k / to_v weights of the UNet"
_ESD_TEST = {"iterations": 3, "batch_size": 2, "ddim_steps": 4}
_ESD_OPTIONS = ("checkpoint_dir", "resume", "stop_after", "progress", "counter")
# The ESD family's retain default (issue 18, docs/methods.md "The retain term"): on a model with a profile (the
# built-in world) the erased concept's neighbours in the world's templates, weight 16; on a real checkpoint no
# retain prompts unless given (retain_prompts=() turns it off everywhere: the paper's ESD)
_ESD_RETAIN = {"retain_prompts": None, "retain_weight": 16.0}


def _closed_form(name: str, summary: str, paper: str, defaults: dict) -> MethodSpec:
    return MethodSpec(
        name=name, family="closed-form", summary=summary, paper=paper, reference=_UCE_REPO, config=ClosedFormConfig,
        result="edit", trains=False, implementation="erasure.methods.closed_form:closed_form_edit",
        anchor_setting="guide", anchor_meaning="the guide concept the erased one's text embeddings are mapped to",
        defaults=defaults, options=("cache",), changes=_CLOSED_FORM_CHANGES)


def _esd(name: str, summary: str, defaults: dict, changes: str) -> MethodSpec:
    return MethodSpec(
        name=name, family="fine-tuning", summary=summary, paper=_ESD_PAPER, reference=_ESD_REPO, config=ESDConfig,
        result="edit", trains=True, implementation="erasure.methods.esd:esd_edit", anchor_setting="anchor",
        anchor_meaning="the concept the erased one is steered to (replaces the empty prompt in both frozen terms)",
        defaults={**_ESD_RETAIN, **defaults}, options=_ESD_OPTIONS, test_settings=_ESD_TEST,
        world_test_settings={"iterations": 60, "lr": 1e-3, "anchor": "square", "ddim_steps": 20},
        changes=changes, cross_field_check=check_esd_settings)


for _spec in (
    _closed_form("uce", "closed-form cross-attention edit, current UCE code", _UCE_PAPER, {}),
    _closed_form("uce-paper", "closed-form cross-attention edit, as in the UCE paper's code", _UCE_PAPER,
                 {"tokens": "last-token-to-end", "preserve_scale": None, "preserve_empty": True,
                  "template_guides": False, "template_preserve": False}),  # = closed_form.PRESETS["uce-paper"]
    _closed_form("time", "TIME: every aligned token, no preservation term",
                 "Orgad et al., Editing Implicit Assumptions in Text-to-Image Diffusion Models, ICCV 2023",
                 {"tokens": "aligned", "lamb": 0.1, "preserve": ()}),
    _esd("esd", "ESD with the default parameter group (esd-x)", {}, "every cross-attention parameter"),
    _esd("esd-x", "ESD on cross-attention", {"group": "esd-x"}, "every cross-attention parameter"),
    _esd("esd-x-strict", "ESD on cross-attention keys and values", {"group": "esd-x-strict"},
         "cross-attention to_k / to_v"),
    _esd("esd-u", "ESD on everything but cross-attention (the current script's Linear/Conv2d set)",
         {"group": "esd-u"}, "every Linear / Conv2d outside cross-attention"),
    _esd("esd-full", "ESD on every UNet parameter", {"group": "full"}, "every UNet parameter"),
):
    METHODS.register(_spec.name, _spec)

METHODS.register("lora-esd", MethodSpec(
    name="lora-esd", family="adapter", summary="ESD with a LoRA on cross-attention as the trainable part",
    paper=_ESD_PAPER, reference=_ESD_REPO, config=ESDConfig, result="adapter", trains=True,
    implementation="erasure.methods.adapters:lora_esd", anchor_setting="anchor",
    anchor_meaning="as ESD's anchor", defaults={**_ESD_RETAIN, "adapter": "attn2", "rank": 4, "lr": 1e-3},
    options=_ESD_OPTIONS, test_settings=_ESD_TEST,
    world_test_settings={"iterations": 60, "lr": 3e-3, "anchor": "square", "ddim_steps": 20},
    changes="LoRA factors on to_q / to_k / to_v / to_out of cross-attention", cross_field_check=check_esd_settings))
METHODS.register("spm", MethodSpec(
    name="spm", family="adapter", summary="SPM-style one-dimensional adapters with latent anchoring",
    paper="Lyu et al., One-Dimensional Adapter to Rule Them All, CVPR 2024", reference="https://github.com/Con6924/SPM",
    config=ESDConfig, result="adapter", trains=True, implementation="erasure.methods.adapters:spm",
    anchor_setting="anchor", anchor_meaning="as ESD's anchor",
    defaults={"adapter": "transformer-linear", "rank": 1, "alpha": 1.0, "lr": 1e-3, "latent_anchors": 4,
              "latent_anchor_weight": 1000.0},
    options=_ESD_OPTIONS, test_settings={**_ESD_TEST, "latent_anchors": 1},
    world_test_settings={"iterations": 60, "lr": 3e-3, "anchor": "square", "ddim_steps": 20},
    changes="rank-1 LoRA factors on every Linear / 1x1 Conv of every transformer block",
    cross_field_check=check_esd_settings))
METHODS.register("mace", MethodSpec(
    name="mace", family="adapter", summary="MACE: closed-form refinement, attention LoRAs, fused in closed form",
    paper="Lu et al., MACE: Mass Concept Erasure in Diffusion Models, CVPR 2024",
    reference="https://github.com/Shilin-LU/MACE", config=MACEConfig, result="adapter", trains=True, resumable=False,
    implementation="erasure.methods.adapters:mace", anchor_setting="anchor",
    anchor_meaning="the closed-form refinement's target for the concept's surrounding tokens",
    options=("progress",), test_settings={"iterations": 2, "images": 2, "batch_size": 2},
    changes="LoRA factors on cross-attention to_k / to_v"))


def erase(pipe, method: str, concepts: Sequence[str] | str, **settings):
    """Run erasure ``method`` on ``pipe`` for ``concepts``; returns the result (``result.apply(pipe)`` applies it).
    ``settings`` are checked against the method's spec first (a typo is a one-line ErasureError)."""
    return METHODS.get(method).run(pipe, concepts, **settings)


__all__ = ["METHODS", "MethodSpec", "erase"]
