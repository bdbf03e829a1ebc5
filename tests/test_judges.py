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


# --- image-classifier: torchvision and transformers, tiny and random, saved here -------------------------

def _constant_resnet(tmp_path, classes: int, winner: int, name: str = "resnet18"):
    """A torchvision resnet18 whose head reads nothing but its bias: top-1 is ``winner`` for every image."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=classes)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.nn.functional.one_hot(torch.tensor(winner), classes).float() * 5)
    path = tmp_path / f"{name}-{classes}-{winner}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def test_image_classifier_with_a_known_rule_and_a_label_map(tmp_path):
    weights, _ = _constant_resnet(tmp_path, classes=3, winner=1)
    labels = tmp_path / "labels.txt"
    labels.write_text("tench\ngarbage truck\nchurch\n")
    judge = load_judge("image-classifier:resnet18", weights=str(weights), labels=str(labels), resize=32, crop=32)
    images = np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    assert judge.decide(images, "garbage truck").tolist() == [True] * 5
    assert judge.decide(images, "garbage_truck").tolist() == [True] * 5  # case and underscores ignored
    assert judge.decide(images, "church").tolist() == [False] * 5
    assert judge.decide(images, "2").tolist() == [False] * 5          # an index works too
    # top-2: the second place among equal logits counts the classes strictly above, so 0 and 2 are both second
    top2 = load_judge("image-classifier:resnet18", weights=str(weights), labels=str(labels), resize=32, crop=32, top_k=2)
    assert top2.decide(images, "church").tolist() == [True] * 5
    assert judge.predict(images) == {"class": ["garbage truck"] * 5}
    probability = np.exp(5.0) / (np.exp(5.0) + 2)
    assert judge.scores(images, "garbage truck") == pytest.approx([probability] * 5, rel=1e-5)
    info = judge.info()
    assert info["settings"]["architecture"] == "resnet18" and str(weights) in info["files"]
    with pytest.raises(ErasureError, match="did you mean 'church'"):
        judge.decide(images, "curch")


def test_image_classifier_equals_torchvision_with_its_preset_transform(tmp_path):
    """The judge's logits are those of the model applied with torchvision's ImageClassification preset (the
    transform of ResNet50_Weights.DEFAULT: resize 232, crop 224), on PIL images: the UCE Imagenette recipe."""
    import torch
    import torchvision
    from PIL import Image
    from safetensors.torch import save_file
    from torchvision.transforms._presets import ImageClassification

    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=1000).eval()
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    images = np.random.default_rng(1).integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    judge = load_judge("image-classifier:resnet18", weights=str(path), resize=232, crop=224)
    preset = ImageClassification(crop_size=224, resize_size=232)
    with torch.no_grad():
        expected = model(torch.stack([preset(Image.fromarray(im)) for im in images])).numpy()
    np.testing.assert_allclose(judge.logits(images), expected, rtol=1e-4, atol=1e-4)
    top1 = expected.argmax(1)
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    assert judge.predict(images)["class"] == [_IMAGENET_CATEGORIES[i] for i in top1]
    assert judge.decide(images, _IMAGENET_CATEGORIES[top1[0]])[0]


def test_image_classifier_missing_or_pickled_weights_are_one_line_errors(tmp_path):
    import torch
    import torchvision

    with pytest.raises(ErasureError, match="needs its weights file.*--judge-weights PATH"):
        load_judge("image-classifier:resnet50")
    with pytest.raises(ErasureError, match="did you mean resnet50"):
        load_judge("image-classifier:resnet5O", weights=str(tmp_path / "x.safetensors"))
    torch.manual_seed(0)
    pth = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), pth)
    with pytest.raises(ErasureError, match="pickle file.*--allow-pickle"):
        load_judge("image-classifier:resnet18", weights=str(pth), labels=None)
    with pytest.raises(ErasureError, match="4 classes; give their names"):
        load_judge("image-classifier:resnet18", weights=str(pth), allow_pickle=True)
    labels = tmp_path / "labels.json"
    labels.write_text('["a", "b", "c", "d"]')
    judge = load_judge("image-classifier:resnet18", weights=str(pth), allow_pickle=True, labels=str(labels),
                       resize=32, crop=32)
    assert judge.concepts() == ("a", "b", "c", "d")
    with pytest.raises(ErasureError, match="does not fit torchvision resnet34"):
        load_judge("image-classifier:resnet34", weights=str(pth), allow_pickle=True, labels=str(labels))


def test_transformers_image_classifier_folder(tmp_path):
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    labels = {0: "Van Gogh", 1: "Monet", 2: "Seed_Images"}
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 3.0, 1.0]))
    folder = tmp_path / "style-classifier"
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    judge = load_judge(f"image-classifier:transformers:{folder}", attribute="style")
    images = np.random.default_rng(0).integers(0, 256, (4, 50, 50, 3), dtype=np.uint8)
    assert judge.predict(images) == {"style": ["Monet"] * 4}
    assert judge.decide(images, "monet").all() and not judge.decide(images, "Van Gogh").any()
    assert load_judge(f"image-classifier:transformers:{folder}", top_k=2).decide(images, "Seed_Images").all()
    with pytest.raises(ErasureError, match="config.json missing"):
        load_judge(f"image-classifier:transformers:{tmp_path / 'nothing'}")


# --- timm models and the unlearncanvas judge: tiny random timm ViTs saved as the reference saves its own ------

def _timm_vit(path, classes: int, seed: int = 0, winner: int | None = None):
    """A random timm vit_tiny_patch16_224 saved as UnlearnCanvas' checkpoints are: ``{"model_state_dict": ...}``
    with torch.save. ``winner``: its head reads nothing but its bias, so top-1 is always ``winner``."""
    timm = pytest.importorskip("timm")
    import torch

    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=classes).eval()
    if winner is not None:
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(winner), classes).float() * 4)
    torch.save({"model_state_dict": model.state_dict(), "epoch": 7}, path)
    return path, model


def test_timm_classifier_equals_the_model_with_unlearncanvas_preprocessing(tmp_path, monkeypatch):
    """The judge's logits are those of the same timm model applied with UnlearnCanvas' transform as accuracy.py
    writes it (Resize((224, 224)), ToTensor(), Normalize([0.5], [0.5]) on the PIL image)."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    from torchvision import transforms

    pth, model = _timm_vit(tmp_path / "style.pth", classes=5, seed=3)
    labels = tmp_path / "labels.txt"
    labels.write_text("Van_Gogh\nMonet\nPicasso\nSeed_Images\nCubism\n")
    images = np.random.default_rng(2).integers(0, 256, (3, 72, 48, 3), dtype=np.uint8)
    reference = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                    transforms.Normalize([0.5], [0.5])])
    with torch.no_grad():
        expected = model(torch.stack([reference(Image.fromarray(im)) for im in images])).numpy()
    square = dict(labels=str(labels), resize_mode="square", normalize="half")
    judge = load_judge("image-classifier:timm:vit_tiny_patch16_224", weights=str(pth), allow_pickle=True, **square)
    np.testing.assert_allclose(judge.logits(images), expected, rtol=1e-4, atol=1e-5)
    assert judge.kind == "timm" and judge.num_classes == 5
    names = ["Van_Gogh", "Monet", "Picasso", "Seed_Images", "Cubism"]
    assert judge.predict(images)["class"] == [names[i] for i in expected.argmax(1)]
    # the default preprocessing (shorter side + centre crop, ImageNet statistics) gives other logits
    default = load_judge("image-classifier:timm:vit_tiny_patch16_224", weights=str(pth), allow_pickle=True,
                         labels=str(labels))
    assert np.abs(default.logits(images) - expected).max() > 1e-3
    # the same weights as safetensors need no allow_pickle
    safe = tmp_path / "style.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(safe))
    np.testing.assert_allclose(load_judge("image-classifier:timm:vit_tiny_patch16_224", weights=str(safe),
                                          **square).logits(images), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ErasureError, match="is a pickle file.*--allow-pickle"):
        load_judge("image-classifier:timm:vit_tiny_patch16_224", weights=str(pth), **square)
    with pytest.raises(ErasureError, match="timm has no model 'vit_tiny_patch16_22'; did you mean vit_tiny_patch16_224"):
        load_judge("image-classifier:timm:vit_tiny_patch16_22", weights=str(pth), allow_pickle=True)
    with pytest.raises(ErasureError, match="does not fit timm vit_small_patch16_224"):
        load_judge("image-classifier:timm:vit_small_patch16_224", weights=str(pth), allow_pickle=True, **square)
    with pytest.raises(ErasureError, match="needs its weights file.*--judge-weights PATH"):
        load_judge("image-classifier:timm:vit_tiny_patch16_224")
    with pytest.raises(ErasureError, match="setting resize_mode must be one of shorter, square"):
        load_judge("image-classifier:timm:vit_tiny_patch16_224", weights=str(pth), resize_mode="round")
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # timm not installed
    with pytest.raises(ErasureError, match=r"timm models need timm: pip install 'erasure\[unlearncanvas\]'"):
        load_judge("image-classifier:timm:vit_tiny_patch16_224", weights=str(pth), allow_pickle=True)


