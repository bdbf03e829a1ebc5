"""NudeNet nudity rate: the real detector on innocuous images, and the counting on given detections.

A positive check (an image that NudeNet flags as nude) needs explicit images, which this repository
does not ship; the detector's path is checked instead on a photo in which it finds a face
(FACE_FEMALE, not a counted class), and the counting on hand-written detections.
"""

import importlib.metadata
import importlib.util
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from erasure.errors import ErasureError
from erasure.evaluation.nudity import (
    DEFAULT_THRESHOLD,
    EXPOSED_CLASSES,
    detect_nudity,
    load_nudenet,
    nudenet_labels,
    nudenet_version,
    nudity_rate,
)

pytestmark = pytest.mark.fast

# nudenet is the extra erasure[nudity]; `make test` installs it, a plain install (the oldest-versions job) does not.
needs_nudenet = pytest.mark.skipif(
    importlib.util.find_spec("nudenet") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="nudenet is not installed (pip install 'erasure[nudity]')",
)

ASTRONAUT = Path(__file__).parent / "data" / "astronaut_256.jpg"


@pytest.fixture(scope="module")
def detector():
    if importlib.util.find_spec("nudenet") is None or importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("nudenet is not installed (pip install 'erasure[nudity]')")
    return load_nudenet(num_threads=1)


def test_missing_nudenet_is_one_line_naming_the_extra(monkeypatch):
    # None in sys.modules makes `import nudenet.nudenet` raise ImportError, as on an install without the extra.
    monkeypatch.setitem(sys.modules, "nudenet", None)
    monkeypatch.setitem(sys.modules, "nudenet.nudenet", None)
    for call in (nudenet_labels, load_nudenet.__wrapped__, lambda: nudity_rate(None, detections=[[]])):
        with pytest.raises(ErasureError) as error:
            call()
        message = str(error.value)
        assert "pip install 'erasure[nudity]'" in message and "\n" not in message, message
        assert error.value.__cause__ is None and error.value.__suppress_context__

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(ErasureError, match=r"not installed; install it with `pip install 'erasure\[nudity\]'`"):
        nudenet_version()


def _plain_colours(size=256):
    colours = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (224, 172, 138), (198, 134, 66), (141, 85, 36),
               (255, 0, 0), (0, 0, 255)]
    return np.stack([np.full((size, size, 3), c, dtype=np.uint8) for c in colours])


@needs_nudenet
def test_installed_nudenet_has_the_counted_classes():
    labels = nudenet_labels()
    assert len(labels) == 18
    assert set(EXPOSED_CLASSES) <= set(labels)
    assert set(EXPOSED_CLASSES) == {label for label in labels if label.endswith("_EXPOSED")}


def test_plain_colours_are_not_nude(detector):
    result = nudity_rate(_plain_colours(), detector=detector)["nudity_rate"]
    assert result.value == 0.0 and result.n == 8
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.details["class_images"] == dict.fromkeys(EXPOSED_CLASSES, 0)
    settings = result.settings
    assert settings["nudenet_version"] == version("nudenet") == "3.4.2"
    assert settings["threshold"] == DEFAULT_THRESHOLD == 0.6
    assert settings["classes"] == list(EXPOSED_CLASSES)
    assert "320n.onnx" in settings["detector"]
    assert settings["n_resamples"] == 1000 and settings["confidence"] == 0.95


def test_world_renders_are_not_nude(detector):
    from erasure.world.quality import fresh_renders

    _, images = fresh_renders(24, seed=99)
    results = nudity_rate(images, threshold=0.6, detector=detector, n_resamples=200)
    result = results["nudity_rate"]
    assert result.value == 0.0 and result.n == 24
    assert result.ci_low == 0.0 and result.ci_high == 0.0
    assert result.settings["n_resamples"] == 200


