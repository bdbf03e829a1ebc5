"""Worker for tests/test_distributed.py, launched with ``python -m torch.distributed.run``.

Usage: ``_distributed_esd.py JOB.json``: trains esd-x-strict on the job's model folder with the job's settings
and saves, per process, the edit's tensors and the UNet passes it spent (``process-<rank>-of-<world>``).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from safetensors.torch import save_file  # noqa: E402

from erasure import load_pipeline  # noqa: E402
from erasure.distributed import process_state  # noqa: E402
from erasure.methods import erase  # noqa: E402
from erasure.methods.esd import PassCounter  # noqa: E402


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    pipe = load_pipeline(job["model_folder"], device="cpu")
    counter = PassCounter()
    edit = erase(pipe, job["method"], job["concept"], counter=counter, progress=False, **job["settings"])
    state = process_state(pipe.device)
    name = f"process-{state.process_index}-of-{state.num_processes}"
    save_file({k: v.contiguous() for k, v in edit.tensors.items()}, str(Path(job["results"]) / f"{name}.safetensors"))
    (Path(job["results"]) / f"{name}.json").write_text(json.dumps({
        "forward": counter.forward, "backward": counter.backward, "losses": edit.info["losses"],
        "processes": edit.info["processes"]}))


if __name__ == "__main__":
    main(sys.argv[1])
