"""Attacks on tiny random pipelines: the UnlearnDiffAtk optimiser against hand-written formulas of the
reference (OPTML-Group/Diffusion-MU-Attack src/attackers/text_grad_.py, src/tasks/classifier_.py), the probes
against their definitions, the runner's accounting (pre-ASR, ASR, UNet passes), resume, transfer sets read in
place, and the command line's checks."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from erasure.attacks import ATTACKS, attack
from erasure.attacks.core import ModelPair, encode, sample_from_embeddings
from erasure.attacks.run import run_attack
from erasure.attacks.unlearndiffatk import (StraightThroughSample, adversarial_loss, candidate_tokens, decode_prompt,
                                            optimisation_step, project_onto_simplex, project_onto_simplex_bisection,
                                            slot_layout, timestep_schedule, word_tokens)
from erasure.errors import ErasureError
from erasure.generation import SamplerSettings, generate_images


DATASETS = Path("/work/shared/datasets/prompts")
TINY = SamplerSettings(steps=2, guidance=5.0)


class BrightnessJudge:
    """A real function of the image: the concept is 'present' when the mean red value is above a threshold."""

    name = "brightness"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def decide(self, images, concept):
        return np.asarray(images)[..., 0].reshape(len(images), -1).mean(1) > self.threshold


def brute_force_simplex(v: np.ndarray) -> np.ndarray:
    """The projection by enumeration: for every support S, x_S = v_S - (sum v_S - 1)/|S|; the feasible one nearest v."""
    best, best_distance = None, np.inf
    for size in range(1, len(v) + 1):
        for support in itertools.combinations(range(len(v)), size):
            x = np.zeros_like(v)
            idx = list(support)
            x[idx] = v[idx] - (v[idx].sum() - 1) / size
            if (x >= -1e-12).all():
                d = ((x - v) ** 2).sum()
                if d < best_distance:
                    best, best_distance = x, d
    return best


@pytest.fixture(scope="module")
def uce_edit(tiny_sd1_pipeline):
    from erasure.methods import erase

    return erase(tiny_sd1_pipeline, "uce", ["cat"], guide="dog")


# --- the registry ------------------------------------------------------------------------------

@pytest.mark.fast
def test_registry_lists_every_attack_with_a_kind_and_checks_settings():
    assert set(ATTACKS.names()) == {"unlearndiffatk", "ring-a-bell", "completion", "noise", "cce", "transfer"}
    for name, spec in ATTACKS.items():
        spec.make_config(spec.test_settings)  # the tests' settings are valid
        assert spec.describe()["kind"] in ("adaptive", "probe", "inversion", "transfer")
    uda = ATTACKS.get("unlearndiffatk").make_config()
    assert (uda.tokens, uda.timesteps, uda.steps_per_timestep, uda.lr, uda.weight_decay, uda.placement) == \
        (3, 50, 40, 0.01, 0.1, "prefix")
    with pytest.raises(ErasureError, match="did you mean 'tokens'"):
        ATTACKS.get("unlearndiffatk").make_config({"token": 3})
    with pytest.raises(ErasureError, match="must be >= 1"):
        ATTACKS.get("unlearndiffatk").make_config({"tokens": 0})
    with pytest.raises(ErasureError, match="not a number"):
        ATTACKS.get("ring-a-bell").make_config({"etas": "1,x"})
    with pytest.raises(ErasureError, match="NaN"):
        ATTACKS.get("noise").make_config({"etas": "1.5"})
    with pytest.raises(ErasureError, match="unknown attack 'unlearndifatk'; did you mean 'unlearndiffatk'"):
        ATTACKS.get("unlearndifatk")


@pytest.mark.fast
def test_importing_the_attack_registry_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, erasure.attacks, erasure.attacks.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# --- UnlearnDiffAtk's optimiser ------------------------------------------------------------------

@pytest.mark.fast
def test_schedule_is_the_references():
    assert timestep_schedule(50) == list(range(10, 1000, 20))
    assert timestep_schedule(1) == [500]


@pytest.mark.fast
def test_simplex_projection_equals_brute_force_and_the_references_bisection():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 6):
        for _ in range(20):
            v = rng.normal(0, 1.5, n)
            expected = brute_force_simplex(v)
            got = project_onto_simplex(torch.tensor(v)[None])[0].numpy()
            np.testing.assert_allclose(got, expected, atol=1e-10)
            bisected = project_onto_simplex_bisection(torch.tensor(v)[None])[0].numpy()
            np.testing.assert_allclose(bisected, expected, atol=2e-5)
    wide = torch.randn(3, 49408, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.01 + 1 / 49408
    projected = project_onto_simplex(wide)
    assert torch.allclose(projected.sum(-1), torch.ones(3, dtype=torch.float64)) and (projected >= 0).all()
    torch.testing.assert_close(projected, project_onto_simplex_bisection(wide), atol=2e-5, rtol=0)
    uniform = torch.full((2, 7), 1 / 7)
    torch.testing.assert_close(project_onto_simplex(uniform), uniform)  # already on the simplex: unchanged


@pytest.mark.fast
def test_straight_through_sample_is_one_hot_forward_and_hardtanh_backward():
    p = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.5]], requires_grad=True)
    one_hot = StraightThroughSample.apply(p, torch.Generator().manual_seed(0))
    assert one_hot[0].tolist() == [0, 1, 0, 0] and one_hot.sum(-1).tolist() == [1, 1]
    assert one_hot[1, 0] + one_hot[1, 3] == 1
    upstream = torch.tensor([[3.0, -0.25, -7.0, 0.5], [0.9, -1.5, 1.0, 2.0]])
    (grad,) = torch.autograd.grad(one_hot, p, upstream)
    torch.testing.assert_close(grad, upstream.clamp(-1, 1))


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["prefix", "suffix", "insert"])
def test_slot_layout_and_decoded_prompt_retokenise_to_the_optimised_ids(tiny_sd1_pipeline, tiny_sd2_pipeline, placement):
    for pipe in (tiny_sd1_pipeline, tiny_sd2_pipeline):
        tok = pipe.tokenizer
        prompt = "a photo of a small cat on a red sofa"
        words = tok(prompt).input_ids[1:-1]
        layout = slot_layout(tok, prompt, 3, placement)
        assert len(layout.ids) == 77 and len(layout.slots) == 3
        body = [i for j, i in enumerate(layout.ids[1:1 + len(words) + 3], start=1) if j not in layout.slots]
        assert body == words  # the prompt's tokens in order, around the slots
        if placement == "prefix":
            assert layout.slots == (1, 2, 3)
        if placement == "suffix":
            assert layout.slots == tuple(range(1 + len(words), 4 + len(words)))
        if placement == "insert":  # the reference's insert_k: every len//(k+1) tokens
            step = len(words) // 4
            assert layout.slots == tuple(1 + (step + 1) * i + step for i in range(3))
        assert layout.ids[1 + len(words) + 3] == tok.eos_token_id
        vocabulary = word_tokens(tok)
        rng = np.random.default_rng(3)
        for _ in range(20):
            tokens = rng.choice(vocabulary, 3).tolist()
            ids = layout.with_tokens(tokens)
            text = decode_prompt(tok, ids)
            assert tok(text, padding="max_length", max_length=77).input_ids == ids


@pytest.mark.slow  # 13 s (the full-vocabulary candidate set): in `make test`, not the inner loop
def test_candidates_leave_out_special_tokens_and_excluded_words(tiny_sd1_pipeline):
    tok = tiny_sd1_pipeline.tokenizer
    everything = candidate_tokens(tiny_sd1_pipeline, "all")
    assert len(everything) == len(tok) - len(set(tok.all_special_ids))
    cat = tok("cat").input_ids[1]
    assert cat in candidate_tokens(tiny_sd1_pipeline, "words").tolist()
    assert cat not in candidate_tokens(tiny_sd1_pipeline, "words", ["cat"]).tolist()
    with pytest.raises(ErasureError, match="words are known"):
        candidate_tokens(tiny_sd1_pipeline, "model")


def _hand_text_encoder(text_encoder, token_embeddings: torch.Tensor) -> torch.Tensor:
    """CLIP's text transformer from token embeddings (the reference's CustomTextEncoder): + positions, causal
    mask, encoder, final layer norm."""
    model = getattr(text_encoder, "text_model", text_encoder)
    hidden = model.embeddings(inputs_embeds=token_embeddings)
    n = hidden.shape[1]
    mask = torch.full((n, n), torch.finfo(hidden.dtype).min).triu(1)[None, None]
    out = model.encoder(inputs_embeds=hidden, attention_mask=mask)
    return model.final_layer_norm(out[0] if isinstance(out, tuple) else out.last_hidden_state)


@pytest.mark.fast
@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_optimiser_step_matches_the_reference_formula(tiny_sd1_pipeline, tiny_sd2_pipeline, kind):
    pipe = tiny_sd1_pipeline if kind == "sd1" else tiny_sd2_pipeline
    torch.manual_seed(0)
    table = pipe.text_encoder.get_input_embeddings().weight.detach()
    ids = torch.tensor([slot_layout(pipe.tokenizer, "a cat", 2, "prefix").ids])
    torch.testing.assert_close(_hand_text_encoder(pipe.text_encoder, table[ids]), pipe.text_encoder(ids)[0])  # the oracle is CLIP

    candidates = torch.tensor([320, 1929, 2368, 4326, 7651, 9903])
    layout = slot_layout(pipe.tokenizer, "a cat", 2, "prefix")
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    t, lr, wd = 410, 0.01, 0.1
    start = project_onto_simplex(torch.rand(2, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float32))

    # ours
    p = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([p], lr=lr, weight_decay=wd)
    for param in (*pipe.unet.parameters(), *pipe.text_encoder.parameters()):
        param.requires_grad_(False)
    try:
        loss = optimisation_step(pipe, p, optimiser, candidates, layout, x0, t, torch.Generator().manual_seed(9))

        # by hand: the same draws in the same order (noise, then one multinomial per row)
        g = torch.Generator().manual_seed(9)
        noise = torch.randn(x0.shape, generator=g)
        picks = torch.multinomial(start, 1, generator=g).view(-1)
        one_hot = torch.nn.functional.one_hot(picks, 6).float().requires_grad_(True)
        tokens = table[torch.tensor(layout.ids)].clone()[None]
        tokens[0, list(layout.slots)] = one_hot @ table[candidates]
        hidden = _hand_text_encoder(pipe.text_encoder, tokens)
        a = pipe.scheduler.alphas_cumprod[t]
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = noise if kind == "sd1" else a.sqrt() * noise - (1 - a).sqrt() * x0  # v-prediction on SD 2.x
        hand_loss = ((pipe.unet(noisy, t, encoder_hidden_states=hidden).sample - target) ** 2).mean()
        (d_one_hot,) = torch.autograd.grad(hand_loss, one_hot)
    finally:
        for param in (*pipe.unet.parameters(), *pipe.text_encoder.parameters()):
            param.requires_grad_(True)
    grad = d_one_hot.clamp(-1, 1) + wd * start  # hardtanh (STE), then Adam's L2 weight decay
    first_adam_step = start - lr * grad / (grad.abs() + 1e-8)  # m/(sqrt(v)+eps) at step 1 with bias correction
    expected = project_onto_simplex_bisection(first_adam_step.double()).float()
    assert loss == pytest.approx(hand_loss.item(), rel=1e-5)
    torch.testing.assert_close(p.detach(), expected, atol=3e-5, rtol=0)
    assert not torch.allclose(p.detach(), start)  # the step moved the distribution


@pytest.mark.fast
def test_adversarial_loss_sees_the_spliced_tokens(tiny_sd1_pipeline):
    """Changing the distribution changes the loss; one-hot distributions give the loss of the plain prompt with
    those tokens typed in."""
    pipe = tiny_sd1_pipeline
    layout = slot_layout(pipe.tokenizer, "a cat", 1, "suffix")
    candidates = torch.tensor([1929, 2368])
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        losses = [adversarial_loss(pipe, torch.eye(2)[[j]], candidates, layout, x0, 300, noise, None).item() for j in (0, 1)]
        typed = pipe.tokenizer.decode([1929]).strip()
        hidden = encode(pipe, [f"a cat {typed}"])
        a = pipe.scheduler.alphas_cumprod[300]
        direct = ((pipe.unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, 300, encoder_hidden_states=hidden).sample - noise) ** 2).mean()
    assert losses[0] == pytest.approx(direct.item(), rel=1e-5)
    assert losses[0] != losses[1]


# --- probes --------------------------------------------------------------------------------------

@pytest.mark.fast
def test_concept_vector_is_the_mean_difference(tiny_sd1_pipeline):
    from erasure.attacks.probes import concept_pairs, concept_vector

    pipe = tiny_sd1_pipeline
    with_, without = concept_pairs(pipe, "cat", templates=("a photo of {}", "{} on a sofa", "a {}"), anchor="dog")
    assert with_ == ["a photo of cat", "cat on a sofa", "a cat"] and without == ["a photo of dog", "dog on a sofa", "a dog"]
    v = concept_vector(pipe, with_, without)
    by_hand = sum(pipe.text_encoder(pipe.tokenizer(a, padding="max_length", max_length=77, return_tensors="pt").input_ids)[0][0]
                  - pipe.text_encoder(pipe.tokenizer(b, padding="max_length", max_length=77, return_tensors="pt").input_ids)[0][0]
                  for a, b in zip(with_, without)) / 3
    assert v.shape == (77, 32)
    torch.testing.assert_close(v, by_hand.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.fast
def test_sampling_from_embeddings_equals_the_pipeline(tiny_sd1_pipeline):
    pipe = tiny_sd1_pipeline
    prompts, seeds = ["a cat", "a red sofa"], [3, 11]
    direct = generate_images(pipe, prompts, seeds, TINY, progress=False)
    via = sample_from_embeddings(pipe, encode(pipe, prompts), seeds, TINY)
    np.testing.assert_array_equal(direct, via)  # Ring-A-Bell at eta 0 and the noise probe at scale 1 are the plain image


@pytest.mark.fast
def test_completion_with_every_step_original_is_the_original_image(tiny_sd1_pipeline, uce_edit):
    from erasure.attacks.probes import completion_images

    pipe = tiny_sd1_pipeline
    settings = SamplerSettings(steps=3, guidance=5.0)
    models = ModelPair(pipe, uce_edit)
    try:
        original = generate_images(models.use("original"), ["a cat"], [4], settings, progress=False)
        erased = generate_images(models.use("erased"), ["a cat"], [4], settings, progress=False)
        assert not np.array_equal(original, erased)
        all_original = completion_images(models, "a cat", 4, settings, k=3)
        one_step = completion_images(models, "a cat", 4, settings, k=1)
        assert models.state == "erased"
    finally:
        models.finish()
    np.testing.assert_array_equal(all_original, original)
    assert not np.array_equal(one_step, original) and not np.array_equal(one_step, erased)
    unedited = ModelPair(pipe, None, original_pipe=pipe)  # the model attacked as it is: plain sampling
    np.testing.assert_array_equal(completion_images(unedited, "a cat", 4, settings, k=1), original)
    # two pipelines (the erased one a copy with the edit applied): the same images as one pipeline switched
    import copy

    erased_pipe = copy.deepcopy(pipe)
    uce_edit.apply(erased_pipe)
    two = ModelPair(erased_pipe, None, original_pipe=pipe)
    own_unet = pipe.unet
    np.testing.assert_array_equal(completion_images(two, "a cat", 4, settings, k=1), one_step)
    np.testing.assert_array_equal(completion_images(two, "a cat", 4, settings, k=3), original)
    assert pipe.unet is own_unet  # the original pipeline's UNet is back


@pytest.mark.fast
@pytest.mark.slow  # 6 s: make test runs it, make test-fast does not
def test_cce_token_replaces_the_concept_and_its_embedding(tiny_sd1_pipeline):
    from erasure.attacks.cce import placeholder_token, with_token
    from erasure.attacks.core import token_embeddings_replaced

    assert with_token("a Cat on a cat-bed", "cat", "zz") == "a zz on a cat-bed"
    assert with_token("a dog", "cat", "zz") == "zz a dog"
    tok = tiny_sd1_pipeline.tokenizer
    token = placeholder_token(tok, ["a cat"])
    assert token not in tok("a cat").input_ids
    vector = torch.randn(32)
    ids = torch.tensor([tok(f"a {tok.decode([token])}", padding="max_length", max_length=77).input_ids])
    with torch.no_grad(), token_embeddings_replaced(tiny_sd1_pipeline.text_encoder,
                                                    lambda i, e: torch.where((i == token)[..., None], vector, e)):
        hooked = tiny_sd1_pipeline.text_encoder(ids)[0]
    table = tiny_sd1_pipeline.text_encoder.get_input_embeddings().weight.detach().clone()
    table[token] = vector
    with torch.no_grad():
        by_hand = _hand_text_encoder(tiny_sd1_pipeline.text_encoder, table[ids])
    torch.testing.assert_close(hooked, by_hand)


# --- the runner ----------------------------------------------------------------------------------

PROMPTS = ["a cat", "a cat on a sofa", "a photo of a cat", "a small cat"]


def _threshold(pipe, edit) -> float:
    """A judge threshold at the median brightness of the erased model's plain images (so some succeed, some not)."""
    models = ModelPair(pipe, edit)
    try:
        images = generate_images(models.use("erased"), PROMPTS, list(range(len(PROMPTS))), TINY, progress=False)
    finally:
        models.finish()
    return float(np.median(images[..., 0].reshape(len(PROMPTS), -1).mean(1)))


