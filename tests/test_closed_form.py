"""The closed-form (UCE / TIME) solver against its optimum, and the edit object around it."""

import numpy as np
import pytest
import torch

from erasure import ErasureError, load_pipeline
from erasure.edit import Edit
from erasure.embeddings import EmbeddingCache
from erasure.generation import SamplerSettings, generate_images
from erasure.methods import METHODS, erase
from erasure.methods.closed_form import _aligned_pairs, build_rows, solve_closed_form
from erasure.modules import cross_attention_kv


def _random_problem(seed=0, n=5, m=7, d=24, outs=(16, 40)):
    g = torch.Generator().manual_seed(seed)
    weights = {f"w{i}": torch.randn(o, d, generator=g, dtype=torch.float64) for i, o in enumerate(outs)}
    c_e = torch.randn(n, d, generator=g, dtype=torch.float64)
    g_e = torch.randn(n, d, generator=g, dtype=torch.float64)
    c_p = torch.randn(m, d, generator=g, dtype=torch.float64)
    s_e = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    s_p = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
    return weights, c_e, g_e, c_p, s_e, s_p


def _gradient(w_new, w, c_e, v_e, c_p, s_e, s_p, lamb):
    """d/dW' of lamb|W'-W|^2 + sum s_e|W'c_e - v_e|^2 + sum s_p|W'c_p - W c_p|^2, divided by 2."""
    return (lamb * (w_new - w) + ((w_new @ c_e.T - v_e.T) * s_e) @ c_e
            + ((w_new @ c_p.T - w @ c_p.T) * s_p) @ c_p)


@pytest.mark.parametrize("explicit_targets", [False, True])
def test_solution_satisfies_normal_equations(explicit_targets):
    weights, c_e, g_e, c_p, s_e, s_p = _random_problem()
    targets = {k: g_e @ w.T for k, w in weights.items()} if explicit_targets else g_e
    if explicit_targets:  # targets unrelated to W, as MACE-style fusion gives them
        targets = {k: v + torch.randn_like(v) for k, v in targets.items()}
    new = solve_closed_form(weights, c_e, targets, c_p, erase_scale=s_e, preserve_scale=s_p, lamb=0.3)
    for k, w in weights.items():
        v_e = targets[k] if explicit_targets else g_e @ w.T
        grad = _gradient(new[k], w, c_e, v_e, c_p, s_e, s_p, 0.3)
        assert grad.abs().max() < 1e-9 * (1 + w.abs().max())
        assert new[k].dtype == torch.float64 and new[k].shape == w.shape


def test_many_rows_path_agrees_with_the_exact_solution():
    """With 2n >= d the change is applied as one float32 d x d correction: ~1e-6 of the change."""
    weights, c_e, g_e, c_p, s_e, s_p = _random_problem(5, n=30, m=10, d=24)
    new = solve_closed_form(weights, c_e, g_e, c_p, erase_scale=s_e, preserve_scale=s_p, lamb=0.3)
    for k, w in weights.items():
        a = 0.3 * torch.eye(24, dtype=torch.float64) + (c_e * s_e[:, None]).T @ c_e + (c_p * s_p[:, None]).T @ c_p
        b = 0.3 * w + ((w @ g_e.T) * s_e) @ c_e + ((w @ c_p.T) * s_p) @ c_p
        exact = torch.linalg.solve(a, b.T).T
        assert (new[k] - exact).abs().max() < 1e-5 * (exact - w).abs().max()


def test_huge_lambda_leaves_weights_unchanged():
    weights, c_e, g_e, c_p, s_e, s_p = _random_problem(1)
    new = solve_closed_form(weights, c_e, g_e, c_p, lamb=1e12)
    for k, w in weights.items():
        assert (new[k] - w).abs().max() < 1e-8


