"""The contract's world half: on the built-in world, a short run of every registered method lowers the erased
concept's target accuracy against the unedited model, on the same prompts and seeds (the world's classifier as
the judge). Settings: each spec's ``world_test_settings`` (its ``test_settings`` are too short to erase)."""

from __future__ import annotations

import pytest

from erasure.methods import METHODS, erase

pytestmark = [pytest.mark.world, pytest.mark.slow]
CONCEPT = ("shape", "circle")
PER_GROUP = 12  # 12 target prompts: one step is 8 points


@pytest.fixture(scope="module")
def world():
    from erasure import load_pipeline
    from erasure.evaluation.evaluate import WORLD_SETTINGS, evaluate, resolve_prompt_set
    from erasure.generation import SamplerSettings

    pipe = load_pipeline(device="cpu")  # by name: the world's profile (templates, preservation sets) comes with it
    pipe.set_progress_bar_config(disable=True)
    prompts = resolve_prompt_set("shapeworld-shape-circle").filter(group="target").head(PER_GROUP)
    settings = SamplerSettings(steps=10, guidance=WORLD_SETTINGS.guidance)

    def target_accuracy() -> float:
        return evaluate(pipe, prompts, concept=CONCEPT, settings=settings, progress=False).value("target_accuracy")

    return pipe, target_accuracy, target_accuracy()


@pytest.mark.parametrize("name", METHODS.names())
def test_a_short_run_erases_the_concept_on_the_world(world, name):
    pipe, target_accuracy, base = world
    spec = METHODS.get(name)
    settings = dict(spec.world_test_settings)
    if "progress" in spec.options:
        settings["progress"] = False
    if spec.anchor_setting and spec.anchor_setting not in settings and spec.family != "adapter":
        settings[spec.anchor_setting] = "square"
    result = erase(pipe, name, CONCEPT[1], **settings)
    result.apply(pipe)
    try:
        after = target_accuracy()
    finally:
        result.restore(pipe)
    assert base >= 0.75, base  # the world draws circles before erasure
    assert after < base - 0.2, f"{name}: target accuracy {base:.2f} -> {after:.2f}"