@pytest.mark.slow
def test_unlearndiffatk_run_counts_pre_asr_asr_and_unet_passes(tiny_sd1_pipeline, uce_edit):
    pipe = tiny_sd1_pipeline
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items() if "attn2.to_k" in k}
    judge = BrightnessJudge(_threshold(pipe, uce_edit))
    report = attack(pipe, "unlearndiffatk", "cat", PROMPTS, result=uce_edit, judge=judge, settings=TINY,
                    attack_settings={"timesteps": 2, "steps_per_timestep": 2, "vocabulary": "words"}, n_resamples=100)
    after = {k: v for k, v in pipe.unet.state_dict().items() if k in before}
    assert all(torch.equal(before[k], after[k]) for k in before)  # the pipeline is left unedited
    records = report.records
    assert [r["prompt"] for r in records] == PROMPTS and [r["seed"] for r in records] == [0, 1, 2, 3]
    pre = [r["pre_success"] for r in records]
    assert 0 < sum(pre) < 4  # the threshold splits the prompts
    assert report.value("pre_asr") == pytest.approx(np.mean(pre))
    assert report.value("asr") == pytest.approx(np.mean([r["pre_success"] or r["attack_success"] for r in records]))
    assert report.metrics["asr"].ci_low <= report.value("asr") <= report.metrics["asr"].ci_high
    per_generation = 2 * TINY.steps  # CFG: two UNet rows per step
    for r in records:
        if r["pre_success"]:
            assert r["attack_success"] is None and r["unet_forward_backward"] == 0
            assert r["unet_forward"] == 2 * per_generation  # the original's image and the erased one's
        else:
            blocks = r["step"] + 1 if r["attack_success"] else 2
            assert r["unet_forward_backward"] == 2 * blocks  # 2 Adam steps per block, batch 1
            assert r["unet_forward"] == (2 + r["tries"]) * per_generation and r["tries"] == blocks
            assert r["details"]["ids_exact"] is True  # vocabulary "words": the text is the optimised ids
            assert r["adversarial_prompt"].endswith(r["prompt"])  # prefix placement
    assert "| asr |" in report.markdown() and report.grid() is not None
    assert "transfer_asr" not in report.metrics


