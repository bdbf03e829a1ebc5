"""Prompt sets: the seeded prompts an evaluation generates images from, read from CSV.

Our one tabular format is CSV with the columns ``case_number, prompt, evaluation_seed, concept``,
optionally ``evaluation_guidance`` and ``group``, and any other columns (kept per row in ``extra``).
The reader also takes the prompt files of the literature exactly as published, whose spellings differ:

- unnamed leading index columns written by pandas (header ``""`` or ``Unnamed: 0``) are dropped;
- ``image_id`` (COCO-30k) stands for ``case_number``; without either, the row index is used;
- the concept column may be ``concept``, ``class`` (Imagenette), ``artist`` or ``categories`` (I2P);
- ``sd_seed`` / ``sd_guidance_scale`` (the Hugging Face I2P columns) stand for the evaluation columns;
- ``evaluation_guidance`` may be missing (None: the sampler's default applies);
- seeds go up to 2^32-1 (I2P), prompts may be quoted with commas or newlines, or be empty (I2P has one).

Named sets (e.g. ``shapeworld-shape-star``) are the CSVs shipped as package data in ``erasure/data/prompts/``
and read with ``importlib.resources``, so they work the same from a wheel, an editable install or a
checkout; the name is the path below ``prompts/`` with ``/`` -> ``-`` and without ``.csv``. Any CSV path
works too, installed or not. ``prompts/presets/`` holds protocol presets (see ``presets.py``).
"""

from __future__ import annotations

import csv
import difflib
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Iterator

from erasure.errors import ErasureError
from erasure.registry import Registry

# The packaged prompt folder (a Traversable: a directory on disk for every ordinary install).
PACKAGED_PROMPTS: Traversable = resources.files("erasure.data") / "prompts"

# Accepted spellings of each standard column, most preferred first (headers compare case-insensitively).
# When several are present, the first wins and the others stay in ``extra``.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "case_number": ("case_number", "image_id"),
    "prompt": ("prompt",),
    "evaluation_seed": ("evaluation_seed", "sd_seed", "seed"),
    "evaluation_guidance": ("evaluation_guidance", "sd_guidance_scale", "guidance_scale", "guidance"),
    "concept": ("concept", "class", "artist", "categories"),
    "group": ("group",),
}
_INDEX_HEADER = re.compile(r"(unnamed: \d+(\.\d+)?)?")  # pandas' unnamed index columns