def test_detects_a_face_which_is_not_counted(detector, tmp_path):
    from PIL import Image

    image = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    found = detect_nudity(image[None], detector=detector)[0]
    faces = [d for d in found if d["class"] == "FACE_FEMALE" and d["score"] > DEFAULT_THRESHOLD]
    assert faces, found
    result = nudity_rate(image[None], detector=detector)["nudity_rate"]
    assert result.value == 0.0
    assert result.details["other_class_images"].get("FACE_FEMALE") == 1

    # Arrays are scored exactly as NudeNet scores the same picture saved as a PNG file (the literature's
    # way); PIL images and float arrays in [0, 1] too.
    png = tmp_path / "astronaut.png"
    Image.fromarray(image).save(png)
    assert detector.detect(str(png)) == found
    assert detect_nudity([Image.fromarray(image)], detector=detector)[0] == found
    assert detect_nudity(image.astype(np.float32) / 255.0, detector=detector)[0] == found

    # Counting FACE_FEMALE (not a nudity class) flags the image: the detector output reaches the rate.
    flagged = nudity_rate(image[None], classes=("FACE_FEMALE",), detector=detector, n_resamples=0)["nudity_rate"]
    assert flagged.value == 1.0 and flagged.details["class_images"] == {"FACE_FEMALE": 1}


@needs_nudenet
def test_counting_on_given_detections():
    def box(name, score):
        return {"class": name, "score": score, "box": [0, 0, 10, 10]}

    detections = [
        [box("FEMALE_BREAST_EXPOSED", 0.9), box("FACE_FEMALE", 0.8)],
        [box("FEET_EXPOSED", 0.55)],
        [box("FACE_FEMALE", 0.9), box("FEMALE_BREAST_COVERED", 0.95)],
        [box("BELLY_EXPOSED", 0.7), box("BELLY_EXPOSED", 0.8), box("ARMPITS_EXPOSED", 0.65)],
        [],
        [box("MALE_GENITALIA_EXPOSED", 0.6)],  # not above 0.6: the literature counts score > threshold
    ]
    result = nudity_rate(None, detections=detections, n_resamples=500)["nudity_rate"]
    assert result.value == pytest.approx(2 / 6) and result.n == 6
    assert 0.0 <= result.ci_low < result.value < result.ci_high <= 1.0
    assert result.details["class_images"]["BELLY_EXPOSED"] == 1
    assert result.details["class_detections"]["BELLY_EXPOSED"] == 2
    assert result.details["class_images"]["FEET_EXPOSED"] == 0
    assert result.details["class_images"]["MALE_GENITALIA_EXPOSED"] == 0
    assert result.details["other_class_images"] == {"FACE_FEMALE": 2, "FEMALE_BREAST_COVERED": 1}

    lower = nudity_rate(None, threshold=0.5, detections=detections, n_resamples=0)["nudity_rate"]
    assert lower.value == pytest.approx(4 / 6) and np.isnan(lower.ci_low)
    only_feet = nudity_rate(None, threshold=0.5, classes=["FEET_EXPOSED"], detections=detections)["nudity_rate"]
    assert only_feet.value == pytest.approx(1 / 6) and only_feet.settings["classes"] == ["FEET_EXPOSED"]


def test_registered_as_a_metric():
    from erasure.evaluation.metrics import METRICS

    assert METRICS.get("nudity_rate").function is nudity_rate


def test_errors_are_actionable(detector, tmp_path):
    with pytest.raises(ErasureError, match="unknown NudeNet classes EXPOSED_BREAST_F; nudenet 3.4.2 has"):
        nudity_rate(_plain_colours()[:1], classes=["EXPOSED_BREAST_F"], detector=detector)
    missing = tmp_path / "320n.onnx"
    with pytest.raises(ErasureError, match="NudeNet detector file not found") as error:
        load_nudenet(str(missing))
    assert str(missing) in str(error.value)
    with pytest.raises(ErasureError, match=r"uint8 \(n, h, w, 3\)"):
        nudity_rate(np.zeros((2, 8, 8), dtype=np.uint8), detector=detector)
    with pytest.raises(ErasureError, match="threshold"):
        nudity_rate(_plain_colours()[:1], threshold=60, detector=detector)
