"""Text-encoder outputs for prompts, cached by (text encoder fingerprint, prompt).

Closed-form editors spend most of their time encoding prompts (a ViT-L/14-shaped encoder takes ~0.27 s per
prompt on one CPU thread, against about a second for the whole solve; see scripts/bench_closed_form.py), so a second edit with an overlapping concept
list should encode only what is new. The cache key includes a fingerprint of the text encoder's
weights, so an edited or different encoder never reuses stale embeddings.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from erasure.errors import ErasureError


@dataclass(frozen=True)
class PromptEncoding:
    """One prompt, encoded: ``hidden`` (context, width) output tokens, ``ids`` its token ids, and
    ``length`` the number of real tokens including start and end (so ``ids[length-1]`` is the end token)."""

    prompt: str
    ids: tuple[int, ...]
    length: int
    hidden: Tensor


# per encoder object (weakly held): (storage pointers and in-place versions, sha256). Keyed by the object, not
# by the pointers alone: a freed encoder's memory is reused by the next one loaded, with the same pointers and
# version 0, and a pointer-keyed memo then handed the new encoder the old one's fingerprint (and embeddings).
_FINGERPRINTS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def text_encoder_fingerprint(text_encoder: nn.Module) -> str:
    """sha256 over the encoder's parameters; memoised per encoder on (storage pointer, in-place version) of
    every parameter, so an unchanged encoder is hashed once per process and any in-place edit is noticed."""
    params = list(text_encoder.state_dict().values())
    key = tuple((p.data_ptr(), p._version, tuple(p.shape), str(p.dtype)) for p in params)
    memo = _FINGERPRINTS.get(text_encoder)
    if memo is None or memo[0] != key:
        h = hashlib.sha256()
        for name, p in text_encoder.state_dict().items():
            h.update(name.encode())
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        memo = (key, h.hexdigest())
        _FINGERPRINTS[text_encoder] = memo
    return memo[1]


def conditioning_fingerprint(tokenizer, text_encoder: nn.Module) -> str:
    """What a prompt's encoding depends on besides the prompt: the encoder's weights, its config (two encoders
    with the same weights but another activation encode differently) and the tokenizer's special tokens and
    lengths (SD 2.x pads with "!", SD 1.x with end-of-text: other ids, other embeddings)."""
    config = getattr(text_encoder, "config", None)
    config_text = config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else repr(config)
    tokenizer_text = repr((type(tokenizer).__name__, getattr(tokenizer, "model_max_length", None), len(tokenizer),
                           getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None),
                           getattr(tokenizer, "pad_token_id", None)))
    h = hashlib.sha256(text_encoder_fingerprint(text_encoder).encode())
    h.update(config_text.encode())
    h.update(tokenizer_text.encode())
    return h.hexdigest()


class EmbeddingCache:
    """Prompt encodings in memory, optionally also on disk (``cache_dir/<fingerprint>/<sha1(prompt)>.safetensors``)."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self._memory: dict[tuple[str, str], PromptEncoding] = {}
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.encoded = 0  # prompts that went through the text encoder (the rest were cache hits)

    def __len__(self) -> int:
        return len(self._memory)

    def clear(self) -> None:
        self._memory.clear()

    @torch.no_grad()
    def encode(self, pipe, prompts: list[str], batch_size: int = 64) -> list[PromptEncoding]:
        """Encodings of ``prompts`` with ``pipe``'s tokenizer and text encoder (as the pipeline conditions on them)."""
        tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
        fp = conditioning_fingerprint(tokenizer, encoder)
        todo = [p for p in dict.fromkeys(prompts) if (fp, p) not in self._memory and not self._from_disk(fp, p)]
        max_len = tokenizer.model_max_length
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            lengths = [len(tokenizer(p, truncation=False).input_ids) for p in chunk]
            for p, n in zip(chunk, lengths):
                if n > max_len:
                    raise ErasureError(
                        f"prompt {p[:60]!r} has {n - 2} tokens but the text encoder reads at most {max_len - 2}; "
                        "shorten it"
                    )
            ids = tokenizer(chunk, padding="max_length", max_length=max_len, truncation=True,
                            return_tensors="pt").input_ids
            hidden = encoder(ids.to(encoder.device))[0].float().cpu()
            for p, n, row, h in zip(chunk, lengths, ids, hidden):
                enc = PromptEncoding(p, tuple(row.tolist()), n, h.clone())
                self._memory[(fp, p)] = enc
                self._to_disk(fp, enc)
            self.encoded += len(chunk)
        return [self._memory[(fp, p)] for p in prompts]

    def _path(self, fp: str, prompt: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / fp[:16] / (hashlib.sha1(prompt.encode()).hexdigest() + ".safetensors")

    def _from_disk(self, fp: str, prompt: str) -> bool:
        path = self._path(fp, prompt)
        if path is None or not path.exists():
            return False
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            if meta.get("prompt") != prompt:
                return False
            self._memory[(fp, prompt)] = PromptEncoding(
                prompt, tuple(f.get_tensor("ids").tolist()), int(meta["length"]), f.get_tensor("hidden")
            )
        return True

    def _to_disk(self, fp: str, enc: PromptEncoding) -> None:
        path = self._path(fp, enc.prompt)
        if path is None:
            return
        import os

        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"hidden": enc.hidden.contiguous(), "ids": torch.tensor(enc.ids)}, str(tmp),
                  metadata={"prompt": enc.prompt, "length": str(enc.length)})
        os.replace(tmp, path)


DEFAULT_CACHE = EmbeddingCache()
