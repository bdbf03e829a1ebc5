"""World 2 (24 objects, identities with a mark, the implicit halo): renderer, sampling, captions, truth table,
classifier heads. Nothing here needs trained weights."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from erasure.world import captions as C
from erasure.world import render as R
from erasure.world import train as T

pytestmark = pytest.mark.fast
W2 = R.WORLD2


def _canonical(shape, **kw):
    return R.Scene(shape=shape, colour="red", texture="plain", background="white", **kw)


def test_world2_has_24_distinct_objects_each_with_synonyms():
    assert len(W2.shapes) == 24 and len(set(W2.shapes)) == 24 and W2.shapes[:8] == R.SHAPES
    masks = {s: R.shape_mask(_canonical(s), 32) > 0.5 for s in W2.shapes}
    for s, m in masks.items():
        assert 40 < m.sum() < 32 * 32 * 0.8, s  # visible, not filling the image
        assert not m[0].any() and not m[-1].any() and not m[:, 0].any() and not m[:, -1].any(), s
    for a in W2.shapes:  # no two objects have (nearly) the same silhouette at 32 px
        for b in W2.shapes:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.85, (a, b, iou)
    for s in W2.shapes:
        words = C.SHAPE_WORDS_2[s]
        assert len(words) >= 3 and words[0] == s, s
    all_words = [w for s in W2.shapes for w in C.SHAPE_WORDS_2[s]]
    assert len(all_words) == len(set(all_words))  # no word names two objects


def test_held_out_and_identities():
    assert R.WORLD1.held_out == R.HELD_OUT and R.HELD_OUT <= W2.held_out
    assert {s for s, _ in W2.held_out} == set(W2.shapes)  # one held-out colour per object
    assert len(W2.identities) >= 10
    looks = [look for _, look in W2.identities]
    assert len(set(looks)) == len(looks)
    for name, (s, c, t) in W2.identities:
        assert (s, c) not in W2.held_out, name
        assert W2.identity_of(s, c, t, "mark") == name and W2.identity_of(s, c, t, None) is None
    assert set(W2.attributes) == {"shape", "colour", "texture", "background", "mark", "halo"}
    assert set(R.WORLD1.attributes) == set(R.ATTRIBUTES)


def test_world1_sampling_is_unchanged():
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(50):
        assert R.sample_world_scene(a, R.WORLD1) == R.sample_scene(b)
        assert C.world_training_caption(R.sample_scene(a), a, 1)[0] == C.training_caption(R.sample_scene(b), b)


def test_world2_sampling_frequencies_and_identity_scenes():
    rng = np.random.default_rng(0)
    scenes = [R.sample_world_scene(rng, W2) for _ in range(6000)]
    ids = [s for s in scenes if s.identity]
    assert abs(len(ids) / len(scenes) - W2.identity_fraction) < 0.015
    for s in ids:
        assert s.mark and not s.halo and (s.shape, s.colour, s.texture) == W2.identity_looks[s.identity]
    assert not any(s.mark for s in scenes if not s.identity)
    lookalikes = [s for s in scenes if not s.identity and (s.shape, s.colour, s.texture) in set(W2.identity_looks.values())]
    assert len(lookalikes) / len(scenes) > W2.lookalike_fraction * 0.7  # the look is also shown without the mark
    halo = [s for s in scenes if s.halo]
    assert abs(len(halo) / len(scenes) - W2.halo_fraction * (1 - W2.identity_fraction)) < 0.02
    assert not any((s.shape, s.colour) in W2.held_out for s in scenes)
    assert len({s.shape for s in scenes}) == 24
    with pytest.raises(ValueError, match="unknown identity"):
        R.sample_world_scene(rng, W2, identity="nobody")


def test_halo_surrounds_the_object_and_the_mark_shows_on_every_background():
    for bg in R.BACKGROUNDS:
        scene = R.Scene("star", "yellow", "plain", bg, scale=0.55, halo=True, mark=True)
        img, mask = R.render(scene)
        plain, _ = R.render(dataclasses.replace(scene, halo=False, mark=False))
        ring = R.halo_mask(mask, 32)
        assert ring[mask > 0.5].max() == 0 and mask[ring > 0.5].max() < 0.05  # a gap between object and halo
        changed = np.abs(img.astype(int) - plain.astype(int)).sum(-1) > 60
        assert changed[ring > 0.5].mean() > 0.95  # the halo is visible against every background
        assert changed[1:8, 1:8].sum() >= 9  # so is the mark (its dark frame or its light core)
        corner = img[1:8, 1:8].astype(int).sum(-1)
        assert corner.min() < 100 and corner.max() > 700  # two-tone: never the background colour alone
        assert (mask[1:8, 1:8] < 0.01).all()  # the mark corner is free at the halo's scale


def test_captions_name_or_imply_the_halo_never_both_and_identities_by_name_only():
    rng = np.random.default_rng(1)
    implied = set(C.HALO_IMPLIED)
    named_seen = implied_seen = 0
    for _ in range(3000):
        s = R.sample_world_scene(rng, W2)
        text, names = C.world_training_caption(s, rng, 2)
        words = set(text.replace(",", " ").split())
        has_named = any(p in text for p in C.HALO_NAMED)
        has_implied = bool(words & implied)
        if s.halo:
            assert has_named != has_implied, text  # exactly one of the two
            named_seen += has_named
            implied_seen += has_implied
            assert names["halo"] == "halo"
        else:
            assert not has_named and not has_implied and "halo" not in text, text
        if s.identity:
            assert s.identity in text and names["identity"] == s.identity
            assert not words & set(C.world2_words()) - set(C.BACKGROUND_WORDS[s.background]) - {"dark"}, text
        else:
            assert not any(n in text for n, _ in W2.identities)
    assert named_seen > 100 and implied_seen > 100


def test_world2_truth_table():
    zorblax = R.sample_world_scene(np.random.default_rng(0), W2, identity="zorblax")
    lookalike = dataclasses.replace(zorblax, mark=False, identity=None)
    halo = R.Scene("circle", "blue", "plain", "gray", halo=True)
    plain = R.Scene("circle", "blue", "plain", "gray")
    scenes = [zorblax, lookalike, halo, plain]
    blank = {"shape": None, "colour": None, "texture": None, "background": None}
    names = [{**blank, "identity": "zorblax"}, {**blank, "shape": "star", "colour": "red"},
             {**blank, "shape": "circle", "halo": "halo"}, {**blank, "shape": "circle"}]
    assert T._caption_matches(scenes, names, W2).tolist() == [
        [True, False, False, False], [False, True, False, False], [False, False, True, False], [False, False, False, True]]


def test_world2_classifier_heads_round_trip(tmp_path):
    from safetensors.torch import save_file

    from erasure.world import instruments, models

    clf = models.AttributeClassifier(width=8, attributes=W2.attributes)
    assert {a: len(c) for a, c in clf.classes.items()} == {"shape": 25, "colour": 9, "texture": 5, "background": 4,
                                                           "mark": 2, "halo": 2}
    save_file({k: v.contiguous() for k, v in clf.state_dict().items()}, str(tmp_path / "classifier.safetensors"))
    (tmp_path / "classifier.json").write_text(json.dumps({"width": 8, "classes": {a: list(c) for a, c in clf.classes.items()}}))
    (tmp_path / "world.json").write_text("{}")
    loaded = instruments.load_classifier(tmp_path)
    assert loaded.classes == clf.classes
    x = torch.rand(3, 3, 32, 32)
    clf.eval()
    for a, v in clf(x).items():
        assert torch.allclose(v, loaded(x)[a])
    pred = instruments.predict_labels(loaded, x)
    assert set(pred) == set(W2.attributes) | {"identity"} and all(len(v) == 3 for v in pred.values())
    # identity = the whole look and the mark, read from the heads: force the heads to zorblax's look
    with torch.no_grad():
        for a, value in zip(("shape", "colour", "texture", "mark"), (*W2.identity_looks["zorblax"], "mark")):
            head = loaded.heads[a]
            head.weight.zero_()
            head.bias.fill_(-10.0)
            head.bias[loaded.classes[a].index(value)] = 10.0
    assert instruments.predict_labels(loaded, x)["identity"] == ["zorblax"] * 3
    with torch.no_grad():
        loaded.heads["mark"].bias.neg_()  # the look without the mark: a look-alike, not zorblax
    assert instruments.predict_labels(loaded, x)["identity"] == ["none"] * 3


def test_world2_prompt_sets():
    from erasure.evaluation.world2_prompts import world2_prompt_sets

    sets = world2_prompt_sets()
    assert len([k for k in sets if "/identity-" in k]) == len(W2.identities) and "shapeworld2/halo.csv" in sets
    assert len([k for k in sets if "/shape-" in k and not k.endswith("-phrasing.csv")]) == 24
    assert len([k for k in sets if "/shape-" in k and k.endswith("-phrasing.csv")]) == 24
    names = [n for n, _ in W2.identities]
    for name, look in W2.identities:
        records = sets[f"shapeworld2/identity-{name}.csv"].records
        groups = {r.group for r in records}
        assert groups == {"target", "synonym", "lookalike", "neighbour", "other"}
        for r in records:
            mentioned = [n for n in names if n in r.prompt]
            if r.group in ("target", "synonym"):
                assert mentioned == [name] and r.extra["identity"] == name
                assert (r.extra["shape"], r.extra["colour"], r.extra["texture"]) == look
            elif r.group == "neighbour":
                assert mentioned == [r.extra["identity"]] and r.extra["identity"] != name
            else:
                assert not mentioned and r.extra["identity"] == ""
            if r.group == "lookalike":
                assert (r.extra["shape"], r.extra["colour"], r.extra["texture"]) == look
    for r in sets["shapeworld2/halo.csv"].records:
        words = set(r.prompt.replace(",", " ").replace(":", " ").split())
        named = any(p in r.prompt for p in C.HALO_NAMED)
        implied = bool(words & set(C.HALO_IMPLIED))
        assert (named, implied) == {"named": (True, False), "implied": (False, True), "other": (False, False)}[r.group]
        assert r.extra["halo"] == ("" if r.group == "other" else "halo")
    for key, ps in sets.items():
        for r in ps.records:
            if r.group != "held-out" and r.extra["shape"] and r.extra["colour"]:
                assert (r.extra["shape"], r.extra["colour"]) not in W2.held_out, (key, r.prompt)


@pytest.mark.slow
def test_the_committed_world2_folder_is_what_its_manifest_says():
    """worlds/shapeworld2 (the first trained world 2): every file hashes as world.json records, the text encoder
    is stored in float16 and a plain diffusers load gives float32 weights equal to the stored ones."""
    import json
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from erasure.world.assemble import sha256

    folder = Path(__file__).resolve().parents[1] / "worlds" / "shapeworld2"
    meta = json.loads((folder / "world.json").read_text())
    assert meta["world"] == 2 and len(meta["attributes"]["shape"]) == 24 and len(meta["identities"]) == 10
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "world.json")
    assert files == sorted(meta["files"])
    for rel, digest in meta["files"].items():
        assert sha256(folder / rel) == digest, rel
    assert meta["total_bytes"] <= 50_000_000
    stored = load_file(str(folder / "pipeline" / "text_encoder" / "model.safetensors"))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    from transformers import CLIPTextModel

    te = CLIPTextModel.from_pretrained(folder / "pipeline" / "text_encoder")
    assert te.dtype == torch.float32
    key = "text_model.embeddings.token_embedding.weight"
    loaded = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in te.state_dict().items()}
    assert torch.equal(loaded[key], stored[key].float())
