"""Text handling shared by every method and the evaluator: concept names and the 77-token rule.

One rule for prompts longer than the text encoder's window: they are refused (a one-line error naming the
prompt and its length), never silently truncated, because a truncated prompt is a different prompt and an
erasure trained or measured on it says nothing about the one the user wrote.
"""

from __future__ import annotations

from typing import Sequence

from erasure.errors import ErasureError


# Template sets whose templates depend on the concept, offered by a model profile; looked up by name and
# imported only when used (a method names the set, it never imports the model that offers it).
CONCEPT_TEMPLATE_SETS: dict[str, str] = {
    "shapeworld": "erasure.world.profile:world_templates",
    "shapeworld-captions": "erasure.world.profile:world_caption_templates",
}


def concept_template_set(name: str):
    """The per-concept template function registered as ``name`` in :data:`CONCEPT_TEMPLATE_SETS`, or None."""
    import importlib

    where = CONCEPT_TEMPLATE_SETS.get(name) if isinstance(name, str) else None
    if where is None:
        return None
    module, _, attr = where.partition(":")
    return getattr(importlib.import_module(module), attr)


def normalise_concepts(concepts: Sequence[str] | str) -> tuple[str, ...]:
    """Concepts as a tuple of whitespace-normalised names; an empty list or name is a one-line error."""
    if isinstance(concepts, str):
        concepts = (concepts,)
    out = tuple(" ".join(str(c).split()) for c in concepts)
    if not out:
        raise ErasureError("no concept given; name at least one concept to erase")
    if any(not c for c in out):
        raise ErasureError("an empty concept was given; name the concept to erase (e.g. --concept \"circle\")")
    return out


def fill_template(template: str, concept: str) -> str:
    """``template`` with ``{}`` replaced by ``concept``, whitespace normalised (an empty concept leaves no gap)."""
    return " ".join(template.replace("{}", concept).split())


def token_count(tokenizer, prompt: str) -> int:
    """Tokens of ``prompt`` including the start and end tokens, untruncated."""
    return len(tokenizer(prompt, truncation=False).input_ids)


def check_prompt_lengths(tokenizer, prompts: Sequence[str]) -> None:
    """Refuse a prompt longer than the tokenizer's window (77 tokens for SD 1.x/2.x, start and end included)."""
    limit = int(getattr(tokenizer, "model_max_length", 77) or 77)
    if limit > 10_000:  # a tokenizer without a configured window
        return
    for prompt in prompts:
        n = token_count(tokenizer, prompt)
        if n > limit:
            shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            raise ErasureError(f"prompt {shown!r} is {n} tokens, over the text encoder's {limit}; shorten it "
                               "(longer prompts would be cut, and erased or measured as another prompt)")


def encode_prompts(pipe, prompts: Sequence[str]):
    """Text-encoder outputs (last hidden state, 77 tokens each) of ``prompts``, in the UNet's dtype and on its
    device; a prompt over the window is refused (:func:`check_prompt_lengths`). For many repeated prompts
    (closed-form editing) :class:`erasure.embeddings.EmbeddingCache` keeps them."""
    import torch

    from erasure.precision import model_dtype_device

    check_prompt_lengths(pipe.tokenizer, prompts)
    tok = pipe.tokenizer(list(prompts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    dtype, device = model_dtype_device(pipe.unet)
    with torch.no_grad():
        return pipe.text_encoder(tok.input_ids.to(pipe.text_encoder.device))[0].to(device, dtype)


def check_concepts(pipe, concepts: Sequence[str]) -> None:
    """Concepts a model can read: on a model whose vocabulary is known (the built-in world's profile) a word
    outside it is refused with the words it knows; on any model a concept longer than the text encoder's window
    is refused and one made only of unknown tokens is warned about."""
    import warnings

    from erasure.profiles import profile_of

    tokenizer = getattr(pipe, "tokenizer", None)
    profile = profile_of(pipe)
    for concept in concepts:
        if profile is not None and profile.vocabulary is not None:
            words = [w.strip(".,;:!?\"'()").lower() for w in concept.split()]
            unknown = [w for w in words if w and w not in profile.vocabulary]
            if unknown:
                known = "; ".join(f"{kind}: {', '.join(values)}" for kind, values in profile.concept_kinds.items())
                raise ErasureError(f"{unknown[0]!r} is not a word the {profile.name} model was trained on, so it cannot "
                                   f"be erased; its concepts are {known}")
        if tokenizer is None:
            continue
        check_prompt_lengths(tokenizer, [concept])
        unk = getattr(tokenizer, "unk_token_id", None)
        special = set(getattr(tokenizer, "all_special_ids", ()))
        ids = [i for i in tokenizer(concept).input_ids if i not in special or i == unk]
        if unk is not None and ids and all(i == unk for i in ids):
            warnings.warn(f"every token of the concept {concept!r} is unknown to the tokenizer: the model cannot tell it "
                          "apart from other unknown text", stacklevel=2)
