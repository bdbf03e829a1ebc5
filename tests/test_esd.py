"""ESD: the loss against a hand computation, parameter groups, the cheap pool, resume."""

import numpy as np
import pytest
import torch

from erasure import ErasureError, load_pipeline
from erasure.methods import erase
from erasure.methods.esd import PassCounter, esd_loss, esd_target, original_values, training_timestep
from erasure.modules import cross_attention_kv, cross_attention_layers, parameter_group

FAST = dict(iterations=3, batch_size=2, ddim_steps=4, progress=False)


@pytest.fixture()
def sd1(tiny_sd1_folder):
    return load_pipeline(tiny_sd1_folder)


def test_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    student, anchor, concept = (torch.randn(2, 4, 3, 3, generator=g) for _ in range(3))
    eta = 1.5
    target = anchor - eta * (concept - anchor)
    expected = ((student - target) ** 2).mean()
    assert torch.allclose(esd_target(anchor, concept, eta), target)
    assert torch.allclose(esd_loss(student, anchor, concept, eta), expected)
    # eta = 0: the concept is mapped to the anchor's prediction
    assert torch.allclose(esd_loss(student, anchor, concept, 0.0), ((student - anchor) ** 2).mean())


def test_training_timestep_is_in_the_bucket():
    rng = np.random.default_rng(0)
    for t_enc in (0, 7, 49):
        ts = [training_timestep(t_enc, 50, rng) for _ in range(200)]
        assert min(ts) >= round(t_enc / 50 * 1000) and max(ts) < round((t_enc + 1) / 50 * 1000)