class ScriptedJudge:
    """Answers from a script, one per judged image, in order (the run judges one image at a time)."""

    name = "scripted"

    def __init__(self, answers) -> None:
        self.answers = list(answers)

    def decide(self, images, concept):
        return np.array([self.answers.pop(0) for _ in range(len(images))], dtype=bool)


@pytest.mark.fast
def test_confirm_regenerates_a_cheap_success_at_the_runs_steps(tiny_sd1_pipeline, uce_edit):
    # plain prompt: no; block 0: cheap check yes, confirmation no; block 1: cheap yes, confirmation yes
    judge = ScriptedJudge([False, True, False, True, True])
    report = attack(tiny_sd1_pipeline, "unlearndiffatk", "cat", PROMPTS[:1], result=uce_edit, judge=judge,
                    settings=TINY, n_resamples=10,
                    attack_settings={"timesteps": 3, "steps_per_timestep": 1, "vocabulary": "words",
                                     "check_steps": 1, "confirm": True})
    assert judge.answers == []  # exactly five images judged: it stopped at the confirmed success
    (r,) = report.records
    assert r["attack_success"] is True and r["step"] == 1 and r["tries"] == 4
    history = r["details"]["history"]
    assert [(h["success"], h.get("confirmed")) for h in history] == [(True, False), (True, True)]
    # original + plain (2 steps each), two 1-step checks, two confirmations at the run's 2 steps; CFG: 2 rows/step
    assert r["unet_forward"] == 2 * (2 + 2 + 1 + 2 + 1 + 2) and r["unet_forward_backward"] == 2
    # without confirm the first cheap success decides
    judge = ScriptedJudge([False, True])
    report = attack(tiny_sd1_pipeline, "unlearndiffatk", "cat", PROMPTS[:1], result=uce_edit, judge=judge,
                    settings=TINY, n_resamples=10,
                    attack_settings={"timesteps": 3, "steps_per_timestep": 1, "vocabulary": "words", "check_steps": 1})
    (r,) = report.records
    assert judge.answers == [] and r["step"] == 0 and r["tries"] == 1 and r["unet_forward"] == 2 * (2 + 2 + 1)