def test_no_preserve_tiny_lambda_maps_erased_embeddings_exactly():
    weights, c_e, g_e, _, _, _ = _random_problem(2)
    new = solve_closed_form(weights, c_e, g_e, None, lamb=1e-9)
    for k, w in weights.items():
        assert torch.allclose(new[k] @ c_e.T, w @ g_e.T, rtol=1e-6, atol=1e-6)


def test_preserved_embeddings_keep_outputs_when_they_dominate():
    weights, c_e, g_e, c_p, _, _ = _random_problem(3)
    new = solve_closed_form(weights, c_e, g_e, c_p, preserve_scale=1e9, lamb=0.5)
    for k, w in weights.items():
        assert torch.allclose(new[k] @ c_p.T, w @ c_p.T, rtol=1e-5, atol=1e-5)


def test_singular_system_is_refused():
    weights, c_e, g_e, c_p, _, _ = _random_problem(4)
    with pytest.raises(ErasureError, match="singular.*lamb"):
        solve_closed_form(weights, c_e, g_e, c_p, lamb=0.0)
    # enough independent rows: lamb 0 is fine and reproduces the exact interpolation
    d = c_e.shape[1]
    c = torch.randn(d, d, dtype=torch.float64)
    new = solve_closed_form(weights, c, c, None, lamb=0.0)
    for k, w in weights.items():
        assert torch.allclose(new[k], w, atol=1e-8)


def test_aligned_pairs_match_identical_tokens():
    from erasure.embeddings import PromptEncoding

    def enc(ids):
        full = [100] + ids + [200] + [200] * (10 - len(ids) - 2)
        return PromptEncoding("", tuple(full), len(ids) + 2, torch.zeros(10, 1))

    # "a banana" -> "a blue banana": a->a, banana->banana, end/padding positionally
    pairs = dict(_aligned_pairs(enc([1, 7]), enc([1, 5, 7]), 10))
    assert pairs[0] == 0 and pairs[1] == 1 and pairs[2] == 3
    assert pairs[3] == 4 and pairs[9] == 9  # end token -> end token, padding clipped to the context
    # shared tokens only (MACE's refinement): "a red star" -> "a square": a->a, end/padding; red, star left out
    shared = dict(_aligned_pairs(enc([1, 5, 7]), enc([1, 9]), 10, shared_only=True))
    assert shared == {0: 0, 1: 1, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8}


# ----------------------------------------------------------------------------- on pipelines


@pytest.fixture()
def fresh_pipeline(kind_folder):
    return load_pipeline(kind_folder)


def _state(pipe):
    return {f"{c}.{k}": v.detach().clone() for c in ("unet", "text_encoder", "vae")
            for k, v in getattr(pipe, c).state_dict().items()}


@pytest.mark.parametrize("method", ["uce", "uce-paper", "time"])
def test_only_cross_attention_kv_change(fresh_pipeline, method):
    pipe = fresh_pipeline
    before = _state(pipe)
    edit = erase(pipe, method, ["red star"], preserve=["blue circle"] if method != "time" else ())
    edit.apply(pipe)
    after = _state(pipe)
    kv = {f"unet.{n}.weight" for n in cross_attention_kv(pipe.unet)}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == kv == set(edit.tensors)
    edit.restore(pipe)
    assert all(torch.equal(before[k], v) for k, v in _state(pipe).items())


def test_edit_is_exactly_low_rank(fresh_pipeline):
    pipe = fresh_pipeline
    edit = erase(pipe, "uce", ["red star", "green heart"], preserve=["blue circle"], templates=["{}", "a {}"])
    rows = edit.info["erase_rows"] + edit.info["preserve_rows"]
    for name, (up, down) in edit.low_rank().items():
        delta = edit.tensors[name].double() - edit.originals[name].double()
        assert down.shape[0] <= rows
        assert (up.double() @ down.double() - delta).abs().max() < 1e-5 * (1 + delta.abs().max())


