"""Closed-form cross-attention editing: the one ridge solver of the UCE / TIME family.

For every cross-attention projection W (``attn2.to_k``, ``attn2.to_v``) the edit is

    W_new = (lamb W + sum_e s_e v_e c_e^T + sum_p s_p (W c_p) c_p^T) (lamb I + sum_e s_e c_e c_e^T + sum_p s_p c_p c_p^T)^-1

the minimiser of  lamb |W' - W|^2 + sum_e s_e |W' c_e - v_e|^2 + sum_p s_p |W' c_p - W c_p|^2,
where c are text-encoder output tokens: erased (e) tokens are sent to targets v_e, preserved (p)
tokens keep their outputs. With "replace" targets v_e = W g_e (g_e the aligned token of a guide
prompt), the right-hand side is W M with M shared by every layer, so W_new = W (M A^-1): one d x d
solve in float64 (Cholesky, no explicit inverse) serves all 32 matrices of SD 1.x. Targets given
per layer (MACE-style fusion) take one triangular solve per layer against the same factor.

Which output tokens enter the regression is the method's most important and least documented
choice, so it is a named option here (``TOKEN_SELECTIONS``). "The prompt's last token" is the last real
token before end-of-text (the references' ``attention_mask.sum() - 2``); "the concept's last token" is the
last token of the concept's words wherever the template puts them. The two agree only when the concept
ends the prompt:

- ``last-token``: the prompt's last token only, for erased, guide and preserved prompts alike (the current
  UCE code, rohitgandikota/unified-concept-editing@28c81ed ``trainscripts/uce_sd_erase.py``: ``uce``);
- ``last-subject``: the concept's last token only; preserved prompts likewise (ours);
- ``last-token-to-end``: from the prompt's last token through end-of-text and padding, aligned position by
  position with the guide's from the guide's last token, both cut to 77 - max(the two start indices) rows;
  preserved prompts use all their tokens (the paper-era CLI, rohitgandikota/unified-concept-editing@35e91e2
  ``train-scripts/train_erase.py``: ``uce-paper``);
- ``subject-to-end``: the same from the concept's last token (ours);
- ``subject-to-eot``: from the concept's last token through end-of-text only, padding left out (padding
  positions of different prompts are much alike, so editing them for one concept moves others: it serves
  mass erasure);
- ``aligned``: all tokens, each source token aligned to the identical token of the guide prompt,
  differing spans to each other (TIME);
- ``residual``: the tokens the source and guide prompts share (prefix, suffix, end-of-text and padding),
  each aligned to its counterpart, the concept's own tokens excluded: the concept's residue in the
  surrounding words (MACE's closed-form refinement, which leaves the concept tokens to its LoRAs).

Where prompts come from also differs between the references: the paper-era CLI fills only the erased
concept into its templates (the guide and the preserved concepts stay bare) and always preserves the empty
prompt; the current code fills the guide too. ``template_guides`` / ``template_preserve`` /
``preserve_empty`` name those choices (``uce-paper`` sets the paper's).
"""

from __future__ import annotations

import difflib
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from erasure.edit import Edit, make_edit
from erasure.embeddings import DEFAULT_CACHE, EmbeddingCache, PromptEncoding
from erasure.errors import ErasureError
from erasure.methods.settings import ClosedFormConfig  # the one definition of the settings and their defaults
from erasure.modules import cross_attention_kv
from erasure.text import fill_template as _fill
from erasure.text import normalise_concepts as _normalise

TOKEN_SELECTIONS: tuple[str, ...] = ("last-token", "last-subject", "last-token-to-end", "subject-to-end",
                                     "subject-to-eot", "aligned", "residual")

# Template sets for prompt expansion ({} is the concept). "uce-art" / "uce-object" are the current UCE
# code's --expand_prompts lists.
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "none": ("{}",),
    "uce-art": ("{}", "painting by {}", "art by {}", "artwork by {}", "picture by {}", "style of {}"),
    "uce-object": ("{}", "image of {}", "photo of {}", "portrait of {}", "picture of {}", "painting of {}"),
}


# --------------------------------------------------------------------------- the solver


