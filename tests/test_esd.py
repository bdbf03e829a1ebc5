"""ESD: the loss against a hand computation, parameter groups, the cheap pool, resume."""

import numpy as np
import pytest
import torch

from erasure import ErasureError, load_pipeline
from erasure.methods import erase
from erasure.methods.esd import PassCounter, esd_loss, esd_target, original_values, training_timestep
from erasure.modules import PARAMETER_GROUPS, cross_attention_kv, cross_attention_layers, parameter_group

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


def test_parameter_groups_partition_the_unet(built_pipeline):
    unet = built_pipeline("sd1").unet
    names = {n for n, _ in unet.named_parameters()}
    x, u = set(parameter_group(unet, "esd-x")), set(parameter_group(unet, "esd-u"))
    assert x | u == names and not x & u
    assert all(".attn2." in n for n in x) and not any(".attn2." in n for n in u)
    strict = set(parameter_group(unet, "esd-x-strict"))
    assert strict == {f"{k}.weight" for k in cross_attention_kv(unet)} | {
        f"{k}.bias" for k, m in cross_attention_kv(unet).items() if m.bias is not None}
    assert set(parameter_group(unet, "full")) == names
    assert len(cross_attention_layers(unet)) == 16
    with pytest.raises(ErasureError, match="unknown parameter group"):
        parameter_group(unet, "esd-y")


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
    ({"group": "esd-y"}, "unknown parameter group"),
    ({"gradient_checkpointing": "sometimes"}, "gradient_checkpointing must be"),
    ({"frozen_batch": 0}, "frozen_batch must be"),
    ({"sampling": "teacher"}, "sampling must be"),
    ({"iterations": 0}, ">= 1"),
    ({"learning_rate": 1.0}, "unknown setting"),
])
def test_bad_settings(built_pipeline, settings, message):
    with pytest.raises(ErasureError, match=message):
        erase(built_pipeline("sd1"), "esd", "star", **settings)