def test_edit_file_round_trip_gives_same_images(fresh_pipeline, tmp_path):
    pipe = fresh_pipeline
    edit = erase(pipe, "uce", "red star", preserve=["blue circle"])
    path = edit.save(tmp_path / "star.edit.safetensors")
    with pytest.raises(ErasureError, match="already exists"):
        edit.save(path)
    loaded = Edit.load(path)
    assert loaded.concepts == ("red star",) and loaded.method == "uce" and loaded.config["lamb"] == 0.5
    assert set(loaded.tensors) == set(edit.tensors)
    settings = SamplerSettings(steps=2, guidance=3.0)
    edit.apply(pipe)
    expected = generate_images(pipe, ["a red star"], [1], settings, progress=False)
    edit.restore(pipe)
    loaded.apply(pipe)  # checks the base hashes of the restored weights
    got = generate_images(pipe, ["a red star"], [1], settings, progress=False)
    assert np.array_equal(expected, got)
    with pytest.raises(ErasureError, match="differs from the weights"):
        loaded.apply(pipe)  # already applied: the base no longer matches


def test_embedding_cache_encodes_only_new_prompts(built_pipeline):
    pipe = built_pipeline("sd1")
    cache = EmbeddingCache()
    erase(pipe, "uce", ["red star", "blue circle"], preserve=["green heart"], cache=cache)
    first = cache.encoded
    erase(pipe, "uce", ["red star", "pink cross"], preserve=["green heart"], cache=cache)
    assert cache.encoded - first == 1  # only "pink cross"; the empty guide and the rest are cached


def test_disk_cache_round_trip(built_pipeline, tmp_path):
    pipe = built_pipeline("sd1")
    a = EmbeddingCache(tmp_path).encode(pipe, ["a red star"])[0]
    fresh = EmbeddingCache(tmp_path)
    b = fresh.encode(pipe, ["a red star"])[0]
    assert fresh.encoded == 0 and torch.equal(a.hidden, b.hidden) and a.ids == b.ids and a.length == b.length


@pytest.mark.parametrize(
    "concepts, settings, message",
    [
        ([""], {}, "empty concept"),
        (["star"], {"preserve": ["star", "circle"]}, "both erased and preserved"),
        (["word " * 80], {}, "shorten it"),
        (["star"], {"lamb": 0.0, "preserve": []}, "singular"),
        (["star"], {"tokens": "middle"}, "tokens must be one of"),
        (["star"], {"templates": ["a photo"]}, "needs a {}"),
        (["star"], {"guide": ["a", "b"]}, "2 guides for 1 concepts"),
        (["star"], {"lambda": 1.0}, "unknown setting"),
    ],
)
def test_bad_input_gets_one_line_errors(built_pipeline, concepts, settings, message):
    with pytest.raises(ErasureError, match=message) as info:
        erase(built_pipeline("sd1"), "uce", concepts, **settings)
    assert "\n" not in str(info.value)


def test_registry_knows_the_presets():
    assert {"uce", "uce-paper", "time"} <= set(METHODS.names())
    with pytest.raises(ErasureError, match="did you mean 'uce'"):
        METHODS.get("ucee")


def test_last_subject_row_is_the_concept_token(built_pipeline):
    pipe = built_pipeline("sd1")
    rows = build_rows(pipe, ["red star"], [""], [], templates=["a photo of {}"], tokens="last-subject")
    enc = EmbeddingCache().encode(pipe, ["a photo of red star", "a photo of"])
    # "a photo of red star": start, a, photo, of, red, star -> index 5; guide "a photo of" -> "of" at 3
    assert torch.equal(rows.erase_inputs[0], enc[0].hidden[5])
    assert torch.equal(rows.erase_guides[0], enc[1].hidden[3])


