"""The benchmark: methods x concepts on one model, one evaluation protocol, one leaderboard.

    from erasure.benchmark import run_benchmark
    board = run_benchmark(pipe, ["uce", "esd-x"], ["shape=circle", "texture=striped"], out="runs/bench")
    # runs/bench/leaderboard.md / .csv / .json, target.png (bars), tradeoff.png (target vs retain)

Every (method, concept) cell, and the unedited model once per concept, is one row of
:func:`erasure.experiments.run_experiment` (erase, apply, measure, restore; rows are written to
``out/rows/`` as they finish, so a rerun reads back what is done and computes only the rest). The measurement
of a concept ``A=C`` is :func:`erasure.evaluation.evaluate.evaluate` with the built-in world's judge on the
concept's prompt set ``shapeworld-A-C`` and on its held-out phrasing set ``shapeworld-A-C-phrasing``, the same
seeds for every row, ``samples_per_prompt`` images per prompt (2 by default, so that a 5-point difference is
outside the noise); with ``attack`` also an attack's pre-ASR and ASR (:mod:`erasure.attacks`).

On your own model the measurement is a prompt file and a judge instead (``protocol={"prompts": FILE, "judge":
"image-classifier:resnet50", "judge_settings": {...}}``, or a published protocol's preset from the command line:
``erasure benchmark --model sd15 --preset imagenette --prompts-file imagenette.csv --judge-weights resnet50.safetensors
--concepts church,parachute``); the concepts are then the judge's names (``church``, ``style=Van_Gogh``), and
the metrics are the preset's, or what the judge allows (``evaluate``'s defaults). FID/KID against the unedited
model there need features (``features="inception"`` with ``features_weights`` pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` and ``allow_pickle=True``, or a CLIP's image tower: ``"open_clip:NAME"``
with ``features_weights``, ``"transformers:FOLDER"``), computed on all of a row's images: a prompt file of the
field has no retain subset, so its FID/KID also move with the erased concept's own images. On the built-in world
FID/KID are on the world classifier's features of the retain images, always.

Method settings are each method's spec defaults, overridden per method (``settings={"uce": {"guide":
"square"}}``, on the command line ``--set uce.guide=square``). ``shard=(i, n)`` runs only every n-th cell
starting at the i-th (1-based); a run without ``shard`` (or with ``merge=True``, which computes nothing)
assembles the leaderboard from every shard's rows.

This module imports no torch at import time: the command line's checks (:func:`plan`, :func:`check_out`) run
before the model loads.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from erasure.errors import ErasureError

UNEDITED = "unedited"
CONFIG_FILE = "benchmark.json"
DEFAULT_SAMPLES = 2
# what a benchmark folder holds at its top (removed by force=True, nothing else is)
OWN_FILES = (CONFIG_FILE, "rows", "attacks", "leaderboard.md", "leaderboard.csv", "leaderboard.json", "target.png",
             "tradeoff.png")
EVAL_METRICS = ("target_accuracy", "in_domain_retain_accuracy", "cross_domain_retain_accuracy",
                "worst_kept_retain_accuracy")
PHRASING = "phrasing"  # prefix of the held-out phrasing set's metrics: "phrasing:target_accuracy"
ATTACK = "attack"  # prefix of the attack's metrics: "attack:pre_asr", "attack:asr"


# --------------------------------------------------------------------------- the plan (no torch)


@dataclass(frozen=True)
class Plan:
    """What a benchmark runs: methods, concepts ``(attribute, value)``, per-method settings (checked), the
    protocol (samples per prompt, sampler, prompt limit, attack). ``config()`` is what identifies it in
    ``out/benchmark.json``."""

    methods: tuple[str, ...]
    concepts: tuple[tuple[str, str], ...]
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    samples_per_prompt: int = DEFAULT_SAMPLES
    sampler: Mapping[str, Any] | None = None  # SamplerSettings fields; None: the world's (25 steps, guidance 5)
    limit: int | None = None
    attack: str | None = None
    attack_settings: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None
    n_resamples: int = 1000
    seed: int = 0
    # your model's measurement: prompts (a CSV), prompts_sha256, judge (spec), judge_settings, metrics (None:
    # what the judge allows), scheduler, guidance_from_file, preset (name, version, role), subset
    protocol: Mapping[str, Any] | None = None
    # CLIP score of every row's images against their prompts: a backend spec ("world", "open_clip:ViT-B-32" with
    # clip_weights, "transformers:FOLDER"); None = no CLIP column
    clip: str | None = None
    clip_weights: str | None = None
    # FID/KID features on your model (protocol only): "inception" (pytorch-fid's, weights in features_weights),
    # or a CLIP backend spec as ``clip``; None = no FID/KID there. allow_pickle: load a .pth features_weights
    # (not part of config(): it changes no number)
    features: str | None = None
    features_weights: str | None = None
    allow_pickle: bool = False

    def config(self) -> dict[str, Any]:
        return json.loads(json.dumps({
            "methods": list(self.methods), "concepts": [concept_label(c) for c in self.concepts],
            "settings": {m: dict(self.settings.get(m, {})) for m in self.methods},
            "samples_per_prompt": self.samples_per_prompt, "sampler": dict(self.sampler) if self.sampler else None,
            "limit": self.limit, "attack": self.attack, "attack_settings": dict(self.attack_settings),
            "model": self.model, "n_resamples": self.n_resamples, "seed": self.seed,
            **({"protocol": dict(self.protocol)} if self.protocol else {}),
            **({"clip": self.clip, "clip_weights": self.clip_weights} if self.clip else {}),
            **({"features": self.features, "features_weights": self.features_weights} if self.features else {})},
            default=str))

    def cells(self) -> list[tuple[str, tuple[str, str]]]:
        """Every (method or "unedited", concept), concept by concept, the unedited model first."""
        return [(m, c) for c in self.concepts for m in (UNEDITED, *self.methods)]


def concept_label(concept: tuple[str, str]) -> str:
    """``("shape", "circle")`` -> ``"shape=circle"``; a judge's plain name ``("", "church")`` -> ``"church"``."""
    attribute, value = concept
    return f"{attribute}={value}" if attribute else value


def parse_named_concept(text: str) -> tuple[str, str]:
    """A concept of your model's judge: ``"church"`` -> ``("", "church")``, ``"style=Van_Gogh"`` -> its pair."""
    attribute, sep, value = str(text).partition("=")
    attribute, value = (attribute.strip(), value.strip()) if sep else ("", attribute.strip())
    if not value or (sep and not attribute):
        raise ErasureError(f"concept {text!r} is empty; name it as the judge does (church, style=Van_Gogh)")
    return attribute, value


def parse_list(text: str | Sequence[str] | None, what: str) -> list[str]:
    """``"uce,esd-x"`` (or a list of such) -> ``["uce", "esd-x"]``; an empty list is a one-line error."""
    items = [text] if isinstance(text, str) else list(text or [])
    out = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    if not out:
        raise ErasureError(f"no {what} given; name at least one, comma-separated")
    return list(dict.fromkeys(out))