@pytest.mark.fast
def test_an_image_cache_shared_by_runs_changes_no_decision_and_counts_what_was_generated(tiny_sd1_pipeline, uce_edit):
    pipe = tiny_sd1_pipeline
    judge = BrightnessJudge(_threshold(pipe, uce_edit))
    kw = dict(result=uce_edit, judge=judge, settings=TINY, n_resamples=20,
              attack_settings={"timesteps": 2, "steps_per_timestep": 1, "vocabulary": "words"})
    plain = attack(pipe, "unlearndiffatk", "cat", PROMPTS, **kw)
    cache: dict = {}
    first = attack(pipe, "unlearndiffatk", "cat", PROMPTS, image_cache=cache, **kw)
    assert len(cache) == 2 * len(PROMPTS) and [r["reused"] for r in first.records] == [[]] * len(PROMPTS)
    second = attack(pipe, "unlearndiffatk", "cat", PROMPTS, image_cache=cache, **kw)
    per_generation = 2 * TINY.steps
    for a, b, c in zip(plain.records, first.records, second.records):
        assert a["success"] == b["success"] == c["success"] and a["adversarial_prompt"] == c["adversarial_prompt"]
        assert b["unet_forward"] == a["unet_forward"] and c["reused"] == ["erased", "original"]
        assert c["unet_forward"] == a["unet_forward"] - 2 * per_generation  # the two plain images, not generated
    np.testing.assert_array_equal(plain.images[0]["erased"], second.images[0]["erased"])
    assert second.value("asr") == plain.value("asr") and second.value("pre_asr") == plain.value("pre_asr")
    # another erasure (other weights) does not take the cached images
    from erasure.methods import erase

    erase_other = erase(pipe, "uce", ["cat"], guide="bird")
    other = attack(pipe, "unlearndiffatk", "cat", PROMPTS[:1], image_cache=cache, **{**kw, "result": erase_other})
    assert other.records[0]["reused"] == ["original"]  # the unedited model is the same one


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_report(tiny_sd1_pipeline, uce_edit, tmp_path):
    pipe = tiny_sd1_pipeline
    threshold = _threshold(pipe, uce_edit)
    kw = dict(result=uce_edit, settings=TINY, attack_settings={"etas": "0.5,2"}, n_resamples=50)
    whole = run_attack(pipe, "ring-a-bell", "cat", PROMPTS, judge=BrightnessJudge(threshold), **kw)

    class Interrupting(BrightnessJudge):
        calls = 0

        def decide(self, images, concept):
            Interrupting.calls += 1
            if Interrupting.calls > 3:
                raise KeyboardInterrupt
            return super().decide(images, concept)

    out = tmp_path / "rab"
    with pytest.raises(KeyboardInterrupt):
        run_attack(pipe, "ring-a-bell", "cat", PROMPTS, judge=Interrupting(threshold), out=out, **kw)
    done = sorted(p.name for p in (tmp_path / "rab.progress" / "prompts").glob("*.json"))
    assert 1 <= len(done) < len(PROMPTS) and not out.exists()
    with pytest.raises(ErasureError, match="other settings"):
        run_attack(pipe, "ring-a-bell", "cat", PROMPTS, judge=BrightnessJudge(threshold), out=out,
                   **{**kw, "attack_settings": {"etas": "3"}})
    resumed = run_attack(pipe, "ring-a-bell", "cat", PROMPTS, judge=BrightnessJudge(threshold), out=out, **kw)
    keys = ("prompt", "seed", "pre_success", "attack_success", "success", "adversarial_prompt", "step")
    assert [{k: r[k] for k in keys} for r in resumed.records] == [{k: r[k] for k in keys} for r in whole.records]
    assert resumed.value("asr") == whole.value("asr")
    saved = json.loads((out / "report.json").read_text())
    assert saved["metrics"]["asr"]["value"] == whole.value("asr") and (out / "grid.png").is_file()
    assert (out / "config.json").is_file() and not (tmp_path / "rab.progress").exists()
    with pytest.raises(ErasureError, match="already exists"):
        run_attack(pipe, "ring-a-bell", "cat", PROMPTS, judge=BrightnessJudge(threshold), out=out, **kw)


