"""The typed settings of every method family, as config dataclasses (no torch import here: the CLI checks a
user's settings against them before any model loads).

Each field is made by :func:`erasure.methods.spec.setting` and carries its help text and checks; a
method's own defaults (e.g. ``esd-u``'s parameter group) are in its :class:`~erasure.methods.spec.MethodSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from erasure.errors import ErasureError
from erasure.methods.spec import setting

# Mirrors erasure.modules.PARAMETER_GROUPS / ADAPTER_TARGETS (tests/test_contract.py checks they agree).
PARAMETER_GROUPS: tuple[str, ...] = ("esd-x", "esd-x-strict", "esd-u", "esd-u-original", "esd-u-all", "full")
ADAPTER_TARGET_NAMES: tuple[str, ...] = ("attn2-kv", "attn2", "transformer-linear")
CLOSED_FORM_TOKENS: tuple[str, ...] = ("last-token", "last-subject", "last-token-to-end", "subject-to-end",
                                       "subject-to-eot", "aligned", "residual")
MAX_ITERATIONS = 1_000_000  # beyond the literature's longest schedules (ESD 1000, SPM 3000, MACE 50 per concept)

TEXT_OR_LIST = (str, tuple)


@dataclass(frozen=True)
class ClosedFormConfig:
    """Settings of a closed-form cross-attention edit (defaults: the current UCE code's)."""

    guide: str | tuple[str, ...] = setting(
        "", "what the concept is mapped to: one guide for every concept or one per concept ('' = the empty prompt)",
        types=TEXT_OR_LIST)
    preserve: tuple[str, ...] | None = setting(
        None, "concepts whose outputs are kept; none = the model's default (on the built-in world the other values "
        "of the erased attribute, elsewhere nothing)", types=(tuple, None))
    templates: str | tuple[str, ...] | None = setting(
        None, "prompts per concept ({} = the concept) or a template set name (uce-art, uce-object, shapeworld, "
        "shapeworld-captions); none = shapeworld on the built-in world, else '{}'", types=(str, tuple, None))
    tokens: str = setting("last-token", "which text-encoder output tokens enter the regression (last-token: the "
                          "prompt's last token, the current UCE code; last-token-to-end: through padding, the paper's "
                          "CLI; last-subject / subject-to-end: from the concept's last token instead)",
                          choices=CLOSED_FORM_TOKENS)
    erase_scale: float = setting(1.0, "weight of the erase terms", types=(float,), minimum=0.0, maximum=1e6)
    preserve_scale: float | None = setting(
        1.0, "weight of the preserve terms; none = the paper-era rule max(0.1, 1 / number of preserved prompts)",
        types=(float, None), minimum=0.0, maximum=1e6)
    lamb: float = setting(0.5, "ridge weight keeping the edit close to the original weights", types=(float,),
                          minimum=0.0, maximum=1e6)
    preserve_empty: bool = setting(False, "also preserve the empty prompt, every token (the paper's CLI always does)")
    template_guides: bool = setting(True, "fill the guide into the erased concept's templates (false: the bare guide "
                                    "for every template, as the paper's CLI)")
    template_preserve: bool = setting(True, "fill preserved concepts into their templates (false: bare, as both UCE "
                                      "references)")
    edit_keys: bool = setting(True, "edit to_k as well as to_v")
    extra: dict = setting({}, "free-form notes recorded with the edit", types=(dict,))


@dataclass(frozen=True)
class ESDConfig:
    """ESD settings (Gandikota et al., ICCV 2023). Defaults are tuned on the built-in world; the paper used lr
    1e-5 x 1000 iterations and eta 1; the current diffusers script lr 5e-5 x 200 and negative_guidance 2
    (= eta 1: the script regresses onto e_c - ng (e_c - e_0), i.e. ng = eta + 1)."""

    group: str = setting("esd-x", "which UNet parameters train (erasure.modules.parameter_group)",
                         choices=PARAMETER_GROUPS)
    anchor: str = setting("", "what the concept is steered to, in both frozen terms ('' = the empty prompt)")
    erase_from: str = setting(
        "", "the current ESD script's --erase_from: the student is conditioned on this prompt and the frozen terms "
        "keep the empty prompt and the concept ('' = off; exclusive with anchor)")
    templates: str | tuple[str, ...] = setting(
        ("{}",), "prompts per concept ({} = concept; the anchor fills the same slot) or a template set name",
        types=TEXT_OR_LIST)
    eta: float = setting(1.0, "negative guidance in the paper's convention: target e_0 - eta (e_c - e_0)",
                         types=(float,), minimum=0.0, maximum=100.0)
    negative_guidance: float | None = setting(
        None, "the current ESD script's convention (target e_c - ng (e_c - e_0)): eta = ng - 1; exclusive with eta",
        types=(float, None), minimum=1.0, maximum=101.0)
    timestep: str = setting(
        "exact", "training timestep of a pooled x_t: 'exact' = the latent's own DDIM level (the current reference), "
        "'original' = the paper code's bucket U[20 t_enc, 20 t_enc + 20) and its one-step-shallower latent",
        choices=("exact", "original"))
    iterations: int = setting(200, "training iterations", minimum=1, maximum=MAX_ITERATIONS)
    lr: float = setting(3e-4, "Adam learning rate", types=(float,), minimum=0.0, exclusive_minimum=True, maximum=1.0)
    batch_size: int = setting(4, "training samples per iteration", minimum=1, maximum=4096)
    start_guidance: float = setting(3.0, "classifier-free guidance of the trajectories x_t is drawn from",
                                    types=(float,), minimum=0.0, maximum=100.0)
    ddim_steps: int = setting(50, "DDIM steps of those trajectories", minimum=1, maximum=1000)
    sampling: str = setting("frozen", "'frozen': x_t from the original model, pooled before training (the current "
                            "reference); 'student': from the model being trained, each iteration (the paper code)",
                            choices=("frozen", "student"))
    pool_reuse: int = setting(1, "frozen sampling: how often each pooled sample is reused", minimum=1,
                              maximum=MAX_ITERATIONS)
    seed: int = setting(0, "seed of every random draw", minimum=0, maximum=2**63 - 1)
    gradient_checkpointing: bool | str = setting(
        "auto", "trade compute for memory; auto = on for SD-sized UNets", types=(bool, "auto"))
    mixed_precision: str = setting(
        "no", "autocast compute dtype for the training forward on an fp32 model: no, fp16 or bf16",
        choices=("no", "fp16", "bf16"))
    checkpoint_every: int = setting(0, "with a checkpoint folder: save the training state every N iterations "
                                    "(0 = only the pool and the end)", minimum=0, maximum=MAX_ITERATIONS)
    frozen_batch: int | str = setting(
        "auto", "samples per no-grad UNet call while building the pool; auto = 2 for SD-sized UNets, else 8",
        types=(int, "auto"), minimum=1, maximum=4096)
    pool_lanes: int | str = setting(
        "auto", "frozen pool: trajectories are grouped within lanes of batch positions, so that N processes "
        "(torchrun / accelerate launch) each build and train on their lanes' share; auto = the number of processes. "
        "A run on N processes equals a one-process run with pool_lanes=N", types=(int, "auto"), minimum=1,
        maximum=64)
    adapter: str = setting("", "'' = train the parameter group; else a LoRA on these target modules",
                           choices=("",) + ADAPTER_TARGET_NAMES)
    rank: int = setting(4, "LoRA rank (with adapter)", minimum=1, maximum=4096)
    alpha: float | None = setting(None, "LoRA alpha; none = rank (scale 1)", types=(float, None), minimum=0.0,
                                  exclusive_minimum=True, maximum=1e6)
    latent_anchors: int = setting(0, "SPM latent anchoring: random text-embedding directions per iteration",
                                  minimum=0, maximum=1024)
    latent_anchor_prompts: tuple[str, ...] = setting((), "SPM: real anchor prompts, one drawn per iteration",
                                                     types=(tuple,))
    latent_anchor_weight: float = setting(0.0, "SPM: weight of the anchoring loss", types=(float,), minimum=0.0,
                                          maximum=1e8)
    retain_prompts: tuple[str, ...] | None = setting(
        (), "retain term (AdvUnlearn's and SalUn's retain loss): prompts of what must stay; their x_t come from the "
        "frozen model's trajectories of these prompts and the student is held to the frozen prediction there "
        "(frozen sampling; one retain sample per training sample); none = the model's default: on the built-in "
        "world the erased concepts' neighbours (the other values of their attribute, the set UCE preserves) in the "
        "world's templates, elsewhere nothing", types=(tuple, None))
    retain_weight: float = setting(1.0, "weight of the retain term (AdvUnlearn: 1.0; used with retain_prompts)",
                                   types=(float,), minimum=0.0, maximum=1e8)
    extra: dict = setting({}, "free-form notes recorded with the edit", types=(dict,))

    def validate(self) -> None:
        """Checks across settings (each value alone was checked by the spec)."""
        check_esd_settings(self.__dict__)


def check_esd_settings(s: Mapping[str, Any]) -> None:
    """ESD's checks across settings, on a full settings mapping (defaults applied)."""
    if s["pool_reuse"] > s["iterations"] * s["batch_size"]:
        raise ErasureError(f"pool_reuse {s['pool_reuse']} exceeds the number of training samples "
                           f"({s['iterations'] * s['batch_size']}); lower it")
    if s["pool_lanes"] not in ("auto", 1) and s["pool_reuse"] != 1:
        raise ErasureError("pool_lanes above 1 (several processes) needs pool_reuse=1")
    if s["erase_from"] and s["anchor"]:
        raise ErasureError("erase_from and anchor are two different objectives; give one of them")
    if s.get("retain_prompts") and s["sampling"] != "frozen":
        raise ErasureError("retain_prompts needs sampling='frozen' (the retain samples are pooled before training)")
    if s["negative_guidance"] is not None and s["eta"] != 1.0:
        raise ErasureError("give eta (the paper's convention) or negative_guidance (the script's, eta + 1), not both")


@dataclass(frozen=True)
class MACEConfig:
    """MACE settings (Lu et al., CVPR 2024; reference: rank 1, 50 steps per concept, 8 images per concept,
    importance-sampled t, attention of concept tokens + EOS, closed-form refinement first)."""

    iterations: int = setting(50, "LoRA training steps per concept", minimum=1, maximum=MAX_ITERATIONS)
    lr: float = setting(1e-2, "AdamW learning rate", types=(float,), minimum=0.0, exclusive_minimum=True, maximum=1.0)
    batch_size: int = setting(4, "images per step", minimum=1, maximum=4096)
    images: int = setting(8, "images of each concept to train on", minimum=1, maximum=100_000)
    rank: int = setting(1, "rank of each concept's LoRA", minimum=1, maximum=4096)
    tokens: str = setting(
        "concept+eos", "tokens whose attention is suppressed inside the region: the concept's, + EOS (MACE's "
        "use_pooler), or the concept's and every later one", choices=("concept", "concept+eos", "concept-to-end"))
    importance_sampling: bool = setting(True, "MACE's timestep distribution (mostly t in [200, 400])")
    templates: str | tuple[str, ...] | None = setting(
        None, "fusion prompts; none = shapeworld templates on the built-in world, else '{}'", types=(str, tuple, None))
    preserve: tuple[str, ...] | None = setting(
        None, "concepts kept by the fusion; none = the other concepts of the same kind on the world",
        types=(str, tuple, None))
    preserve_scale: float = setting(1.0, "weight of the preserve terms in the fusion", types=(float,), minimum=0.0,
                                    maximum=1e6)
    lamb: float = setting(0.5, "ridge weight of the fusion and the refinement", types=(float,), minimum=0.0,
                          maximum=1e6)
    fuse_tokens: str = setting("trained", "'all': every token of the concept's prompts carries its LoRA (MACE); "
                               "'trained': only the tokens the LoRA trained on", choices=("all", "trained"))
    cfr: bool = setting(True, "closed-form refinement first (MACE stage 1)")
    anchor: str | tuple[str, ...] = setting("", "refinement target: one for every concept or one per concept",
                                            types=TEXT_OR_LIST)
    cfr_preserve_scale: float = setting(1.0, "weight of the preserve terms in the refinement", types=(float,),
                                        minimum=0.0, maximum=1e6)
    seed: int = setting(0, "seed of every random draw", minimum=0, maximum=2**63 - 1)
    extra: dict = setting({}, "free-form notes recorded with the adapter", types=(dict,))
