"""The experiment loop (erasure.experiments): base and results measured the same way, the pipeline restored,
rows resumed by their config's hash, tables written, docs tables replaced between markers only."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import erasure.experiments as experiments
from erasure import ErasureError
from erasure.experiments import (
    Measure,
    Variant,
    markdown_table,
    parse_variant,
    replace_between_markers,
    run_experiment,
    write_docs_table,
    write_tables,
)

pytestmark = pytest.mark.fast

CONCEPT = "red star"


@pytest.fixture(scope="module")
def sd1(built_pipeline):
    return built_pipeline("sd1")


def _output_norm(pipe) -> float:
    """A deterministic measurement: the norm of the UNet's prediction for the concept on fixed noise."""
    from erasure.text import encode_prompts

    x = torch.randn(1, pipe.unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = pipe.unet(x, torch.tensor([500]), encoder_hidden_states=encode_prompts(pipe, [CONCEPT])).sample
    return float(eps.norm())


class _Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, pipe):
        self.calls += 1
        return {"norm": {"value": _output_norm(pipe), "ci_low": None, "ci_high": None}}


def _variants(guide=""):
    return [Variant("unedited", None),
            Variant("uce", "uce", (CONCEPT,), {"guide": guide, "preserve": ()}),
            Variant("uce again", "uce", (CONCEPT,), {"guide": guide, "preserve": ()})]


def test_base_and_results_measured_alike_pipeline_restored_and_rows_resumed(sd1, tmp_path, monkeypatch):
    before = {n: p.detach().clone() for n, p in sd1.unet.named_parameters()}
    unedited = _output_norm(sd1)
    measure = _Counting()
    erased = []
    import erasure.methods as methods

    real = methods.erase

    def counting_erase(*args, **kwargs):
        erased.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(methods, "erase", counting_erase)
    rows = run_experiment(sd1, _variants(), {"default": Measure({"kind": "norm"}, measure)}, out=tmp_path, log=None)
    assert [r["label"] for r in rows] == ["unedited", "uce", "uce again"]
    assert rows[0]["metrics"]["norm"]["value"] == unedited  # the base row is the unedited model, same input
    edit = real(sd1, "uce", [CONCEPT], guide="", preserve=())
    edit.apply(sd1)
    try:
        expected = _output_norm(sd1)
    finally:
        edit.restore(sd1)
    assert rows[1]["metrics"]["norm"]["value"] == expected != unedited
    assert rows[2]["metrics"]["norm"]["value"] == expected
    # one result and one measurement for the two rows with one config (the second is read back)
    assert erased == ["uce"] and measure.calls == 2
    assert all(torch.equal(p, before[n]) for n, p in sd1.unet.named_parameters())
    assert rows[1]["result_config"]["guide"] == "" and rows[1]["result"]["size_kb"] > 0
    files = sorted((tmp_path / "rows").glob("*.json"))
    assert len(files) == 2  # "uce again" is the same config as "uce": one row file
    assert {json.loads(f.read_text())["key"] for f in files} == {rows[0]["key"], rows[1]["key"]}

    # a rerun reads every row back; a changed setting is a new row
    again = run_experiment(sd1, _variants(), {"default": Measure({"kind": "norm"}, measure)}, out=tmp_path, log=None)
    assert measure.calls == 2 and erased == ["uce"]
    assert [r["metrics"] for r in again] == [r["metrics"] for r in rows]
    changed = run_experiment(sd1, _variants(guide="blue circle"), {"default": Measure({"kind": "norm"}, measure)},
                             out=tmp_path, log=None)
    assert erased == ["uce", "uce"] and measure.calls == 3  # the unedited row is still read back
    assert changed[1]["key"] != rows[1]["key"] and changed[0]["key"] == rows[0]["key"]
    # another measurement config is another key for the base row too
    other = run_experiment(sd1, _variants()[:1], {"default": Measure({"kind": "norm", "n": 2}, measure)},
                           out=tmp_path, log=None)
    assert other[0]["key"] != rows[0]["key"] and measure.calls == 4


