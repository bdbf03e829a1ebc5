"""Adapter erasure (lora-esd, spm, mace): one contract for every method, run on a tiny SD1 pipeline.

The contract: an Adapter comes back and the pipeline is untouched; apply/restore are exact; the saved
folder loads with diffusers' own ``pipe.load_lora_weights`` to identical outputs; ``to_edit`` equals the
fused peft weights; stacked scales add linearly in weight space; bad input is a one-line ErasureError.
"""

import math

import numpy as np
import pytest
import torch

from erasure import ErasureError, load_pipeline
from erasure.adapters import Adapter, attached, facilitated_transport, transport_multipliers
from erasure.methods import erase
from erasure.modules import adapter_target_modules, cross_attention_kv

ESD_FAST = dict(iterations=2, batch_size=2, ddim_steps=4, lr=1e-2, progress=False)
FAST = {
    "lora-esd": ESD_FAST,
    "spm": {**ESD_FAST, "latent_anchors": 2},
    "mace": dict(iterations=2, batch_size=2, images=2, lr=1e-2, cfr=False, progress=False),  # the rank-K path
}
CONCEPTS = {"lora-esd": ["red star"], "spm": ["red star"], "mace": ["red star", "blue"]}
PROMPTS = ["a red star", "a green square"]


@pytest.fixture(scope="module")
def sd1(tiny_sd1_folder):
    pipe = load_pipeline(tiny_sd1_folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def results(sd1):
    cache = {}

    def get(method):
        if method not in cache:
            cache[method] = erase(sd1, method, CONCEPTS[method], **FAST[method])
        return cache[method]

    return get


def generate(pipe, prompts=PROMPTS):
    gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    return pipe(list(prompts), num_inference_steps=2, guidance_scale=3.0, generator=gens, output_type="np").images


def unet_state(pipe):
    return {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}


@pytest.mark.parametrize("method", list(FAST))
def test_contract(sd1, results, method):
    before = unet_state(sd1)
    base = generate(sd1)
    adapter = results(method)
    assert isinstance(adapter, Adapter) and adapter.method == method and adapter.concepts == tuple(CONCEPTS[method])
    # the pipeline is left as it was: same parameters, no peft layers
    assert unet_state(sd1).keys() == before.keys()
    assert all(torch.equal(p, before[n]) for n, p in unet_state(sd1).items())
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) and not k.startswith("unet.")
               for k in adapter.peft_state_dict)
    pattern = {"lora-esd": "attn2", "spm": "transformer-linear", "mace": "attn2-kv"}[method]
    assert set(adapter.modules) == set(adapter_target_modules(sd1.unet, pattern)) == set(adapter.lora_config["target_modules"])
    assert adapter.lora_config["r"] == (len(CONCEPTS[method]) if method == "mace" else FAST[method].get("rank", 4 if method == "lora-esd" else 1))
    adapter.apply(sd1)
    edited = generate(sd1)
    assert np.abs(edited - base).max() > 1e-4
    adapter.restore(sd1)
    assert np.array_equal(generate(sd1), base)
    assert not attached(sd1) and not getattr(sd1.unet, "peft_config", None)


@pytest.mark.parametrize("method", list(FAST))
def test_saved_folder_loads_with_diffusers(sd1, results, method, tmp_path):
    adapter = results(method)
    folder = adapter.save(tmp_path / "lora")
    adapter.apply(sd1)
    ours = generate(sd1)
    adapter.restore(sd1)
    sd1.load_lora_weights(folder, adapter_name="plain")
    try:
        theirs = generate(sd1)
    finally:
        sd1.unload_lora_weights()
    assert np.abs(ours - theirs).max() <= 1e-5
    loaded = Adapter.load(folder)
    assert (loaded.method, loaded.concepts, dict(loaded.lora_config), dict(loaded.base_hashes)) == (
        adapter.method, adapter.concepts, dict(adapter.lora_config), dict(adapter.base_hashes))
    assert loaded.peft_state_dict.keys() == adapter.peft_state_dict.keys()
    assert all(torch.equal(loaded.peft_state_dict[k], v) for k, v in adapter.peft_state_dict.items())
    with pytest.raises(ErasureError, match="already exists"):
        adapter.save(folder)
    adapter.save(folder, force=True)


@pytest.mark.parametrize("method", list(FAST))
def test_to_edit_equals_fused_peft_weights(sd1, results, method):
    adapter = results(method)
    edit = adapter.to_edit(sd1, scale=0.7)
    adapter.apply(sd1, scale=0.7, name="a")
    try:
        for name, value in edit.tensors.items():
            module = sd1.unet.get_submodule(name[len("unet."):-len(".weight")])
            fused = module.base_layer.weight + module.get_delta_weight("a")
            assert torch.allclose(value, fused, atol=1e-6), name
        with_peft = generate(sd1)
    finally:
        adapter.restore(sd1)
    edit.apply(sd1)
    dense = generate(sd1)
    edit.restore(sd1)
    assert np.abs(dense - with_peft).max() <= 1e-5


