"""Attacks sharded by prompt over two CPU processes (torchrun, gloo) give the one-process report; the same file is
the worker (``python -m torch.distributed.run ... tests/test_attacks_distributed.py JOB.json``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROMPTS = ["a cat", "a cat on a sofa", "a photo of a cat", "a small cat", "a red cat"]
SETTINGS = {"steps": 2, "guidance": 5.0}


class BrightnessJudge:
    name = "brightness"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def decide(self, images, concept):
        return np.asarray(images)[..., 0].reshape(len(images), -1).mean(1) > self.threshold


def _run(folder: str, threshold: float, out: str | None):
    from erasure import load_pipeline
    from erasure.attacks import attack
    from erasure.generation import SamplerSettings
    from erasure.methods import erase

    pipe = load_pipeline(folder, device="cpu")
    edit = erase(pipe, "uce", ["cat"], guide="dog")
    return attack(pipe, "ring-a-bell", "cat", PROMPTS, result=edit, judge=BrightnessJudge(threshold),
                  settings=SamplerSettings(**SETTINGS), attack_settings={"etas": "0.5,2"}, out=out, n_resamples=50)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_shard_prompts_and_give_the_one_process_report(tiny_sd1_folder, tmp_path):
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    single = _run(str(tiny_sd1_folder), 120.0, None)
    job = tmp_path / "job.json"
    out = tmp_path / "attack"
    job.write_text(json.dumps({"folder": str(tiny_sd1_folder), "threshold": 120.0, "out": str(out)}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__, str(job)]
    done = subprocess.run(command, env=env, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = json.loads((out / "report.json").read_text())
    keys = ("prompt", "seed", "pre_success", "attack_success", "success", "adversarial_prompt", "step")
    assert [{k: r[k] for k in keys} for r in saved["prompts"]] == [{k: r[k] for k in keys} for r in single.records]
    assert saved["metrics"]["asr"]["value"] == single.value("asr") and saved["info"]["processes"] == 2
    # each process attacked its own prompts (every other one), recorded in each prompt's record
    assert [r["process"] for r in saved["prompts"]] == [i % 2 for i in range(len(PROMPTS))]


def _worker(job_path: str) -> None:
    import torch

    torch.set_num_threads(1)
    job = json.loads(Path(job_path).read_text())
    _run(job["folder"], job["threshold"], job["out"])


if __name__ == "__main__":
    _worker(sys.argv[1])
