"""Which prompts an attack runs on: a list, a prompt set (name or CSV, its seeds kept), a transfer set, or on the
built-in world by default the concept's own prompt set (the rows that name the concept)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from erasure.errors import ErasureError


def _concept_rows(pset, concept: str):
    """On a world prompt set, the rows whose labels name ``concept`` (target, synonym and held-out groups)."""
    records = list(pset.records)
    named = [r for r in records if concept in r.extra.values()]
    return named if named else records


def resolve_prompts(prompts: Sequence[str] | str | Path | None, concept: str, *, transfer: bool = False,
                    datasets_dir: Any = None, limit: int | None = None, pipe=None) -> tuple[list[str], list[int] | None, str]:
    """(prompts, seeds or None, where they came from)."""
    from erasure.evaluation.prompts import prompt_sets, read_prompt_set

    seeds: list[int] | None = None
    if prompts is None:
        if getattr(pipe, "erasure_source", None) != "shapeworld" and not transfer:
            raise ErasureError("no prompts given; pass prompts= (a list, a prompt set name or a CSV file)")
        if transfer:
            raise ErasureError("a transfer attack needs a transfer set: prompts= one of erasure.attacks.transfer."
                               "TRANSFER_SETS or a CSV file")
        from erasure.attacks.judging import WorldClassifierJudge

        attribute, value = WorldClassifierJudge.attribute_of(concept)
        name = f"shapeworld-{attribute}-{value}"
        pset = read_prompt_set(prompt_sets().get(name), name=name)
        records = _concept_rows(pset, value)
        source = f"{name} (rows naming {value})"
    elif isinstance(prompts, (str, Path)):
        text = str(prompts)
        from erasure.attacks.transfer import TRANSFER_SETS, read_transfer_set

        registry = prompt_sets()
        if text in TRANSFER_SETS:
            records, source = read_transfer_set(text, datasets_dir)
        elif text in registry:
            pset = read_prompt_set(registry.get(text), name=text)
            value = concept.split("=", 1)[-1].strip()
            records = _concept_rows(pset, value) if text.startswith("shapeworld-") else list(pset.records)
            source = text
        elif Path(text).is_file():
            records, source = list(read_prompt_set(Path(text)).records), text
        else:
            raise ErasureError(f"prompts {text!r} is not a prompt set, a transfer set or a CSV file; see `erasure list`")
    else:
        texts = [str(p) for p in prompts]
        if limit is not None:
            texts = texts[:limit]
        return texts, None, "given prompts"
    if limit is not None:
        records = records[:limit]
    texts = [r.prompt for r in records]
    seeds = [int(r.evaluation_seed) for r in records]
    return texts, seeds, source