def test_bad_experiments_are_one_line_errors(sd1, tmp_path):
    with pytest.raises(ErasureError, match="no measurement named 'other'"):
        run_experiment(sd1, [Variant("x", None, measure="other")], {"default": Measure({}, _Counting())},
                       out=tmp_path)
    with pytest.raises(ErasureError, match="unknown context 'sideways'"):
        run_experiment(sd1, [Variant("x", None, context="sideways")], {"default": Measure({}, _Counting())},
                       out=tmp_path)
    with pytest.raises(ErasureError, match="is not KEY=VALUE"):
        parse_variant("esd-x:lr")


def test_parse_variant():
    assert parse_variant("esd-x:lr=3e-4,anchor=square,cfr=false") == ("esd-x", {"lr": 3e-4, "anchor": "square",
                                                                              "cfr": False})
    assert parse_variant("uce") == ("uce", {})


def test_tables_in_three_formats(tmp_path):
    rows = [{"label": "a", "metrics": {"m": {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75}}},
            {"label": "b, c", "metrics": {}}]
    columns = [("variant", lambda r: r["label"]), ("m", experiments.with_interval("m"))]
    md = write_tables(rows, tmp_path / "t", columns, settings={"seed": 0})
    assert md == "| variant | m |\n|---|---|\n| a | 0.50 [0.25, 0.75] |\n| b, c | n/a |"
    assert (tmp_path / "t.md").read_text() == md + "\n"
    assert (tmp_path / "t.csv").read_text() == 'variant,m\na,"0.50 [0.25, 0.75]"\n"b, c",n/a\n'
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["settings"] == {"seed": 0} and saved["rows"][0]["metrics"]["m"]["value"] == 0.5
    assert markdown_table([], columns) == "| variant | m |\n|---|---|"


def test_docs_table_replaced_between_markers_only(tmp_path):
    doc = tmp_path / "methods.md"
    doc.write_text("intro\n<!-- t:start -->\nold table\n<!-- t:end -->\noutro, <!-- u:start -->keep<!-- u:end -->\n")
    write_docs_table(doc, "t", "| a |\n|---|\n| 1 |", command="python scripts/x.py --docs")
    assert doc.read_text() == ("intro\n<!-- t:start -->\n| a |\n|---|\n| 1 |\n\nWritten by `python scripts/x.py "
                               "--docs`.\n<!-- t:end -->\noutro, <!-- u:start -->keep<!-- u:end -->\n")
    with pytest.raises(ErasureError, match="exactly one <!-- v:start -->"):
        write_docs_table(doc, "v", "x")
    with pytest.raises(ErasureError, match="exactly one"):
        replace_between_markers("<!-- t:end --> <!-- t:start -->", "t", "x")
    experiments.check_markers(doc, ["t", "u"])
    with pytest.raises(ErasureError, match="v:start"):
        experiments.check_markers(doc, ["t", "v"])


ROOT = Path(__file__).resolve().parents[1]
def _docs_tables(path: Path) -> tuple[str, list[str]] | None:
    """A script's --docs default file (``const=``) and its tables (``TABLE = "..."`` / ``TABLES = {...}`` or a
    tuple), read from its source without running it; None for a script without a --docs default."""
    tree = ast.parse(path.read_text())
    doc = names = None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                and node.args[0].value == "--docs"):
            doc = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "const"), None)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("TABLE", "TABLES")
                                                for t in node.targets):
            value = ast.literal_eval(node.value)
            names = [value] if isinstance(value, str) else list(value.values() if isinstance(value, dict) else value)
    if doc is None:
        return None
    assert names, f"{path.name} has --docs {doc} but no module-level TABLE or TABLES naming its markers"
    return doc, names


DOCS_SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py") if '"--docs"' in p.read_text())