def test_stacking_adds_linearly_and_fuses_on_request(sd1, results):
    a, b = results("lora-esd"), results("mace")
    base = unet_state(sd1)
    a.apply(sd1, scale=0.5)
    b.apply(sd1, scale=1.5)
    stacked = generate(sd1)
    assert set(attached(sd1)) == {a.default_name, b.default_name}
    a.restore(sd1)
    b.restore(sd1)
    assert all(torch.equal(p, base[n]) for n, p in unet_state(sd1).items())
    a.fuse(sd1, scale=0.5)
    b.fuse(sd1, scale=1.5)
    da, db = a.deltas(0.5), b.deltas(1.5)
    for name in da:
        w = base[name[len("unet."):]]
        assert torch.allclose(sd1.unet.get_parameter(name[len("unet."):]), w + da[name] + db.get(name, 0), atol=1e-6)
    assert np.abs(generate(sd1) - stacked).max() <= 1e-5
    b.restore(sd1)
    a.restore(sd1)
    assert all(torch.equal(p, base[n]) for n, p in unet_state(sd1).items())


def test_teacher_is_the_unet_with_adapters_disabled(sd1):
    from erasure.methods.esd import AdapterStudent, _encode

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])
    emb = _encode(sd1, ["red star", "a"])
    with torch.no_grad():
        base = sd1.unet(x, t, encoder_hidden_states=emb).sample
        student = AdapterStudent(sd1, "attn2-kv", 2, None)
        try:
            for n, p in student.params.items():
                if "lora_B" in n:
                    p.normal_()
            adapted = sd1.unet(x, t, encoder_hidden_states=emb).sample
            with student.teacher():
                frozen = sd1.unet(x, t, encoder_hidden_states=emb).sample
        finally:
            student.close()
    assert torch.equal(frozen, base) and (adapted - base).abs().max() > 1e-3
    assert not getattr(sd1.unet, "peft_config", None)


def test_lora_esd_first_loss_matches_the_base_unet(sd1, tmp_path):
    """The cached teacher predictions are the base UNet's, and the first loss is ESD's on them (the LoRA
    starts at zero, so the student equals the base model at step 0)."""
    from safetensors.torch import load_file

    from erasure.methods.esd import _encode

    adapter = erase(sd1, "lora-esd", "red star", eta=2.0, checkpoint_dir=tmp_path, **{**ESD_FAST, "lr": 1e-3})
    pool = load_file(str(tmp_path / "pool.safetensors"))
    x, t = pool["x"][:2], pool["t"][:2]
    with torch.no_grad():
        eps_c = sd1.unet(x, t, encoder_hidden_states=_encode(sd1, ["red star"] * 2)).sample
        eps_a = sd1.unet(x, t, encoder_hidden_states=_encode(sd1, [""] * 2)).sample
    assert torch.allclose(pool["eps_concept"][:2], eps_c, atol=1e-5)
    hand = ((eps_c - (eps_a - 2.0 * (eps_c - eps_a))) ** 2).mean().item()
    assert adapter.info["losses"][0] == pytest.approx(hand, rel=1e-4)


def test_mace_fusion_is_the_least_squares_optimum(sd1, results):
    """The fused change solves min |W k - (W0 + dW_i) k|^2 over concept tokens + s_p |W k - W0 k|^2 over
    preserved tokens + lamb |W - W0|^2; checked against a direct least-squares solve for one layer."""
    from erasure.methods.adapters import fuse_in_closed_form
    from erasure.methods.esd import _encode

    loras = [erase(sd1, "lora-esd", c, rank=1, **ESD_FAST) for c in ("red star", "blue")]
    prompts, preserve = [["red star", "a red star"], ["blue"]], ["green", "a square"]
    s_p, lamb = 0.3, 0.5
    changes = fuse_in_closed_form(sd1, loras, prompts, preserve, preserve_scale=s_p, lamb=lamb)
    name = next(iter(cross_attention_kv(sd1.unet)))
    key = f"unet.{name}.weight"
    w0 = sd1.unet.get_submodule(name).weight.detach().double()
    rows, rhs = [], []
    for lora, texts in zip(loras, prompts):
        k = _encode(sd1, texts).flatten(0, 1).double()
        rows.append(k)
        rhs.append(k @ (w0 + lora.deltas()[key].double()).T)
    kp = _encode(sd1, preserve).flatten(0, 1).double()
    rows += [math.sqrt(s_p) * kp, math.sqrt(lamb) * torch.eye(w0.shape[1], dtype=torch.float64)]
    rhs += [math.sqrt(s_p) * kp @ w0.T, math.sqrt(lamb) * w0.T]
    solution = torch.linalg.lstsq(torch.cat(rows), torch.cat(rhs)).solution.T
    assert torch.allclose(w0 + changes[key], solution, atol=1e-8, rtol=1e-6)
    # K rank-1 LoRAs fuse to a change of rank <= K
    assert torch.linalg.matrix_rank(changes[key], rtol=1e-5) <= 2  # float32 LoRA products: noise ~1e-7