def _compvis_ddim_levels(t_enc: int, ddim_steps: int = 50) -> tuple[int, int]:
    """The original code's bookkeeping (CompVis ldm/models/diffusion/ddim.py at rohitgandikota/erasing b8aeab6,
    ``ddim_sampling`` with t_start=-1 and till_T=t_enc): (steps run, noise level of the latent it returns)."""
    ddim_timesteps = np.asarray(list(range(0, 1000, 1000 // ddim_steps))) + 1  # make_ddim_timesteps('uniform')
    timesteps = ddim_timesteps[:-1]  # timesteps[:t_start] with t_start = -1
    total = timesteps.shape[0]
    run, last = 0, None
    for i, step in enumerate(np.flip(timesteps)):
        index = total - i - 1
        run, last = run + 1, int(step)
        if index + 1 == t_enc:
            break
    return run, last - 1000 // ddim_steps  # one DDIM step below the last timestep processed


def test_pooled_depth_follows_both_references(built_pipeline):
    from diffusers import DDIMScheduler

    from erasure.methods.esd import pooled_depth

    scheduler = DDIMScheduler.from_config(built_pipeline("sd1").scheduler.config)
    scheduler.set_timesteps(50)
    levels = [int(t) for t in scheduler.timesteps]
    for t_enc in range(50):
        # exact (esd_sd.py): run_till_timestep = k steps, queried at timesteps[k]: every depth once
        k = pooled_depth(t_enc, 50, "exact")
        assert 0 <= k <= 49
        # original: the same number of steps as CompVis's sampler, started one timestep later
        run, level = _compvis_ddim_levels(t_enc)
        assert pooled_depth(t_enc, 50, "original") == run
        assert levels[1 + run] == level if 1 + run < 50 else level < 0
    assert sorted(pooled_depth(t, 50, "exact") for t in range(50)) == list(range(50))
    assert _compvis_ddim_levels(25) == (25, 461)  # the example: the original reaches level 461


def test_exact_mode_trains_at_the_latents_own_level(sd1, tmp_path):
    from diffusers import DDIMScheduler
    from safetensors.torch import load_file

    erase(sd1, "esd-x", "red star", checkpoint_dir=tmp_path / "e", stop_after=0,
          **{**FAST, "iterations": 8, "ddim_steps": 5})
    pool = load_file(str(tmp_path / "e" / "pool.safetensors"))
    scheduler = DDIMScheduler.from_config(sd1.scheduler.config)
    scheduler.set_timesteps(5)
    assert set(int(t) for t in pool["t"]) <= {int(t) for t in scheduler.timesteps}
    erase(sd1, "esd-x", "red star", checkpoint_dir=tmp_path / "o", stop_after=0, timestep="original",
          **{**FAST, "iterations": 8, "ddim_steps": 5})
    pool = load_file(str(tmp_path / "o" / "pool.safetensors"))
    assert any(int(t) % 200 != 1 for t in pool["t"])  # drawn from the buckets, not the DDIM levels


def test_negative_guidance_is_eta_plus_one(sd1):
    a = erase(sd1, "esd-x-strict", "red star", eta=1.0, **FAST)
    b = erase(sd1, "esd-x-strict", "red star", negative_guidance=2.0, **FAST)
    assert a.info["eta"] == b.info["eta"] == 1.0
    assert all(torch.equal(v, b.tensors[k]) for k, v in a.tensors.items())
    with pytest.raises(ErasureError, match="not both"):
        erase(sd1, "esd-x-strict", "red star", eta=3.0, negative_guidance=2.0, **FAST)


def test_erase_from_is_the_scripts_objective(sd1, tmp_path):
    """First loss of erase_from = MSE(eps(x_t, from), eps*(x_t, from) - ng (eps*(x_t, c) - eps*(x_t, ""))), the
    current script's line 191, by hand from the saved pool."""
    from safetensors.torch import load_file

    from erasure.methods.esd import _encode

    edit = erase(sd1, "esd-x-strict", "red star", erase_from="blue star", negative_guidance=2.0,
                 checkpoint_dir=tmp_path, **FAST)
    pool = load_file(str(tmp_path / "pool.safetensors"))
    x, t = pool["x"][:2], pool["t"][:2]
    with torch.no_grad():
        e_c = sd1.unet(x, t, encoder_hidden_states=_encode(sd1, ["red star"] * 2)).sample
        e_0 = sd1.unet(x, t, encoder_hidden_states=_encode(sd1, [""] * 2)).sample
        e_f = sd1.unet(x, t, encoder_hidden_states=_encode(sd1, ["blue star"] * 2)).sample
    hand = ((e_f - (e_f - 2.0 * (e_c - e_0))) ** 2).mean().item()  # the student starts as the frozen model
    assert edit.info["losses"][0] == pytest.approx(hand, rel=1e-4)
    with pytest.raises(ErasureError, match="erase_from and anchor"):
        erase(sd1, "esd-x-strict", "red star", erase_from="blue star", anchor="square", **FAST)


def _reference_esd_sd_group(unet, train_method: str) -> set[str]:
    """The current script's selection rule (esd_sd.py, get_esd_trainable_parameters, rohitgandikota/erasing
    25613d2): every parameter of Linear/Conv2d modules, filtered by module name."""
    out = set()
    for name, module in unet.named_modules():
        if module.__class__.__name__ in ["Linear", "Conv2d", "LoRACompatibleLinear", "LoRACompatibleConv"]:
            keep = {"esd-x": "attn2" in name, "esd-u": "attn2" not in name, "esd-all": True,
                    "esd-x-strict": "attn2.to_k" in name or "attn2.to_v" in name}[train_method]
            if keep:
                out |= {f"{name}.{n}" for n, _ in module.named_parameters()}
    return out


def _reference_original_noxattn(unet) -> set[str]:
    """The original code's 'noxattn' (train-scripts/train-esd.py, b8aeab6, line 168: skip names starting with
    'out.' or containing 'attn2' or 'time_embed'), in diffusers names: LDM 'out.' is conv_norm_out + conv_out,
    'time_embed' is time_embedding."""
    return {n for n, _ in unet.named_parameters()
            if not (n.startswith(("conv_norm_out.", "conv_out.")) or "attn2" in n or "time_embedding" in n)}


def test_parameter_groups_partition_the_unet(built_pipeline):
    unet = built_pipeline("sd1").unet
    names = {n for n, _ in unet.named_parameters()}
    x, u_all = set(parameter_group(unet, "esd-x")), set(parameter_group(unet, "esd-u-all"))
    assert x | u_all == names and not x & u_all
    assert all(".attn2." in n for n in x) and not any(".attn2." in n for n in u_all)
    strict = set(parameter_group(unet, "esd-x-strict"))
    assert strict == {f"{k}.weight" for k in cross_attention_kv(unet)} | {
        f"{k}.bias" for k, m in cross_attention_kv(unet).items() if m.bias is not None}
    assert set(parameter_group(unet, "full")) == names
    assert len(cross_attention_layers(unet)) == 16
    with pytest.raises(ErasureError, match="unknown parameter group"):
        parameter_group(unet, "esd-y")


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_parameter_groups_are_the_references_sets(built_pipeline, kind):
    unet = built_pipeline(kind).unet
    for ours, theirs in (("esd-x", "esd-x"), ("esd-u", "esd-u"), ("esd-x-strict", "esd-x-strict")):
        assert set(parameter_group(unet, ours)) == _reference_esd_sd_group(unet, theirs), ours
    u = set(parameter_group(unet, "esd-u"))
    assert not any("norm" in n.rsplit(".", 2)[-2] for n in u)  # the script trains no norm layer
    assert {"conv_in.weight", "conv_out.weight", "time_embedding.linear_1.weight"} <= u
    original = set(parameter_group(unet, "esd-u-original"))
    assert original == _reference_original_noxattn(unet)
    assert "conv_in.weight" in original and "conv_out.weight" not in original  # the original trained conv_in


@pytest.mark.parametrize("method, group", [("esd-x", "esd-x"), ("esd-x-strict", "esd-x-strict"), ("esd-u", "esd-u")])
def test_only_the_chosen_group_changes(sd1, method, group):
    before = {n: p.detach().clone() for n, p in sd1.unet.named_parameters()}
    edit = erase(sd1, method, "red star", lr=1e-2, **FAST)
    # the pipeline is left as it was; the edit carries the result
    assert all(torch.equal(p, before[n]) for n, p in sd1.unet.named_parameters())
    expected = {f"unet.{n}" for n in parameter_group(sd1.unet, group)}
    assert set(edit.tensors) == expected
    changed = {n for n, v in edit.tensors.items() if not torch.equal(v, before[n[5:]])}
    assert changed and changed <= expected
    edit.apply(sd1)
    after = {n: p.detach() for n, p in sd1.unet.named_parameters()}
    assert {f"unet.{n}" for n in after if not torch.equal(after[n], before[n])} == changed


def test_first_loss_on_a_tiny_model_matches_a_hand_computation(sd1, tmp_path):
    """The trainer's first loss equals MSE(eps(x_t, c), eps*(x_t, "") - eta (eps*(x_t, c) - eps*(x_t, ""))),
    computed here by hand from the saved pool's x_t and t with the untouched UNet."""
    from safetensors.torch import load_file

    from erasure.methods.esd import _encode

    eta = 2.0
    edit = erase(sd1, "esd-x-strict", "red star", eta=eta, checkpoint_dir=tmp_path, **FAST)
    pool = load_file(str(tmp_path / "pool.safetensors"))
    x, t = pool["x"][:2], pool["t"][:2]
    concept, anchor = _encode(sd1, ["red star"] * 2), _encode(sd1, [""] * 2)
    with torch.no_grad():
        eps_c = sd1.unet(x, t, encoder_hidden_states=concept).sample
        eps_a = sd1.unet(x, t, encoder_hidden_states=anchor).sample
    assert torch.allclose(pool["eps_concept"][:2], eps_c, atol=1e-5)
    assert torch.allclose(pool["eps_anchor"][:2], eps_a, atol=1e-5)
    hand = ((eps_c - (eps_a - eta * (eps_c - eps_a))) ** 2).mean().item()  # student = frozen at step 0
    assert edit.info["losses"][0] == pytest.approx(hand, rel=1e-4)
    assert all(0 <= int(v) < 1000 for v in t)


def test_retain_term_first_loss_matches_a_hand_computation(sd1, tmp_path):
    """With retain prompts (AdvUnlearn's retain loss), the first loss is the ESD loss plus
    retain_weight x MSE(eps(x_r, c_r), eps*(x_r, c_r)); at step 0 the student is the frozen model, so the retain
    part is 0 and the loss is the run without retain prompts'. The retain x_r come from the retain prompts' own
    frozen trajectories (eps* there checked by hand), and the erasure samples do not change."""
    from safetensors.torch import load_file

    from erasure.methods.esd import _encode

    base = erase(sd1, "esd-x-strict", "red star", checkpoint_dir=tmp_path / "a", lr=1e-2, **FAST)
    kept = ("a blue square", "a green circle")
    counter = PassCounter()
    edit = erase(sd1, "esd-x-strict", "red star", checkpoint_dir=tmp_path / "b", lr=1e-2, retain_prompts=kept,
                 retain_weight=3.0, counter=counter, **FAST)
    a, b = load_file(str(tmp_path / "a" / "pool.safetensors")), load_file(str(tmp_path / "b" / "pool.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the erasure samples are those of the run without retain
    retain = load_file(str(tmp_path / "b" / "retain-pool.safetensors"))
    x, t, r = retain["x"], retain["t"], retain["concept"]
    assert len(x) == FAST["iterations"] * FAST["batch_size"] and not torch.equal(x, b["x"])
    with torch.no_grad():
        eps = sd1.unet(x, t, encoder_hidden_states=_encode(sd1, [kept[int(i)] for i in r])).sample
    assert torch.allclose(retain["eps_retain"], eps, atol=1e-5)
    assert edit.info["losses"][0] == pytest.approx(base.info["losses"][0], rel=1e-4)
    # after the first step the student has moved: the later losses hold the retain part as well
    assert edit.info["losses"][1:] != base.info["losses"][1:]
    assert edit.info["retain_prompts"] == 2 and b["x"].shape == x.shape
    # the retain samples cost one more forward and backward per training sample
    plain = PassCounter()
    erase(sd1, "esd-x-strict", "red star", lr=1e-2, counter=plain, **FAST)
    samples = FAST["iterations"] * FAST["batch_size"]
    assert counter.backward - plain.backward == samples


def test_retain_term_pulls_the_student_back_to_the_frozen_model_on_the_kept_prompts(sd1, tmp_path):
    """A large retain weight keeps the student's prediction on the retain prompt's samples much closer to the
    frozen model's than plain ESD does."""
    from safetensors.torch import load_file

    from erasure.methods.esd import _encode

    kept = ("a blue square",)
    # measured: mean squared error on those samples 0.0049 for plain ESD, 0.0008 with the retain term
    settings = dict(iterations=16, batch_size=2, ddim_steps=4, progress=False, lr=3e-3, eta=4.0)
    plain = erase(sd1, "esd-x", "a blue circle", **settings)
    held = erase(sd1, "esd-x", "a blue circle", retain_prompts=kept, retain_weight=30.0, checkpoint_dir=tmp_path,
                 **settings)
    retain = load_file(str(tmp_path / "retain-pool.safetensors"))
    x, t, frozen = retain["x"], retain["t"], retain["eps_retain"]
    c = _encode(sd1, list(kept) * len(x))
    errors = {}
    with torch.no_grad():
        for name, result in (("plain", plain), ("held", held)):
            result.apply(sd1)
            errors[name] = torch.nn.functional.mse_loss(sd1.unet(x, t, encoder_hidden_states=c).sample, frozen).item()
            result.restore(sd1)
    assert errors["held"] < 0.5 * errors["plain"], errors


def test_frozen_pool_uses_fewer_unet_passes_than_fresh_sampling(sd1):
    frozen, student = PassCounter(), PassCounter()
    settings = dict(iterations=6, batch_size=1, ddim_steps=10, progress=False, seed=3)
    erase(sd1, "esd-x", "red star", counter=frozen, **settings)
    erase(sd1, "esd-x", "red star", counter=student, sampling="student", **settings)
    assert frozen.total < student.total


def test_original_values_swaps_and_restores(sd1):
    params = parameter_group(sd1.unet, "esd-x-strict")
    originals = {n: torch.zeros_like(p) for n, p in params.items()}
    kept = {n: p.detach().clone() for n, p in params.items()}
    with original_values(params, originals):
        assert all(torch.count_nonzero(p) == 0 for p in params.values())
    assert all(torch.equal(p, kept[n]) for n, p in params.items())


def test_resume_reproduces_an_uninterrupted_run(sd1, tmp_path):
    settings = dict(iterations=4, batch_size=1, ddim_steps=4, progress=False, lr=1e-3, checkpoint_every=2)
    full = erase(sd1, "esd-x-strict", "red star", checkpoint_dir=tmp_path / "a", **settings)
    # interrupted after 3 iterations: it resumes from its checkpoint at 2, losing one iteration
    erase(sd1, "esd-x-strict", "red star", checkpoint_dir=tmp_path / "b", stop_after=3, **settings)
    resumed = erase(sd1, "esd-x-strict", "red star", checkpoint_dir=tmp_path / "b", resume=True, **settings)
    for n, v in full.tensors.items():
        assert torch.allclose(v, resumed.tensors[n], atol=1e-6), n
    with pytest.raises(ErasureError, match="other settings"):
        erase(sd1, "esd-x-strict", "red star", checkpoint_dir=tmp_path / "b", resume=True, **{**settings, "lr": 1.0})


def test_auto_memory_settings_turn_on_for_large_unets_and_change_nothing(sd1, monkeypatch):
    import erasure.methods.esd as esd

    settings = dict(iterations=2, batch_size=2, ddim_steps=4, progress=False, lr=1e-3)
    plain = erase(sd1, "esd-x", "red star", **settings)  # "auto" on a tiny UNet: off
    assert plain.info["gradient_checkpointing"] is False
    assert esd.resolve_frozen_batch("auto", sd1.unet) == 8 and esd.resolve_frozen_batch(3, sd1.unet) == 3
    monkeypatch.setattr(esd, "SD_SIZED_UNET_PARAMS", 1)  # every UNet counts as large
    assert esd.resolve_frozen_batch("auto", sd1.unet) == 2  # smaller no-grad batches for the pool, too
    # (Adam amplifies float rounding in near-zero gradients, so the pool's batch size is held equal here;
    # that it leaves the pool itself unchanged is tested below)
    checkpointed = erase(sd1, "esd-x", "red star", frozen_batch=8, **settings)
    assert checkpointed.info["gradient_checkpointing"] is True
    assert not sd1.unet.is_gradient_checkpointing  # switched off again afterwards
    for n, v in plain.tensors.items():  # recomputing activations gives the same gradients
        assert torch.allclose(v, checkpointed.tensors[n], atol=1e-6), n
    assert erase(sd1, "esd-x", "red star", gradient_checkpointing=False, **settings).info["gradient_checkpointing"] is False


def test_frozen_batch_changes_memory_not_the_pool(sd1, tmp_path):
    from safetensors.torch import load_file

    settings = dict(iterations=6, batch_size=2, ddim_steps=5, progress=False, stop_after=0)
    pools = []
    for batch in (8, 2, 1):
        erase(sd1, "esd-x", "red star", frozen_batch=batch, checkpoint_dir=tmp_path / str(batch), **settings)
        pools.append(load_file(str(tmp_path / str(batch) / "pool.safetensors")))
    for other in pools[1:]:
        for key in ("x", "eps_anchor", "eps_concept"):
            assert torch.allclose(pools[0][key], other[key], atol=1e-5), key
        assert torch.equal(pools[0]["t"], other["t"])
    assert pools[0]["eps_concept"].abs().mean() > 0.1  # real predictions, not an empty pool


@pytest.mark.parametrize("settings, message", [
    ({"group": "esd-y"}, "group must be one of"),
    ({"gradient_checkpointing": "sometimes"}, "gradient_checkpointing wants"),
    ({"frozen_batch": 0}, "frozen_batch must be >= 1"),
    ({"sampling": "teacher"}, "sampling must be one of"),
    ({"iterations": 0}, ">= 1"),
    ({"learning_rate": 1.0}, "unknown setting"),
    ({"lr": float("nan")}, "finite"),
    ({"iterations": 1e9}, "<= 1e\\+06"),
    ({"eta": float("inf")}, "finite"),
    ({"retain_prompts": ("a dog",), "sampling": "student"}, "retain_prompts needs sampling='frozen'"),
])
def test_bad_settings(built_pipeline, settings, message):
    with pytest.raises(ErasureError, match=message):
        erase(built_pipeline("sd1"), "esd", "star", **settings)


def test_a_diverging_run_stops_with_one_line(sd1, tmp_path, monkeypatch):
    """A non-finite loss stops training at once (one line, the iteration and the setting to lower), writes no
    result, keeps the last good checkpoint and leaves the pipeline as it was."""
    import erasure.methods.esd as esd

    real, calls = esd.esd_loss, []

    def diverging(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(esd, "esd_loss", diverging)
    before = {n: p.detach().clone() for n, p in sd1.unet.named_parameters()}
    with pytest.raises(ErasureError, match="diverged at iteration 3: loss nan; lower lr") as info:
        erase(sd1, "esd-x", "red star", checkpoint_dir=tmp_path, checkpoint_every=2, **{**FAST, "iterations": 6})
    assert "\n" not in str(info.value)
    assert (tmp_path / "state.safetensors").is_file()  # the checkpoint of iteration 2 is kept
    assert all(torch.equal(p, before[n]) for n, p in sd1.unet.named_parameters())


def test_two_calls_with_different_mixed_precision_in_one_process(sd1):
    """No accelerate state is created (a second Accelerator with another mixed_precision used to raise) and the
    UNet keeps its own forward, dtype and flags."""
    from erasure.precision import module_state

    state = module_state(sd1.unet)
    bf16 = erase(sd1, "esd-x-strict", "red star", mixed_precision="bf16", **FAST)
    plain = erase(sd1, "esd-x-strict", "red star", mixed_precision="no", **FAST)
    assert module_state(sd1.unet) == state and "forward" not in vars(sd1.unet)
    assert set(bf16.tensors) == set(plain.tensors)
    assert any(not torch.equal(v, plain.tensors[k]) for k, v in bf16.tensors.items())  # autocast did compute in bf16


def test_default_retain_prompts_are_the_erased_concepts_neighbours_on_the_world(shapeworld_pipeline, sd1):
    """retain_prompts=None (the ESD family's default): on the built-in world, the other values of the erased
    concept's attribute (UCE's preservation set), each bare first, then in the world's templates; never the
    concept itself; on a model without a profile (a real checkpoint) nothing."""
    from erasure.methods.esd import DEFAULT_RETAIN_PROMPTS, default_retain_prompts
    from erasure.world.render import SHAPES, TEXTURES

    shapes = default_retain_prompts(shapeworld_pipeline, ["circle"])
    others = [s for s in SHAPES if s != "circle"]
    assert shapes[:len(others)] == tuple(others) and shapes[len(others):2 * len(others)] == tuple(f"a {s}" for s in others)
    assert len(shapes) == DEFAULT_RETAIN_PROMPTS == len(set(shapes))
    assert all("circle" not in p.split() and sum(s in p.split() for s in others) == 1 for p in shapes)
    textures = default_retain_prompts(shapeworld_pipeline, ["striped"])
    assert textures[:3] == tuple(t for t in TEXTURES if t != "striped") and not any("striped" in p for p in textures)
    assert default_retain_prompts(shapeworld_pipeline, ["a made-up word"]) == ()
    # scope "all": the neighbours first, then every other shape, colour and texture; never a prompt naming the
    # erased concept (the world's texture templates put textures on circles: "a dotted circle" is left out)
    wide = default_retain_prompts(shapeworld_pipeline, ["circle"], 128, "all")
    assert wide[:len(others)] == tuple(others) and len(wide) == 128 and "red" in wide and "dotted" in wide
    assert not any("circle" in p.split() for p in wide)
    with pytest.raises(ErasureError, match="scope"):
        default_retain_prompts(shapeworld_pipeline, ["circle"], scope="everything")
    assert default_retain_prompts(sd1, ["circle"]) == ()


def test_the_esd_family_defaults_to_the_neighbour_retain_term_on_the_world(shapeworld_pipeline, sd1):
    """The ESD family (not SPM) resolves retain_prompts=None to the model's default and records the prompts in
    the result's config; retain_prompts=() is the paper's ESD; sampling='student' has no retain pool, so it
    resolves to none; a real checkpoint gets none."""
    from erasure.methods import METHODS
    from erasure.methods.esd import default_retain_prompts

    for name in ("esd", "esd-x", "esd-x-strict", "esd-u", "esd-full", "lora-esd"):
        assert METHODS.get(name).default("retain_prompts") is None and METHODS.get(name).default("retain_weight") == 16.0
    assert METHODS.get("spm").default("retain_prompts") == ()
    edit = erase(shapeworld_pipeline, "esd-x", "circle", anchor="square", **FAST)
    assert tuple(edit.config["retain_prompts"]) == default_retain_prompts(shapeworld_pipeline, ["circle"])
    assert edit.info["retain_prompts"] == 64 and edit.config["retain_weight"] == 16.0
    assert erase(shapeworld_pipeline, "esd-x", "circle", retain_prompts=(), **FAST).info["retain_prompts"] == 0
    assert erase(shapeworld_pipeline, "esd-x", "circle", sampling="student", **FAST).info["retain_prompts"] == 0
    assert erase(sd1, "esd-x", "red star", **FAST).info["retain_prompts"] == 0


def test_a_run_with_the_default_retain_term_resumes_exactly_on_the_world(shapeworld_pipeline, tmp_path):
    """The ESD family's default retain term on the world (its pool is cached with the checkpoint): a run stopped
    after 3 iterations and resumed equals the uninterrupted run, and records the resolved retain prompts."""
    settings = dict(anchor="square", iterations=6, batch_size=2, ddim_steps=4, progress=False, checkpoint_every=2)
    erase(shapeworld_pipeline, "esd-x", "circle", checkpoint_dir=tmp_path, stop_after=3, **settings)
    assert (tmp_path / "retain-pool.safetensors").is_file()
    resumed = erase(shapeworld_pipeline, "esd-x", "circle", checkpoint_dir=tmp_path, resume=True, **settings)
    full = erase(shapeworld_pipeline, "esd-x", "circle", **settings)
    assert len(resumed.config["retain_prompts"]) == 64
    for n, v in full.tensors.items():
        assert torch.allclose(v, resumed.tensors[n], atol=1e-6), n