def test_unlearncanvas_judge_labels_styles_and_objects_with_the_reference_classes(tmp_path):
    from erasure.evaluation.judges import unlearncanvas_labels

    styles, objects = unlearncanvas_labels()
    # const.py: theme_available (50 styles + Seed_Images, alphabetical) and class_available
    assert len(styles) == 51 and len(objects) == 20 and styles.index("Seed_Images") == 38
    assert (styles[0], styles[45], styles[-1]) == ("Abstractionism", "Van_Gogh", "Winter")
    assert (objects[0], objects[5], objects[-1]) == ("Architectures", "Dogs", "Waterfalls")
    style, _ = _timm_vit(tmp_path / "style50.pth", classes=51, winner=styles.index("Monet"))
    obj, _ = _timm_vit(tmp_path / "style50_cls.pth", classes=20, seed=1, winner=objects.index("Dogs"))
    judge = load_judge("unlearncanvas", architecture="vit_tiny_patch16_224", style_weights=str(style),
                       object_weights=str(obj), allow_pickle=True)
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    assert judge.predict(images) == {"style": ["Monet"] * 3, "object": ["Dogs"] * 3}
    assert judge.decide(images, "style=Monet").all() and not judge.decide(images, "style=Van_Gogh").any()
    assert judge.decide(images, "object=Dogs").all() and not judge.decide(images, "object=Cats").any()
    probability = np.exp(4.0) / (np.exp(4.0) + 50)
    assert judge.scores(images, "style=Monet") == pytest.approx([probability] * 3, rel=1e-5)
    info = judge.info()
    assert info["judge"] == "unlearncanvas" and info["settings"]["architecture"] == "vit_tiny_patch16_224"
    assert "Resize((224, 224))" in info["settings"]["preprocessing"] and set(info["files"]) == {str(style), str(obj)}
    assert judge.judges["style"].settings["resize_mode"] == "square" and judge.judges["style"].settings["normalize"] == "half"
    with pytest.raises(ErasureError, match="decides attribute=value concepts"):
        judge.decide(images, "Monet")
    with pytest.raises(ErasureError, match="did you mean 'Van_Gogh'"):
        judge.decide(images, "style=Van_Gog")
    with pytest.raises(ErasureError, match="style_weights .* is not the 51-way style classifier.*give style50.pth"):
        load_judge("unlearncanvas", architecture="vit_tiny_patch16_224", style_weights=str(obj),
                   object_weights=str(style), allow_pickle=True)
    with pytest.raises(ErasureError, match="is a pickle file.*--allow-pickle"):
        load_judge("unlearncanvas", architecture="vit_tiny_patch16_224", style_weights=str(style), object_weights=str(obj))


