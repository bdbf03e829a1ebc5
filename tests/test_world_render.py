"""The renderer and captions of the built-in world: exact labels, masks, synonyms, held-out combinations."""

import numpy as np
import pytest

from erasure.world import captions as cap
from erasure.world.render import (
    ATTRIBUTES, BACKGROUNDS, COLOURS, HELD_OUT, SHAPES, TEXTURE_SHADE, TEXTURES, Scene, render, sample_scene,
)


def test_world_has_the_promised_variety():
    assert len(SHAPES) >= 8 and len(COLOURS) >= 8 and len(TEXTURES) >= 4 and len(BACKGROUNDS) >= 3


def test_render_is_deterministic_and_seeded():
    a = [render(sample_scene(np.random.default_rng(7)))[0] for _ in range(2)]
    b = render(sample_scene(np.random.default_rng(8)))[0]
    assert np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], b)


@pytest.mark.parametrize("shape", SHAPES)
def test_mask_is_the_object(shape):
    scene = Scene(shape=shape, colour="red", texture="plain", background="black")
    image, mask = render(scene)
    assert mask.min() >= 0 and mask.max() <= 1
    inside = mask > 0.99
    outside = mask < 0.01
    assert 0.12 < inside.mean() < 0.7, f"{shape} covers {inside.mean():.2f} of the image"
    assert np.all(image[inside] == np.array(COLOURS["red"]))
    assert np.all(image[outside] == np.array(BACKGROUNDS["black"]))


@pytest.mark.parametrize("texture", TEXTURES)
def test_textures_use_base_and_shaded_colour(texture):
    scene = Scene(shape="square", colour="blue", texture=texture, background="white")
    image, mask = render(scene)
    inside = image[mask > 0.99].astype(float)
    base = np.array(COLOURS["blue"], float)
    shaded_share = np.mean(np.abs(inside - base * TEXTURE_SHADE).sum(1) < 30)
    if texture == "plain":
        assert shaded_share == 0
    else:
        assert 0.05 < shaded_share < 0.7, f"{texture}: shaded share {shaded_share:.2f}"


def test_shapes_are_distinct_masks():
    masks = {s: render(Scene(shape=s, colour="red", texture="plain", background="black"))[1] for s in SHAPES}
    for i, a in enumerate(SHAPES):
        for b in SHAPES[i + 1 :]:
            iou = np.minimum(masks[a], masks[b]).sum() / np.maximum(masks[a], masks[b]).sum()
            assert iou < 0.85, f"{a} and {b} overlap too much (IoU {iou:.2f})"


def test_held_out_pairs_cover_every_shape_and_colour_once():
    assert sorted(s for s, _ in HELD_OUT) == sorted(SHAPES)
    assert sorted(c for _, c in HELD_OUT) == sorted(COLOURS)
    assert ("star", "orange") in HELD_OUT and ("circle", "purple") in HELD_OUT
    rng = np.random.default_rng(0)
    drawn = {(s.shape, s.colour) for s in (sample_scene(rng) for _ in range(3000))}
    assert not drawn & HELD_OUT
    assert len(drawn) == 64 - 8
    with pytest.raises(ValueError):
        sample_scene(rng, shape="star", colour="orange")


def test_every_shape_and_colour_word_has_two_synonyms():
    for table in (cap.SHAPE_WORDS, cap.COLOUR_WORDS, cap.TEXTURE_WORDS):
        for value, words in table.items():
            assert len(words) >= 3, value  # canonical + >= 2 synonyms


def _named(text: str, attribute: str, value: str) -> bool:
    return any(f" {w} " in f" {text.replace(',', ' ')} " for w in cap.WORDS[attribute][value])


def test_captions_name_exactly_the_named_attributes():
    rng = np.random.default_rng(3)
    for _ in range(400):
        scene = sample_scene(rng)
        names = {a: (v if rng.random() < 0.5 else None) for a, v in scene.labels().items()}
        text = cap.caption(names, rng)
        for a, values in ATTRIBUTES.items():
            if a == "background" and names[a] is None:
                assert "background" not in text
                continue
            for v in values:
                said = _named(text, a, v)
                # "dark" (black background) and "lemon"/"plum" cannot collide with another attribute's words
                assert said == (names[a] == v), (text, a, v)


def test_caption_words_are_known_to_the_clip_tokenizer():
    from erasure.offline import clip_tokenizer

    tok = clip_tokenizer()
    for word in cap.all_words():
        ids = tok(word).input_ids
        assert 2 < len(ids) <= 5, (word, ids)  # bos + 1..3 pieces + eos, never an unknown token
        assert tok.unk_token_id not in ids[1:-1] or tok.unk_token_id in (49407,)
