"""Data-parallel training that is real: two CPU processes over gloo train ESD to the same edit as one process
with the same global batch, seed and pool lanes, each building half the pool and training on its half of
every batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from erasure import load_pipeline
from erasure.methods import erase
from erasure.methods.esd import PassCounter

WORKER = Path(__file__).with_name("_distributed_esd.py")
SETTINGS = {"iterations": 4, "batch_size": 4, "ddim_steps": 6, "lr": 1e-3, "seed": 5}

pytestmark = [pytest.mark.distributed, pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_the_same_edit_as_one(tiny_sd1_folder, tmp_path):
    from safetensors.torch import load_file

    counter = PassCounter()
    single = erase(load_pipeline(tiny_sd1_folder, device="cpu"), "esd-x-strict", "red star", counter=counter,
                   progress=False, pool_lanes=2, **SETTINGS)
    results = tmp_path / "results"
    results.mkdir()
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model_folder": str(tiny_sd1_folder), "method": "esd-x-strict", "concept": "red star",
                               "settings": SETTINGS, "results": str(results)}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(job)]
    done = subprocess.run(command, env=env, cwd=Path(__file__).parents[1], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    passes = []
    for rank in range(2):
        tensors = load_file(str(results / f"process-{rank}-of-2.safetensors"))
        info = json.loads((results / f"process-{rank}-of-2.json").read_text())
        assert info["processes"] == 2
        assert set(tensors) == set(single.tensors)
        for name, value in single.tensors.items():  # the same edit (gradients summed in another order)
            assert torch.allclose(tensors[name], value, atol=1e-6, rtol=1e-5), name
        assert info["losses"] == pytest.approx(single.info["losses"], rel=1e-5)
        passes.append(info["forward"])
    # each process spent about half the one-process forward passes (its lanes' trajectories, predictions, batch)
    for p in passes:
        assert 0.3 * counter.forward < p < 0.7 * counter.forward, (passes, counter.forward)


def test_pool_lanes_change_which_samples_share_trajectories_not_the_method(tiny_sd1_folder):
    pipe = load_pipeline(tiny_sd1_folder, device="cpu")
    one = erase(pipe, "esd-x-strict", "red star", progress=False, **SETTINGS)
    again = erase(pipe, "esd-x-strict", "red star", progress=False, pool_lanes=1, **SETTINGS)
    # "auto" is 1 in one process: the default pool is unchanged
    assert all(torch.equal(v, again.tensors[k]) for k, v in one.tensors.items())
    assert one.info["pool_lanes"] == 1 and one.info["processes"] == 1
