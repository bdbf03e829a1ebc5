"""Generation into folders at scale: batched, resumable, spread over processes, images bit-for-bit reproducible."""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from erasure.errors import ErasureError
from erasure.evaluation.generate import generate_prompt_set, generate_to_folder, load_folder_images
from erasure.evaluation.prompts import PromptRecord, PromptSet
from erasure.generation import SamplerSettings, generate_images

FAST = SamplerSettings(steps=2, guidance=5.0)
PROMPTS = ["a red star", "a blue heart", "a dotted square", "a green circle", "a striped triangle", "a tiny cross"]
SEEDS = [3, 4, 5, 6, 7, 8]
WORKER = Path(__file__).with_name("_distributed_generate.py")


class CountingPipe:
    """Delegates to a pipeline and records, per call, the (prompt, seed) pairs it was asked for."""

    def __init__(self, pipe):
        self._pipe = pipe
        self.calls: list[list[tuple[str, int]]] = []

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, prompts, **kwargs):
        self.calls.append([(p, g.initial_seed()) for p, g in zip(prompts, kwargs["generator"])])
        return self._pipe(prompts, **kwargs)

    def pairs(self) -> set[tuple[str, int]]:
        return {pair for call in self.calls for pair in call}


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_folder_matches_generate_images_and_records_everything(tiny_sd1_pipeline, tmp_path):
    by_batch = {}
    for batch in (1, 3):
        out = tmp_path / f"b{batch}"
        images = generate_to_folder(tiny_sd1_pipeline, PROMPTS, SEEDS, out, FAST, model="tiny", batch_size=batch,
                                    progress=False)
        # len(PROMPTS) is a multiple of both batch sizes: every call is a full batch, as in generate_images
        assert np.array_equal(images, generate_images(tiny_sd1_pipeline, PROMPTS, SEEDS, FAST, batch_size=batch,
                                                      progress=False))
        assert images.dtype == np.uint8 and images.shape == (6, 64, 64, 3)
        assert np.array_equal(load_folder_images(out), images)
        manifest = manifest_of(out)
        assert manifest["model"] == "tiny" and manifest["settings"]["steps"] == 2 and manifest["batch_size"] == batch
        assert set(manifest["versions"]) >= {"torch", "diffusers", "erasure"}
        assert [(r["index"], r["prompt"], r["seed"]) for r in manifest["images"]] == list(
            zip(range(6), PROMPTS, SEEDS))
        for r in manifest["images"]:
            assert hashlib.sha256((out / r["file"]).read_bytes()).hexdigest() == r["sha256"]
        assert sorted(p.name for p in out.iterdir()) == ["images", "manifest.json"]  # no temp files left
        assert sorted(p.name for p in (out / "images").iterdir()) == [f"{k:05d}.png" for k in range(6)]
        by_batch[batch] = images
    # Another batch size only moves some pixels by one uint8 level (kernels pick other algorithms for
    # other shapes), which is why a folder records and enforces its batch size.
    assert np.abs(by_batch[1].astype(int) - by_batch[3].astype(int)).max() <= 1


def test_records_of_an_interrupted_multi_process_run_are_recovered(tiny_sd1_pipeline, tmp_path):
    """Non-main processes keep their records in .parts/ until the end; a rerun merges those of its recipe."""
    out = tmp_path / "gen"
    generate_to_folder(tiny_sd1_pipeline, PROMPTS[:4], SEEDS[:4], out, FAST, model="tiny", batch_size=2,
                       progress=False)
    manifest = manifest_of(out)
    kept, lost = manifest["images"][:2], manifest["images"][2:]
    recipe = {k: manifest[k] for k in ("format", "model", "settings", "batch_size")}
    (out / "manifest.json").write_text(json.dumps({**manifest, "images": kept}))
    (out / ".parts").mkdir()
    (out / ".parts" / "process-1.json").write_text(json.dumps({**recipe, "records": lost[:1]}))
    (out / ".parts" / "process-2.json").write_text(json.dumps({**recipe, "batch_size": 3, "records": lost[1:]}))
    pipe = CountingPipe(tiny_sd1_pipeline)
    generate_to_folder(pipe, PROMPTS[:4], SEEDS[:4], out, FAST, model="tiny", progress=False)
    assert pipe.pairs() == {(PROMPTS[3], SEEDS[3])}  # index 2 recovered; index 3's part had another recipe
    assert manifest_of(out)["images"] == manifest["images"] and not (out / ".parts").exists()


def test_one_process_leaves_accelerate_state_alone(tiny_sd1_pipeline, tmp_path):
    from accelerate import PartialState

    before = dict(PartialState._shared_state)
    generate_to_folder(tiny_sd1_pipeline, PROMPTS[:1], SEEDS[:1], tmp_path / "one", FAST, model="tiny",
                       progress=False)
    assert PartialState._shared_state == before  # a later Accelerator() still picks its own device


