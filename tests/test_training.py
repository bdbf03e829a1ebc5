"""The shared trainer (erasure.training): against the reference-style ESD loop (erasure.reference, the oracle),
its precision policy (fp16 loss scaling skips an overflowing step), its one-line errors and its checkpoints
(keyed by method, concepts, model and config)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from erasure import ErasureError
from erasure.methods import erase
from erasure.methods.esd import _encode, esd_loss, training_timestep
from erasure.training import (
    Checkpoint,
    ParameterGroupStudent,
    PassCounter,
    Precision,
    Trainer,
    model_fingerprint,
    run_key,
)

CONCEPT = "red star"


@pytest.fixture(scope="module")
def sd1(built_pipeline):
    return built_pipeline("sd1")


def _diverged(it, value):
    return f"diverged at iteration {it + 1}: loss {value}"


def test_trainer_reproduces_the_reference_loop_bit_for_bit(sd1):
    """The reference-style ESD-x loop (a deep-copied teacher, a fresh trajectory per iteration, plain Adam)
    and the same data drawn the same way but trained by the Trainer (teacher = the original values swapped in,
    fp32 masters = the parameters) give identical losses and identical trained values."""
    from diffusers import DDIMScheduler

    from erasure.reference import reference_loop

    steps, iterations, lr, seed = 4, 3, 1e-3, 0
    before = {n: p.detach().clone() for n, p in sd1.unet.named_parameters()}
    ref_values, ref_losses = reference_loop(sd1, CONCEPT, iterations=iterations, lr=lr, eta=1.0, counter=PassCounter(),
                                            ddim_steps=steps, seed=seed)
    assert all(torch.equal(p, before[n]) for n, p in sd1.unet.named_parameters())

    unet = sd1.unet
    student = ParameterGroupStudent(sd1, "esd-x")
    emb_c, emb_u = _encode(sd1, [CONCEPT]), _encode(sd1, [""])
    scheduler = DDIMScheduler.from_config(sd1.scheduler.config)
    scheduler.set_timesteps(steps)
    shape = (1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)

    def loss(it):
        k = int(rng.integers(0, steps))
        t = torch.tensor([training_timestep(k, steps, rng)])
        latents = torch.randn(shape, generator=gen) * scheduler.init_noise_sigma
        with torch.no_grad(), student.teacher():
            for step_t in scheduler.timesteps[: steps - k]:
                inp = scheduler.scale_model_input(torch.cat([latents, latents]), step_t)
                eps_u, eps_c = unet(inp, step_t, encoder_hidden_states=torch.cat([emb_u, emb_c])).sample.chunk(2)
                latents = scheduler.step(eps_u + 3.0 * (eps_c - eps_u), step_t, latents).prev_sample
            eps_anchor = unet(latents, t, encoder_hidden_states=emb_u).sample
            eps_concept = unet(latents, t, encoder_hidden_states=emb_c).sample
        return esd_loss(unet(latents, t, encoder_hidden_states=emb_c).sample, eps_anchor, eps_concept, 1.0)

    outcome = Trainer(student=student, loss=loss, iterations=iterations,
                      optimizer=lambda params: torch.optim.Adam(params, lr=lr), precision=Precision(student.params),
                      diverged=_diverged).run()
    values = {n: v.clone() for n, v in outcome.values.items()}  # the masters: read before close puts originals back
    student.close()
    assert outcome.losses == ref_losses and len(ref_losses) == iterations
    assert set(values) == set(ref_values)
    assert all(torch.equal(values[n], ref_values[n]) for n in ref_values)
    assert any(not torch.equal(ref_values[n], before[n]) for n in ref_values)  # it trained
    assert all(torch.equal(p, before[n]) for n, p in sd1.unet.named_parameters())  # and left the UNet alone


def test_a_gradient_left_on_the_model_does_not_enter_the_first_step():
    results = []
    for stale in (False, True):
        student = _TinyStudent(torch.float32)
        if stale:
            student.unet.weight.grad = torch.full_like(student.unet.weight, 100.0)
        x = torch.ones(1, 4)
        outcome = Trainer(student=student, loss=lambda it: student.unet(x).sum(), iterations=1,
                          optimizer=lambda p: torch.optim.SGD(p, lr=0.1), precision=Precision(student.params),
                          diverged=_diverged).run()
        results.append(outcome.values["weight"].clone())
    assert torch.equal(results[0], results[1])


class _TinyStudent:
    """A student over a one-layer fp16 model (the trainer's protocol: unet, params, close)."""

    def __init__(self, dtype=torch.float16):
        torch.manual_seed(0)
        self.unet = nn.Linear(4, 1, bias=False).to(dtype)
        self.params = {"weight": self.unet.weight}
        self.closed = 0

    def close(self):
        self.closed += 1


def test_fp16_masters_and_loss_scale_skip_an_overflowing_step():
    """fp16 parameters train through fp32 masters; a step whose scaled gradients overflow fp16 is skipped and the
    loss scale halved; the next finite step is taken."""
    student = _TinyStudent()
    x = torch.ones(1, 4, dtype=torch.float16)
    big = [True, False]  # the first step's gradient overflows under the initial scale 2**14

    def loss(it):
        factor = 100.0 if big[it] else 1.0
        return (student.unet(x).float() * factor).sum()

    precision = Precision(student.params)
    assert precision.scaler.enabled and precision.masters.mixed
    start = precision.masters.masters["weight"].detach().clone()
    trainer = Trainer(student=student, loss=loss, iterations=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.5),
                      precision=precision, diverged=_diverged)
    outcome = trainer.run()
    assert outcome.skipped_steps == 1 and precision.scaler.scale == 2.0**13
    # one SGD step of gradient x = 1 per weight, in fp32: 0.5 less than the start
    assert torch.equal(outcome.values["weight"], start - 0.5)
    assert outcome.values["weight"].dtype == torch.float32 and student.unet.weight.dtype == torch.float16
    assert torch.equal(student.unet.weight, (start - 0.5).half())
    assert student.closed == 0  # the caller makes the result (which closes it)