@pytest.mark.parametrize("script", DOCS_SCRIPTS)
def test_every_docs_script_has_its_markers_exactly_once(script):
    found = _docs_tables(ROOT / "scripts" / script)
    if found is None:
        pytest.skip(f"{script}: --docs has no default file")
    doc, names = found
    experiments.check_markers(ROOT / doc, names)  # exactly one start, then one end, per table


def test_a_result_made_elsewhere_goes_through_the_same_loop(sd1, tmp_path, monkeypatch):
    """run_variants with ``results``: the given result is applied as it is (never erased again), measured like
    run_experiment's rows, the pipeline restored; with out=None nothing is written."""
    import erasure.methods as methods

    edit = methods.erase(sd1, "uce", [CONCEPT], guide="", preserve=())
    before = {n: p.detach().clone() for n, p in sd1.unet.named_parameters()}
    unedited = _output_norm(sd1)
    edit.apply(sd1)
    try:
        expected = _output_norm(sd1)
    finally:
        edit.restore(sd1)

    def no_erase(*args, **kwargs):
        raise AssertionError("a given result must not be erased again")

    monkeypatch.setattr(methods, "erase", no_erase)
    seen = []

    def measure(pipe):
        seen.append(getattr(pipe, "erasure_edit", None))
        return {"norm": {"value": _output_norm(pipe), "ci_low": None, "ci_high": None}}

    monkeypatch.chdir(tmp_path)
    variants = [Variant("unedited", None), Variant("given", "uce", (CONCEPT,))]
    rows = experiments.run_variants(sd1, variants, {"default": Measure({"kind": "norm"}, measure)},
                                    results={"given": edit}, out=None, log=None)
    assert [r["metrics"]["norm"]["value"] for r in rows] == [unedited, expected]
    assert expected != unedited
    assert seen[0] is None and seen[1] == {"method": "uce", "concepts": [CONCEPT], "config": dict(edit.config)}
    assert getattr(sd1, "erasure_edit", None) is None
    assert rows[1]["seconds_erase"] is None and rows[1]["result"]["size_kb"] > 0
    assert rows[1]["result_config"]["guide"] == ""
    assert all(torch.equal(p, before[n]) for n, p in sd1.unet.named_parameters())
    assert list(tmp_path.iterdir()) == []  # out=None: no row files anywhere
    with pytest.raises(ErasureError, match="no variant with a method"):
        experiments.run_variants(sd1, variants, {"default": Measure({}, measure)}, results={"unedited": edit}, log=None)


def test_evaluate_result_gives_whole_reports_of_base_and_result(sd1, tmp_path, monkeypatch):
    """evaluate_result (the CLI's ``erase --evaluate``): the two reports equal plain evaluate calls on the base
    and on the applied result, and it runs through run_variants, the one loop."""
    from erasure.evaluation.evaluate import evaluate
    from erasure.generation import SamplerSettings
    from erasure.methods import erase

    prompts = tmp_path / "p.csv"
    prompts.write_text("case_number,prompt,evaluation_seed,concept\n0,a red star,1,star\n1,a blue circle,2,circle\n")
    kw = dict(settings=SamplerSettings(steps=2, guidance=5.0), progress=False, n_resamples=0)
    edit = erase(sd1, "uce", [CONCEPT], guide="blue circle", preserve=())
    calls = []
    real = experiments.run_variants

    def spy(*args, **kwargs):
        calls.append(kwargs.get("results"))
        return real(*args, **kwargs)

    monkeypatch.setattr(experiments, "run_variants", spy)
    base, after = experiments.evaluate_result(sd1, edit, prompts, **kw)
    assert len(calls) == 1 and list(calls[0].values()) == [edit]
    direct = evaluate(sd1, prompts, **kw)
    assert base.images.shape == (2, *base.images.shape[1:]) and (base.images == direct.images).all()
    edit.apply(sd1)
    try:
        applied = evaluate(sd1, prompts, **kw)
    finally:
        edit.restore(sd1)
    assert (after.images == applied.images).all() and not (after.images == base.images).all()
    assert after.info["edit"]["method"] == "uce" and base.info["edit"] is None
