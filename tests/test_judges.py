"""Judges: the interface (decide / scores / predict / info), the registry and every built-in judge, on images
with known content and tiny judges built here and saved to local files."""

from __future__ import annotations

import numpy as np
import pytest

from erasure.errors import ErasureError
from erasure.evaluation.judges import JUDGES, CallableJudge, Judge, JudgeCannotLabel, load_judge

pytestmark = pytest.mark.fast


def _solid(colours: list[tuple[int, int, int]], size: int = 8) -> np.ndarray:
    return np.stack([np.broadcast_to(np.array(c, dtype=np.uint8), (size, size, 3)) for c in colours]).copy()


def red_score(images: np.ndarray, concept: str) -> np.ndarray:
    """A judge with a known rule: the mean red channel in [0, 1] (concept 'red' only)."""
    assert concept == "red"
    return images[..., 0].astype(float).mean(axis=(1, 2)) / 255.0


def test_registry_lists_the_built_in_judges():
    assert {"world", "callable"} <= set(JUDGES.names())
    for name in JUDGES.names():
        description = JUDGES.get(name).describe()
        assert description["name"] == name and description["summary"]
    with pytest.raises(ErasureError, match="did you mean 'world'"):
        load_judge("wrld")


def test_callable_judge_decides_by_its_rule_and_threshold():
    images = _solid([(255, 0, 0), (100, 0, 0), (0, 0, 255), (200, 10, 10)])
    judge = load_judge(red_score, threshold=0.5)
    assert isinstance(judge, Judge) and isinstance(judge, CallableJudge)
    decided = judge.decide(images, "red")
    assert decided.dtype == bool and decided.tolist() == [True, False, False, True]
    assert judge.scores(images, "red") == pytest.approx([1.0, 100 / 255, 0.0, 200 / 255])
    assert load_judge(red_score, threshold=0.3).decide(images, "red").tolist() == [True, True, False, True]
    # float images in [0, 1] are rounded to uint8 first: the same decisions
    assert judge.decide(images / 255.0, "red").tolist() == decided.tolist()
    with pytest.raises(JudgeCannotLabel):
        judge.predict(images)


def test_callable_judge_from_a_file(tmp_path):
    source = tmp_path / "my_judge.py"
    source.write_text("import numpy as np\n"
                      "def blue(images, concept):\n    return images[..., 2].mean(axis=(1, 2)) > 128\n")
    judge = load_judge(f"callable:{source}:blue")
    assert judge.decide(_solid([(0, 0, 255), (255, 0, 0)]), "blue").tolist() == [True, False]
    assert judge.info()["settings"]["function"] == f"{source}:blue"
    with pytest.raises(ErasureError, match="has no attribute 'green'"):
        load_judge(f"callable:{source}:green")
    with pytest.raises(ErasureError, match="returned shape"):
        load_judge(lambda images, concept: np.ones(3)).decide(_solid([(0, 0, 0)]), "x")


def test_bad_images_and_settings_are_one_line_errors():
    judge = load_judge(red_score)
    with pytest.raises(ErasureError, match=r"\(N, H, W, 3\)"):
        judge.decide(np.zeros((2, 8, 8)), "red")
    with pytest.raises(ErasureError, match="unknown setting 'treshold'.*did you mean 'threshold'"):
        load_judge("callable:os:getcwd", treshold=0.2)
    with pytest.raises(ErasureError, match="takes no ':x' part"):
        load_judge("world:x")


@pytest.mark.world
def test_world_judge_decides_the_rendered_shape(shapeworld_folder):
    from erasure.world.render import render, sample_scene

    rng = np.random.default_rng(0)
    shapes = ["circle", "square", "circle", "star"] * 4
    images = np.stack([render(sample_scene(rng, shape=s))[0] for s in shapes])
    judge = load_judge("world")
    truth = np.array([s == "circle" for s in shapes])
    assert (judge.decide(images, "circle") == truth).mean() >= 0.9
    assert judge.decide(images, "shape=circle").tolist() == judge.decide(images, "circle").tolist()
    assert (np.array(judge.predict(images)["shape"]) == np.array(shapes)).mean() >= 0.9
    scores = judge.scores(images, "circle")
    assert scores.shape == (16,) and scores[truth].mean() > scores[~truth].mean()
    assert any(path.endswith("classifier.safetensors") for path in judge.info()["files"])
    with pytest.raises(ErasureError, match="did you mean 'circle'"):
        judge.decide(images, "circel")
