"""Interop check: erasure's exports loaded by the oldest supported stack, same-seed images compared.

Three steps, run by ``scripts/interop.sh`` (which builds the second venv):

1. ``make`` (main venv, erasure installed): on the built-in world, a closed-form (``uce``), an ESD
   (``esd-x``: weights and to_out biases) and an adapter (``lora-esd``) edit; each exported in every format
   (``<work>/<edit>/``), the unedited world as a diffusers folder (``<work>/base``), and the images the edited
   pipeline draws in memory (``<work>/<edit>/expected.npy``) at the world's default sampler (25 DDIM steps,
   guidance 5). Also the LoRA fidelity in this venv (LoRA on the base against the dense edit) at 25 and 4 steps.
2. ``load`` (the old venv: plain diffusers / transformers / peft, no erasure): every export loaded the way its
   model card says (the card's own LoRA lines are executed, weight_name and all, with HF_HUB_OFFLINE=1),
   the same seeds drawn; a LoRA is also fused (``fuse_lora()``) and drawn again.
3. ``compare`` (main venv): each image set against the in-memory edit's; a table, exit 1 on any failure.

    bash scripts/interop.sh
    python scripts/interop_check.py make --work build/interop-work      # the steps by hand
    build/interop-venv/bin/python -I scripts/interop_check.py load --work build/interop-work
    python scripts/interop_check.py compare --work build/interop-work

``load`` imports nothing from erasure (``python -I`` keeps the repository off sys.path).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PROMPTS = ["a red circle", "a blue square on a gray background", "a striped circle"]
SEED = 0
STEPS, GUIDANCE = 25, 5.0  # the world's default sampler
EDITS = {
    # the demo's edit (Makefile): many rows, a rank-64 LoRA, the hardest case for LoRA fidelity
    "closed-form": ("uce", {"guide": "square", "tokens": "subject-to-end", "preserve_scale": 0.02}),
    "esd": ("esd-x", {"iterations": 3, "batch_size": 1, "ddim_steps": 4, "anchor": "square", "progress": False}),
    "adapter": ("lora-esd", {"iterations": 3, "batch_size": 1, "ddim_steps": 4, "anchor": "square", "progress": False}),
}
# max abs pixel difference in [0, 1] allowed against the in-memory edit: dense formats carry the edited
# weights (other torch/diffusers kernels: ~1e-6); a LoRA from a dense edit is its exact SVD, applied as
# x A^T B^T, which differs from x W'^T by float32 rounding that 25 steps compound
TOLERANCE = {"diffusers": 1e-4, "single-file": 1e-4, "edit": 1e-4, "lora": 1e-3, "lora-fused": 1e-3, "kohya": 1e-3}


def _render(pipe, steps: int = STEPS):
    import numpy as np
    import torch

    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        images = pipe(PROMPTS, num_inference_steps=steps, guidance_scale=GUIDANCE,
                      generator=torch.Generator().manual_seed(SEED), output_type="np").images
    return np.asarray(images, dtype=np.float32)


# --------------------------------------------------------------------------- 1. main venv


def make(work: Path) -> int:
    import numpy as np
    import torch

    from erasure import export, load_pipeline
    from erasure.methods import erase
    from erasure.versions import package_versions

    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(None)
    export(pipe, work / "base", formats=["diffusers"], force=True)
    np.save(work / "base.npy", _render(pipe))
    manifest = {"versions": package_versions(), "prompts": PROMPTS, "steps": STEPS, "guidance": GUIDANCE,
                "edits": {}, "lora_fidelity": {}}
    for name, (method, settings) in EDITS.items():
        t0 = time.time()
        result = erase(pipe, method, ["circle"], **settings)
        written = export(pipe, work / name, edit=result, force=True)
        dense = result.to_edit(pipe) if hasattr(result, "to_edit") else result
        dense.apply(pipe)
        expected = _render(pipe)
        expected_4 = _render(pipe, 4)
        dense.restore(pipe)
        np.save(work / name / "expected.npy", expected)
        manifest["edits"][name] = {"method": method, "formats": sorted(written), "skipped": written.skipped,
                                   "changed_tensors": len(dense.tensors), "seconds": round(time.time() - t0, 1)}
        if "lora" in written:  # fidelity of the LoRA in this venv, at the default sampler and at 4 steps
            card = (work / name / "README.md").read_text()
            cwd = os.getcwd()
            os.chdir(work / name)
            try:
                saved = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
                exec(_card_lora_code(card), {"pipe": pipe})
                got, got_4 = _render(pipe), _render(pipe, 4)
            finally:
                os.chdir(cwd)
                pipe.unload_lora_weights()
                with torch.no_grad():
                    for n, p in pipe.unet.named_parameters():
                        p.copy_(saved[n])
            manifest["lora_fidelity"][name] = {f"steps_{STEPS}": float(np.abs(got - expected).max()),
                                               "steps_4": float(np.abs(got_4 - expected_4).max())}
        print(f"made {name} ({method}): wrote {', '.join(sorted(written))}"
              + (f"; skipped {', '.join(written.skipped)}" if written.skipped else ""), flush=True)
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return 0


def _card_lora_code(card: str) -> str:
    """The model card's python block for the lora format, less its first line (the base model) and fuse_lora."""
    block = card.split("**lora**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    return "\n".join(line for line in block.split("\n")[1:] if not line.startswith("pipe.fuse_lora()"))


def _card_kohya_code(card: str) -> str:
    block = card.split("**kohya**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    return "\n".join(line for line in block.split("\n") if line.startswith("pipe."))


# --------------------------------------------------------------------------- 2. old venv


def load(work: Path) -> int:
    import importlib.util

    import diffusers
    import numpy as np
    import torch
    import transformers
    from diffusers import StableDiffusionPipeline

    if importlib.util.find_spec("erasure") is not None:
        print("interop: erasure is importable here; run this step in a venv without it", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    manifest = json.loads((work / "manifest.json").read_text())
    versions = {"diffusers": diffusers.__version__, "transformers": transformers.__version__,
                "torch": torch.__version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    results: dict = {"versions": versions, "cases": {}}
    for name, info in manifest["edits"].items():
        folder = work / name
        card = (folder / "README.md").read_text()
        for fmt in info["formats"]:
            t0 = time.time()
            key = f"{name}/{fmt}"
            try:
                if fmt == "diffusers":
                    pipe = StableDiffusionPipeline.from_pretrained(str(folder / "diffusers"))
                    np.save(folder / "got-diffusers.npy", _render(pipe))
                elif fmt == "single-file":
                    pipe = StableDiffusionPipeline.from_single_file(str(folder / "model.safetensors"),
                                                                    config=str(folder / "model-config"),
                                                                    local_files_only=True)
                    np.save(folder / "got-single-file.npy", _render(pipe))
                elif fmt in ("lora", "kohya"):
                    pipe = StableDiffusionPipeline.from_pretrained(str(work / "base" / "diffusers"))
                    cwd = os.getcwd()
                    os.chdir(folder)
                    try:
                        exec(_card_lora_code(card) if fmt == "lora" else _card_kohya_code(card), {"pipe": pipe})
                    finally:
                        os.chdir(cwd)
                    np.save(folder / f"got-{fmt}.npy", _render(pipe))
                    if fmt == "lora":
                        pipe.fuse_lora()
                        pipe.unload_lora_weights()
                        np.save(folder / "got-lora-fused.npy", _render(pipe))
                else:
                    continue  # the edit file needs erasure: checked in the main venv's tests
                results["cases"][key] = {"ok": True, "seconds": round(time.time() - t0, 1)}
            except Exception as e:  # noqa: BLE001 - every failure is a result to report
                results["cases"][key] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
            print(f"loaded {key}: {'ok' if results['cases'][key]['ok'] else results['cases'][key]['error']}",
                  flush=True)
    (work / "loaded.json").write_text(json.dumps(results, indent=1))
    return 0


# --------------------------------------------------------------------------- 3. main venv


def compare(work: Path) -> int:
    import numpy as np

    manifest = json.loads((work / "manifest.json").read_text())
    loaded = json.loads((work / "loaded.json").read_text())
    base = np.load(work / "base.npy")
    old = loaded["versions"]
    print(f"exports made with {manifest['versions']}")
    print(f"loaded with {old} (no erasure); {len(PROMPTS)} prompts, seed {SEED}, {STEPS} steps, guidance {GUIDANCE}")
    print("| edit | format | loads | max abs pixel difference from the in-memory edit | edit's own effect | ok |")
    print("|---|---|---|---|---|---|")
    failures = 0
    for name, info in manifest["edits"].items():
        expected = np.load(work / name / "expected.npy")
        effect = float(np.abs(expected - base).max())
        if effect < 1e-3:
            print(f"| {name} | - | - | - | {effect:.2e} | no: the edit changes nothing |")
            failures += 1
        for fmt in info["formats"] + (["lora-fused"] if "lora" in info["formats"] else []):
            if fmt == "edit":
                continue
            case = loaded["cases"].get(f"{name}/{'lora' if fmt == 'lora-fused' else fmt}", {})
            if not case.get("ok"):
                print(f"| {name} | {fmt} | **no**: {case.get('error', 'not loaded')} | | | no |")
                failures += 1
                continue
            got = np.load(work / name / f"got-{fmt}.npy")
            diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
            ok = diff <= TOLERANCE[fmt]
            failures += not ok
            print(f"| {name} | {fmt} | yes | {diff:.2e} | {effect:.2e} | {'yes' if ok else '**no**'} |")
        for fmt, reason in info["skipped"].items():
            print(f"| {name} | {fmt} | skipped: {reason} | | | (listed) |")
    print("\nLoRA fidelity in the main venv (LoRA on the base model against the dense edit, max abs pixel difference):")
    for name, fid in manifest["lora_fidelity"].items():
        print(f"  {name}: {STEPS} steps {fid[f'steps_{STEPS}']:.1e}, 4 steps {fid['steps_4']:.1e}")
    print(f"\ninterop: {'FAILED' if failures else 'passed'} ({failures} failure(s))")
    return 1 if failures else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("make", "load", "compare"))
    p.add_argument("--work", default="build/interop-work")
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    return {"make": make, "load": load, "compare": compare}[args.step](work)


if __name__ == "__main__":
    raise SystemExit(main())