def test_a_non_finite_loss_is_one_line_and_closes_the_student():
    student = _TinyStudent(torch.float32)
    x = torch.ones(1, 4)

    def loss(it):
        out = student.unet(x).sum()
        return out * float("inf") if it == 1 else out

    trainer = Trainer(student=student, loss=loss, iterations=3, optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                      precision=Precision(student.params), diverged=_diverged)
    with pytest.raises(ErasureError, match=r"^diverged at iteration 2: loss -?(inf|nan)$"):
        trainer.run()
    assert student.closed == 1 and student.unet.training  # put back as it was (a new Linear trains)


def test_progress_counters_are_recorded(sd1):
    counter = PassCounter()
    edit = erase(sd1, "esd-x", CONCEPT, iterations=3, batch_size=2, ddim_steps=4, progress=False, counter=counter)
    info = edit.info
    assert len(info["losses"]) == 3 and info["final_loss"] == pytest.approx(np.mean(info["losses"]), rel=1e-5)
    assert info["unet_backward_passes"] == 6 == counter.backward  # 3 iterations x batch 2
    assert info["unet_forward_passes"] == counter.forward > 6
    assert info["peak_memory_mib"] > 0


def test_run_key_changes_with_each_part():
    base = dict(method="esd-x", concepts=["circle"], model="m", config={"lr": 1e-3, "templates": ("{}",)})
    key = run_key(**base)
    assert key == run_key(**{**base, "config": {"lr": 1e-3, "templates": ["{}"]}})  # as saved in JSON
    for change in ({"method": "esd-u"}, {"concepts": ["square"]}, {"model": "n"}, {"config": {"lr": 1e-4}}):
        assert run_key(**{**base, **change}) != key, change


def test_model_fingerprint_sees_one_changed_weight(sd1):
    first = model_fingerprint(sd1.unet)
    assert first == model_fingerprint(sd1.unet)
    p = next(sd1.unet.parameters())
    kept = p.detach().clone()
    with torch.no_grad():
        p.view(-1)[0] += 1.0
    try:
        assert model_fingerprint(sd1.unet) != first
    finally:
        with torch.no_grad():
            p.copy_(kept)


def test_resume_refuses_another_model_or_another_run_state(sd1, tmp_path):
    settings = dict(iterations=3, batch_size=1, ddim_steps=4, progress=False, checkpoint_every=1)
    erase(sd1, "esd-x-strict", CONCEPT, checkpoint_dir=tmp_path / "a", stop_after=2, **settings)
    record = Checkpoint(tmp_path / "a", method="esd-x-strict", concepts=[CONCEPT], model="another model",
                        config={})
    with pytest.raises(ErasureError, match="holds a run with other settings"):
        record.check(resume=True)
    record.check(resume=False)  # starting over is allowed
    # another run's state left in a folder whose config.json was rewritten: refused when loaded
    erase(sd1, "esd-x-strict", CONCEPT, checkpoint_dir=tmp_path / "b", stop_after=0, **{**settings, "lr": 1e-3})
    (tmp_path / "b" / "state.safetensors").write_bytes((tmp_path / "a" / "state.safetensors").read_bytes())
    with pytest.raises(ErasureError, match="another run's state"):
        erase(sd1, "esd-x-strict", CONCEPT, checkpoint_dir=tmp_path / "b", resume=True, **{**settings, "lr": 1e-3})