def _scales(value: float | Sequence[float] | Tensor, n: int, what: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ErasureError(f"{what} has {t.numel()} values for {n} embeddings; give one value or one per embedding")
    if (t < 0).any():
        raise ErasureError(f"{what} must be >= 0")
    return t


def solve_closed_form(
    weights: Mapping[str, Tensor],
    erase_inputs: Tensor,
    erase_targets: Tensor | Mapping[str, Tensor],
    preserve_inputs: Tensor | None = None,
    *,
    erase_scale: float | Sequence[float] | Tensor = 1.0,
    preserve_scale: float | Sequence[float] | Tensor = 1.0,
    lamb: float = 0.5,
) -> dict[str, Tensor]:
    """Solve the ridge edit for every matrix in ``weights`` (name -> W of shape out x in); float64 inside.

    ``erase_inputs``: (n, in) embeddings c_e. ``erase_targets``: either (n, in) guide embeddings g_e
    (targets v_e = W g_e, shared by all layers) or a mapping name -> (n, out) explicit targets.
    ``preserve_inputs``: (m, in) embeddings c_p kept as they are. Returns name -> W_new (float64).
    """
    if lamb < 0:
        raise ErasureError(f"lamb must be >= 0 (got {lamb})")
    c_e = erase_inputs.to(torch.float64)
    n, d = c_e.shape
    c_p = preserve_inputs.to(torch.float64) if preserve_inputs is not None else c_e.new_zeros((0, d))
    if c_p.shape[1] != d:
        raise ErasureError(f"preserved embeddings are {c_p.shape[1]} wide but erased ones {d}")
    s_e = _scales(erase_scale, n, "erase_scale")
    s_p = _scales(preserve_scale, c_p.shape[0], "preserve_scale")
    for name, w in weights.items():
        if w.shape[1] != d:
            raise ErasureError(f"{name} reads {w.shape[1]}-wide inputs but the embeddings are {d} wide")
    eye = torch.eye(d, dtype=torch.float64)
    preserve_gram = (c_p * s_p[:, None]).T @ c_p
    a = lamb * eye + (c_e * s_e[:, None]).T @ c_e + preserve_gram
    if lamb == 0 and int((s_e > 0).sum()) + int((s_p > 0).sum()) < d:
        raise ErasureError(
            f"the system is singular: lamb=0 needs at least {d} independent embeddings, got "
            f"{int((s_e > 0).sum()) + int((s_p > 0).sum())}; set lamb > 0 (UCE uses 0.5)"
        )
    factor, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise ErasureError("the system is singular (the embeddings do not span their space); set lamb > 0 (UCE uses 0.5)")
    out: dict[str, Tensor] = {}
    if isinstance(erase_targets, Tensor):
        g_e = erase_targets.to(torch.float64)
        if g_e.shape != c_e.shape:
            raise ErasureError(f"guide embeddings have shape {tuple(g_e.shape)}, erased ones {tuple(c_e.shape)}")
        # W_new = W M A^-1 with M - A = (G - C)^T S C, so W_new = W + W (G - C)^T S (C A^-1): a change of
        # rank <= n. For few rows apply it in that factored form (float64, exact); for many, fold it into
        # one d x d correction D and apply W D in float32 (relative error ~1e-6 of the change), which
        # halves the cost of the 32 products that dominate a 1000-concept solve.
        right = torch.cholesky_solve(c_e.T.contiguous(), factor).T  # C A^-1, (n, d)
        left = (g_e - c_e).T * s_e  # (G - C)^T S, (d, n)
        if 2 * n < d:
            for name, w in weights.items():
                w64 = w.to(torch.float64)
                out[name] = w64 + (w64 @ left) @ right
        else:
            correction = (left @ right).to(torch.float32)
            for name, w in weights.items():
                out[name] = w.to(torch.float64) + (w.to(torch.float32) @ correction).to(torch.float64)
    else:
        for name, w in weights.items():
            w64 = w.to(torch.float64)
            v_e = erase_targets[name].to(torch.float64)
            b = lamb * w64 + (v_e * s_e[:, None]).T @ c_e + w64 @ preserve_gram
            out[name] = torch.cholesky_solve(b.T.contiguous(), factor).T
    return out


# --------------------------------------------------------------------------- token selection


def _find_last(seq: Sequence[int], sub: Sequence[int]) -> int | None:
    """Start of the last occurrence of ``sub`` in ``seq``."""
    for start in range(len(seq) - len(sub), -1, -1):
        if list(seq[start : start + len(sub)]) == list(sub):
            return start
    return None


def _slot_end(tokenizer, template: str, text: str, enc: PromptEncoding) -> int:
    """Index of the last token of ``text`` inside the encoded ``template.format(text)``; for an empty
    ``text`` the token just before the slot (the start token for a bare empty prompt)."""
    words = tokenizer(text, add_special_tokens=False).input_ids if text.strip() else []
    real = enc.ids[: enc.length - 1]  # start token + words, no end token
    if words:
        start = _find_last(real, words)
        if start is not None:
            return start + len(words) - 1
    prefix = template.split("{}")[0].strip()
    n_prefix = len(tokenizer(prefix, add_special_tokens=False).input_ids) if prefix else 0
    if not words:
        return n_prefix  # 0 = the start token
    return min(enc.length - 2, n_prefix + len(words))  # tokenisation merged across the boundary: best guess


def _aligned_pairs(src: PromptEncoding, dst: PromptEncoding, context: int, shared_only: bool = False
                   ) -> list[tuple[int, int]]:
    """TIME's alignment: every source position -> a destination position. ``shared_only``: only the
    positions whose token both prompts share (MACE's ``find_matching_indices``)."""
    a, b = src.ids[1 : src.length - 1], dst.ids[1 : dst.length - 1]
    pairs = [(0, 0)]
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if shared_only and tag != "equal":
            continue
        for i in range(i1, i2):
            if tag == "equal":
                j = j1 + (i - i1)
            elif tag == "replace":
                j = j1 + (i - i1) * (j2 - j1) // (i2 - i1)
            elif tag == "delete":  # source words with no counterpart: the destination token before them
                j = j1 - 1
            else:
                continue
            pairs.append((i + 1, j + 1))
    for k in range(context - (src.length - 1)):  # end token and padding, position by position
        pairs.append((src.length - 1 + k, min(context - 1, dst.length - 1 + k)))
    return pairs


@dataclass(frozen=True)
class EditRows:
    """The regression's rows: erased (input, guide) embedding pairs, and preserved embeddings."""

    erase_inputs: Tensor
    erase_guides: Tensor
    preserve_inputs: Tensor
    erase_prompts: tuple[str, ...]
    preserve_prompts: tuple[str, ...]


def build_rows(
    pipe,
    concepts: Sequence[str],
    guides: Sequence[str],
    preserve: Sequence[str],
    *,
    templates: Sequence[str] | Callable[[str], Sequence[str]] = ("{}",),
    tokens: str = "last-subject",
    template_guides: bool = True,
    template_preserve: bool = True,
    cache: EmbeddingCache = DEFAULT_CACHE,
) -> EditRows:
    """Encode every (template x concept / guide / preserved concept) prompt and pick the rows.

    ``templates`` is a list, or a function giving each concept its list. A guide is filled into its
    erased concept's templates (``template_guides=False``: the bare guide for every template, as the
    paper-era CLI does); a preserved concept into its own (``template_preserve=False``: bare, as both
    references do). The empty preserved prompt ``""`` is never templated: it stands for itself."""
    templates_for = templates if callable(templates) else (lambda concept: templates)
    if tokens not in TOKEN_SELECTIONS:
        raise ErasureError(f"unknown token selection {tokens!r}; choose one of {', '.join(TOKEN_SELECTIONS)}")
    tokenizer = pipe.tokenizer
    context = tokenizer.model_max_length
    erase_prompts = []  # (source text, guide text, source template, guide template, concept, guide)
    for c, g in zip(concepts, guides):
        for t in templates_for(c):
            guide_template = t if template_guides else "{}"
            erase_prompts.append((_fill(t, c), _fill(guide_template, g), t, guide_template, c, g))
    preserve_prompts = [(_fill(t, p), t, p) for p in preserve
                        for t in (templates_for(p) if template_preserve and p else ("{}",))]
    encodings = cache.encode(pipe, [e[0] for e in erase_prompts] + [e[1] for e in erase_prompts]
                             + [p[0] for p in preserve_prompts])
    n = len(erase_prompts)
    src_enc, dst_enc, pres_enc = encodings[:n], encodings[n : 2 * n], encodings[2 * n :]
    c_rows, g_rows = [], []
    for (_, _, template, guide_template, concept, guide), src, dst in zip(erase_prompts, src_enc, dst_enc):
        if tokens in ("aligned", "residual"):
            pairs = _aligned_pairs(src, dst, context, shared_only=tokens == "residual")
        else:
            if tokens.startswith("last-token"):  # the prompt's last real token (attention_mask.sum() - 2)
                i_c, i_g = src.length - 2, dst.length - 2
            else:
                i_c = _slot_end(tokenizer, template, concept, src)
                i_g = _slot_end(tokenizer, guide_template, guide, dst)
            if tokens in ("last-token", "last-subject"):
                pairs = [(i_c, i_g)]
            elif tokens == "subject-to-eot":
                pairs = [(i, min(context - 1, i_g + (i - i_c))) for i in range(i_c, src.length)]
            else:  # through end-of-text and padding; both spans cut to the same length, 77 - max(i_c, i_g)
                pairs = [(i, i_g + (i - i_c)) for i in range(i_c, context - max(0, i_g - i_c))]
        idx_c = torch.tensor([p[0] for p in pairs])
        idx_g = torch.tensor([p[1] for p in pairs])
        c_rows.append(src.hidden[idx_c])
        g_rows.append(dst.hidden[idx_g])
    p_rows = []
    for (text, template, concept), enc in zip(preserve_prompts, pres_enc):
        if tokens == "last-token":
            p_rows.append(enc.hidden[[enc.length - 2]])
        elif tokens == "last-subject":
            p_rows.append(enc.hidden[[_slot_end(tokenizer, template, concept, enc)]])
        else:
            p_rows.append(enc.hidden)
    width = src_enc[0].hidden.shape[-1]
    return EditRows(
        erase_inputs=torch.cat(c_rows),
        erase_guides=torch.cat(g_rows),
        preserve_inputs=torch.cat(p_rows) if p_rows else torch.zeros((0, width)),
        erase_prompts=tuple(e[0] for e in erase_prompts),
        preserve_prompts=tuple(p[0] for p in preserve_prompts),
    )


# --------------------------------------------------------------------------- the method


def _resolve_templates(templates: tuple[str, ...]):
    """A one-element tuple naming a template set resolves to it (a model's concept-dependent set, such as the
    built-in world's "shapeworld", to a per-concept function: erasure.text.concept_template_set)."""
    from erasure.text import concept_template_set

    if len(templates) == 1 and concept_template_set(templates[0]) is not None:
        return concept_template_set(templates[0])
    if len(templates) == 1 and templates[0] in TEMPLATE_SETS:
        return TEMPLATE_SETS[templates[0]]
    return templates


def default_preserve(pipe, concepts: Sequence[str]) -> tuple[str, ...]:
    """On the built-in world: the other values of each erased concept's attribute (as UCE preserves the
    other artists), from the model's profile (erasure.profiles). Elsewhere: nothing (give ``preserve=``)."""
    from erasure.profiles import profile_of

    profile = profile_of(pipe)
    return profile.preserve_for(concepts) if profile is not None else ()


def closed_form_edit(
    pipe,
    concepts: Sequence[str] | str,
    *,
    method: str = "uce",
    cache: EmbeddingCache = DEFAULT_CACHE,
    **settings,
) -> Edit:
    """Erase ``concepts`` by the closed-form cross-attention edit; returns an :class:`Edit` (not applied)."""
    unknown = set(settings) - set(ClosedFormConfig.__dataclass_fields__)
    if unknown:
        raise ErasureError(f"unknown setting(s) {sorted(unknown)} for {method}; "
                           f"known: {', '.join(sorted(ClosedFormConfig.__dataclass_fields__))}")
    if isinstance(settings.get("templates"), str):
        name = settings["templates"]
        if name not in TEMPLATE_SETS and name not in ("shapeworld", "shapeworld-captions"):
            raise ErasureError(f"unknown template set {name!r}; choose one of {', '.join(TEMPLATE_SETS)}, "
                               "shapeworld, or give a list")
        settings["templates"] = (name,)
    for key in ("preserve", "templates"):
        if settings.get(key) is not None:
            settings[key] = tuple(settings[key])
    if isinstance(settings.get("guide"), list):
        settings["guide"] = tuple(settings["guide"])
    cfg = ClosedFormConfig(**settings)
    concepts = _normalise(concepts)
    guides = (cfg.guide,) * len(concepts) if isinstance(cfg.guide, str) else tuple(cfg.guide)
    if len(guides) != len(concepts):
        raise ErasureError(f"{len(guides)} guides for {len(concepts)} concepts; give one guide or one per concept")
    if cfg.templates is None:
        from erasure.profiles import profile_of

        profile = profile_of(pipe)
        cfg = replace(cfg, templates=(profile.default_templates,) if profile is not None else ("{}",))
    templates = _resolve_templates(cfg.templates)
    if not callable(templates) and any("{}" not in t for t in templates):
        raise ErasureError("every template needs a {} where the concept goes, e.g. \"a photo of {}\"")
    preserve = cfg.preserve if cfg.preserve is not None else default_preserve(pipe, concepts)
    # every preserve prompt is kept, the empty one too: it preserves the empty prompt's tokens
    preserve = tuple(" ".join(str(p).split()) for p in preserve)
    if cfg.preserve_empty and "" not in preserve:
        preserve = ("",) + preserve
    clash = sorted(set(preserve) & set(concepts))
    if clash:
        raise ErasureError(f"{clash[0]!r} is both erased and preserved; remove it from the preserve set")
    preserve_scale = cfg.preserve_scale if cfg.preserve_scale is not None else max(0.1, 1 / max(1, len(preserve)))
    t0 = time.perf_counter()
    rows = build_rows(pipe, concepts, guides, preserve, templates=templates, tokens=cfg.tokens,
                      template_guides=cfg.template_guides, template_preserve=cfg.template_preserve, cache=cache)
    t1 = time.perf_counter()
    layers = {
        f"unet.{name}.weight": module.weight.detach()
        for name, module in cross_attention_kv(pipe.unet).items()
        if cfg.edit_keys or name.endswith("to_v")
    }
    new = solve_closed_form(
        layers, rows.erase_inputs, rows.erase_guides, rows.preserve_inputs,
        erase_scale=cfg.erase_scale, preserve_scale=preserve_scale, lamb=cfg.lamb,
    )
    t2 = time.perf_counter()
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    config["preserve"] = list(preserve)
    info = {"erase_rows": int(rows.erase_inputs.shape[0]), "preserve_rows": int(rows.preserve_inputs.shape[0]),
            "encode_seconds": round(t1 - t0, 4), "solve_seconds": round(t2 - t1, 4),
            "model": getattr(pipe, "erasure_source", None)}
    return make_edit(pipe, method, concepts, config, new, info=info)


# Named presets: the literature's variants of the same solver.
PRESETS: dict[str, dict] = {
    # current UCE code (unified-concept-editing@28c81ed trainscripts/uce_sd_erase.py): the prompt's last token,
    # lamb 0.5, scales 1
    "uce": {},
    # paper-era UCE CLI (unified-concept-editing@35e91e2 train-scripts/train_erase.py, technique "replace"):
    # the prompt's last token through padding, 77 - max(start indices) rows; retain_texts = [''] + preserve,
    # every token; preserve scale max(0.1, 1 / len(retain_texts)); templates on the erased concept only
    "uce-paper": {"tokens": "last-token-to-end", "preserve_scale": None, "preserve_empty": True,
                  "template_guides": False, "template_preserve": False},
    "time": {"tokens": "aligned", "lamb": 0.1, "preserve": ()},  # TIME: all aligned tokens, no preserve term
}
