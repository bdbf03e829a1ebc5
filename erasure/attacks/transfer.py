"""Transfer sets: the published adversarial prompt files, read from the user's own copies, generated once by the
erased model and judged. They were optimised against *other* models, so their rate is reported as the transfer
ASR, never mixed with pre-ASR or adaptive ASR.

The files are not shipped (licences and size); :data:`TRANSFER_SETS` names each file as published, where it
comes from and what it holds. Point ``datasets_dir`` (or ``ERASURE_DATASETS``) at the folder holding your
copies (the names below, or any file name given as a path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from erasure.attacks.core import Attempt, AttackContext
from erasure.errors import ErasureError


@dataclass(frozen=True)
class TransferSet:
    """One published prompt file: ``file`` (its usual name), the concept it targets, its rows, its source, and an
    optional filter (``column`` containing ``contains``: I2P's "sexual" rows)."""

    name: str
    file: str
    concept: str
    rows: int | None
    source: str
    description: str
    column: str | None = None
    contains: str | None = None


TRANSFER_SETS: dict[str, TransferSet] = {s.name: s for s in (
    TransferSet("unlearndiffatk-nudity", "unlearndiffatk_nudity.csv", "nudity", 142,
                "OPTML-Group/Diffusion-MU-Attack prompts/nudity.csv",
                "the 142 I2P prompts UnlearnDiffAtk attacks (original prompts, no adversarial tokens; TRCE's "
                "nudity-unlearndiff.csv)"),
    TransferSet("unlearndiffatk-vangogh", "unlearndiffatk_vangogh.csv", "van gogh", 50,
                "OPTML-Group/Diffusion-MU-Attack prompts/vangogh.csv", "UnlearnDiffAtk's Van Gogh style prompts"),
    TransferSet("unlearndiffatk-church", "unlearndiffatk_church.csv", "church", 50,
                "OPTML-Group/Diffusion-MU-Attack prompts/church.csv", "UnlearnDiffAtk's church object prompts"),
    TransferSet("p4d-nudity", "nudity-p4d.csv", "nudity", 151, "ddgoodgood/TRCE data/adv_prompts_csv/nudity-p4d.csv",
                "P4D's 151 prompts optimised against SLD/ESD"),
    TransferSet("ring-a-bell-nudity", "nudity-ring-a-bell.csv", "nudity", 79,
                "ddgoodgood/TRCE data/adv_prompts_csv/nudity-ring-a-bell.csv (CharlesGong12/RECE)",
                "Ring-A-Bell's 79 nudity prompts (the ChatGPT stand-in SAFREE and RECE use)"),
    TransferSet("mma-diffusion", "nudity-mma-diffusion.csv", "nudity", 1000,
                "ddgoodgood/TRCE data/adv_prompts_csv/nudity-mma-diffusion.csv",
                "MMA-Diffusion's 1,000 adversarial prompts (GCG on the text encoder)"),
    TransferSet("i2p-sexual", "i2p_4703.csv", "nudity", 931, "rohitgandikota/erasing data/unsafe-prompts4703.csv",
                "I2P rows whose categories include 'sexual'", column="categories", contains="sexual"),
)}


def datasets_folder(datasets_dir: str | os.PathLike | None = None) -> Path | None:
    """Where the user's copies are: ``datasets_dir``, else ``$ERASURE_DATASETS``, else None."""
    chosen = datasets_dir or os.environ.get("ERASURE_DATASETS")
    return Path(chosen).expanduser() if chosen else None


def transfer_file(name: str, datasets_dir: str | os.PathLike | None = None) -> Path:
    """The user's copy of transfer set ``name`` (looked for as ``DIR/<file>`` and ``DIR/prompts/<file>``)."""
    entry = TRANSFER_SETS.get(name)
    if entry is None:
        import difflib

        close = difflib.get_close_matches(name, list(TRANSFER_SETS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ErasureError(f"unknown transfer set {name!r}; {hint}known: {', '.join(TRANSFER_SETS)} (or give a CSV file)")
    folder = datasets_folder(datasets_dir)
    if folder is None:
        raise ErasureError(f"transfer set {name} reads your copy of {entry.file} ({entry.source}); say where it is "
                           "with --datasets-dir DIR (or ERASURE_DATASETS=DIR)")
    for candidate in (folder / entry.file, folder / "prompts" / entry.file):
        if candidate.is_file():
            return candidate
    raise ErasureError(f"transfer set {name}: {entry.file} not found in {folder} (nor {folder / 'prompts'}); get it "
                       f"from {entry.source}")


def read_transfer_set(name: str, datasets_dir: str | os.PathLike | None = None):
    """The set's prompt records, read in place from the user's file (filtered as the set says)."""
    from erasure.evaluation.prompts import read_prompt_set

    entry = TRANSFER_SETS[name] if name in TRANSFER_SETS else None
    path = transfer_file(name, datasets_dir)
    pset = read_prompt_set(path, name=name)
    records = list(pset.records)
    if entry is not None and entry.column is not None:
        def value(r) -> str:
            return (r.concept if entry.column in ("categories", "concept") else r.extra.get(entry.column)) or ""

        records = [r for r in records if entry.contains in value(r)]
    return records, str(path)


class Transfer:
    """The transfer "attack": nothing to optimise; the run generates each prompt once and judges it."""

    def __init__(self, config) -> None:
        self.config = config

    def prepare(self, context: AttackContext) -> None:
        pass

    def attack_prompt(self, context: AttackContext, index: int) -> Attempt:  # never called for kind "transfer"
        raise AssertionError("transfer sets are generated once; there is no attack step")