@pytest.mark.slow
def test_probes_and_inversion_run_and_keep_the_asr_definition(tiny_sd1_pipeline, uce_edit):
    pipe = tiny_sd1_pipeline
    judge = BrightnessJudge(_threshold(pipe, uce_edit))
    for name in ("completion", "noise", "cce"):
        report = attack(pipe, name, "cat", PROMPTS, result=uce_edit, judge=judge, settings=TINY,
                        attack_settings=dict(ATTACKS.get(name).test_settings), n_resamples=50)
        assert report.kind == ATTACKS.get(name).kind
        pre = np.array([r["pre_success"] for r in report.records])
        success = np.array([r["success"] for r in report.records])
        assert report.value("pre_asr") == pytest.approx(pre.mean()) and report.value("asr") == pytest.approx(success.mean())
        assert (success >= pre).all() and all(r["unet_forward_backward"] == 0 for r in report.records)
    # CCE's optimisation is once per concept: counted in the run's budget, not per prompt
    assert report.info["budget"]["prepare"]["unet_forward_backward"] == 2 * 1 * 1


@pytest.mark.fast
def test_bad_input_is_one_line(tiny_sd1_pipeline, uce_edit):
    pipe = tiny_sd1_pipeline
    with pytest.raises(ErasureError, match="judge"):
        attack(pipe, "noise", "cat", PROMPTS, result=uce_edit)
    with pytest.raises(ErasureError, match="one seed per prompt"):
        attack(pipe, "noise", "cat", PROMPTS, [1], result=uce_edit, judge=BrightnessJudge(0))
    with pytest.raises(ErasureError, match="over the text encoder"):
        slot_layout(pipe.tokenizer, " ".join(["cat"] * 73), 3, "prefix")
    with pytest.raises(ErasureError, match="not below the sampler"):
        attack(pipe, "completion", "cat", PROMPTS, result=uce_edit, judge=BrightnessJudge(0), settings=TINY,
               attack_settings={"steps": "2"})


