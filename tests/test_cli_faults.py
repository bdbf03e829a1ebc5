"""The command line's fault paths, as one table: every bad invocation gives exactly one line on stderr
(``error: ...``, no traceback, no usage dump), the exit code of its class (2: the user's mistake, 1: the
machine's fault), and leaves the files exactly as they were: no new file, no temporary folder, an existing
output byte for byte the same.

The invocations run in-process (``erasure.cli.main``): a subprocess costs seconds here. The few that need
one check what only a fresh interpreter shows (torch not imported for a mistake; no traceback). Read-only
and full disks are injected (a patched ``os.open`` / writer) and, where this machine lets the test mount a
small tmpfs, also met for real; otherwise those cases are skipped with the reason.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from erasure.cli import main

SEED_LIMIT = 2**64


@dataclass(frozen=True)
class Bad:
    """One bad invocation. In ``argv``, ``{tmp}`` is the case's folder, ``{out}`` its output folder
    (``{tmp}/out``) and ``{model}`` the tiny SD 1.x folder (only cases that get past the checks load it)."""

    argv: tuple[str, ...]
    message: str  # a phrase the one stderr line must contain
    code: int = 2
    existing: bool = False  # an earlier erasure output at {out}, which must be left exactly as it was
    cwd: str = "work"  # the folder below {tmp} the command runs in
    fault: str | None = None  # see _inject
    needs_model: bool = False


def bad(*argv: str, message: str, **kw) -> Bad:
    return Bad(tuple(argv), message, **kw)


# The 37 invocations of the first CLI matrix (tests/test_cli.py), each writing command with --out {out}.
FIRST_MATRIX = [
    bad(message="choose a command"),
    bad("frobnicate", message="invalid choice: 'frobnicate'"),
    bad("erase", "--out", "{out}", message="no concept given"),
    bad("erase", "--concept", "circle", "--method", "ucee", "--out", "{out}", message="did you mean 'uce'"),
    bad("erase", "--concept", "circle", "--steps", "abc", "--out", "{out}", message="invalid int value: 'abc'"),
    bad("erase", "--concept", "circle", "--bogus-flag", "--out", "{out}", message="unrecognized arguments: --bogus-flag"),
    bad("erase", "--concept", "circle", "--config-file", "{tmp}/missing.json", "--out", "{out}", message="not found"),
    bad("erase", "--concept", "circle", "--config-file", "{tmp}/unknown_key.json", "--out", "{out}",
        message="unknown key 'bogus'"),
    bad("erase", "--concept", "circle", "--config-file", "{tmp}/broken.yaml", "--out", "{out}",
        message="is not valid YAML"),
    bad("erase", "--concept", "circle", "--config-file", "{tmp}/a_list.json", "--out", "{out}",
        message="must hold a mapping"),
    bad("erase", "--concept", "circle", "--config-file", "{tmp}/wrong_type.json", "--out", "{out}",
        message="must be of type int"),
    bad("erase", "--concept", "circle", "--model", "{tmp}/no/such/model", "--out", "{out}", message="not found"),
    bad("erase", "--concept", "circle", "--set", "nosuch=1", "--out", "{out}", message="unknown setting 'nosuch'"),
    bad("erase", "--concept", "circle", "--set", "iterations", "--out", "{out}", message="KEY=VALUE"),
    bad("erase", "--concept", "circle", "--tokens", "bogus", "--out", "{out}", message="tokens must be one of"),
    bad("erase", "--concept", "circle", "--lamb", "-1", "--out", "{out}", message="--lamb must be a finite number in [0"),
    bad("erase", "--concept", "circle", "--method", "esd", "--set", "lr=-1", "--out", "{out}", message="lr must be > 0"),
    bad("erase", "--concept", "", "--out", "{out}", message="empty concept"),
    bad("generate", "--out", "{out}", message="no prompts given"),
    bad("generate", "--prompt", "a star", "--steps", "0", "--out", "{out}", message="--steps must be in [1, 1000]"),
    bad("generate", "--prompt", "a star", "--num-seeds", "0", "--out", "{out}", message="--num-seeds must be in [1, "),
    bad("generate", "--prompts-file", "{tmp}/missing.txt", "--out", "{out}", message="not found"),
    bad("generate", "--prompt", "a star", "--dtype", "fp8", "--out", "{out}", message="unknown dtype 'fp8'"),
    bad("generate", "--prompt", "a star", "--device", "tpu", "--out", "{out}", message="unknown device 'tpu'"),
    bad("generate", "--prompt", "a star", "--model", "{tmp}/model.ckpt", "--out", "{out}", message="pickled checkpoint"),
    bad("generate", "--prompt", "a star", "--guidance", "-1", "--out", "{out}",
        message="--guidance must be a finite number in [0, 100]"),
    bad("evaluate", "--out", "{out}", message="no prompt set given"),
    bad("evaluate", "--prompts", "shapeworld-shape-circl", "--out", "{out}", message="unknown prompt set"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--concept", "shape", "--out", "{out}",
        message="not a concept of the built-in world"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--concept", "colour=circle", "--out", "{out}",
        message="no prompt names colour=circle"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--edit", "{tmp}/missing.safetensors", "--out", "{out}",
        message="not found"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--edit", "{tmp}/corrupt.safetensors", "--out", "{out}",
        message="not a readable safetensors file"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--compare", "--out", "{out}", message="needs --edit"),
    bad("export", "--format", "lora,onnx", "--out", "{out}", message="unknown export format 'onnx'"),
    bad("export", "--edit", "{tmp}/missing.safetensors", "--out", "{out}", message="not found"),
    bad("export", "--lora-rank", "0", "--edit", "{tmp}/corrupt.safetensors", "--out", "{out}",
        message="--lora-rank must be in [1, 4096]"),
    bad("export", "--report", "{tmp}/a_list.json", "--base-single-file", "{tmp}/none.safetensors", "--out", "{out}",
        message="not found"),
]

# Outputs that must never be written or replaced, --force or not; outputs that cannot be written.
OUTPUTS = [
    bad("generate", "--prompt", "a star", "--out", ".", "--force", message="is the current folder"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--out", ".", "--force", message="is the current folder"),
    bad("export", "--out", ".", "--force", message="is the current folder"),
    bad("erase", "--concept", "circle", "--out", ".", "--force", message="is the current folder"),
    bad("generate", "--prompt", "a star", "--out", "", "--force", message="--out is empty"),
    bad("export", "--out", "", "--force", message="--out is empty"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--out", "{tmp}/work", "--force", cwd="work/inner",
        message="is a parent of the current folder"),
    bad("generate", "--prompt", "a star", "--out", "/", "--force", message="is a filesystem root"),
    bad("generate", "--prompt", "a star", "--out", "{tmp}/home", "--force", message="is your home folder"),
    bad("export", "--edit", "{tmp}/D/edit.safetensors", "--out", "{tmp}/D", "--force", message="holds the input"),
    bad("evaluate", "--prompts", "{tmp}/in/prompts.csv", "--out", "{tmp}/in", "--force", message="holds the input"),
    bad("generate", "--prompts-file", "{tmp}/in/prompts.txt", "--out", "{tmp}/in", "--force", message="holds the input"),
    bad("erase", "--concept", "circle", "--config-file", "{tmp}/in/erase.json", "--out", "{tmp}/in", "--force",
        message="holds the input"),
    bad("export", "--model", "{model}", "--out", "{model}/unet", "--force", message="lies inside the input"),
    bad("generate", "--prompt", "a star", "--out", "{tmp}/repo", "--force", message="is a git checkout"),
    bad("generate", "--prompt", "a star", "--out", "{tmp}/userdir", "--force", message="holds files erasure did not write"),
    bad("generate", "--prompt", "a star", "--out", "{tmp}/afile", "--force", message="is a file, not a folder"),
    bad("export", "--out", "{tmp}/afile/sub", message="is a file, not a folder"),
    bad("generate", "--prompt", "a star", "--out", "{tmp}/link", "--force", message="is a symbolic link"),
    bad("export", "--out", "{tmp}/link", "--force", message="is a symbolic link"),
    bad("generate", "--prompt", "a star", "--out", "{out}", existing=True, message="already exists"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--out", "{out}", existing=True, message="already exists"),
    bad("export", "--out", "{out}", existing=True, message="already exists"),
    bad("erase", "--concept", "circle", "--out", "{out}", existing=True, message="already exists"),
    bad("generate", "--prompt", "a star", "--out", "/proc/erasure-test/out", message="cannot write"),
    bad("generate", "--prompt", "a star", "--out", "{tmp}/ro/out", fault="read-only", message="read-only filesystem"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--out", "{tmp}/ro/deeper/out", fault="read-only",
        message="read-only filesystem"),
    bad("erase", "--concept", "circle", "--out", "{tmp}/ro/out", "--force", fault="no-permission",
        message="no permission to write"),
    bad("export", "--out", "{tmp}/ro/out", fault="disk-full", code=1, message="no space left"),
    bad("generate", "--prompt", "a star", "--steps", "2", "--model", "{model}", "--out", "{out}", "--force",
        existing=True, fault="disk-full-while-writing-images", code=1, needs_model=True, message="no space left"),
    bad("export", "--model", "{model}", "--format", "diffusers", "--out", "{out}", "--force", existing=True,
        fault="disk-full-while-writing-safetensors", code=1, needs_model=True, message="no space left"),
    bad("generate", "--prompt", "a star", "--model", "{tmp}/no/such/model.safetensors", "--out", "{tmp}/a/b/c",
        message="not found"),
]

# Numbers, checked once at the edge (before any model loads).
NUMBERS = [
    bad("generate", "--prompt", "a star", "--seed", str(SEED_LIMIT), "--out", "{out}", message="--seed must be >= 0 and < 2^64"),
    bad("generate", "--prompt", "a star", "--seed", "-1", "--out", "{out}", message="--seed must be >= 0"),
    bad("generate", "--prompt", "a star", "--seeds", "1", str(SEED_LIMIT), "--out", "{out}", message="< 2^64"),
    bad("generate", "--prompt", "a star", "--seed", str(SEED_LIMIT - 1), "--num-seeds", "2", "--out", "{out}",
        message="beyond the largest seed"),
    bad("generate", "--prompt", "a star", "--guidance", "nan", "--out", "{out}", message="--guidance must be a finite number"),
    bad("generate", "--prompt", "a star", "--guidance", "inf", "--out", "{out}", message="--guidance must be a finite number"),
    bad("generate", "--prompt", "a star", "--batch-size", "0", "--out", "{out}", message="--batch-size must be >= 1"),
    bad("generate", "--prompt", "a star", "--config-file", "{tmp}/big_seed.json", "--out", "{out}",
        message="'seed' must be >= 0 and < 2^64"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--steps", "0", "--out", "{out}", message="--steps must be in [1, "),
    bad("generate", "--prompt", "a star", "--steps", "1000000000", "--out", "{out}", message="--steps must be in [1, 1000]"),
    bad("generate", "--prompt", "a star", "--guidance", "1e30", "--out", "{out}", message="--guidance must be a finite number in"),
    bad("generate", "--prompt", "a", "--prompt", "b", "--num-seeds", "60000", "--out", "{out}",
        message="makes 120000 images, more than one run holds"),
    bad("erase", "--concept", "circle", "--evaluate", "--samples-per-prompt", "1000", "--out", "{out}",
        message="images, more than one run holds"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--guidance", "-0.5", "--out", "{out}",
        message="--guidance must be a finite number in [0, 100]"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--samples-per-prompt", "0", "--out", "{out}",
        message="--samples-per-prompt must be in [1, "),
    bad("evaluate", "--prompts", "{tmp}/big_seed.csv", "--out", "{out}", message="seeds must be < 2^64"),
    bad("erase", "--concept", "circle", "--config-file", "{tmp}/nan.yaml", "--out", "{out}",
        message="'guidance' must be a finite number"),
    bad("erase", "--concept", "circle", "--method", "esd-x", "--checkpoint-every", "-1", "--out", "{out}",
        message="--checkpoint-every must be >= 0"),
    bad("erase", "--concept", "circle", "--lamb", "1e308", "--out", "{out}", message="--lamb must be a finite number in"),
    bad("erase", "--concept", "circle", "--lamb", "nan", "--out", "{out}", message="--lamb must be a finite number"),
    bad("erase", "--concept", "circle", "--erase-scale", "inf", "--out", "{out}", message="--erase-scale must be a finite"),
    bad("erase", "--concept", "circle", "--method", "esd-x", "--set", "lr=NaN", "--out", "{out}", message="not a finite number"),
    bad("erase", "--concept", "circle", "--method", "esd-x", "--set", "eta=Infinity", "--out", "{out}",
        message="not a finite number"),
    bad("erase", "--concept", "circle", "--method", "esd-x", "--set", "lr=1e30", "--out", "{out}", message="lr must be <= 1"),
    bad("erase", "--concept", "circle", "--method", "esd-x", "--set", "iterations=1e9", "--out", "{out}",
        message="iterations must be <= "),
    bad("export", "--lora-rank", "-3", "--out", "{out}", message="--lora-rank must be in [1, 4096]"),
]

# Devices and dtypes that cannot work; concepts and flags; corrupted files; list.
OTHERS = [
    bad("generate", "--prompt", "a star", "--device", "cpu", "--dtype", "fp16", "--out", "{out}",
        message="fp16 on the CPU is refused"),
    bad("generate", "--prompt", "a star", "--dtype", "half", "--out", "{out}", fault="no-gpu",
        message="fp16 on the CPU is refused"),
    bad("generate", "--prompt", "a star", "--device", "cuda", "--out", "{out}", fault="no-gpu",
        message="CUDA is not available"),
    bad("erase", "--concept", "circle", "--device", "cuda:7", "--out", "{out}", fault="one-gpu",
        message="this machine has 1 GPU(s)"),
    bad("erase", "--concept", "=circle", "--out", "{out}", message="wants a name (circle) or ATTRIBUTE=VALUE"),
    bad("erase", "--concept", "colour=circle", "--evaluate", "--out", "{out}", message="circle is a shape"),
    bad("erase", "--concept", "zebra", "--evaluate", "--out", "{out}", message="not a concept of the built-in world"),
    bad("erase", "--concept", "circle", "--evaluate", "--model", "{model}", "--out", "{out}",
        message="built-in world's concepts only"),
    bad("erase", "--concept", "circle", "--method", "uce", "--resume", "--out", "{out}", message="cannot resume"),
    bad("erase", "--concept", "circle", "--method", "esd-x", "--out", "{tmp}/cut", message="add --resume"),
    bad("evaluate", "--prompts", "{tmp}/nope.csv", "--out", "{out}", message="prompt file"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--edit", "{tmp}/bitflip.safetensors", "--out", "{out}",
        message="is corrupted"),
    bad("export", "--edit", "{tmp}/bitflip.safetensors", "--out", "{out}", message="is corrupted"),
    bad("evaluate", "--prompts", "shapeworld-shape-circle", "--edit", "{tmp}/D/edit.safetensors", "--compare",
        "{tmp}/no/such", "--out", "{out}", message="--compare"),
    bad("generate", "--prompts-file", "{tmp}/binary.txt", "--out", "{out}", message="not readable text"),
    bad("export", "--report", "{tmp}/broken.json", "--out", "{out}", message="not valid JSON"),
    bad("list", "--json", message="--json applies to --methods"),
    bad("list", "--method", "esd-y", message="did you mean"),
]

CASES = FIRST_MATRIX + OUTPUTS + NUMBERS + OTHERS


def _case_id(case: Bad) -> str:
    return (" ".join(case.argv) or "(none)") + (f" [{case.fault}]" if case.fault else "")


def test_the_matrix_holds_sixty_cases_and_the_first_matrix():
    assert len(FIRST_MATRIX) == 37
    assert len(CASES) >= 60
    assert len({_case_id(c) for c in CASES}) == len(CASES)


@pytest.fixture
def world(tmp_path):
    """The folder every case starts from: inputs of every kind, and the places no output may go."""
    t = tmp_path
    (t / "work" / "inner").mkdir(parents=True)
    (t / "work" / "keep.txt").write_text("the user's own file")
    (t / "home").mkdir()
    (t / "unknown_key.json").write_text(json.dumps({"steps": 3, "bogus": 1}))
    (t / "broken.yaml").write_text("steps: [\n")
    (t / "broken.json").write_text("{not json")
    (t / "a_list.json").write_text("[1, 2]")
    (t / "wrong_type.json").write_text(json.dumps({"samples-per-prompt": "many"}))
    (t / "big_seed.json").write_text(json.dumps({"seed": SEED_LIMIT}))
    (t / "nan.yaml").write_text("guidance: .nan\n")
    (t / "model.ckpt").write_bytes(b"\x80\x02not really a pickle")
    (t / "corrupt.safetensors").write_bytes(b"garbage")
    (t / "binary.txt").write_bytes(b"\xff\xfe\x00\x81 not utf-8")
    (t / "big_seed.csv").write_text(f"case_number,prompt,evaluation_seed,concept\n0,a star,{SEED_LIMIT},star\n")
    (t / "D").mkdir()
    (t / "D" / "edit.safetensors").write_bytes(b"an edit")
    (t / "D" / "run.json").write_text("{}")
    (t / "in").mkdir()
    (t / "in" / "prompts.csv").write_text("case_number,prompt,evaluation_seed,concept\n0,a red star,1,star\n")
    (t / "in" / "prompts.txt").write_text("a red star\n")
    (t / "in" / "erase.json").write_text(json.dumps({"method": "uce"}))
    (t / "in" / "run.json").write_text("{}")  # looks like an erasure output: only the input rule protects it
    (t / "repo" / ".git").mkdir(parents=True)
    (t / "repo" / "manifest.json").write_text("{}")
    (t / "userdir").mkdir()
    (t / "userdir" / "thesis.tex").write_text("years of work")
    (t / "afile").write_text("a file")
    (t / "earlier").mkdir()
    (t / "earlier" / "manifest.json").write_text("{}")
    (t / "link").symlink_to(t / "earlier")
    (t / "ro").mkdir()
    (t / "cut.checkpoints").mkdir()
    (t / "cut.checkpoints" / "state.safetensors").write_bytes(b"an interrupted run's state")
    import torch

    from erasure.edit import Edit
    from erasure.files import write_safetensors

    name = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    edit = Edit(method="uce", concepts=("circle",), config={}, tensors={name: torch.arange(64.0).reshape(8, 8)},
                base_hashes={name: "0" * 64})
    good = write_safetensors(t / "good.safetensors", edit.tensors, edit.metadata())  # as Edit.save writes it
    data = bytearray(good.read_bytes())
    data[-5] ^= 0x10  # one bit of one value
    (t / "bitflip.safetensors").write_bytes(bytes(data))
    good.unlink()
    return t


def _existing_output(out: Path) -> None:
    out.mkdir()
    for name in ("manifest.json", "report.json", "export.json", "run.json"):
        (out / name).write_text(json.dumps({"earlier": name}))
    (out / "images").mkdir()
    (out / "images" / "00000.png").write_bytes(b"\x89PNG earlier")


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path below ``roots`` with its kind, mode and content hash: equal before and after means that
    nothing was created, removed or changed."""
    state = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(dirpath) / name
                st = p.lstat()
                digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
                state[str(p)] = (st.st_mode, digest, os.readlink(p) if p.is_symlink() else None)
    return state


