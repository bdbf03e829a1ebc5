"""Model profiles: what a method may know about the model it runs on, looked up through the pipeline.

A method never imports the built-in world. When :func:`erasure.load_pipeline` loads a model that has a
profile (the built-in world does), it attaches it as ``pipe.erasure_profile``; methods ask
:func:`profile_of` for the model's concept kinds (the world's attributes and their values), default
template set, default preservation set, and images of a concept with exact masks. A real SD checkpoint has
no profile: the methods then use their generic defaults (no templates beyond ``{}``, no preservation set,
the model's own samples as images).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence


@dataclass(frozen=True)
class ModelProfile:
    """Defaults and data sources a model offers the methods."""

    name: str
    concept_kinds: Mapping[str, tuple[str, ...]]  # attribute -> its values (e.g. "shape" -> circle, square, ...)
    default_templates: str = "{}"  # a template set name (erasure.text.concept_template_set)
    # every word the model was trained on, when that is known and small (the built-in world's caption grammar):
    # a concept outside it cannot be erased, since the model never learned it
    vocabulary: frozenset[str] | None = None
    # (pipe, concept, n, rng) -> (latents, masks, prompts) of n images of the concept with exact masks
    concept_images: Callable[..., Any] | None = field(default=None, compare=False)

    def kind_of(self, concept: str) -> str | None:
        """The attribute ``concept`` is a value of, or None."""
        return next((kind for kind, values in self.concept_kinds.items() if concept in values), None)

    def preserve_for(self, concepts: Sequence[str]) -> tuple[str, ...]:
        """The other values of each erased concept's attribute (as UCE preserves the other artists)."""
        out: list[str] = []
        for c in concepts:
            kind = self.kind_of(c)
            if kind is not None:
                out += [v for v in self.concept_kinds[kind] if v not in concepts and v not in out]
        return tuple(out)


def profile_of(pipe) -> ModelProfile | None:
    """The profile attached to ``pipe`` by the loader, or None (a real checkpoint)."""
    return getattr(pipe, "erasure_profile", None)