def test_image_does_not_depend_on_neighbours_or_position(tiny_sd1_pipeline, tmp_path):
    """Short batches are padded to the batch size, so where an image lands never changes it."""
    forward = generate_to_folder(tiny_sd1_pipeline, PROMPTS[:5], SEEDS[:5], tmp_path / "f", FAST, model="tiny",
                                 batch_size=3, progress=False)
    order = [4, 0, 3, 1, 2]
    shuffled = generate_to_folder(tiny_sd1_pipeline, [PROMPTS[k] for k in order], [SEEDS[k] for k in order],
                                  tmp_path / "s", FAST, model="tiny", batch_size=3, progress=False)
    assert np.array_equal(shuffled, forward[order])


def test_resume_regenerates_only_missing_and_damaged_images(tiny_sd1_pipeline, tmp_path):
    out = tmp_path / "gen"
    pipe = CountingPipe(tiny_sd1_pipeline)
    first = generate_to_folder(pipe, PROMPTS, SEEDS, out, FAST, model="tiny", batch_size=2, progress=False)
    assert len(pipe.calls) == 3 and all(len(c) == 2 for c in pipe.calls)

    (out / "images" / "00001.png").unlink()
    (out / "images" / "00004.png").unlink()
    (out / "images" / "00002.png").write_bytes(b"not a png any more")
    pipe.calls.clear()
    again = generate_to_folder(pipe, PROMPTS, SEEDS, out, FAST, model="tiny", progress=False)  # batch size from folder
    assert pipe.pairs() == {(PROMPTS[k], SEEDS[k]) for k in (1, 2, 4)}
    assert len(pipe.calls) == 2 and all(len(c) == 2 for c in pipe.calls)  # the short batch is padded
    assert np.array_equal(again, first)
    manifest = manifest_of(out)
    assert [run["generated"] for run in manifest["runs"]] == [6, 3] and manifest["runs"][-1]["complete"]

    pipe.calls.clear()
    third = generate_to_folder(pipe, PROMPTS, SEEDS, out, FAST, model="tiny", batch_size=2, progress=False)
    assert pipe.calls == [] and np.array_equal(third, first)

    # a longer list resumes too: only the new index is generated
    longer = generate_to_folder(pipe, PROMPTS + ["a purple moon"], SEEDS + [9], out, FAST, model="tiny",
                                progress=False)
    assert pipe.pairs() == {("a purple moon", 9)} and np.array_equal(longer[:6], first)


def test_interrupted_run_keeps_finished_batches(tiny_sd1_pipeline, tmp_path):
    out = tmp_path / "gen"

    class Interrupted(Exception):
        pass

    class FailingPipe(CountingPipe):
        def __call__(self, prompts, **kwargs):
            if len(self.calls) == 2:
                raise Interrupted
            return super().__call__(prompts, **kwargs)

    with pytest.raises(Interrupted):
        generate_to_folder(FailingPipe(tiny_sd1_pipeline), PROMPTS, SEEDS, out, FAST, model="tiny", batch_size=2,
                           progress=False)
    assert [r["index"] for r in manifest_of(out)["images"]] == [0, 1, 2, 3]  # written after every batch
    pipe = CountingPipe(tiny_sd1_pipeline)
    images = generate_to_folder(pipe, PROMPTS, SEEDS, out, FAST, model="tiny", batch_size=2, progress=False)
    assert pipe.pairs() == {(PROMPTS[k], SEEDS[k]) for k in (4, 5)}
    assert np.array_equal(images, generate_images(tiny_sd1_pipeline, PROMPTS, SEEDS, FAST, batch_size=2,
                                                  progress=False))


@pytest.mark.parametrize("change, message", [
    (dict(settings=SamplerSettings(steps=3, guidance=5.0)), "steps=2"),
    (dict(settings=SamplerSettings(steps=2, guidance=5.0, negative_prompt="blurry")), "negative_prompt"),
    (dict(model="other"), "model 'tiny'"),
    (dict(batch_size=3), "batch size 2"),
    (dict(prompts=["a red star", "something else"]), "image 1"),
])
def test_folder_with_another_recipe_is_refused(tiny_sd1_pipeline, tmp_path, change, message):
    out = tmp_path / "gen"
    generate_to_folder(tiny_sd1_pipeline, PROMPTS[:2], SEEDS[:2], out, FAST, model="tiny", batch_size=2,
                       progress=False)
    before = (out / "manifest.json").read_bytes()
    pipe = CountingPipe(tiny_sd1_pipeline)
    kwargs = dict(prompts=PROMPTS[:2], settings=FAST, model="tiny", batch_size=None) | change
    with pytest.raises(ErasureError, match=message) as info:
        generate_to_folder(pipe, kwargs["prompts"], SEEDS[:2], out, kwargs["settings"], model=kwargs["model"],
                           batch_size=kwargs["batch_size"], progress=False)
    assert "choose another output folder" in str(info.value) and "\n" not in str(info.value)
    assert pipe.calls == [] and (out / "manifest.json").read_bytes() == before