def _inject(monkeypatch, fault: str | None, tmp: Path) -> None:
    """Fault injection: the OS refuses writes under {tmp}/ro, or the disk fills up, or the GPUs are not
    what the flags ask for."""
    import torch

    if fault is None:
        return
    if fault in ("read-only", "no-permission", "disk-full"):
        code = {"read-only": errno.EROFS, "no-permission": errno.EACCES, "disk-full": errno.ENOSPC}[fault]
        under = str(tmp / "ro")
        real_open, real_mkdir = os.open, os.mkdir

        def refused(real):
            def call(path, *args, **kwargs):
                if os.path.abspath(os.fsdecode(path)).startswith(under):
                    raise OSError(code, os.strerror(code), os.fsdecode(path))
                return real(path, *args, **kwargs)
            return call

        monkeypatch.setattr(os, "open", refused(real_open))
        monkeypatch.setattr(os, "mkdir", refused(real_mkdir))
    elif fault == "disk-full-while-writing-images":
        from PIL import Image

        def full(self, fp, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fp))

        monkeypatch.setattr(Image.Image, "save", full)
    elif fault == "disk-full-while-writing-safetensors":
        import safetensors.torch
        from safetensors import SafetensorError

        def full(*args, **kwargs):
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })')

        monkeypatch.setattr(safetensors.torch, "save_file", full)
    elif fault == "no-gpu":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    elif fault == "one-gpu":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    else:
        raise AssertionError(f"unknown fault {fault}")