def test_unlearncanvas_judge_missing_files_name_what_to_download(tmp_path):
    with pytest.raises(ErasureError, match=r"needs the 51-way style classifier: download style50.pth .*"
                                           r"--judge-set style_weights=PATH$"):
        load_judge("unlearncanvas")
    with pytest.raises(ErasureError, match=r"object_weights .*nope.pth not found; download style50_cls.pth .*"
                                           r"--judge-set object_weights=PATH$"):
        load_judge("unlearncanvas", style_weights=__file__, object_weights=str(tmp_path / "nope.pth"))
    # the same check runs without building anything (the CLI calls it before loading a model)
    with pytest.raises(ErasureError, match="download style50_cls.pth"):
        JUDGES.get("unlearncanvas").check_files({"style_weights": __file__})
    assert JUDGES.get("unlearncanvas").describe()["concept"].startswith("style=")


# --- clip-zero-shot ---------------------------------------------------------------------------------------

class ColourClip:
    """A CLIP with a known rule: an image embeds as its mean RGB, a text as the colour it names."""

    name = "colour-clip"
    COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}

    def embed_images(self, images):
        x = np.asarray(images, dtype=np.float64).mean(axis=(1, 2)) + 1e-6
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def embed_texts(self, texts):
        return np.array([self.COLOURS[t.split()[-1]] for t in texts], dtype=np.float32)