def test_residual_rows_are_the_shared_tokens(built_pipeline):
    pipe = built_pipeline("sd1")
    rows = build_rows(pipe, ["red star"], ["square"], [], templates=["a photo of {} today"], tokens="residual")
    enc = EmbeddingCache().encode(pipe, ["a photo of red star today", "a photo of square today"])
    # start, a, photo, of | red, star | today, end, padding -> start, a, photo, of | square | today, end, ...
    src = [0, 1, 2, 3] + list(range(6, 77))
    dst = [0, 1, 2, 3] + list(range(5, 76))
    assert torch.equal(rows.erase_inputs, enc[0].hidden[src])
    assert torch.equal(rows.erase_guides, enc[1].hidden[dst])


@pytest.mark.parametrize("tokens, stop", [("subject-to-end", 77), ("subject-to-eot", 8)])
def test_subject_rows_run_to_the_end_token_or_through_padding(built_pipeline, tokens, stop):
    pipe = built_pipeline("sd1")
    rows = build_rows(pipe, ["red star"], ["square"], [], templates=["a photo of {} today"], tokens=tokens)
    enc = EmbeddingCache().encode(pipe, ["a photo of red star today", "a photo of square today"])
    # start, a, photo, of, red, star(5), today, end(7), padding -> ..., square(4), today, end(6), ...
    assert enc[0].length == 8
    assert torch.equal(rows.erase_inputs, enc[0].hidden[5:stop])
    assert torch.equal(rows.erase_guides, enc[1].hidden[[min(76, 4 + i - 5) for i in range(5, stop)]])


def test_evaluate_resumes_from_an_images_folder_and_separates_edited_weights(tiny_sd1_folder, tmp_path):
    from erasure.evaluation.evaluate import evaluate
    from erasure.evaluation.prompts import PromptRecord, PromptSet

    pipe = load_pipeline(tiny_sd1_folder)
    records = tuple(PromptRecord(case_number=i, prompt=p, evaluation_seed=i, concept="star", group="target",
                                 extra={"shape": "star"}) for i, p in enumerate(["a red star", "a star"]))
    pset = PromptSet(name="tiny", records=records, source="test")
    settings = SamplerSettings(steps=2, guidance=3.0)
    first = evaluate(pipe, pset, settings=settings, images_dir=tmp_path / "img", progress=False, batch_size=2)
    again = evaluate(pipe, pset, settings=settings, images_dir=tmp_path / "img", progress=False, batch_size=2)
    assert np.array_equal(first.images, again.images)
    erase(pipe, "uce", "red star", preserve=["blue circle"]).apply(pipe)
    with pytest.raises(ErasureError):
        evaluate(pipe, pset, settings=settings, images_dir=tmp_path / "img", progress=False, batch_size=2)


def test_world_caption_templates_come_from_the_caption_grammar():
    from erasure.world.profile import world_caption_templates
    from erasure.world.render import COLOURS, SHAPES

    for concept in ("star", "red", "striped"):
        templates = world_caption_templates(concept)
        assert len(templates) == 32 == len(set(templates)) and templates == world_caption_templates(concept)
        assert all(t.count("{}") == 1 for t in templates)
        filled = [t.replace("{}", concept) for t in templates]
        assert all(concept in f.split(" ") for f in filled)
    star = world_caption_templates("star")
    assert any("background" in t for t in star) and any(t.endswith("{}") for t in star)  # slot mid-caption and last
    assert not any(s in t.split(" ") for t in star for s in SHAPES)  # a shape's templates name no other shape
    assert any(c in t.split(" ") for t in star for c in COLOURS)


# ----------------------------------------------------------------------------- against the references
# Oracles transcribed from rohitgandikota/unified-concept-editing (the arithmetic as written there, in
# float64 so that a difference is ours and not float32 noise):
# - CURRENT: @28c81ed trainscripts/uce_sd_erase.py, UCE(): per prompt, pipe.encode_prompt at
#   last_token_idx = attention_mask.sum() - 2; per attn2 to_k/to_v module, mat1 = lamb W + sum v c^T,
#   mat2 = lamb I + sum c c^T, W_new = mat1 @ inverse(mat2); --expand_prompts fills the guide too.
# - PAPER: @35e91e2 train-scripts/train_erase.py, edit_model(technique="replace") as its __main__ calls it:
#   the prompt's last token through padding, both spans cut to 77 - farthest rows; retain_texts = [''] +
#   preserve, all 77 tokens; preserve_scale = max(0.1, 1 / len(retain_texts)); lamb 0.5; templates on the
#   erased concept only (new_texts are the bare guide, '' -> ' ').