def run_bad(case: Bad, tmp: Path, model: Path | None, monkeypatch, capsys) -> str:
    """Run one case and check the contract; returns the error line."""
    out = tmp / "out"
    if case.existing:
        _existing_output(out)
    if "{tmp}/home" in case.argv:
        monkeypatch.setenv("HOME", str(tmp / "home"))
    argv = [a.replace("{tmp}", str(tmp)).replace("{out}", str(out)).replace("{model}", str(model)) for a in case.argv]
    watched = [tmp] + ([model] if model is not None else [])
    before = snapshot(*watched)
    monkeypatch.chdir(tmp / case.cwd)
    _inject(monkeypatch, case.fault, tmp)
    capsys.readouterr()
    code = main(argv)
    monkeypatch.undo()  # the faults end with the command: the checks below read the files normally
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error:") and case.message in lines[-1], err
    if argv:  # only the bare `erasure` prints its help above the error line
        assert len(lines) == 1, err
    assert code == case.code, err
    assert snapshot(*watched) == before  # nothing new, nothing removed, an existing output unchanged
    return lines[-1]


CHEAP = [c for c in CASES if not c.needs_model]
WITH_MODEL = [c for c in CASES if c.needs_model or "{model}" in " ".join(c.argv)]


@pytest.mark.parametrize("case", CHEAP, ids=_case_id)
def test_bad_invocation(case, world, monkeypatch, capsys, request):
    model = request.getfixturevalue("tiny_sd1_folder") if "{model}" in " ".join(case.argv) else None
    run_bad(case, world, model, monkeypatch, capsys)


