"""Judges as the attacks use them: any object with ``decide(images, concept) -> numpy bool array (N,)``
(uint8 (N, H, W, 3) images; True where the concept is present). The judges of :mod:`erasure.evaluation`
have that method; until they land, :class:`WorldClassifierJudge` adapts the built-in world's attribute
classifier, the judge on the world.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from erasure.errors import ErasureError


class WorldClassifierJudge:
    """The built-in world's attribute classifier: an image shows ``circle`` when the shape head's top class is
    circle (likewise colours and textures). ``concept`` is a value (``circle``) or ``attribute=value``."""

    name = "shapeworld-classifier"

    def __init__(self, classifier=None) -> None:
        if classifier is None:
            from erasure.world.instruments import load_classifier

            classifier = load_classifier()
        self.classifier = classifier

    @staticmethod
    def attribute_of(concept: str) -> tuple[str, str]:
        from erasure.evaluation.world_prompts import ERASABLE

        if "=" in concept:
            attribute, value = (part.strip() for part in concept.split("=", 1))
        else:
            value = concept.strip()
            found = [a for a, values in ERASABLE.items() if value in values]
            if not found:
                known = "; ".join(f"{a}: {', '.join(v)}" for a, v in ERASABLE.items())
                raise ErasureError(f"{concept!r} is not a concept the world's classifier knows ({known})")
            attribute = found[0]
        if attribute not in ERASABLE or value not in ERASABLE[attribute]:
            raise ErasureError(f"{concept!r} is not a concept the world's classifier knows")
        return attribute, value

    def decide(self, images: np.ndarray, concept: str) -> np.ndarray:
        from erasure.world.instruments import predict_labels

        attribute, value = self.attribute_of(concept)
        if len(images) == 0:
            return np.zeros(0, dtype=bool)
        return np.array([p == value for p in predict_labels(self.classifier, images)[attribute]], dtype=bool)

    def confidence(self, images: np.ndarray, concept: str) -> np.ndarray:
        """The classifier's probability of the concept per image."""
        from erasure.world.instruments import classify
        from erasure.world.models import classifier_classes

        attribute, value = self.attribute_of(concept)
        probs = classify(self.classifier, images)[attribute]
        return probs[:, classifier_classes(attribute).index(value)].numpy()


def default_judge(pipe) -> Any:
    """The world's classifier on the built-in world; elsewhere a judge must be given."""
    if getattr(pipe, "erasure_source", None) == "shapeworld":
        return WorldClassifierJudge()
    raise ErasureError("attacks need a judge on this model: pass judge= (an object with decide(images, concept)); "
                       "the built-in world brings its own")


def judge_name(judge: Any) -> str:
    return str(getattr(judge, "name", type(judge).__name__))