UCE_OBJECT_TEMPLATES = ("image of {}", "photo of {}", "portrait of {}", "picture of {}", "painting of {}")


def _kv_modules(pipe):
    return {name: m for name, m in pipe.unet.named_modules()
            if "attn2" in name and (name.endswith("to_v") or name.endswith("to_k"))}


def current_reference_uce(pipe, edit_concepts, guide_concepts, preserve_concepts, erase_scale=1.0,
                          preserve_scale=1.0, lamb=0.5):
    embeds = {}
    for e in edit_concepts + guide_concepts + preserve_concepts:
        with torch.no_grad():
            t_emb = pipe.encode_prompt(prompt=e, device=pipe.device, num_images_per_prompt=1,
                                       do_classifier_free_guidance=False)
        last = pipe.tokenizer(e, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt")["attention_mask"].sum() - 2
        embeds[e] = t_emb[0][:, last, :].double()
    out = {}
    for name, module in _kv_modules(pipe).items():
        w = module.weight.detach().double()
        mat1, mat2 = lamb * w, lamb * torch.eye(w.shape[1], dtype=torch.float64)
        for e, g in zip(edit_concepts, guide_concepts):
            c, v = embeds[e].T, (embeds[g] @ w.T).T
            mat1, mat2 = mat1 + erase_scale * (v @ c.T), mat2 + erase_scale * (c @ c.T)
        for p in preserve_concepts:
            c, v = embeds[p].T, (embeds[p] @ w.T).T
            mat1, mat2 = mat1 + preserve_scale * (v @ c.T), mat2 + preserve_scale * (c @ c.T)
        out[f"unet.{name}.weight"] = mat1 @ torch.inverse(mat2)
    return out


def paper_reference_uce(pipe, old_texts, new_texts, preserve_concepts, erase_scale=1.0, preserve_scale=None, lamb=0.5):
    """Returns (new weights, number of erased rows)."""
    retain_texts = [""] + list(preserve_concepts)
    if preserve_scale is None:
        preserve_scale = max(0.1, 1 / len(retain_texts))
    tok, context = pipe.tokenizer, pipe.tokenizer.model_max_length

    def encode(texts):
        ti = tok(texts, padding="max_length", max_length=context, truncation=True, return_tensors="pt")
        with torch.no_grad():
            return ti, pipe.text_encoder(ti.input_ids)[0].double()

    erased = []  # (old_emb, new_emb) per edit pair; the reference encodes them inside its layer loop, same values
    for old_text, new_text in zip(old_texts, new_texts):
        ti, emb = encode([old_text, new_text if new_text != "" else " "])
        final, final_new = ti.attention_mask[0].sum().item() - 2, ti.attention_mask[1].sum().item() - 2
        farthest = max(final_new, final)
        erased.append((emb[0][final : context - max(0, farthest - final)],
                       emb[1][final_new : context - max(0, farthest - final_new)]))
    retained = [encode([text, text])[1] for text in retain_texts]
    out = {}
    for name, module in _kv_modules(pipe).items():
        w = module.weight.detach().double()
        mat1, mat2 = lamb * w, lamb * torch.eye(w.shape[1], dtype=torch.float64)
        for old_emb, new_emb in erased:
            values = new_emb @ w.T
            mat1, mat2 = mat1 + erase_scale * values.T @ old_emb, mat2 + erase_scale * old_emb.T @ old_emb
        for emb in retained:
            values = emb[1] @ w.T
            mat1, mat2 = mat1 + preserve_scale * values.T @ emb[0], mat2 + preserve_scale * emb[0].T @ emb[0]
        out[f"unet.{name}.weight"] = mat1 @ torch.inverse(mat2)
    return out, sum(old.shape[0] for old, _ in erased)


def _relative_difference(edit, reference) -> float:
    """max |ours - reference| over max |reference - W| (the size of the edit)."""
    assert set(edit.tensors) == set(reference)
    diff = max(float((edit.tensors[k].double() - reference[k]).abs().max()) for k in reference)
    size = max(float((reference[k] - edit.originals[k].double()).abs().max()) for k in reference)
    assert size > 0
    return diff / size


def test_reference_oracles_cover_our_modules(kind_pipeline):
    assert set(_kv_modules(kind_pipeline)) == set(cross_attention_kv(kind_pipeline.unet))


@pytest.mark.parametrize("templated", [False, True])
def test_uce_is_the_current_reference(kind_pipeline, templated):
    """`uce` = UCE() of the current code, its --expand_prompts included (guide templated, preserve bare)."""
    pipe = kind_pipeline
    concepts, guide, preserve = ["red star", "green heart"], "blue square", ["yellow circle", "purple cross"]
    templates = UCE_OBJECT_TEMPLATES if templated else ()
    edit_prompts = concepts + [t.format(c) for c in concepts for t in templates]
    guide_prompts = [guide] * len(concepts) + [t.format(guide) for c in concepts for t in templates]
    reference = current_reference_uce(pipe, edit_prompts, guide_prompts, preserve)
    edit = erase(pipe, "uce", concepts, guide=guide, preserve=preserve, template_preserve=False,
                 templates=("{}",) + templates)
    assert edit.info["erase_rows"] == len(edit_prompts) and edit.info["preserve_rows"] == len(preserve)
    assert _relative_difference(edit, reference) < 1e-5


def test_last_token_is_the_prompts_last_token_not_the_concepts(kind_pipeline):
    """With the concept mid-prompt the current reference erases the prompt's last token ("snow");
    `last-subject` (ours) erases the concept's ("star"): the two edits differ by most of their size."""
    pipe = kind_pipeline
    reference = current_reference_uce(pipe, ["red star in the snow"], ["square in the snow"], ["blue circle in the snow"])
    kw = dict(guide="square", preserve=["blue circle"], templates=["{} in the snow"])
    assert _relative_difference(erase(pipe, "uce", ["red star"], **kw), reference) < 1e-5  # template_preserve: the
    # preserved concept is filled in too, which here is exactly the reference's preserve prompt
    subject = erase(pipe, "uce", ["red star"], tokens="last-subject", **kw)
    assert _relative_difference(subject, reference) > 0.3
    rows = build_rows(pipe, ["red star"], ["square"], ["blue circle"], templates=["{} in the snow"], tokens="last-token")
    enc = EmbeddingCache().encode(pipe, ["red star in the snow", "square in the snow", "blue circle in the snow"])
    # start, red, star, in, the, snow(5), end / start, square, in, the, snow(4), end
    assert torch.equal(rows.erase_inputs, enc[0].hidden[[5]]) and torch.equal(rows.erase_guides, enc[1].hidden[[4]])
    assert torch.equal(rows.preserve_inputs, enc[2].hidden[[5]])


@pytest.mark.parametrize("concepts, guide, templated", [
    (["star"], "blue square", False),  # the guide is one token longer: 75 rows, as the paper keeps
    (["red star", "green heart"], "", True),  # the paper's object templates; the empty guide (' ')
    (["red star"], "square", True),
])
def test_uce_paper_is_the_paper_era_cli(kind_pipeline, concepts, guide, templated):
    pipe = kind_pipeline
    preserve = ["yellow circle", "purple cross"]
    templates = UCE_OBJECT_TEMPLATES if templated else ()
    old_texts = [p for c in concepts for p in [c] + [t.format(c) for t in templates]]
    reference, rows = paper_reference_uce(pipe, old_texts, [guide] * len(old_texts), preserve)
    edit = erase(pipe, "uce-paper", concepts, guide=guide, preserve=preserve, templates=("{}",) + templates)
    assert edit.info["erase_rows"] == rows and edit.info["preserve_rows"] == 77 * 3
    assert edit.config["preserve"] == ["", *preserve]
    assert _relative_difference(edit, reference) < 1e-5
    if not templated:
        assert rows == 75 * len(concepts)
    # the same with no preserve concept: [''] alone, at scale 1 (max(0.1, 1/1)); an explicit '' is not doubled
    reference, _ = paper_reference_uce(pipe, old_texts, [guide] * len(old_texts), [])
    for extra in ({"preserve": ()}, {"preserve": [""]}):
        edit = erase(pipe, "uce-paper", concepts, guide=guide, templates=("{}",) + templates, **extra)
        assert edit.info["preserve_rows"] == 77 and _relative_difference(edit, reference) < 1e-5


def test_an_empty_preserve_prompt_is_kept(built_pipeline):
    """preserve=[""] preserves the empty prompt (its last token, the start token, for `uce`; its 77 tokens with
    token selections that preserve every token), never zero rows."""
    pipe = built_pipeline("sd1")
    for method, rows in (("uce", 1), ("uce-paper", 77)):
        edit = erase(pipe, method, ["red star"], preserve=[""])
        assert edit.info["preserve_rows"] == rows and edit.config["preserve"] == [""]
    keep = erase(pipe, "uce", ["red star"], preserve=[""], preserve_scale=1e6)
    emptied = erase(pipe, "uce", ["red star"], preserve=())
    start = EmbeddingCache().encode(pipe, [""])[0].hidden[0].double()
    for name, w in keep.tensors.items():  # the empty prompt's start token keeps its output
        assert torch.allclose(w.double() @ start, keep.originals[name].double() @ start, atol=1e-5)
    assert any(not torch.equal(keep.tensors[k], emptied.tensors[k]) for k in keep.tensors)


def test_subject_to_end_cuts_both_spans_when_the_guide_is_longer(built_pipeline):
    pipe = built_pipeline("sd1")
    rows = build_rows(pipe, ["star"], ["blue square"], [], tokens="subject-to-end")
    enc = EmbeddingCache().encode(pipe, ["star", "blue square"])
    # star at 1, square at 2: 75 rows, star..75 against square..76 (no clamped last guide index)
    assert torch.equal(rows.erase_inputs, enc[0].hidden[1:76]) and torch.equal(rows.erase_guides, enc[1].hidden[2:77])


def test_token_selections_and_presets_agree_with_the_method_specs():
    from erasure.methods.closed_form import PRESETS, TOKEN_SELECTIONS
    from erasure.methods.settings import CLOSED_FORM_TOKENS

    assert TOKEN_SELECTIONS == CLOSED_FORM_TOKENS
    for name, preset in PRESETS.items():
        assert METHODS.get(name).defaults == preset, name


def test_embedding_cache_tells_encoders_and_tokenizers_apart(built_pipeline):
    """The tiny SD 1.x and SD 2.x encoders have the same weights (seed 1) but another activation and another
    padding token: a cache shared by both must not hand one the other's embeddings."""
    sd1, sd2 = built_pipeline("sd1"), built_pipeline("sd2")
    cache = EmbeddingCache()
    a, b = cache.encode(sd1, ["a red star"])[0], cache.encode(sd2, ["a red star"])[0]
    assert cache.encoded == 2 and not torch.allclose(a.hidden, b.hidden)
    with torch.no_grad():
        direct = sd2.text_encoder(sd2.tokenizer("a red star", padding="max_length", max_length=77,
                                                return_tensors="pt").input_ids)[0][0]
    assert torch.equal(b.hidden, direct)