@pytest.mark.parametrize("case", [c for c in CASES if c.needs_model], ids=_case_id)
def test_fault_during_the_work(case, world, tiny_sd1_folder, monkeypatch, capsys):
    run_bad(case, world, tiny_sd1_folder, monkeypatch, capsys)


# --- the same faults on a real (small) filesystem, where this machine lets the test mount one ---------

@pytest.fixture
def tmpfs(tmp_path):
    """``mount(size, read_only)``: a small tmpfs below tmp_path; skipped where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(size: str, read_only: bool = False) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                                  capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"cannot mount a tmpfs here ({e})")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); "
                        "the injected faults above cover the same paths")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=20)


def test_a_real_read_only_filesystem(tmpfs, capsys):
    ro = tmpfs("64k", read_only=True)
    code = main(["generate", "--prompt", "a star", "--out", str(ro / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "read-only filesystem" in err, err
    assert list(ro.iterdir()) == []


def test_a_real_full_disk_while_writing_leaves_the_earlier_output(tmpfs, tiny_sd1_folder, capsys):
    disk = tmpfs("32k")
    out = disk / "out"
    _existing_output(out)
    before = snapshot(disk)
    code = main(["generate", "--model", str(tiny_sd1_folder), "--prompt", "a red star", "--prompt", "a blue circle",
                 "--steps", "2", "--num-seeds", "4", "--out", str(out), "--force"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "no space left" in err, err
    assert snapshot(disk) == before  # the earlier output as it was, no temporary folder


def test_export_refuses_a_disk_too_small_before_writing(tmpfs, tiny_sd1_folder, capsys):
    disk = tmpfs("256k")
    code = main(["export", "--model", str(tiny_sd1_folder), "--format", "diffusers", "--out", str(disk / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "free but" in err and "needs about" in err, err
    assert list(disk.iterdir()) == []


# --- replacing, stale temporaries, permissions ------------------------------------------------------

def test_a_crash_between_the_renames_leaves_one_complete_version(tmp_path, monkeypatch):
    from erasure import files

    out = tmp_path / "out"
    _existing_output(out)
    earlier = snapshot(out)
    real_rename = os.rename
    calls = []

    def crash_on_the_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old set aside, new not yet in: the process dies here
            raise KeyboardInterrupt
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_folder(out, force=True) as tmp:
            (tmp / "manifest.json").write_text("new")
    monkeypatch.undo()
    # the rollback put the old version back (a SIGKILL would leave it aside, see the next test)
    assert snapshot(out) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_killed_runs_leftovers_are_cleaned_and_a_set_aside_version_restored(tmp_path, capsys):
    from erasure import files

    dead = _dead_pid()
    out = tmp_path / "out"
    aside = tmp_path / f".out.old-{dead}-x1"  # killed between the renames: only the old version, set aside
    _existing_output(aside)
    half = tmp_path / f".out.tmp-{dead}-x2"  # the new version, half written
    half.mkdir()
    (half / "manifest.json").write_text("half")
    unknown = tmp_path / ".out.tmp-abc123"  # an older erasure's temporary: writer unknown
    unknown.mkdir()
    live = tmp_path / f".out.tmp-{os.getppid()}-x3"  # a live process's: not ours to touch
    live.mkdir()
    removed = files.clean_stale_temporaries(out)
    err = capsys.readouterr().err
    assert (out / "manifest.json").read_text() == json.dumps({"earlier": "manifest.json"})
    assert not aside.exists() and not half.exists() and unknown.exists() and live.exists()
    assert set(removed) == {aside, half}
    assert "restored" in err and str(unknown) in err and "warning" in err


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_follow_the_umask(tiny_sd1_folder, tmp_path, umask, file_mode, folder_mode):
    old = os.umask(umask)
    try:
        out = tmp_path / "erase"
        assert main(["erase", "--model", str(tiny_sd1_folder), "--concept", "red star", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert os.stat(out).st_mode & 0o777 == folder_mode
    for p in out.rglob("*"):
        assert os.stat(p).st_mode & 0o777 == (folder_mode if p.is_dir() else file_mode), p


def test_single_files_follow_the_umask_too(tmp_path):
    import torch

    from erasure.files import write_json, write_safetensors

    old = os.umask(0o022)
    try:
        paths = [write_safetensors(tmp_path / "a.safetensors", {"w": torch.ones(2)}),
                 write_json(tmp_path / "b.json", {"x": float("nan")})]
    finally:
        os.umask(old)
    assert [os.stat(p).st_mode & 0o777 for p in paths] == [0o644, 0o644]
    assert json.loads(paths[1].read_text()) == {"x": None}  # NaN is not JSON: written as null


# --- integrity ----------------------------------------------------------------------------------

def test_safetensors_we_write_carry_a_checksum_that_catches_one_flipped_bit(tmp_path):
    import torch

    from erasure.errors import ErasureError
    from erasure.files import CHECKSUM_KEY, read_safetensors, tensors_checksum, write_safetensors

    tensors = {"a": torch.randn(5, 3), "b": torch.arange(7, dtype=torch.int64), "c": torch.randn(4).bfloat16()}
    path = write_safetensors(tmp_path / "t.safetensors", tensors, {"note": "kept", "n": 3})
    loaded, meta = read_safetensors(path)
    assert meta["note"] == "kept" and meta["n"] == "3" and meta[CHECKSUM_KEY] == tensors_checksum(tensors)
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    data = bytearray(path.read_bytes())
    for position in (len(data) - 1, len(data) - 40):  # a bit in the last tensor, one in another
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        (tmp_path / "f.safetensors").write_bytes(bytes(flipped))
        with pytest.raises(ErasureError, match="is corrupted"):
            read_safetensors(tmp_path / "f.safetensors")
    # a changed value, name or dtype changes the checksum
    assert tensors_checksum({**tensors, "a": tensors["a"] + 1e-7}) != tensors_checksum(tensors)
    assert tensors_checksum({"z" if k == "a" else k: v for k, v in tensors.items()}) != tensors_checksum(tensors)
    assert tensors_checksum({**tensors, "b": tensors["b"].to(torch.int32)}) != tensors_checksum(tensors)


# --- a fresh interpreter: no torch for a mistake, no traceback ----------------------------------

MISTAKES_WITHOUT_TORCH = [
    ["generate", "--prompt", "a star", "--steps", "0"],
    ["generate", "--prompt", "a star", "--out", "."],
    ["erase", "--concept", "circle", "--method", "esd-x", "--set", "lr=1e30"],
    ["erase", "--concept", "circle", "--method", "ucee"],
    ["erase", "--concept", "zebra", "--evaluate"],
    ["evaluate", "--prompts", "shapeworld-shape-circl"],
    ["export", "--format", "onnx"],
    ["generate", "--prompt", "a star", "--model", "no/such/model.safetensors"],
    ["list", "--method", "esd-x"],
]


def test_mistakes_are_answered_without_importing_torch(tmp_path):
    script = ("import json, sys\nfrom erasure.cli import main\n"
              f"codes = [main(a) for a in {MISTAKES_WITHOUT_TORCH!r}]\n"
              "print(json.dumps({'codes': codes, 'torch': 'torch' in sys.modules, 'diffusers': 'diffusers' in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"codes": [2] * (len(MISTAKES_WITHOUT_TORCH) - 1) + [0], "torch": False, "diffusers": False}, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == len(MISTAKES_WITHOUT_TORCH) - 1 and all(e.startswith("error: ") for e in errors), done.stderr


def test_the_installed_command_shows_no_traceback(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    done = subprocess.run([sys.executable, "-m", "erasure.cli", "generate", "--prompt", "a star", "--out", ".",
                           "--force"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "is the current folder" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")])
def test_out_of_memory_is_one_line_and_exit_1(tiny_sd1_folder, tmp_path, monkeypatch, capsys, error):
    import erasure.generation

    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr(erasure.generation, "generate_images", exhausted)
    out = tmp_path / "out"
    code = main(["generate", "--model", str(tiny_sd1_folder), "--prompt", "a star", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and err.startswith("error: out of memory"), err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_bug_still_shows_its_traceback(monkeypatch):
    import erasure.cli

    def bug(args):
        raise ZeroDivisionError("a bug, not the user's mistake")

    monkeypatch.setattr(erasure.cli, "check_list", bug)
    with pytest.raises(ZeroDivisionError):
        main(["list"])