@dataclass(frozen=True)
class PromptRecord:
    """One prompt to generate: one image per record, from ``evaluation_seed``.

    ``concept`` is the concept the row is about (Imagenette class, artist, I2P categories as written,
    or for our own sets the concept under test); ``group`` its role in the set (e.g. ``target``);
    ``extra`` the file's other columns as strings (e.g. I2P's ``nudity_percentage``); treat it as
    read-only (it is left out of the hash).
    """

    case_number: int
    prompt: str
    evaluation_seed: int
    concept: str | None = None
    evaluation_guidance: float | None = None
    group: str | None = None
    extra: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class PromptSet:
    """A named, ordered collection of prompt records, with where it came from."""

    name: str
    records: tuple[PromptRecord, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PromptRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> PromptRecord:
        return self.records[index]

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.records]

    @property
    def seeds(self) -> list[int]:
        return [r.evaluation_seed for r in self.records]

    def concepts(self) -> tuple[str, ...]:
        """Distinct concepts, in order of first appearance (None left out)."""
        return tuple(dict.fromkeys(r.concept for r in self.records if r.concept is not None))

    def groups(self) -> tuple[str, ...]:
        """Distinct groups, in order of first appearance (None left out)."""
        return tuple(dict.fromkeys(r.group for r in self.records if r.group is not None))

    def extra_columns(self) -> tuple[str, ...]:
        """Names of the extra columns, in order of first appearance."""
        return tuple(dict.fromkeys(k for r in self.records for k in r.extra))

    def filter(self, *, concept: str | None = None, group: str | None = None) -> PromptSet:
        """The records with this concept and/or group; a value absent from the set is an error."""
        for label, value, present in (("concept", concept, self.concepts()), ("group", group, self.groups())):
            if value is not None and value not in present:
                raise ErasureError(_not_found(f"{label} '{value}' in prompt set '{self.name}'", value, present))
        kept = tuple(
            r for r in self.records
            if (concept is None or r.concept == concept) and (group is None or r.group == group)
        )
        return replace(self, records=kept)

    def head(self, per_group: int) -> PromptSet:
        """The first ``per_group`` records of every group (a quick look at a big set; name says so)."""
        if per_group < 1:
            raise ErasureError(f"per_group must be >= 1 (got {per_group})")
        counts: dict[str | None, int] = {}
        kept = []
        for r in self.records:
            counts[r.group] = counts.get(r.group, 0) + 1
            if counts[r.group] <= per_group:
                kept.append(r)
        return replace(self, name=f"{self.name}[:{per_group} per group]", records=tuple(kept))

    def to_csv(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write in our CSV format, atomically (temp file, then rename); returns the path.

        Columns: case_number, prompt, evaluation_seed, concept, then evaluation_guidance and group
        when any record has them, then the extra columns.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise ErasureError(f"{path} already exists; choose another path or pass overwrite=True")
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = ["case_number", "prompt", "evaluation_seed", "concept"]
        if any(r.evaluation_guidance is not None for r in self.records):
            columns.append("evaluation_guidance")
        if any(r.group is not None for r in self.records):
            columns.append("group")
        extras = [c for c in self.extra_columns() if c not in columns]
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(columns + extras)
                for r in self.records:
                    standard = {
                        "case_number": r.case_number, "prompt": r.prompt, "evaluation_seed": r.evaluation_seed,
                        "concept": r.concept or "", "group": r.group or "",
                        "evaluation_guidance": "" if r.evaluation_guidance is None else repr(r.evaluation_guidance),
                    }
                    writer.writerow([standard[c] for c in columns] + [r.extra.get(c, "") for c in extras])
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def read_prompt_set(
    path_or_name: str | Path | Traversable,
    *,
    default_seed: int | None = None,
    name: str | None = None,
) -> PromptSet:
    """Read a prompt CSV (any of the literature's spellings) or a named set such as ``shapeworld-shape-star``.

    ``default_seed`` fills a missing seed column or empty seed cells (otherwise they are an error).
    ``name`` overrides the set's name (default: the registered name, or the file's stem).
    A file that cannot be read raises ErasureError with one line naming the file and the problem.
    """
    if not isinstance(path_or_name, (str, Path)):  # a packaged file, e.g. from prompt_sets().get(name)
        return _read_csv(path_or_name, name=name or Path(path_or_name.name).stem, default_seed=default_seed)
    text = str(path_or_name)
    looks_like_path = isinstance(path_or_name, Path) or text.endswith(".csv") or os.sep in text or "/" in text
    if looks_like_path or Path(text).is_file():
        path = Path(text).expanduser()
        return _read_csv(path, name=name or path.stem, default_seed=default_seed)
    path = prompt_sets().get(text)
    return _read_csv(path, name=name or text, default_seed=default_seed)


_PROMPT_SETS: Registry[Path | Traversable] = Registry("prompt set")
_scanned = False


def prompt_sets() -> Registry[Path | Traversable]:
    """The registry of named prompt sets (name -> CSV file), filled from the packaged ``prompts/`` on first use.

    Register your own with ``prompt_sets().register("my-set", Path("my.csv"))``.
    """
    global _scanned
    if not _scanned:
        if not PACKAGED_PROMPTS.is_dir():
            raise ErasureError(f"the packaged prompt sets are missing from {PACKAGED_PROMPTS} (a broken install?); "
                               "reinstall erasure, or pass the path of a CSV file instead")
        for relative, csv_file in packaged_files(PACKAGED_PROMPTS, ".csv"):
            if relative[0] == "presets":
                continue
            set_name = "-".join(relative)
            if set_name not in _PROMPT_SETS:
                _PROMPT_SETS.register(set_name, csv_file)
        _scanned = True
    return _PROMPT_SETS


def packaged_files(root: Traversable, suffix: str) -> list[tuple[tuple[str, ...], Traversable]]:
    """Every file below ``root`` ending in ``suffix``, as (path parts without the suffix, file), sorted.

    Walks with the Traversable API only (``iterdir``), which ``importlib.resources`` guarantees for any
    install, where ``Path.rglob`` would assume the package lies on disk.
    """
    found: list[tuple[tuple[str, ...], Traversable]] = []

    def walk(folder: Traversable, parts: tuple[str, ...]) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, (*parts, entry.name))
            elif entry.name.endswith(suffix):
                found.append(((*parts, entry.name[: -len(suffix)]), entry))

    walk(root, ())
    return sorted(found, key=lambda item: item[0])


def prompt_set_names() -> tuple[str, ...]:
    """Names of the registered prompt sets, sorted."""
    return prompt_sets().names()