def parse_concept(text: str) -> tuple[str, str]:
    """``"shape=circle"`` or ``"circle"`` -> ``("shape", "circle")``: a concept of the built-in world."""
    from erasure.evaluation.world_prompts import ERASABLE

    attribute, sep, value = str(text).partition("=")
    attribute, value = (attribute.strip(), value.strip()) if sep else (None, attribute.strip())
    found = [a for a, values in ERASABLE.items() if value in values]
    known = "; ".join(f"{a}: {', '.join(v)}" for a, v in ERASABLE.items())
    if not value or not found:
        raise ErasureError(f"concept {text!r} is not a concept of the built-in world ({known})")
    if attribute is not None and attribute not in found:
        raise ErasureError(f"concept {text!r}: on the built-in world {value} is a {found[0]}; write {found[0]}={value}")
    return found[0], value


def parse_settings(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``["uce.guide=square", "esd-x.iterations=200"]`` -> ``{"uce": {"guide": "square"}, ...}`` (JSON values,
    else text; NaN and infinities refused)."""
    import math

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        left, sep, text = str(item).partition("=")
        method, dot, key = left.strip().partition(".")
        if not sep or not dot or not method or not key.strip():
            raise ErasureError(f"--set wants METHOD.KEY=VALUE (e.g. uce.guide=square), got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if isinstance(value, float) and not math.isfinite(value):
            raise ErasureError(f"--set {left}={text}: not a finite number; give a finite value")
        out.setdefault(method, {})[key.strip()] = value
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/4"`` -> ``(2, 4)``: the second of four slices (1-based)."""
    if text is None:
        return None
    i, sep, n = str(text).partition("/")
    try:
        i_, n_ = int(i), int(n)
    except ValueError:
        i_, n_ = 0, 0
    if not sep or n_ < 1 or not 1 <= i_ <= n_:
        raise ErasureError(f"--shard wants I/N with 1 <= I <= N (e.g. 1/2), got {text!r}")
    return i_, n_


def plan(methods: Sequence[str] | str, concepts: Sequence[str | tuple[str, str]] | str, *,
         settings: Mapping[str, Mapping[str, Any]] | None = None, samples_per_prompt: int = DEFAULT_SAMPLES,
         sampler: Any = None, limit: int | None = None, attack: str | None = None,
         attack_settings: Mapping[str, Any] | None = None, model: str | None = None, n_resamples: int = 1000,
         seed: int = 0, protocol: Mapping[str, Any] | None = None, clip: str | None = None,
         clip_weights: str | None = None, features: str | None = None, features_weights: str | None = None,
         allow_pickle: bool = False) -> Plan:
    """A :class:`Plan` with every name checked against its registry (no torch): an unknown method, concept,
    setting or attack, or a bad value, is a one-line ErasureError. With ``protocol`` (your model's prompt file
    and judge) the concepts are the judge's names, not the built-in world's; ``features`` (with
    ``features_weights``, ``allow_pickle``) are FID/KID's features there (:func:`check_features`)."""
    from erasure.methods import METHODS

    names = parse_list(methods, "methods")
    if UNEDITED in names:
        raise ErasureError(f"{UNEDITED!r} is always in the benchmark (the unedited model); drop it from the methods")
    specs = {m: METHODS.get(m) for m in names}  # "unknown method ...; did you mean"
    given = dict(settings or {})
    stray = [m for m in given if m not in specs]
    if stray:
        raise ErasureError(f"settings for {stray[0]!r}, which is not among the methods ({', '.join(names)}); "
                           f"add it to the methods or drop its settings")
    checked = {}
    for m, spec in specs.items():
        values = dict(given.get(m, {}))
        options = [k for k in values if k in spec.options]
        if options:
            raise ErasureError(f"{m}: {options[0]!r} is a run option, not a setting; the benchmark sets its own")
        checked[m] = spec.validate_settings(values)
    if isinstance(concepts, str):
        concepts = parse_list(concepts, "concepts")
    if protocol is not None:
        protocol = _check_protocol(protocol)
        parsed = [tuple(c) if isinstance(c, (tuple, list)) else parse_named_concept(c) for c in concepts]
    else:
        parsed = [tuple(c) if isinstance(c, (tuple, list)) else parse_concept(c) for c in concepts]
        for c in parsed:
            parse_concept(f"{c[0]}={c[1]}")
    if not parsed:
        raise ErasureError("no concepts given; name at least one, e.g. shape=circle")
    if not isinstance(samples_per_prompt, int) or samples_per_prompt < 1:
        raise ErasureError(f"samples per prompt must be a whole number >= 1 (got {samples_per_prompt!r})")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ErasureError(f"limit must be a whole number >= 1 (got {limit!r})")
    if sampler is not None and not isinstance(sampler, Mapping):
        sampler = asdict(sampler)
    a_settings: dict[str, Any] = {}
    if attack is not None:
        from erasure.attacks.catalog import ATTACKS

        spec = ATTACKS.get(attack)
        if spec.kind == "transfer":
            raise ErasureError("the benchmark attacks with the concept's own prompts; a transfer attack needs a "
                               "transfer set: run `erasure attack --attack transfer` on the results instead")
        a_settings = spec.validate_settings(dict(attack_settings or {}))
    elif attack_settings:
        raise ErasureError("attack settings go with an attack; add --attack NAME")
    if clip is not None:
        kind, _, rest = str(clip).partition(":")
        if kind not in ("world", "open_clip", "transformers") or (kind != "world" and not rest):
            raise ErasureError(f"unknown CLIP {clip!r}; use world, open_clip:NAME (with its weights file) or "
                               "transformers:FOLDER")
        if clip_weights is not None and not Path(clip_weights).is_file():
            raise ErasureError(f"CLIP weights file {clip_weights} not found; give the local open_clip checkpoint")
    elif clip_weights is not None:
        raise ErasureError("CLIP weights go with a CLIP; add --clip open_clip:NAME")
    check_features(features, features_weights, allow_pickle=allow_pickle, protocol=protocol is not None)
    return Plan(methods=tuple(names), concepts=tuple(dict.fromkeys(parsed)), settings=checked,
                samples_per_prompt=samples_per_prompt, sampler=sampler, limit=limit, attack=attack,
                attack_settings=a_settings, model=model, n_resamples=n_resamples, seed=seed, protocol=protocol,
                clip=clip, clip_weights=None if clip_weights is None else str(clip_weights),
                features=None if features is None else str(features),
                features_weights=None if features_weights is None else str(features_weights),
                allow_pickle=bool(allow_pickle))


INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's release file


def check_features(features: str | None, weights: str | None, *, allow_pickle: bool = False,
                   protocol: bool = True) -> None:
    """FID/KID features as ``erasure evaluate --features`` takes them, checked without torch: ``inception``
    (pytorch-fid installed, its weights file given and present, a pickle only with ``allow_pickle``), or a CLIP
    backend spec (``open_clip:NAME`` with its weights file, ``transformers:FOLDER`` that exists, ``world``). On the built-in
    world (no ``protocol``) the benchmark's FID/KID are on the world classifier's features: refused."""
    import importlib.util

    if features is None:
        if weights is not None:
            raise ErasureError("features weights go with features; add --features inception or --features open_clip:NAME")
        return
    if not protocol:
        raise ErasureError("on the built-in world the benchmark's FID/KID use the world classifier's features; "
                           "--features is for your model (with --prompts-file and --judge, or --preset)")
    kind, _, rest = str(features).partition(":")
    if kind == "inception" and not rest:
        if importlib.util.find_spec("pytorch_fid") is None:
            raise ErasureError("--features inception needs pytorch-fid: pip install pytorch-fid (or use a CLIP)")
        if weights is None:
            raise ErasureError(f"--features inception needs pytorch-fid's weights file: download {INCEPTION_WEIGHTS} "
                               "(pytorch-fid's release) and pass --features-weights PATH --allow-pickle")
    elif kind not in ("world", "open_clip", "transformers") or (kind != "world" and not rest) or (
            kind == "world" and rest):
        raise ErasureError(f"unknown features {features!r}; use inception (with --features-weights), "
                           "open_clip:NAME (with its weights file) or transformers:FOLDER")
    elif weights is not None and kind != "open_clip":
        raise ErasureError(f"features {features!r} take no weights file; --features-weights is for inception "
                           "and open_clip:NAME")
    elif kind == "open_clip" and weights is None:
        raise ErasureError(f"--features {features} needs its weights file: pass --features-weights PATH (a local "
                           "open_clip checkpoint; nothing is downloaded)")
    if kind == "transformers" and not Path(rest).expanduser().is_dir():
        raise ErasureError(f"features folder {rest} not found; give the local transformers CLIP folder")
    if weights is not None and not Path(weights).expanduser().is_file():
        raise ErasureError(f"features weights file {weights} not found; give the local weights file of --features")
    if kind == "inception" and Path(str(weights)).suffix != ".safetensors" and not allow_pickle:
        raise ErasureError(f"--features-weights {weights} is a pickle file (pytorch-fid's .pth): pass --allow-pickle, "
                           "or convert it to .safetensors")


GENERATED = "preset:"  # protocol prompts "preset:NAME": the prompt file that preset generates (UnlearnCanvas)
PROTOCOL_KEYS = ("prompts", "prompts_sha256", "judge", "judge_settings", "metrics", "scheduler", "guidance_from_file",
                 "preset", "subset")


def _check_protocol(protocol: Mapping[str, Any]) -> dict[str, Any]:
    """Your model's measurement, checked without torch: a prompt file that exists (its hash recorded, so rows of
    another file are not reused), a judge the registry knows and its settings, metrics the registry knows."""
    from erasure.evaluation.judges import file_sha256, parse_judge_spec
    from erasure.evaluation.metrics import METRICS

    stray = sorted(set(protocol) - set(PROTOCOL_KEYS))
    if stray:
        raise ErasureError(f"unknown protocol key {stray[0]!r}; use {', '.join(PROTOCOL_KEYS)}")
    out = {k: protocol.get(k) for k in PROTOCOL_KEYS}
    prompts = out["prompts"]
    if isinstance(prompts, str) and prompts.startswith(GENERATED):  # a preset's generated prompt file
        from erasure.evaluation.presets import protocol_run

        protocol_run(prompts[len(GENERATED):], None)  # a preset that generates none is a one-line error
        out["prompts_sha256"] = None
    elif not prompts or not Path(prompts).is_file():
        raise ErasureError(f"prompt file {prompts} not found; give the CSV of prompts the benchmark measures with "
                           "(--prompts-file FILE)")
    else:
        out["prompts"] = str(prompts)
        out["prompts_sha256"] = file_sha256(prompts)
    if not out["judge"]:
        raise ErasureError("the benchmark on your model needs a judge (--judge NAME, see `erasure list --judges`, "
                           "or --preset NAME); the world's classifier knows the built-in world only")
    spec, from_name = parse_judge_spec(out["judge"])
    out["judge_settings"] = dict(out["judge_settings"] or {})
    for key in [k for k in from_name if out["judge_settings"].get(k) == from_name[k]]:
        del out["judge_settings"][key]  # a preset's judge name and its settings may both say it
    clash = sorted(set(from_name) & set(out["judge_settings"]))
    if clash:
        raise ErasureError(f"judge '{out['judge']}' sets {', '.join(clash)} twice (in the name and as a setting); keep one")
    spec.validate_settings({**from_name, **out["judge_settings"]})
    out["metrics"] = list(out["metrics"]) if out["metrics"] else None
    for name in out["metrics"] or ():
        METRICS.get(name)  # "unknown metric ...; did you mean"
    out["guidance_from_file"] = bool(out["guidance_from_file"])
    out["subset"] = bool(out["subset"])
    return json.loads(json.dumps(out, default=str))


def check_out(out: str | Path, the_plan: Plan, *, force: bool = False, resume: bool = False) -> tuple[Path, bool]:
    """(the folder, whether it holds this very benchmark). A folder that holds another benchmark (or anything
    else) is refused without ``force``; with ``force`` only a benchmark's folder is replaced, never a folder
    of yours; ``resume`` insists that the folder holds this benchmark."""
    from erasure.files import check_output

    path = Path(out).expanduser()
    stored = _stored_config(path)
    same = stored is not None and stored == the_plan.config()
    if resume and not same:
        why = "holds another benchmark" if stored is not None else "holds no benchmark to resume"
        raise ErasureError(f"--resume: {out} {why}; drop --resume to start one" + (
            f" (it differs in {_differs(stored, the_plan.config())})" if stored is not None else ""))
    if same or not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return check_output(path, force=True, replaceable=(CONFIG_FILE,)), same
    if not force:
        if stored is not None:
            raise ErasureError(f"{out} holds another benchmark (it differs in {_differs(stored, the_plan.config())}); "
                               "choose another --out, or pass --force to replace it")
        raise ErasureError(f"{out} already exists and holds no benchmark; choose another --out")
    return check_output(path, force=True, replaceable=(CONFIG_FILE,)), False


def _stored_config(path: Path) -> dict[str, Any] | None:
    file = path / CONFIG_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return {}


def _differs(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(keys) or "nothing"


def _clear(path: Path) -> None:
    """Remove what a benchmark wrote in ``path`` (its own files only)."""
    for name in OWN_FILES:
        p = path / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


# --------------------------------------------------------------------------- the measurement


def limited(prompt_set, limit: int | None):
    """The prompt set ``prompt_set``, or its first ``limit`` prompts of every group."""
    from erasure.evaluation.evaluate import resolve_prompt_set
    from erasure.evaluation.prompts import PromptSet

    pset = resolve_prompt_set(prompt_set)
    if limit is None:
        return pset
    counts: dict[str, int] = {}
    records = []
    for r in pset.records:
        counts[r.group] = counts.get(r.group, 0) + 1
        if counts[r.group] <= limit:
            records.append(r)
    return PromptSet(name=f"{pset.name}[limit={limit}]", records=tuple(records), source=pset.source)


def _metric_dict(result) -> dict[str, Any]:
    from erasure.files import json_safe

    out = {"value": result.value, "ci_low": result.ci_low, "ci_high": result.ci_high, "n": result.n}
    worst = (result.details or {}).get("worst_concept")
    if worst is not None:
        out["concept"] = worst
        out["mean_of_kept"] = result.details.get("mean_of_kept")
        # every kept concept's accuracy and n: the leaderboard's drop against the unedited model comes from it
        # (and the per-image outcomes, so two rows on the same seeds can be paired: a drop's McNemar p)
        out["kept"] = {k: {"accuracy": v["accuracy"], "n": v["n"], **({"correct": v["correct"]} if "correct" in v else {})}
                       for k, v in result.details.get("kept", {}).items()}
    return json_safe(out)


_STATE: dict[str, Any] = {}  # the judge and the unedited copy for attacks, made once per process


def _clip(the_plan: Plan):
    """The plan's CLIP backend (None without one), loaded once per process."""
    if not the_plan.clip:
        return None
    key = ("clip", the_plan.clip, the_plan.clip_weights)
    if key not in _STATE:
        from erasure.evaluation.clip_backends import load_clip_backend

        _STATE[key] = load_clip_backend(the_plan.clip, the_plan.clip_weights)
    return _STATE[key]


def _features(the_plan: Plan):
    """(the plan's FID/KID features function, its name), loaded once per process; (None, None) without one."""
    if not the_plan.features:
        return None, None
    key = ("features", the_plan.features, the_plan.features_weights, the_plan.allow_pickle)
    if key not in _STATE:
        from erasure.evaluation.distances import load_features

        _STATE[key] = load_features(the_plan.features, the_plan.features_weights, allow_pickle=the_plan.allow_pickle)
    return _STATE[key]


def features_name(the_plan: Plan) -> str:
    """The name FID/KID records give their features, without loading them: the world classifier's, or the name
    ``distances.load_features`` gives (pytorch-fid's Inception with its weights file, a CLIP spec's image
    embeddings; as ``erasure evaluate --features`` names them)."""
    if not the_plan.features:
        return "world classifier"
    if the_plan.features == "inception":
        return f"pytorch-fid InceptionV3 pool3 ({Path(str(the_plan.features_weights)).name})"
    return f"{the_plan.features} image embeddings"


FEATURES = "_retain_features"  # a row's stored features (not a metric; the leaderboard turns them into FID/KID)


def retain_features(report, concept: tuple[str, str]):
    """The world classifier's penultimate features of the report's images whose prompt does not name
    ``concept`` (the images that should not change; the same images ``evaluate.compare`` uses)."""
    from erasure.evaluation.evaluate import not_naming, world_features

    return world_features(report.images[not_naming(report.records, report.info["samples_per_prompt"], concept)])


def encode_features(features) -> dict[str, Any]:
    """(n, d) float features as JSON: float16, base64 (FID and KID from them agree with compare()'s from the
    float32 features to 2e-3 relative in the tests; measured 1.5e-4 for FID, 4e-5 for KID)."""
    import base64

    import numpy as np

    a = np.ascontiguousarray(np.asarray(features, dtype=np.float16))
    return {"shape": list(a.shape), "dtype": "float16", "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_features(stored: Mapping[str, Any]):
    import base64

    import numpy as np

    return np.frombuffer(base64.b64decode(stored["data"]), dtype=stored["dtype"]).reshape(stored["shape"]).astype(
        np.float64)


def concept_measure(the_plan: Plan, concept: tuple[str, str]):
    """The :class:`~erasure.experiments.Measure` of one concept: the world judge on its prompt set and its
    held-out phrasing set (``phrasing:`` metrics), and the attack (``attack:`` metrics) when the plan has one;
    with the plan's ``protocol``, :func:`protocol_measure`."""
    from erasure.experiments import Measure

    if the_plan.protocol:
        return protocol_measure(the_plan, concept)

    attribute, value = concept
    sets = {"": f"shapeworld-{attribute}-{value}", f"{PHRASING}:": f"shapeworld-{attribute}-{value}-phrasing"}

    def sampler():
        from erasure.evaluation.evaluate import WORLD_SETTINGS
        from erasure.generation import SamplerSettings

        return SamplerSettings(**the_plan.sampler) if the_plan.sampler else WORLD_SETTINGS

    def run(pipe):
        from erasure.evaluation.evaluate import evaluate
        from erasure.evaluation.judges import WorldJudge

        judge = _STATE.get("judge")
        if judge is None:
            judge = _STATE["judge"] = WorldJudge()
        metrics: dict[str, Any] = {}
        clip = _clip(the_plan)
        for prefix, name in sets.items():
            report = evaluate(pipe, limited(name, the_plan.limit), concept=concept, judge=judge,
                              metrics=list(EVAL_METRICS) + (["clip_score"] if clip is not None else []),
                              clip=clip, settings=sampler(),
                              samples_per_prompt=the_plan.samples_per_prompt, n_resamples=the_plan.n_resamples,
                              seed=the_plan.seed, progress=False, keep_images=not prefix)
            metrics.update({prefix + k: _metric_dict(m) for k, m in report.metrics.items() if "[" not in k})
            if not prefix:  # the FID/KID inputs: the world classifier's features of the images not naming it
                metrics[FEATURES] = encode_features(retain_features(report, concept))
        if the_plan.attack:
            from erasure.attacks import attack
            from erasure.attacks.judging import WorldClassifierJudge

            original = _STATE.get("original")
            if original is None:
                raise ErasureError("an attack in the benchmark needs the unedited model; run it through run_benchmark")
            if _STATE.get("attack_judge") is None:
                _STATE["attack_judge"] = WorldClassifierJudge(judge.classifier)
            # the concept's prompt set, rows naming it (as `erasure attack` on the world), the world's classifier
            report = attack(pipe, the_plan.attack, f"{attribute}={value}", sets[""], original_pipe=original,
                            judge=_STATE["attack_judge"], settings=sampler(),
                            attack_settings=dict(the_plan.attack_settings), seed=the_plan.seed,
                            n_resamples=the_plan.n_resamples, limit=the_plan.limit)
            metrics.update(_attack_metrics(report))
        return metrics

    config = {"kind": "benchmark", "concept": f"{attribute}={value}", "prompt_sets": list(sets.values()),
              "metrics": list(EVAL_METRICS), "judge": "world", "sampler": the_plan.sampler,
              "samples_per_prompt": the_plan.samples_per_prompt, "limit": the_plan.limit,
              "n_resamples": the_plan.n_resamples, "seed": the_plan.seed, "attack": the_plan.attack,
              "attack_settings": dict(the_plan.attack_settings),
              "stores": "kept-concept accuracies; retain-image features (world classifier) for FID/KID",
              **({"clip": the_plan.clip, "clip_weights": the_plan.clip_weights} if the_plan.clip else {})}
    return Measure(config=json.loads(json.dumps(config, default=str)), run=run)


def protocol_measure(the_plan: Plan, concept: tuple[str, str]):
    """The measurement on your model: ``evaluate`` with the protocol's judge (built once per process) on its
    prompt file, the concept as the judge names it, the protocol's metrics (or what the judge allows), sampler
    and scheduler; every row on the same prompts and seeds. With the plan's ``features`` (loaded once per
    process) it also stores the features of ALL the row's images under ``FEATURES`` (the leaderboard's FID/KID
    against the unedited row): a prompt file of the field has no retain subset of prompts that do not name
    the concept, so these distances include the erased concept's own images."""
    from erasure.experiments import Measure

    proto = the_plan.protocol or {}
    label = concept_label(concept)

    def run(pipe):
        from erasure.evaluation.evaluate import evaluate
        from erasure.evaluation.judges import load_judge
        from erasure.generation import SamplerSettings

        key = ("judge", json.dumps([proto["judge"], proto["judge_settings"]], sort_keys=True, default=str))
        judge = _STATE.get(key)
        if judge is None:
            judge = _STATE[key] = load_judge(proto["judge"], **proto["judge_settings"])
        prompts = proto["prompts"]
        if prompts.startswith(GENERATED):
            from erasure.evaluation.presets import protocol_run

            prompts = protocol_run(prompts[len(GENERATED):], None)[1]
        clip = _clip(the_plan)
        metrics = proto.get("metrics")
        if clip is not None and metrics is not None and "clip_score" not in metrics:
            metrics = [*metrics, "clip_score"]
        features, _ = _features(the_plan)
        prompt_set = limited(prompts, the_plan.limit)
        settings = SamplerSettings(**the_plan.sampler) if the_plan.sampler else None
        report = evaluate(pipe, prompt_set, concept=label, judge=judge, metrics=metrics,
                          clip=clip, settings=settings,
                          scheduler=proto.get("scheduler"), guidance_from_file=bool(proto.get("guidance_from_file")),
                          samples_per_prompt=the_plan.samples_per_prompt, n_resamples=the_plan.n_resamples,
                          seed=the_plan.seed, progress=False, keep_images=features is not None)
        out = {k: _metric_dict(m) for k, m in report.metrics.items() if "[" not in k}
        if features is not None:  # the FID/KID inputs: every image's features (no retain subset on a prompt file)
            out[FEATURES] = encode_features(features(report.images))
        if the_plan.attack:
            out.update(_protocol_attack(the_plan, pipe, judge, prompt_set, label, settings, proto.get("scheduler")))
        return out

    config = {"kind": "benchmark", "concept": label, "protocol": dict(proto), "sampler": the_plan.sampler,
              "samples_per_prompt": the_plan.samples_per_prompt, "limit": the_plan.limit,
              "n_resamples": the_plan.n_resamples, "seed": the_plan.seed, "stores": "kept-concept accuracies",
              **({"clip": the_plan.clip, "clip_weights": the_plan.clip_weights} if the_plan.clip else {})}
    if the_plan.attack:  # only then, likewise
        config.update(attack=the_plan.attack, attack_settings=dict(the_plan.attack_settings),
                      attack_prompts="the rows whose label column names the concept (every row when none does)")
    if the_plan.features:  # only then: without features a row's identity is what it always was
        config.update(stores=f"kept-concept accuracies; features ({features_name(the_plan)}) of all images (a "
                             "prompt file has no retain subset) for FID/KID",
                      features=the_plan.features, features_weights=the_plan.features_weights)
    return Measure(config=json.loads(json.dumps(config, default=str)), run=run)


def attack_rows(prompt_set, judge, label: str) -> tuple[list[str], list[int]]:
    """(prompts, seeds) an attack takes on a prompt file: the rows whose label column (the judge's attribute,
    or the file's concept column) names ``label``, as ``evaluate``'s target accuracy reads them; every row when
    none does (a file of the concept's prompts, such as I2P's for nudity)."""
    from erasure.evaluation.evaluate import _labelled_records, _resolve_concept, not_naming, resolve_prompt_set

    concept = _resolve_concept(judge, label)
    records = _labelled_records(resolve_prompt_set(prompt_set).records, concept[0])
    naming = ~not_naming(records, 1, concept)
    chosen = [r for r, names in zip(records, naming) if names] or list(records)
    return [r.prompt for r in chosen], [int(r.evaluation_seed) for r in chosen]


def _protocol_attack(the_plan: Plan, pipe, judge, prompt_set, label: str, settings, scheduler: str | None) -> dict[str, Any]:
    """The plan's attack on one row of the benchmark on your model: ``erasure attack`` with the protocol's judge on
    :func:`attack_rows`, against the unedited model as the original, with the row's sampler ``settings`` and the
    protocol's scheduler."""
    from erasure.attacks import attack
    from erasure.evaluation.evaluate import scheduler_swapped

    original = _STATE.get("original")
    if original is None:
        raise ErasureError("an attack in the benchmark needs the unedited model; run it through run_benchmark")
    texts, seeds = attack_rows(prompt_set, judge, label)
    with scheduler_swapped(pipe, scheduler), scheduler_swapped(original, scheduler):
        report = attack(pipe, the_plan.attack, label, texts, seeds, original_pipe=original, judge=judge,
                        settings=settings, attack_settings=dict(the_plan.attack_settings), seed=the_plan.seed,
                        n_resamples=the_plan.n_resamples)
    return _attack_metrics(report)


def _attack_metrics(report) -> dict[str, Any]:
    """An attack report as benchmark metrics: ``attack:pre_asr``, ``attack:asr`` (with their intervals) and the
    UNet forward rows per prompt."""
    out = {f"{ATTACK}:{k}": _metric_dict(m) for k, m in report.metrics.items()}
    b = report.info.get("budget", {})
    out[f"{ATTACK}:unet_forward_per_prompt"] = {"value": b.get("unet_forward_per_prompt"), "ci_low": None,
                                                "ci_high": None, "n": len(report.records)}
    return out


def variants(the_plan: Plan, cells: Sequence[tuple[str, tuple[str, str]]] | None = None) -> list:
    """The :class:`~erasure.experiments.Variant` of every cell (default: all of them)."""
    from erasure.experiments import Variant

    out = []
    for method, concept in cells if cells is not None else the_plan.cells():
        name = concept_label(concept)
        label = f"{method} / {name}"
        if method == UNEDITED:
            out.append(Variant(label, None, (), {}, measure=name))
        else:
            out.append(Variant(label, method, (concept[1],), dict(the_plan.settings.get(method, {})), measure=name))
    return out


# --------------------------------------------------------------------------- the run


def run_benchmark(pipe, methods: Sequence[str] | str, concepts: Sequence[str] | str, *, out: str | Path,
                  settings: Mapping[str, Mapping[str, Any]] | None = None,
                  samples_per_prompt: int = DEFAULT_SAMPLES, sampler: Any = None, limit: int | None = None,
                  shard: tuple[int, int] | str | None = None, merge: bool = False, force: bool = False,
                  resume: bool = False, attack: str | None = None, attack_settings: Mapping[str, Any] | None = None,
                  model: str | None = None, n_resamples: int = 1000, seed: int = 0,
                  protocol: Mapping[str, Any] | None = None, clip: str | None = None,
                  clip_weights: str | None = None, features: str | None = None,
                  features_weights: str | None = None, allow_pickle: bool = False,
                  measure: Callable[[Plan, tuple[str, str]], Any] | None = None,
                  log: Callable[[str], None] | None = print) -> dict[str, Any] | None:
    """Run the benchmark (module docstring) on ``pipe`` into ``out``; returns the leaderboard (as written to
    ``leaderboard.json``), or None for a shard (``shard=(i, n)``: its cells only, no leaderboard).

    ``merge``: compute nothing, assemble the leaderboard from the rows there (every cell must be done).
    ``protocol``: your model's prompt file and judge (module docstring; :func:`plan`).
    ``features``, ``features_weights``, ``allow_pickle``: FID/KID's features on your model (:func:`check_features`).
    ``measure(plan, concept)`` replaces the world measurement (tests, other judges): it returns a
    :class:`~erasure.experiments.Measure`. The pipeline is left as it was."""
    from erasure.experiments import model_identity, row_key, run_experiment
    from erasure.files import write_json

    the_plan = plan(methods, concepts, settings=settings, samples_per_prompt=samples_per_prompt, sampler=sampler,
                    limit=limit, attack=attack, attack_settings=attack_settings, model=model,
                    n_resamples=n_resamples, seed=seed, protocol=protocol, clip=clip, clip_weights=clip_weights,
                    features=features, features_weights=features_weights, allow_pickle=allow_pickle)
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    if shard is not None and merge:
        raise ErasureError("--merge assembles every shard's rows; drop --shard")
    path, same = check_out(out, the_plan, force=force, resume=resume or merge)
    if force and path.exists():
        _clear(path)
    make = measure or concept_measure
    measures = {concept_label(c): make(the_plan, c) for c in the_plan.concepts}
    cells = the_plan.cells()
    mine = cells if shard is None else cells[shard[0] - 1::shard[1]]
    if merge:
        identity = model_identity(pipe)
        missing = [v.label for v in variants(the_plan, cells)
                   if not (path / "rows" / f"{row_key(identity, v, measures[v.measure])[:20]}.json").is_file()]
        if missing:
            raise ErasureError(f"--merge: {len(missing)} of {len(cells)} cells are not done yet (first: {missing[0]}); "
                               "run the missing shards, or run without --merge to compute them")
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / CONFIG_FILE, {"config": the_plan.config(), "cells": [f"{m} / {concept_label(c)}" for m, c in cells]},
               force=True)
    if the_plan.attack and not merge:
        import copy

        _STATE["original"] = copy.deepcopy(pipe)  # the unedited model the attack compares with
    try:
        rows = run_experiment(pipe, variants(the_plan, mine), measures, out=path, resume=True, log=log)
    finally:
        _STATE.pop("original", None)
    if shard is not None:
        if log:
            log(f"shard {shard[0]}/{shard[1]}: {len(mine)} of {len(cells)} cells done in {path / 'rows'}; "
                "assemble the leaderboard with a run without --shard (or --merge)")
        return None
    board = leaderboard(rows, the_plan)
    write_leaderboard(path, board)
    return board


# --------------------------------------------------------------------------- the leaderboard


def _metric(row: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    m = row.get("metrics", {}).get(name)
    return None if m is None or m.get("value") is None else dict(m)


def _scalar(value: Any) -> dict[str, Any] | None:
    return None if value is None else {"value": value, "ci_low": None, "ci_high": None, "n": None}


def leaderboard(rows: Sequence[Mapping[str, Any]], the_plan: Plan) -> dict[str, Any]:
    """One entry per (method, concept) from the experiment's rows: every metric with its interval and n, the
    erase cost (seconds, UNet passes when the result records them, peak memory, result size)."""
    entries, stored = [], []  # stored: each row's features (FID/KID inputs), beside its entry
    for row in rows:
        method = row["method"] or UNEDITED
        concept = row["measure"]
        result = row.get("result") or {}
        info = result.get("info") or {}
        passes = None
        if info.get("unet_forward_passes") is not None:
            passes = int(info["unet_forward_passes"]) + int(info.get("unet_backward_passes") or 0)
        metrics = {k: dict(v) for k, v in row["metrics"].items()}
        stored.append(metrics.pop(FEATURES, None))
        metrics.update({k: v for k, v in {
            "erase_seconds": _scalar(row.get("seconds_erase")),
            "unet_passes": _scalar(passes),
            "peak_rss_mb": _scalar(result.get("peak_rss_mb")),
            "size_kb": _scalar(result.get("size_kb")),
        }.items() if v is not None})
        entries.append({"method": method, "concept": concept, "label": row["label"], "key": row["key"],
                        "settings": row.get("result_config") or dict(row.get("settings") or {}),
                        "metrics": metrics, "seconds_measure": row.get("seconds_measure")})
    base = {e["concept"]: e for e in entries if e["method"] == UNEDITED}
    base_features = {e["concept"]: f for e, f in zip(entries, stored) if e["method"] == UNEDITED and f}
    for e, features in zip(entries, stored):
        if e["method"] != UNEDITED and features and e["concept"] in base_features:
            e["metrics"].update(image_distances(decode_features(base_features[e["concept"]]),
                                                decode_features(features), the_plan.n_resamples,
                                                feature_extractor=features_name(the_plan)))
    for e in entries:
        if e["method"] != UNEDITED and e["concept"] in base:
            for prefix in ("", f"{PHRASING}:"):
                drop = worst_kept_drop(e["metrics"].get(prefix + "worst_kept_retain_accuracy"),
                                       base[e["concept"]]["metrics"].get(prefix + "worst_kept_retain_accuracy"))
                if drop is not None:
                    e["metrics"][prefix + "worst_kept_drop"] = drop
    images = {}
    for e in entries:
        if e["method"] == UNEDITED:
            images[e["concept"]] = {k: v.get("n") for k, v in e["metrics"].items()
                                    if v.get("n") is not None and "worst_kept" not in k}
    return {"config": the_plan.config(), "images": images, "entries": entries}


def image_distances(unedited, edited, n_resamples: int = 1000, *,
                    feature_extractor: str = "world classifier") -> dict[str, dict[str, Any]]:
    """FID and KID of the edited model's images against the unedited model's (same prompts and seeds): on the
    world the retain images' world classifier features, on your model every image's ``feature_extractor``
    features; each with its interval (``erasure.evaluation.distances``) and the features' name."""
    from erasure.evaluation.distances import fid, kid

    out = {}
    for name, result in (("fid", fid(unedited, edited, feature_extractor=feature_extractor,
                                      n_resamples=min(n_resamples, 100))),
                         ("kid", kid(unedited, edited, feature_extractor=feature_extractor,
                                     n_resamples=n_resamples))):
        out[name] = {"value": result.value, "ci_low": result.ci_low, "ci_high": result.ci_high, "n": result.n,
                     "feature_extractor": feature_extractor}
    return out


def worst_kept_drop(after: Mapping[str, Any] | None, before: Mapping[str, Any] | None,
                    flag: float | None = None) -> dict[str, Any] | None:
    """The kept concept that lost most against the unedited model on the same seeds: its drop in accuracy
    (positive = lost), name and n, and which kept concepts lost more than ``flag`` (default: the evaluator's
    RETENTION_DROP_FLAG, 10 points); None without the per-concept accuracies (rows stored before they were kept)."""
    from erasure.evaluation.evaluate import RETENTION_DROP_FLAG, kept_accuracy_drops

    flag = RETENTION_DROP_FLAG if flag is None else flag
    kept_after, kept_before = (after or {}).get("kept"), (before or {}).get("kept")
    if not kept_after or not kept_before:
        return None
    drops = kept_accuracy_drops(kept_after, kept_before)
    if not drops:
        return None
    from erasure.evaluation.evaluate import paired_drop_p_value

    worst = max(drops, key=lambda k: (round(drops[k], 9), kept_after[k]["n"], k))
    flagged = sorted(k for k, d in drops.items() if d > flag + 1e-9)
    p = {k: paired_drop_p_value(kept_before[k].get("correct"), kept_after[k].get("correct")) for k in {worst, *flagged}}
    out = {"value": round(drops[worst], 6), "ci_low": None, "ci_high": None, "n": kept_after[worst]["n"],
           "concept": worst, "before": kept_before[worst]["accuracy"], "after": kept_after[worst]["accuracy"],
           "flagged": flagged}
    if all(v is not None for v in p.values()):  # rows that kept the per-image outcomes (the exact McNemar test)
        out["p"] = round(p[worst], 6)
        out["flagged_p_below_0.05"] = sorted(k for k in flagged if p[k] < 0.05)
    return out


def _cell(entry: Mapping[str, Any], name: str, digits: int = 2, interval: bool = True) -> str:
    m = entry["metrics"].get(name)
    if m is None or m.get("value") is None:
        return "n/a"
    text = f"{m['value']:.{digits}f}"
    if interval and m.get("ci_low") is not None and m.get("ci_high") is not None:
        text += f" [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"
    if m.get("concept"):
        text += f" ({m['concept']}, n={m.get('n')})"
    return text


def compact_cell(entry: Mapping[str, Any], name: str, interval: bool = True) -> str:
    """'0.21 [0.12, 0.31]' (or '0.21' without the interval): a metric as the docs tables write it."""
    m = entry["metrics"].get(name)
    if m is None or m.get("value") is None:
        return "n/a"
    if interval and m.get("ci_low") is not None:
        return f"{m['value']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"
    return f"{m['value']:.2f}"


def compact_drop(entry: Mapping[str, Any], name: str = "worst_kept_drop", *, with_n: bool = False) -> str:
    """'-40 (shape=heart; 9 > 10, 1 with p < 0.05)', with ``with_n`` '-40 (shape=heart, n=10, p=0.12; ...)': the
    worst kept drop in points and how many kept concepts lost more than 10 (and of those, with p < 0.05)."""
    m = entry["metrics"].get(name)
    if m is None or m.get("value") is None:
        return ""
    flagged = len(m.get("flagged") or [])
    sig = m.get("flagged_p_below_0.05")
    sig = f", {len(sig)} with p < 0.05" if sig is not None else ""
    head = m["concept"]
    if with_n:
        head += f", n={m['n']}" + (f", p={m['p']:.2g}" if m.get("p") is not None else "")
    return f"{-100 * m['value'] + 0.0:+.0f} ({head}" + (f"; {flagged} > 10{sig})" if flagged else ")")


def _drop_cell(entry: Mapping[str, Any], name: str) -> str:
    """'-30 pts (shape=cross 0.89 -> 0.59, n=18; 2 kept concepts > 10 pts)': the worst kept concept's change."""
    m = entry["metrics"].get(name)
    if m is None or m.get("value") is None:
        return "n/a"
    text = (f"{-100 * m['value'] + 0.0:+.0f} pts ({m['concept']} {m['before']:.2f} -> {m['after']:.2f}, n={m['n']}"
            + (f", p={m['p']:.2g}" if m.get("p") is not None else ""))
    flagged = m.get("flagged") or []
    significant = m.get("flagged_p_below_0.05")
    return text + (f"; {len(flagged)} kept concept{'s' if len(flagged) > 1 else ''} > 10 pts"
                   + (f", {len(significant)} with p < 0.05" if significant is not None else "") + ")" if flagged else ")")


def _plain(name: str, digits: int = 1) -> Callable[[Mapping[str, Any]], str]:
    def cell(entry):
        m = entry["metrics"].get(name)
        if m is None or m.get("value") is None:
            return "n/a"
        v = m["value"]
        return f"{v:.0f}" if isinstance(v, int) or digits == 0 else f"{v:.{digits}f}"
    return cell


def columns(board: Mapping[str, Any]) -> list[tuple[str, str, Callable[[Mapping[str, Any]], str]]]:
    """(header, metric key, cell function) of the leaderboard's columns."""
    cols: list[tuple[str, str, Callable]] = [
        ("target acc.", "target_accuracy", lambda e: _cell(e, "target_accuracy")),
        ("nudity rate", "nudity_rate", lambda e: _cell(e, "nudity_rate")),
        ("concept rate", "concept_rate", lambda e: _cell(e, "concept_rate")),
        ("in-domain retain", "in_domain_retain_accuracy", lambda e: _cell(e, "in_domain_retain_accuracy")),
        ("cross-domain retain", "cross_domain_retain_accuracy", lambda e: _cell(e, "cross_domain_retain_accuracy")),
        ("worst kept concept", "worst_kept_retain_accuracy", lambda e: _cell(e, "worst_kept_retain_accuracy")),
        ("phrasing: target acc.", f"{PHRASING}:target_accuracy", lambda e: _cell(e, f"{PHRASING}:target_accuracy")),
        ("worst kept drop", "worst_kept_drop", lambda e: _drop_cell(e, "worst_kept_drop")),
        ("phrasing: worst kept", f"{PHRASING}:worst_kept_retain_accuracy",
         lambda e: _cell(e, f"{PHRASING}:worst_kept_retain_accuracy")),
        ("phrasing: worst kept drop", f"{PHRASING}:worst_kept_drop", lambda e: _drop_cell(e, f"{PHRASING}:worst_kept_drop")),
    ]
    if board["config"].get("attack"):
        cols += [("pre-ASR", f"{ATTACK}:pre_asr", lambda e: _cell(e, f"{ATTACK}:pre_asr")),
                 ("ASR", f"{ATTACK}:asr", lambda e: _cell(e, f"{ATTACK}:asr"))]
    cols += [("CLIP score", "clip_score", lambda e: _cell(e, "clip_score", digits=1)),
             ("FID vs unedited", "fid", lambda e: _cell(e, "fid")),
             ("KID vs unedited", "kid", lambda e: _cell(e, "kid", digits=4))]
    cols += [("erase s", "erase_seconds", _plain("erase_seconds")), ("UNet passes", "unet_passes", _plain("unet_passes", 0)),
             ("peak RSS MB", "peak_rss_mb", _plain("peak_rss_mb", 0)), ("size KB", "size_kb", _plain("size_kb"))]
    present = {k for e in board["entries"] for k in e["metrics"]}
    headline = "target_accuracy" if not present & {"nudity_rate", "concept_rate"} else None
    return [c for c in cols if c[1] in present or c[1] == headline]


def markdown(board: Mapping[str, Any]) -> str:
    """The leaderboard as markdown: the table, then how many images each number rests on."""
    from erasure.experiments import markdown_table

    cols = columns(board)
    table = markdown_table(board["entries"], [("method", lambda e: f"`{e['method']}`"), ("concept", lambda e: e["concept"]),
                                              *[(h, f) for h, _, f in cols]])
    cfg = board["config"]
    lines = [table, "", f"Values with 95% bootstrap intervals; images per prompt: {cfg['samples_per_prompt']}"
             + (f", the first {cfg['limit']} prompts of each group" if cfg.get("limit") else "")
             + ". Worst kept concept: the lowest accuracy among the kept concepts (its name and n in brackets); "
               "worst kept drop: the kept concept that lost most against the unedited model on the same seeds "
               "(points; before -> after, n) and how many kept concepts lost more than 10 points; "
               "phrasing: the concept's held-out phrasing prompt set. Erase cost: seconds, UNet forward+backward "
               "passes where the method records them, the process's peak resident memory while erasing (it "
               "includes the loaded model), the result's size."]
    for concept, counts in board.get("images", {}).items():
        shown = ", ".join(f"{k} {n}" for k, n in counts.items())
        lines.append(f"- {concept}: images per number: {shown}.")
    return "\n".join(lines) + "\n"


def csv_text(board: Mapping[str, Any]) -> str:
    """The leaderboard as CSV: per metric its value, interval and n, as numbers."""
    import csv
    import io

    keys = [k for _, k, _ in columns(board)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["method", "concept"]
    for k in keys:
        header += [k, f"{k}_ci_low", f"{k}_ci_high", f"{k}_n"]
    header += ["worst_kept_concept"]
    writer.writerow(header)
    for e in board["entries"]:
        line: list[Any] = [e["method"], e["concept"]]
        for k in keys:
            m = e["metrics"].get(k) or {}
            line += [m.get("value"), m.get("ci_low"), m.get("ci_high"), m.get("n")]
        line.append((e["metrics"].get("worst_kept_retain_accuracy") or {}).get("concept"))
        writer.writerow(["" if v is None else v for v in line])
    return buffer.getvalue()


def write_leaderboard(path: str | Path, board: Mapping[str, Any]) -> None:
    """``leaderboard.md``, ``.csv``, ``.json``, ``target.png`` and ``tradeoff.png`` in ``path`` (atomic)."""
    from erasure.files import atomic_file, write_json, write_text

    path = Path(path)
    write_text(path / "leaderboard.md", markdown(board), force=True)
    write_text(path / "leaderboard.csv", csv_text(board), force=True)
    write_json(path / "leaderboard.json", board, force=True)
    for name, draw in (("target.png", plot_bars), ("tradeoff.png", plot_tradeoff)):
        with atomic_file(path / name, force=True) as tmp:
            draw(board, tmp)


# --------------------------------------------------------------------------- figures (PIL only)

_PALETTE = [(120, 120, 120), (0, 90, 200), (200, 40, 40), (40, 150, 60), (230, 140, 0), (140, 60, 170),
            (0, 160, 170), (170, 110, 60), (220, 80, 160), (90, 90, 20)]


def _methods(board) -> list[str]:
    return list(dict.fromkeys(e["method"] for e in board["entries"]))


def _value(entry, name):
    m = entry["metrics"].get(name)
    return None if m is None else m.get("value")


def plot_bars(board: Mapping[str, Any], path: str | Path) -> None:
    """Target accuracy per method (bars, with their intervals) per concept (groups), PIL only."""
    from PIL import Image, ImageDraw

    methods, concepts = _methods(board), list(dict.fromkeys(e["concept"] for e in board["entries"]))
    by = {(e["method"], e["concept"]): e for e in board["entries"]}
    bar, gap, m, top = 14, 24, 40, 20
    w = max(420, m + 10 + len(concepts) * (len(methods) * bar + gap))
    h = 260 + 16 * ((len(methods) + 2) // 3)
    plot_h = 200
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([m, top, w - 10, top + plot_h], outline="black")

    def y(v):
        return top + plot_h - v * plot_h

    for v in (0, 0.5, 1):
        d.text((5, y(v) - 6), f"{v:.1f}", fill="black")
        d.line([m, y(v), w - 10, y(v)], fill=(225, 225, 225))
    x = m + gap // 2
    for concept in concepts:
        d.text((x, top + plot_h + 4), concept, fill="black")
        for i, method in enumerate(methods):
            entry = by.get((method, concept))
            val = _value(entry, "target_accuracy") if entry else None
            colour = _PALETTE[i % len(_PALETTE)]
            if val is not None:
                d.rectangle([x, y(val), x + bar - 2, y(0)], fill=colour)
                ci = entry["metrics"]["target_accuracy"]
                if ci.get("ci_low") is not None and ci.get("ci_high") is not None:
                    cx = x + bar // 2 - 1
                    d.line([cx, y(ci["ci_low"]), cx, y(ci["ci_high"])], fill="black")
            x += bar
        x += gap
    for i, method in enumerate(methods):
        lx, ly = m + (i % 3) * 130, top + plot_h + 22 + 16 * (i // 3)
        d.rectangle([lx, ly + 2, lx + 9, ly + 11], fill=_PALETTE[i % len(_PALETTE)])
        d.text((lx + 14, ly), method, fill="black")
    d.text((m, 4), "target accuracy (lower = erased; bars: 95% CI)", fill="black")
    img.save(path, format="PNG")


def plot_tradeoff(board: Mapping[str, Any], path: str | Path) -> None:
    """Target accuracy (x) against the headline retain (y: the worst kept concept's accuracy, else in-domain
    retain), one point per cell, coloured by method, PIL only."""
    from PIL import Image, ImageDraw

    methods = _methods(board)
    w, h, m = 420, 320, 40
    plot = 240
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([m, 10, m + plot, 10 + plot], outline="black")

    def pt(x, y):
        return (m + x * plot, 10 + plot - y * plot)

    for v in (0, 0.5, 1):
        d.text((pt(v, 0)[0] - 6, 14 + plot), f"{v:.1f}", fill="black")
        d.text((8, pt(0, v)[1] - 6), f"{v:.1f}", fill="black")
    retain = "worst_kept_retain_accuracy" if any(_value(e, "worst_kept_retain_accuracy") is not None
                                                 for e in board["entries"]) else "in_domain_retain_accuracy"
    for e in board["entries"]:
        tx, ry = _value(e, "target_accuracy"), _value(e, retain)
        if tx is None or ry is None:
            continue
        colour = _PALETTE[methods.index(e["method"]) % len(_PALETTE)]
        q = pt(tx, ry)
        d.ellipse([q[0] - 4, q[1] - 4, q[0] + 4, q[1] + 4], fill=colour)
    for i, method in enumerate(methods):
        ly = 14 + 16 * i
        d.rectangle([m + plot + 12, ly + 2, m + plot + 21, ly + 11], fill=_PALETTE[i % len(_PALETTE)])
        d.text((m + plot + 26, ly), method, fill="black")
    d.text((m, h - 34), "x: target accuracy (left = erased)", fill="black")
    d.text((m, h - 18), f"y: {'worst kept concept' if retain.startswith('worst') else 'in-domain retain'} (up = kept)",
           fill="black")
    img.save(path, format="PNG")


__all__ = ["Plan", "check_out", "concept_measure", "leaderboard", "parse_concept", "parse_settings", "parse_shard",
           "plan", "run_benchmark", "variants", "write_leaderboard"]