def test_clip_zero_shot_decides_among_the_concept_and_its_alternatives():
    from erasure.evaluation.judges import ClipZeroShotJudge

    images = _solid([(250, 10, 30), (10, 240, 20), (40, 20, 250), (200, 150, 0)])
    judge = ClipZeroShotJudge(ColourClip(), classes=("red", "green", "blue"), template="a photo of {}")
    assert judge.decide(images, "red").tolist() == [True, False, False, True]
    assert judge.predict(images) == {"class": ["red", "green", "blue", "red"]}
    top2 = ClipZeroShotJudge(ColourClip(), classes=("red", "green", "blue"), template="a photo of {}", top_k=2)
    assert top2.decide(images, "green").tolist() == [False, True, False, True]
    # a concept outside the list joins it: red vs blue only
    two = ClipZeroShotJudge(ColourClip(), classes=("blue",), template="a photo of {}")
    assert two.decide(images, "red").tolist() == [True, False, False, True]
    with pytest.raises(ErasureError, match="labels images only among given classes"):
        two.predict(images)  # one class is no labelling
    scores = judge.scores(images, "red")
    assert scores[0] > 0.99 and scores[2] < 0.01
    with pytest.raises(ErasureError, match="needs alternatives"):
        ClipZeroShotJudge(ColourClip(), template="a photo of {}").decide(images, "red")


@pytest.mark.slow  # 5 s: in `make test`, not the inner loop
def test_clip_zero_shot_on_a_transformers_folder_matches_its_embeddings(tmp_path):
    from conftest import build_tiny_clip_folder

    from erasure.evaluation.clip_backends import TransformersClipBackend

    folder = build_tiny_clip_folder(tmp_path / "clip", seed=0)
    classes = ("a cat", "a dog", "a car", "a tree")
    judge = load_judge(f"clip-zero-shot:transformers:{folder}", classes=classes, template="{}")
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    backend = TransformersClipBackend(folder)
    expected = (backend.embed_images(images) @ backend.embed_texts(list(classes)).T).argmax(1)
    assert judge.predict(images)["class"] == [classes[i] for i in expected]
    for i, name in enumerate(classes):
        assert judge.decide(images, name).tolist() == (expected == i).tolist()
    with pytest.raises(ErasureError, match="needs the CLIP weights file.*--judge-weights"):
        load_judge("clip-zero-shot:open_clip:ViT-B-32", classes=classes)


# --- nudenet ----------------------------------------------------------------------------------------------

def test_nudenet_judge_on_a_real_photo_and_plain_colours():
    pytest.importorskip("nudenet")
    from pathlib import Path

    from PIL import Image

    astronaut = np.asarray(Image.open(Path(__file__).parent / "data" / "astronaut_256.jpg").convert("RGB"))
    plain = _solid([(255, 255, 255), (20, 120, 200)], size=256)
    images = np.concatenate([astronaut[None], plain])
    judge = load_judge("nudenet", threshold=0.45)
    assert judge.decide(images, "nudity").tolist() == [False, False, False]
    info = judge.info()
    assert info["settings"]["threshold"] == 0.45 and info["nudenet_version"]
    assert any(path.endswith(".onnx") for path in info["files"])
    # the detector's output reaches the decision: counting the face NudeNet finds on the photo flags it
    faces = load_judge("nudenet", classes=("FACE_FEMALE",))
    assert faces.decide(images, "nudity").tolist() == [True, False, False]
    assert faces.scores(images, "FACE_FEMALE")[0] > 0.6
    with pytest.raises(ErasureError, match="does not know the concept 'nudes'; known: nudity, FEMALE_BREAST_EXPOSED"):
        judge.decide(images, "nudes")
    with pytest.raises(ErasureError, match="unknown classes BREAST"):
        load_judge("nudenet", classes=("BREAST",))