def _read_csv(path: Path | Traversable, *, name: str, default_seed: int | None) -> PromptSet:
    if not path.is_file():
        hint = "it is a folder" if path.is_dir() else "no such file"
        raise ErasureError(f"cannot read prompt file {path}: {hint}; give the path of a CSV file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return _parse(csv.reader(fh), path, name=name, default_seed=default_seed)
    except UnicodeDecodeError as e:
        raise ErasureError(
            f"prompt file {path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 CSV"
        ) from None
    except csv.Error as e:
        raise ErasureError(f"prompt file {path} is not valid CSV ({e}); check its quoting") from None


def _parse(reader, path: Path | Traversable, *, name: str, default_seed: int | None) -> PromptSet:
    header = [h.strip() for h in next(reader, [])]
    if not header:
        raise ErasureError(f"prompt file {path} is empty; it needs a header row with at least a 'prompt' column")
    index_of = _standard_columns(path, header)
    if "evaluation_seed" not in index_of and default_seed is None:
        raise ErasureError(
            f"prompt file {path} has no seed column (evaluation_seed); add one or pass default_seed "
            f"(columns found: {', '.join(repr(h) for h in header)})"
        )
    dropped = {i for i, h in enumerate(header) if _INDEX_HEADER.fullmatch(h.lower())}
    used = set(index_of.values())
    extra_columns = [(i, h) for i, h in enumerate(header) if i not in used and i not in dropped]

    def cell(row: list[str], column: str) -> str | None:
        return row[index_of[column]] if column in index_of else None

    records: list[PromptRecord] = []
    for row in reader:
        if not row:  # a blank line carries no record
            continue
        where = f"{path}, line {reader.line_num}"
        if len(row) != len(header):
            raise ErasureError(f"{where} has {len(row)} fields but the header has {len(header)}; check its quoting")
        raw_case = cell(row, "case_number")
        records.append(PromptRecord(
            case_number=len(records) if raw_case is None else _to_int(raw_case, "case_number", where, None),
            prompt=row[index_of["prompt"]],
            evaluation_seed=_to_int(cell(row, "evaluation_seed") or "", "evaluation_seed", where, default_seed),
            concept=(cell(row, "concept") or "").strip() or None,
            evaluation_guidance=_to_float(cell(row, "evaluation_guidance"), where),
            group=(cell(row, "group") or "").strip() or None,
            extra={h: row[i] for i, h in extra_columns},
        ))
    if not records:
        raise ErasureError(f"prompt file {path} has a header but no rows; add at least one prompt")
    return PromptSet(name=name, records=tuple(records), source=str(path))


def _standard_columns(path: Path | Traversable, header: list[str]) -> dict[str, int]:
    """Map each standard column to its index in ``header`` (first alias present wins)."""
    lowered = [h.lower() for h in header]
    duplicates = sorted({h for h in lowered if h and lowered.count(h) > 1})
    if duplicates:
        raise ErasureError(f"prompt file {path} repeats the column(s) {', '.join(duplicates)}; keep one of each")
    index_of: dict[str, int] = {}
    for column, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in lowered:
                index_of[column] = lowered.index(alias)
                break
    if "prompt" not in index_of:
        close = [header[lowered.index(c)] for c in _close(lowered, "prompt")]
        hint = f"did you mean '{close[0]}'? " if close else ""
        found = ", ".join(repr(h) for h in header)
        raise ErasureError(f"prompt file {path} has no 'prompt' column; {hint}columns found: {found}")
    return index_of


def _to_int(text: str, column: str, line: str, default: int | None) -> int:
    text = text.strip()
    if not text:
        if default is not None:
            return int(default)
        fix = "fill it in or pass default_seed" if column == "evaluation_seed" else "fill it in or drop the column"
        raise ErasureError(f"{line}: empty {column}; {fix}")
    try:
        value = int(text)
    except ValueError:
        try:  # pandas writes integer columns holding NaNs as floats ("1234.0")
            number = float(text)
        except ValueError:
            number = float("nan")
        if not number.is_integer():
            raise ErasureError(f"{line}: {column} {text!r} is not a whole number") from None
        value = int(number)
    if value < 0:
        raise ErasureError(f"{line}: {column} {value} is negative; use a number >= 0")
    return value


def _to_float(text: str | None, line: str) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ErasureError(f"{line}: evaluation_guidance {text!r} is not a number") from None


def _close(options: list[str] | tuple[str, ...], value: str) -> list[str]:
    return difflib.get_close_matches(value.lower(), [o.lower() for o in options], n=1, cutoff=0.6)


def _not_found(what: str, value: str, present: tuple[str, ...]) -> str:
    lowered = {p.lower(): p for p in present}
    close = _close(list(lowered), value)
    hint = f"did you mean '{lowered[close[0]]}'? " if close else ""
    shown = ", ".join(present[:12]) + (f", ... ({len(present) - 12} more)" if len(present) > 12 else "")
    return f"no {what}; {hint}present: {shown or 'none'}"
