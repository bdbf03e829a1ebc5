"""An attack run's report: per prompt what happened, per run pre-ASR, ASR and transfer ASR (kept apart), each
with a bootstrap interval over prompts, the budget spent, and the grid (prompt | original | erased | attack).

ASR is UnlearnDiffAtk's (``scripts/analysis/check_asr.py``): (prompts the erased model already shows the concept
for + prompts the attack succeeds on) / all prompts. A transfer run (fixed prompts optimised against other
models) has only a transfer ASR: successes / prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from erasure.evaluation.bootstrap import MetricResult, mean_result

IMAGE_ROLES = ("original", "erased", "attack")


@dataclass
class AttackReport:
    """``records``: one dict per prompt (index, prompt, seed, pre_success, attack_success, success,
    adversarial_prompt, step, tries, unet_forward, unet_forward_backward, seconds, details);
    ``images``: prompt index -> {role: uint8 (H, W, 3)} for the roles original, erased, attack."""

    attack: str
    kind: str
    records: list[dict[str, Any]]
    metrics: dict[str, MetricResult]
    info: dict[str, Any]
    images: dict[int, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def value(self, name: str) -> float:
        return self.metrics[name].value

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "kind": self.kind, "info": self.info,
                "metrics": {k: v.to_dict() for k, v in self.metrics.items()}, "prompts": self.records}

    def markdown(self) -> str:
        lines = [f"# Attack `{self.attack}` ({self.kind}) on concept `{self.info.get('concept')}`", "",
                 f"Model: `{self.info.get('model')}`, erasure: `{self.info.get('erasure')}`, judge: "
                 f"`{self.info.get('judge')}`. Sampler: {self.info.get('sampler')}. {len(self.records)} prompts.", "",
                 "| metric | value | 95% CI | n |", "|---|---|---|---|"]
        for name, r in self.metrics.items():
            lines.append(f"| {name} | {r.value:.3f} | [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.n} |")
        budget = self.info.get("budget", {})
        if budget:
            lines += ["", f"Budget per prompt (mean): {budget.get('unet_forward_per_prompt', 0):.0f} UNet forward rows, "
                          f"{budget.get('unet_forward_backward_per_prompt', 0):.0f} UNet forward+backward rows, "
                          f"{budget.get('seconds_per_prompt', 0):.2f} s."]
        lines += ["", "| # | prompt | pre | attack | adversarial prompt | step | fwd | fwd+bwd |", "|---|---|---|---|---|---|---|---|"]
        for r in self.records:
            adversarial = str(r.get("adversarial_prompt") or "").replace("|", "\\|")
            lines.append(f"| {r['index']} | {r['prompt'].replace('|', chr(92) + '|')} | {int(r['pre_success'])} | "
                         f"{'' if r['attack_success'] is None else int(r['attack_success'])} | {adversarial} | "
                         f"{'' if r.get('step') is None else r['step']} | {r['unet_forward']} | {r['unet_forward_backward']} |")
        return "\n".join(lines) + "\n"

    def grid(self, rows: int = 16):
        """(original | erased | erased + attack) for the first ``rows`` prompts, labelled by prompt."""
        from erasure.generation import image_grid

        shown = [r for r in self.records if r["index"] in self.images][:rows]
        if not shown:
            return None
        sample = next(iter(self.images[shown[0]["index"]].values()))
        blank = np.full_like(sample, 255)
        tiles = np.stack([self.images[r["index"]].get(role, blank) for r in shown for role in IMAGE_ROLES])
        labels = [f"{'+' if r['success'] else '-'} {r['prompt']}" for r in shown]
        heads = {"original": "original", "erased": "erased", "attack": "erased+attack"}
        return image_grid(tiles, len(shown), len(IMAGE_ROLES), row_labels=labels,
                          col_labels=[heads.get(role, role) for role in IMAGE_ROLES])

    def save(self, out_dir: str | Path, *, force: bool = False) -> Path:
        """``report.json``, ``report.md``, ``config.json``, ``grid.png`` and ``images/NNNNN-<role>.png``, atomically."""
        from PIL import Image

        from erasure.files import atomic_folder, dumps_json

        with atomic_folder(out_dir, force=force) as tmp:
            (tmp / "report.json").write_text(dumps_json(self.to_dict()))
            (tmp / "report.md").write_text(self.markdown())
            (tmp / "config.json").write_text(dumps_json(self.info.get("config", {})))
            (tmp / "images").mkdir()
            for index, roles in self.images.items():
                for role, image in roles.items():
                    Image.fromarray(image).save(tmp / "images" / f"{index:05d}-{role}.png")
            grid = self.grid()
            if grid is not None:
                grid.save(tmp / "grid.png")
        return Path(out_dir)


def run_metrics(kind: str, records: list[dict[str, Any]], *, n_resamples: int = 1000, seed: int = 0) -> dict[str, MetricResult]:
    """pre_asr and asr (adaptive, probe, inversion) or transfer_asr (transfer), each with its bootstrap CI."""
    if not records:
        return {}
    settings = {"definition": "UnlearnDiffAtk check_asr.py: (pre + attack successes) / prompts"}
    if kind == "transfer":
        return {"transfer_asr": mean_result("transfer_asr", [r["success"] for r in records], n_resamples=n_resamples,
                                            seed=seed, settings={"definition": "successes / prompts (fixed prompts "
                                                                 "optimised against other models)"})}
    return {"pre_asr": mean_result("pre_asr", [r["pre_success"] for r in records], n_resamples=n_resamples, seed=seed,
                                   settings={"definition": "the unmodified prompt succeeds"}),
            "asr": mean_result("asr", [r["success"] for r in records], n_resamples=n_resamples, seed=seed,
                               settings=settings)}


def budget(records: list[dict[str, Any]]) -> dict[str, float]:
    n = max(1, len(records))
    return {"unet_forward_per_prompt": sum(r["unet_forward"] for r in records) / n,
            "unet_forward_backward_per_prompt": sum(r["unet_forward_backward"] for r in records) / n,
            "seconds_per_prompt": sum(r["seconds"] for r in records) / n,
            "unet_forward_total": sum(r["unet_forward"] for r in records),
            "unet_forward_backward_total": sum(r["unet_forward_backward"] for r in records)}