def test_folder_not_written_by_us_is_refused(tiny_sd1_pipeline, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(ErasureError, match="no manifest.json"):
        generate_to_folder(tiny_sd1_pipeline, PROMPTS[:1], SEEDS[:1], out, FAST, model="tiny", progress=False)
    (out / "notes.txt").unlink()
    (out / "manifest.json").write_text('{"model": "tiny", "images": []}')  # e.g. save_generation's
    with pytest.raises(ErasureError, match="something else"):
        generate_to_folder(tiny_sd1_pipeline, PROMPTS[:1], SEEDS[:1], out, FAST, model="tiny", progress=False)


def test_bad_arguments_are_user_errors(tiny_sd1_pipeline, tmp_path):
    out = tmp_path / "never"
    for args, message in [
        (dict(prompts=["a", "b"], seeds=[1]), "one seed per prompt"),
        (dict(batch_size=0), "batch size"),
        (dict(extra=[{"seed": 1}]), "seed"),
        (dict(extra=[{}, {}]), "one dict per prompt"),
        (dict(settings=SamplerSettings(steps=0)), "steps"),
    ]:
        kwargs = dict(prompts=["a"], seeds=[1], settings=FAST, batch_size=None, extra=None) | args
        with pytest.raises(ErasureError, match=message):
            generate_to_folder(tiny_sd1_pipeline, kwargs["prompts"], kwargs["seeds"], out, kwargs["settings"],
                               model="tiny", batch_size=kwargs["batch_size"], extra=kwargs["extra"], progress=False)
    assert not out.exists()


def test_prompt_set_records_its_columns(tiny_sd1_pipeline, tmp_path):
    records = tuple(PromptRecord(case_number=10 + k, prompt=p, evaluation_seed=s, concept="star", group="target")
                    for k, (p, s) in enumerate(zip(PROMPTS[:2], SEEDS[:2])))
    prompt_set = PromptSet("demo", records)
    out = tmp_path / "set"
    images = generate_prompt_set(tiny_sd1_pipeline, prompt_set, out, FAST, model="tiny", batch_size=2,
                                 progress=False)
    assert np.array_equal(images, generate_images(tiny_sd1_pipeline, PROMPTS[:2], SEEDS[:2], FAST, batch_size=2,
                                                  progress=False))
    first = manifest_of(out)["images"][0]
    assert (first["case_number"], first["concept"], first["group"], first["prompt_set"]) == (10, "star", "target",
                                                                                             "demo")
    guided = PromptSet("guided", tuple(PromptRecord(0, "x", 1, evaluation_guidance=7.0) for _ in range(1)))
    with pytest.raises(ErasureError, match="guidance 7"):
        generate_prompt_set(tiny_sd1_pipeline, guided, tmp_path / "g", FAST, model="tiny", progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with the gloo backend is not available in this torch build")
def test_two_cpu_processes_give_the_same_folder_as_one(tiny_sd1_folder, tmp_path):
    from erasure import load_pipeline

    prompts, seeds, batch = PROMPTS[:5], SEEDS[:5], 2  # one process: [0 1] [2 3] [4+pad]; two: [0 1] [2+pad] | [3 4]
    single_out = tmp_path / "single"
    single = generate_to_folder(load_pipeline(tiny_sd1_folder, device="cpu"), prompts, seeds, single_out, FAST,
                                model="tiny", batch_size=batch, progress=False)

    results = tmp_path / "results"
    results.mkdir()
    job = tmp_path / "job.json"
    job.write_text(json.dumps({
        "model_folder": str(tiny_sd1_folder), "model": "tiny", "prompts": prompts, "seeds": seeds,
        "settings": {"steps": FAST.steps, "guidance": FAST.guidance}, "batch_size": batch,
        "out": str(tmp_path / "multi"), "results": str(results),
    }))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(job)]
    done = subprocess.run(command, env=env, cwd=Path(__file__).parents[1], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for rank in range(2):  # every process returns the full array
        assert np.array_equal(np.load(results / f"process-{rank}-of-2.npy"), single)
    multi, one = manifest_of(tmp_path / "multi"), manifest_of(single_out)
    assert [r["sha256"] for r in multi["images"]] == [r["sha256"] for r in one["images"]]
    assert [(r["prompt"], r["seed"]) for r in multi["images"]] == list(zip(prompts, seeds))
    assert multi["runs"][-1]["processes"] == 2 and multi["runs"][-1]["complete"]
    assert not (tmp_path / "multi" / ".parts").exists()
