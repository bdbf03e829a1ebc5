"""The contract on CUDA: every registered method on the tiny SD 1.x/2.x pipelines in fp32, fp16 and bf16 on the
GPU returns its result, applies, restores exactly and saves/loads. Skipped without a GPU; run by
scripts/gpu_check.sh."""

from __future__ import annotations

import pytest
import torch

from erasure import load_pipeline
from erasure.methods import METHODS, erase
from erasure.precision import module_state
from erasure.results import load_result

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")]


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("name", METHODS.names())
@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_method_on_cuda(saved_folder, kind, name, dtype, tmp_path):
    pipe = load_pipeline(saved_folder(kind), device="cuda", dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    spec = METHODS.get(name)
    settings = dict(spec.test_settings, **({"progress": False} if "progress" in spec.options else {}))
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    state = module_state(pipe.unet)
    result = erase(pipe, name, "red star", **settings)
    assert result.kind == spec.result and module_state(pipe.unet) == state
    result.apply(pipe)
    changed = any(not torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters()) or result.kind == "adapter"
    assert changed
    result.restore(pipe)
    assert all(torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters())
    path = tmp_path / ("edit.safetensors" if result.kind == "edit" else "adapter")
    result.save(path)
    assert load_result(path) == result
    images = pipe(["red star"], num_inference_steps=2, output_type="np").images
    assert images.shape[0] == 1
