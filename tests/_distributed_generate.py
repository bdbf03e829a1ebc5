"""Worker for tests/test_generate_at_scale.py, launched with ``python -m torch.distributed.run``.

Usage: ``_distributed_generate.py JOB.json``; the job gives the model folder, prompts, seeds,
settings, batch size, output folder and a folder where each process saves the array it got back
(``process-<rank>-of-<world>.npy``).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from accelerate import PartialState  # noqa: E402

from erasure import load_pipeline  # noqa: E402
from erasure.evaluation.generate import generate_to_folder  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    pipe = load_pipeline(job["model_folder"], device="cpu")
    images = generate_to_folder(
        pipe, job["prompts"], job["seeds"], job["out"], SamplerSettings(**job["settings"]),
        model=job["model"], batch_size=job["batch_size"], progress=False,
    )
    state = PartialState()
    np.save(Path(job["results"]) / f"process-{state.process_index}-of-{state.num_processes}.npy", images)


if __name__ == "__main__":
    main(sys.argv[1])