def test_mace_refinement_is_the_closed_form_edit_plus_the_fusion(sd1):
    """With ``cfr`` the adapter's change is the closed-form refinement (shared tokens sent to the anchor's)
    plus the fused LoRAs; with LoRAs that learn nothing (lr ~ 0) it is exactly the refinement, and the
    pipeline comes back untouched."""
    before = {k: v.detach().clone() for k, v in sd1.unet.state_dict().items()}
    settings = dict(templates=["a {}", "a photo of {} here"], preserve=["green"], anchor="square", lamb=0.5)
    adapter = erase(sd1, "mace", ["red star", "blue"], cfr=True, iterations=1, batch_size=1, images=1, lr=1e-12,
                    progress=False, **settings)
    assert all(torch.equal(before[k], v) for k, v in sd1.unet.state_dict().items())
    refinement = erase(sd1, "uce", ["red star", "blue"], tokens="residual", guide="square", preserve=["green"],
                       templates=["a {}", "a photo of {} here"], lamb=0.5, preserve_scale=1.0)
    expected = refinement.deltas()
    got = adapter.deltas()
    assert set(got) == set(expected)
    for name, d in expected.items():
        assert (got[name].double() - d).abs().max() <= 1e-5 * d.abs().max() + 1e-7, name
    assert adapter.info["lora_rank_residual"] < 1e-6 and adapter.info["cfr_rows"]["erase"] > 0


def test_facilitated_transport_scales_each_prompt(sd1, results):
    adapter = results("spm")
    prompts = ["a red star", "a green square"]
    m = transport_multipliers(sd1, prompts, adapter.concepts)
    assert m[0] == pytest.approx(1.0) and 0 <= m[1] < 1
    adapter.apply(sd1, name="spm")
    try:
        with facilitated_transport(sd1) as record:
            both = generate(sd1, prompts)
        assert record["multipliers"]
        singles = []
        for i, p in enumerate(prompts):
            from erasure.adapters import set_scale

            set_scale(sd1, "spm", float(m[i]))
            gen = [torch.Generator().manual_seed(i)]
            singles.append(sd1([p], num_inference_steps=2, guidance_scale=3.0, generator=gen, output_type="np").images)
    finally:
        adapter.restore(sd1)
    assert np.abs(both - np.concatenate(singles)).max() <= 1e-5


def test_bad_input_is_one_line(sd1, results, built_pipeline):
    adapter = results("lora-esd")
    for scale in (-0.5, 5.0, float("nan")):
        with pytest.raises(ErasureError, match="out of range"):
            adapter.apply(sd1, scale=scale)
    with pytest.raises(ErasureError, match="setting adapter must be one of '', attn2-kv"):
        erase(sd1, "lora-esd", "star", adapter="attn3", **ESD_FAST)
    with pytest.raises(ErasureError, match="unknown adapter target pattern"):
        adapter_target_modules(sd1.unet, "everything")
    # another base: same shapes, other weights / other module names (the world's topology) / other shapes
    weight = sd1.unet.get_submodule(adapter.modules[0]).weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1e-3)
    try:
        with pytest.raises(ErasureError, match="differs from the weights"):
            adapter.apply(sd1)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    with pytest.raises(ErasureError, match="has no module|has shape"):
        adapter.apply(built_pipeline("world_random"), check=False)
    with pytest.raises(ErasureError, match="has shape"):
        results("spm").apply(built_pipeline("sd2"), check=False)  # proj_in: 1x1 conv in SD1, Linear in SD2
    # a key that the model would not take is never dropped silently
    extra = dict(adapter.peft_state_dict)
    first = next(iter(extra))
    extra[first.replace("lora_A", "lora_C")] = extra[first]
    broken = Adapter(adapter.method, adapter.concepts, adapter.config, extra, adapter.lora_config, adapter.base_hashes)
    with pytest.raises(ErasureError, match="unexpected"):
        broken.apply(sd1)
    assert not attached(sd1) and not getattr(sd1.unet, "peft_config", None)
    for e in [adapter.default_name]:
        adapter.apply(sd1, name=e)
        try:
            with pytest.raises(ErasureError, match="already attached"):
                adapter.apply(sd1, name=e)
        finally:
            adapter.restore(sd1)
    with pytest.raises(ErasureError, match="not attached"):
        adapter.restore(sd1)