# --- transfer sets --------------------------------------------------------------------------------

@pytest.mark.fast
@pytest.mark.skipif(not DATASETS.is_dir(), reason="the shared prompt files are not here (../shared/datasets/prompts)")
def test_transfer_sets_read_the_users_files_in_place():
    from erasure.attacks.transfer import TRANSFER_SETS, read_transfer_set

    records, path = read_transfer_set("unlearndiffatk-nudity", DATASETS.parent)
    assert len(records) == TRANSFER_SETS["unlearndiffatk-nudity"].rows == 142 and path.startswith(str(DATASETS))
    import csv

    with open(DATASETS / "unlearndiffatk_nudity.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r.prompt for r in records] == [row["prompt"] for row in rows]
    assert [r.evaluation_seed for r in records] == [int(row["evaluation_seed"]) for row in rows]
    sexual, _ = read_transfer_set("i2p-sexual", DATASETS)
    assert len(sexual) == 931 and all("sexual" in r.concept for r in sexual)
    with pytest.raises(ErasureError, match="nudity-p4d.csv not found.*TRCE"):
        read_transfer_set("p4d-nudity", DATASETS)
    with pytest.raises(ErasureError, match="--datasets-dir"):
        read_transfer_set("p4d-nudity", None)


@pytest.mark.fast
@pytest.mark.skipif(not DATASETS.is_dir(), reason="the shared prompt files are not here (../shared/datasets/prompts)")
def test_transfer_run_reports_only_transfer_asr(tiny_sd1_pipeline, uce_edit):
    report = attack(tiny_sd1_pipeline, "transfer", "church", "unlearndiffatk-church", result=uce_edit,
                    judge=BrightnessJudge(100), settings=TINY, datasets_dir=DATASETS, limit=3, n_resamples=50)
    assert set(report.metrics) == {"transfer_asr"} and len(report.records) == 3
    assert report.value("transfer_asr") == pytest.approx(np.mean([r["success"] for r in report.records]))
    assert all(r["attack_success"] is None for r in report.records)


# --- the command line -----------------------------------------------------------------------------

def _cli(argv):
    from erasure.attacks import cli

    return cli.main(argv)


@pytest.mark.fast
def test_cli_checks_before_loading_anything(tmp_path, capsys):
    edit = tmp_path / "edit.safetensors"
    assert _cli(["attack", "--attack", "unlearndifatk", "--concept", "circle", "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'unlearndiffatk'" in capsys.readouterr().err
    assert _cli(["attack", "--concept", "circle", "--edit", str(edit), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert _cli(["attack", "--concept", "circle", "--set", "tokens=0", "--out", str(tmp_path / "o")]) == 2
    assert "tokens must be >= 1" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    assert _cli(["attack", "--concept", "circle", "--out", str(tmp_path / "o")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert _cli(["attack", "--concept", "circle", "--model", str(tmp_path), "--out", str(tmp_path / "p")]) == 2
    assert "--judge NAME" in capsys.readouterr().err
    assert _cli(["attack", "--concept", "circle", "--judge", "nudenett", "--out", str(tmp_path / "p")]) == 2
    assert "did you mean 'nudenet'" in capsys.readouterr().err
    assert _cli(["attack", "--concept", "circle", "--judge-set", "threshold=0.5", "--out", str(tmp_path / "p")]) == 2
    assert "goes with a judge" in capsys.readouterr().err


def test_unlearndiffatk_targets_your_images_in_natural_order(tiny_sd1_pipeline, uce_edit, tmp_path, monkeypatch):
    from PIL import Image

    import erasure.attacks.unlearndiffatk as uda

    folder = tmp_path / "targets"
    folder.mkdir()
    colours = {"10_0.png": (0, 0, 255), "2_0.png": (255, 0, 0)}  # natural order: 2 before 10
    for name, rgb in colours.items():
        Image.new("RGB", (7, 5), rgb).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    seen = []
    real = uda.vae_latent
    monkeypatch.setattr(uda, "vae_latent", lambda pipe, images: seen.append(images.copy()) or real(pipe, images))
    pipe = tiny_sd1_pipeline
    size = uda.image_size(pipe, TINY)
    report = attack(pipe, "unlearndiffatk", "cat", PROMPTS[:3], result=uce_edit, judge=BrightnessJudge(256.0),
                    settings=TINY, attack_settings={"timesteps": 1, "steps_per_timestep": 1, "vocabulary": "words",
                                                    "target_images": str(folder)}, n_resamples=10)
    assert len(report.records) == 3 and len(seen) == 3  # every prompt attacked (the judge never says yes)
    assert not any(r["pre_success"] for r in report.records)
    for k, images in enumerate(seen):  # prompt k gets image k mod 2: red, blue, red; resized to the model's size
        assert images.shape == (1, *size, 3)
        assert tuple(int(v) for v in images[0, size[0] // 2, size[1] // 2]) == [(255, 0, 0), (0, 0, 255)][k % 2]
    with pytest.raises(ErasureError, match="holds no PNG/JPEG"):
        uda.target_image_files(str(_empty(tmp_path)))
    with pytest.raises(ErasureError, match="is not a folder"):
        attack(pipe, "unlearndiffatk", "cat", PROMPTS[:1], result=uce_edit, judge=BrightnessJudge(256.0), settings=TINY,
               attack_settings={"target_images": str(tmp_path / "missing")})


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder
