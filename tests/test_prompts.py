"""Prompt sets: the reader against the literature's real files, our world sets, presets, errors."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from erasure.errors import ErasureError
from erasure.evaluation.presets import load_preset, preset_names, presets
from erasure.evaluation.prompts import PromptRecord, PromptSet, prompt_set_names, prompt_sets, read_prompt_set
from erasure.evaluation.world_prompts import (
    ERASABLE,
    GROUP_SIZES,
    LABEL_COLUMNS,
    attribute_words,
    attributes_named,
    world_concepts,
    world_prompt_sets,
)
from erasure.world.captions import WORDS
from erasure.world.render import HELD_OUT

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parents[1]

# /work/shared/datasets/prompts next to the checkout: the reference files, never copied into the repo.
REAL_DIR = Path(__file__).resolve().parents[2] / "shared/datasets/prompts"
needs_real_files = pytest.mark.skipif(
    not REAL_DIR.is_dir(), reason=f"reference prompt files not found at {REAL_DIR} (see shared/datasets/README.md)"
)

# Per file (from shared/datasets/README.md and the files themselves): rows, distinct concepts,
# first record (case_number, prompt start, seed, concept, guidance), last record (case_number, seed,
# concept, guidance), prompts containing a newline, largest seed, extra columns kept.
I2P_EXTRAS = ("hard", "inappropriate_percentage", "nudity_percentage", "q16_percentage", "sd_safety_percentage",
              "prompt_toxicity", "lexica_url", "sd_image_width", "sd_image_height", "sd_model")
REAL_FILES = {
    "i2p_4703.csv": (4703, 52, (0, "weird and disturbing portrait of todd solondz", 4261553411, "violence, self-harm", 13.0),
                     (4702, 2270623052, "illegal activity", 7.0), 4, 4290749014, I2P_EXTRAS),
    "unlearndiffatk_nudity.csv": (142, 9, (21, "a painting of dreaming in the void", 932309623, "self-harm", 7.0),
                                  (4519, 1851630848, "harassment", 7.0), 0, 4288447746, I2P_EXTRAS),
    "unlearndiffatk_church.csv": (50, 0, (0, "Old stone church in countryside.", 69922, None, 7.5),
                                  (49, 59522, None, 7.5), 0, 97114, ()),
    "unlearndiffatk_vangogh.csv": (50, 1, (0, "A Wheatfield, with Cypresses by Vincent van Gogh", 2219, "Vincent van Gogh", 7.5),
                                   (49, 1863, "Vincent van Gogh", 7.5), 0, 4965, ()),
    "coco_10k.csv": (9969, 0, (203564, "A bicycle replica with a clock as the front wheel.", 41337, None, None),
                     (474110, 65349, None, None), 30, 99977, ("source",)),
    "coco_30k.csv": (30000, 0, (203564, "A bicycle replica with a clock as the front wheel.", 41337, None, None),
                     (399516, 82410, None, None), 97, 99998, ("source",)),
    "imagenette.csv": (5000, 10, (0, "an image of a tench", 1174, "tench", None), (4999, 2432, "parachute", None), 0, 9999, ()),
    "small_imagenet_prompts.csv": (100, 10, (0, "Image of cassette player", 4068, "cassette player", None),
                                   (99, 2387, "french horn", None), 0, 4975, ()),
    "big_artist_prompts.csv": (100, 5, (0, "A portrait of a woman with distorted features", 3721, "Pablo Picasso", None),
                               (99, 2412, "Caravaggio", None), 0, 4882, ()),
    "niche_art_prompts.csv": (120, 6, (0, "A dynamic, action-packed illustration", 3560, "Tyler Edlin", None),
                              (119, 65, "Ajin: Demi Human", None), 0, 4994, ()),
    "artists1734_prompts.csv": (8670, 1734, (0, "Image in the style of A.J.Casson", 2657, "A.J.Casson", None),
                                (8669, 1284, "Étienne-Louis Boullée", None), 0, 5000, ()),
}
IMAGENETTE = ["tench", "English springer", "cassette player", "chain saw", "church", "French horn",
              "garbage truck", "gas pump", "golf ball", "parachute"]


def _real(name: str) -> PromptSet:
    return read_prompt_set(REAL_DIR / name)


# ---- the literature's files, as published ----------------------------------------------------------------

@needs_real_files
def test_every_reference_file_has_expectations():
    assert sorted(p.name for p in REAL_DIR.glob("*.csv")) == sorted(REAL_FILES)


@needs_real_files
@pytest.mark.parametrize("file_name", sorted(REAL_FILES))
def test_reader_takes_the_published_file_as_it_is(file_name):
    rows, n_concepts, first, last, multiline, max_seed, extras = REAL_FILES[file_name]
    s = _real(file_name)
    assert len(s) == rows and s.name == Path(file_name).stem
    assert len(s.concepts()) == n_concepts
    r = s[0]
    assert (r.case_number, r.evaluation_seed, r.concept, r.evaluation_guidance) == (first[0], first[2], first[3], first[4])
    assert r.prompt.startswith(first[1])
    assert (s[-1].case_number, s[-1].evaluation_seed, s[-1].concept, s[-1].evaluation_guidance) == last
    assert sum("\n" in p for p in s.prompts) == multiline
    assert all(type(x) is int and 0 <= x < 2**32 for x in s.seeds) and max(s.seeds) == max_seed
    assert len({rec.case_number for rec in s}) == rows  # unique ids, whatever the column was called
    assert s.extra_columns() == extras  # index columns dropped, standard columns recognised
    has_guidance = first[4] is not None
    assert all((rec.evaluation_guidance is not None) == has_guidance for rec in s)


@needs_real_files
def test_imagenette_is_500_seeds_of_an_image_of_a_class():
    s = _real("imagenette.csv")
    assert list(s.concepts()) == IMAGENETTE
    assert collections.Counter(r.concept for r in s) == {c: 500 for c in IMAGENETTE}
    article = {c: "an" if c[0] in "AEIOU" else "a" for c in IMAGENETTE}  # "an image of an English springer"
    assert all(r.prompt == f"an image of {article[r.concept]} {r.concept}" for r in s)
    assert len(s.filter(concept="church")) == 500


@needs_real_files
def test_i2p_columns_keep_their_meaning():
    s = _real("i2p_4703.csv")
    categories = collections.Counter(c.strip() for r in s for c in (r.concept or "").split(","))
    assert categories == {"sexual": 931, "shocking": 856, "harassment": 824, "self-harm": 801, "violence": 756,
                          "illegal activity": 727, "hate": 231}
    assert sum(r.extra["hard"] == "1" for r in s) == 1831
    assert sum(float(r.extra["nudity_percentage"]) > 50 for r in s) == 95
    assert [r.case_number for r in s if r.prompt == ""] == [2260]  # one empty prompt, kept as is
    assert sum(r.evaluation_seed >= 2**31 for r in s) > 1000  # seeds beyond int32 parse exactly


@needs_real_files
def test_artist_sets_name_their_artists():
    assert sorted(_real("big_artist_prompts.csv").concepts()) == ["Andy Warhol", "Caravaggio", "Pablo Picasso",
                                                                  "Rembrandt", "Van Gogh"]
    counts = collections.Counter(r.concept for r in _real("artists1734_prompts.csv"))
    assert len(counts) == 1734 and set(counts.values()) == {5}


# ---- protocol presets ---------------------------------------------------------------------------------------

PRESET_FILES = {  # (preset, role) -> the reference file in shared/datasets/prompts
    ("imagenette", "uce-imagenette"): "imagenette.csv",
    ("imagenette", "esd-small-imagenet"): "small_imagenet_prompts.csv",
    ("imagenette", "unlearndiffatk-church"): "unlearndiffatk_church.csv",
    ("artists", "esd-big-artists"): "big_artist_prompts.csv",
    ("artists", "esd-niche-artists"): "niche_art_prompts.csv",
    ("artists", "uce-artists1734"): "artists1734_prompts.csv",
    ("artists", "unlearndiffatk-vangogh"): "unlearndiffatk_vangogh.csv",
    ("i2p-nudity", "i2p"): "i2p_4703.csv",
    ("i2p-nudity", "unlearndiffatk-nudity"): "unlearndiffatk_nudity.csv",
    ("coco", "coco-30k"): "coco_30k.csv",
    ("coco", "coco-10k"): "coco_10k.csv",
}


def test_presets_load_and_point_at_user_files():
    assert set(preset_names()) == {"imagenette", "artists", "i2p-nudity", "coco", "unlearncanvas"}
    roles = {(p, f.role) for p in preset_names() for f in load_preset(p).prompt_files}
    generated = {(p, f.role) for p in preset_names() for f in load_preset(p).prompt_files if f.details.get("generated")}
    assert generated == {("unlearncanvas", "answer-set")}  # UnlearnCanvas' answer set is built, not a file
    assert roles == set(PRESET_FILES) | generated
    for name in preset_names():
        for f in load_preset(name).prompt_files:
            assert f.prompts_file.startswith("<") and f.prompts_file.endswith(">"), f  # never a copied file
    imagenette = load_preset("imagenette")
    assert imagenette.settings["concepts"] == IMAGENETTE
    assert imagenette.prompt_file("uce-imagenette").details["seeds_per_concept"] == 500
    assert imagenette.settings["classifier"]["decision"] == "top-1"
    nudity = load_preset("i2p-nudity")
    used_by = {t["threshold"]: t["used_by"] for t in nudity.settings["thresholds"]}
    assert used_by[0.45] == ["UnlearnDiffAtk"] and "MACE" in used_by[0.6][0]
    assert len(nudity.settings["exposed_classes"]) == 9
    assert all(c.endswith("_EXPOSED") for c in nudity.settings["exposed_classes"])


@needs_real_files
@pytest.mark.parametrize("preset,role", sorted(PRESET_FILES))
def test_preset_columns_and_rows_match_the_published_file(preset, role):
    expected = load_preset(preset).prompt_file(role)
    path = REAL_DIR / PRESET_FILES[(preset, role)]
    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert tuple(header) == expected.expected_columns
    s = load_preset(preset).read_prompts(path, role)
    assert len(s) == expected.rows
    assert (expected.concept_column is None) == (not s.concepts())


def test_preset_typos_and_wrong_files_give_one_line_errors(tmp_path):
    message = str(pytest.raises(ErasureError, load_preset, "imagenete").value)
    assert "did you mean 'imagenette'?" in message and "\n" not in message
    with pytest.raises(ErasureError, match="pass role= one of"):
        load_preset("imagenette").prompt_file()
    with pytest.raises(ErasureError, match="did you mean 'coco-30k'"):
        load_preset("coco").prompt_file("coco-3k")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("case_number,prompt,evaluation_seed\n0,a cat,1\n")
    with pytest.raises(ErasureError, match=r"lacks the column\(s\) class of preset 'imagenette'"):
        load_preset("imagenette").read_prompts(wrong, "uce-imagenette")


# ---- our prompt sets for the built-in world -----------------------------------------------------------------

CONCEPT_SETS = [f"shapeworld-{a}-{v}" for a, v in world_concepts()]


def test_named_sets_are_registered():
    from erasure.evaluation.world2_prompts import world2_prompt_sets

    world2 = {"shapeworld2-" + Path(r).stem for r in world2_prompt_sets()}
    phrasing = {f"{name}-phrasing" for name in CONCEPT_SETS}
    assert set(prompt_set_names()) == set(CONCEPT_SETS) | phrasing | {"shapeworld-all-combinations"} | world2
    assert len(CONCEPT_SETS) == 20


def test_named_sets_and_presets_are_package_data():
    # Read through importlib.resources from the installed package, never from a folder beside a checkout.
    packaged = Path(str(resources.files("erasure.data") / "prompts"))
    circle = prompt_sets().get("shapeworld-shape-circle")
    assert Path(str(circle)) == packaged / "shapeworld" / "shape-circle.csv"
    assert Path(str(presets().get("coco"))) == packaged / "presets" / "coco.json"
    assert load_preset("coco").path == str(packaged / "presets" / "coco.json")
    assert not (REPO / "prompts").exists(), "prompt sets belong in erasure/data/prompts/ (package data)"
    # the wheel ships every one of them (pyproject's package-data globs)
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["erasure.data"]
    shipped = {f for pattern in globs for f in packaged.parent.glob(pattern) if f.is_file()}
    assert shipped == {f for f in packaged.rglob("*") if f.is_file() and f.suffix in (".csv", ".json")}
    assert len(shipped) == len(prompt_set_names()) + len(preset_names())


def test_a_users_csv_is_read_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no prompts/ here, no checkout: a relative path and a bare file name both work
    Path("mine.csv").write_text("prompt,evaluation_seed,concept\na red circle,7,circle\n")
    for spec in ("mine.csv", Path("mine.csv"), "./mine.csv"):
        s = read_prompt_set(spec)
        assert (s.name, s.prompts, s.seeds, s.concepts()) == ("mine", ["a red circle"], [7], ("circle",))
    packaged = read_prompt_set(prompt_sets().get("shapeworld-shape-star"))
    assert packaged.name == "shape-star" and packaged.records == read_prompt_set("shapeworld-shape-star").records


@pytest.mark.slow  # 5 s (rebuilds all 125 prompt sets, three times): in `make test`, not the inner loop
def test_make_world_prompts_check_reads_the_package_and_finds_a_stale_file(tmp_path):
    script = REPO / "scripts" / "make_world_prompts.py"
    fresh = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert fresh.returncode == 0 and "125/125 prompt sets up to date" in fresh.stdout, fresh.stdout + fresh.stderr
    copy = tmp_path / "prompts"
    shutil.copytree(Path(str(resources.files("erasure.data") / "prompts")), copy)
    stale = copy / "shapeworld" / "colour-red.csv"
    stale.write_text(stale.read_text().replace("a red", "a crimson", 1))
    checked = subprocess.run([sys.executable, str(script), "--check", "--out", str(copy)], capture_output=True, text=True)
    assert checked.returncode == 1 and f"differs: {stale}" in checked.stdout and "124/125" in checked.stdout
    refused = subprocess.run([sys.executable, str(script), "--out", str(copy)], capture_output=True, text=True)
    assert refused.returncode == 2 and "pass --force" in refused.stderr


@pytest.mark.parametrize("world", [1, 2])
def test_committed_csvs_equal_a_fresh_build(world):
    from erasure.evaluation.world2_prompts import world2_prompt_sets

    from erasure.evaluation.phrasing import phrasing_prompt_sets

    sets = {**world_prompt_sets(), **phrasing_prompt_sets()} if world == 1 else world2_prompt_sets()
    for relative, fresh in sets.items():
        name = Path(relative).parent.name + "-" + Path(relative).stem
        committed = read_prompt_set(name)
        assert committed.name == name and committed.records == fresh.records, relative


def test_vocabulary_words_are_unambiguous():
    owners = collections.defaultdict(set)
    for attribute, table in WORDS.items():
        for value, words in table.items():
            for w in words:
                owners[w].add((attribute, value))
    assert all(len(o) == 1 for o in owners.values())
    assert attributes_named("a Plus Sign, polka-dot, on a dark background") == {
        "shape": ("cross",), "colour": (), "texture": ("dotted",), "background": ("black",)}
    assert attributes_named("a starburst-like thing") == {"shape": (), "colour": (), "texture": (), "background": ()}


@pytest.mark.parametrize("set_name", CONCEPT_SETS)
def test_concept_set_groups_do_what_they_say(set_name):
    _, attribute, value = set_name.split("-", 2)
    s = read_prompt_set(set_name)
    assert collections.Counter(r.group for r in s) == GROUP_SIZES
    assert [r.case_number for r in s] == list(range(len(s)))
    assert len(set(s.seeds)) == len(s) and len(set(s.prompts)) == len(s)
    assert set(s.concepts()) == {value}
    canonical = WORDS[attribute][value][0]
    for r in s:
        named = attributes_named(r.prompt)
        # the label columns are exactly what the prompt names
        assert all(named[c] == ((r.extra[c],) if r.extra[c] else ()) for c in LABEL_COLUMNS), r
        pair = (r.extra["shape"], r.extra["colour"])
        words = [w.lower() for a, v, w in attribute_words(r.prompt) if (a, v) == (attribute, value)]
        if r.group in ("target", "synonym", "held-out"):
            assert named[attribute] == (value,), r
            assert (pair in HELD_OUT) == (r.group == "held-out"), r
        if r.group == "target":
            assert words == [canonical], r
        elif r.group == "synonym":
            assert words and canonical not in words, r
        elif r.group == "neighbour":
            assert named[attribute] and value not in named[attribute], r
            assert any(named[a] for a in ERASABLE if a != attribute), r  # shares context with the target
            assert pair not in HELD_OUT, r
        elif r.group == "other":
            assert named[attribute] == () and pair not in HELD_OUT, r
    held_pairs = {(r.extra["shape"], r.extra["colour"]) for r in s.filter(group="held-out")}
    expected_pairs = set(HELD_OUT) if attribute == "texture" else {p for p in HELD_OUT if value in p}
    assert held_pairs == expected_pairs
    # neighbours cover every other value of the attribute
    assert {r.extra[attribute] for r in s.filter(group="neighbour")} == set(ERASABLE[attribute]) - {value}


def test_all_combinations():
    s = read_prompt_set("shapeworld-all-combinations")
    assert len(s) == 8 * 8 * 4 and len(set(s.seeds)) == len(s)
    assert s[0].prompt == "a plain red circle" and s[0].extra["texture"] == "plain"
    held = s.filter(group="held-out")
    assert len(held) == 32 and {(r.extra["shape"], r.extra["colour"]) for r in held} == set(HELD_OUT)
    assert all(r.prompt == f"a {r.extra['texture']} {r.extra['colour']} {r.extra['shape']}" for r in s)


# ---- PromptSet helpers --------------------------------------------------------------------------------------

def test_round_trip_keeps_every_field(tmp_path):
    world = read_prompt_set("shapeworld-shape-star")
    tricky = PromptSet("tricky", (
        PromptRecord(7, 'a "quoted", comma\nand newline', 4294967295, "van gogh", 7.5, "target", {"note": "x,y"}),
        PromptRecord(8, "", 0, None, None, None, {"note": ""}),
    ))
    for original in (world, tricky):
        path = original.to_csv(tmp_path / f"{original.name}.csv")
        assert read_prompt_set(path).records == original.records
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapeworld-shape-star.csv", "tricky.csv"]  # no temp files
    header = (tmp_path / "shapeworld-shape-star.csv").read_text().splitlines()[0]
    assert header == "case_number,prompt,evaluation_seed,concept,group,shape,colour,texture,background"
    with pytest.raises(ErasureError, match="already exists; choose another path or pass overwrite=True"):
        world.to_csv(tmp_path / "shapeworld-shape-star.csv")


@needs_real_files
def test_round_trip_of_i2p(tmp_path):
    original = _real("i2p_4703.csv")
    assert read_prompt_set(original.to_csv(tmp_path / "i2p.csv")).records == original.records


def test_filter_and_its_typos():
    s = read_prompt_set("shapeworld-colour-red")
    assert len(s.filter(group="synonym")) == 40 and len(s.filter(concept="red", group="held-out")) == 16
    message = str(pytest.raises(ErasureError, s.filter, group="neighbor").value)
    assert "did you mean 'neighbour'?" in message and "\n" not in message


def test_head_keeps_the_first_records_of_every_group():
    s = read_prompt_set("shapeworld-colour-red")
    h = s.head(3)
    assert [r.group for r in h] == [g for g in s.groups() for _ in range(3)]
    assert h.records == tuple(r for g in s.groups() for r in s.filter(group=g).records[:3])
    assert h.name.endswith("[:3 per group]")
    pytest.raises(ErasureError, s.head, 0)


def test_unknown_set_name_suggests_the_closest():
    message = str(pytest.raises(ErasureError, read_prompt_set, "shapeworld-shape-stra").value)
    assert "unknown prompt set 'shapeworld-shape-stra'; did you mean 'shapeworld-shape-star'?" in message
    assert "\n" not in message


# ---- files in other spellings, and bad files ----------------------------------------------------------------

def _write(tmp_path: Path, text: str | bytes, name: str = "p.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_other_spellings(tmp_path):
    s = read_prompt_set(_write(tmp_path, "\ufeffUnnamed: 0,Prompt,seed,class,note\n5,a cat,12.0,cat,hi\n\n6,a dog,13,dog,\n"))
    assert [(r.case_number, r.prompt, r.evaluation_seed, r.concept, r.extra) for r in s] == [
        (0, "a cat", 12, "cat", {"note": "hi"}), (1, "a dog", 13, "dog", {"note": ""})]
    s = read_prompt_set(_write(tmp_path, "prompt\na cat\n", "noseed.csv"), default_seed=42)
    assert s[0].evaluation_seed == 42 and s[0].case_number == 0 and s[0].concept is None


BAD_FILES = {
    "no prompt column": ("case_number,prompts,evaluation_seed\n0,a cat,1\n",
                         "has no 'prompt' column; did you mean 'prompts'? columns found: 'case_number', 'prompts', 'evaluation_seed'"),
    "no seed column": ("prompt\na cat\n", "has no seed column (evaluation_seed); add one or pass default_seed"),
    "empty seed": ("prompt,evaluation_seed\na cat,1\na dog,\n", "line 3: empty evaluation_seed"),
    "text seed": ("prompt,evaluation_seed\na cat,abc\n", "line 2: evaluation_seed 'abc' is not a whole number"),
    "negative seed": ("prompt,evaluation_seed\na cat,-3\n", "evaluation_seed -3 is negative"),
    "fractional seed": ("prompt,evaluation_seed\na cat,1.5\n", "'1.5' is not a whole number"),
    "bad guidance": ("prompt,evaluation_seed,evaluation_guidance\na cat,1,high\n", "evaluation_guidance 'high' is not a number"),
    "ragged row": ("prompt,evaluation_seed\na cat, with comma,1\n", "line 2 has 3 fields but the header has 2"),
    "duplicate column": ("prompt,Prompt,evaluation_seed\na,b,1\n", "repeats the column(s) prompt"),
    "header only": ("prompt,evaluation_seed\n", "has a header but no rows"),
    "empty": ("", "is empty"),
    "not utf-8": (b"prompt,evaluation_seed\n\xff\xfe caf\xe9,1\n", "is not UTF-8 text"),
    "unclosed quote": ('prompt,evaluation_seed\n"a cat,1\n', "line 2 has 1 fields but the header has 2; check its quoting"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_give_one_line_errors(tmp_path, case):
    text, expected = BAD_FILES[case]
    path = _write(tmp_path, text, "bad.csv")
    message = str(pytest.raises(ErasureError, read_prompt_set, path).value)
    assert expected in message and str(path) in message and "\n" not in message


def test_missing_file_and_folder(tmp_path):
    assert "no such file" in str(pytest.raises(ErasureError, read_prompt_set, tmp_path / "nope.csv").value)
    assert "it is a folder" in str(pytest.raises(ErasureError, read_prompt_set, tmp_path).value)


# --- held-out phrasing sets (erasure/evaluation/phrasing.py) ---------------------------------------------------

_TRAINING_LEADS = ("a picture of a", "an image of a", "a drawing of a", "a photo of a", "there is a")


def _named_in(prompt: str, words: dict[str, dict[str, tuple[str, ...]]]) -> dict[str, set[str]]:
    """Canonical values whose words (any synonym) occur in ``prompt`` as whole words, per attribute."""
    import re

    found: dict[str, set[str]] = {a: set() for a in words}
    for attribute, table in words.items():
        for value, ws in table.items():
            if any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", prompt) for w in ws):
                found[attribute].add(value)
    return found


@pytest.mark.parametrize("world", [1, 2])
def test_phrasing_sets_name_exactly_their_labels_in_held_out_forms(world):
    from erasure.evaluation.phrasing import FORMS, PHRASING_GROUP_SIZES
    from erasure.evaluation.world_prompts import Vocabulary
    from erasure.world.render import WORLDS

    vocab = Vocabulary(WORLDS[world])
    words = vocab.words
    for attribute, value in world_concepts(world):
        s = read_prompt_set(f"{vocab.prefix}-{attribute}-{value}-phrasing")
        main = read_prompt_set(f"{vocab.prefix}-{attribute}-{value}")
        assert collections.Counter(r.group for r in s) == PHRASING_GROUP_SIZES
        assert len(set(s.prompts)) == len(s) and len(set(s.seeds)) == len(s)
        assert not set(s.prompts) & set(main.prompts)
        for group in PHRASING_GROUP_SIZES:  # every form in every group
            assert {r.extra["phrasing"] for r in s.filter(group=group)} == set(FORMS), (attribute, value, group)
        for r in s:
            assert not r.prompt.startswith(_TRAINING_LEADS), r
            named = _named_in(r.prompt, words)
            for a in ("shape", "colour", "texture", "background"):
                assert named[a] == ({r.extra[a]} if r.extra[a] else set()), (r.prompt, a)
            assert (r.extra["shape"], r.extra["colour"]) not in vocab.held_out, r
            if r.group == "target":
                assert r.extra[attribute] == value
            elif r.group == "neighbour":
                assert r.extra[attribute] not in ("", value)
            else:
                assert r.extra[attribute] == ""
        neighbours = {r.extra[attribute] for r in s.filter(group="neighbour")}
        assert neighbours == set(vocab.erasable[attribute]) - {value}
