"""Things that real SD pipelines fetch from the Hub, built locally instead.

``clip_tokenizer_files`` writes the OpenAI CLIP BPE tokenizer (``vocab.json`` +
``merges.txt``, 49,408 tokens, the token ids SD 1.x uses) from the vocabulary that
open-clip-torch ships inside its wheel, so no download is ever needed.
"""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache
from pathlib import Path

# The token table size of OpenAI CLIP, and so of every SD 1.x/2.x text encoder.
CLIP_VOCAB_SIZE = 49408
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


@lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[str, int], list[str]]:
    import open_clip

    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_tokens = list(_bytes_to_unicode().values())
    vocab_list = byte_tokens + [t + "</w>" for t in byte_tokens]
    vocab_list += ["".join(m.split()) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab_list) == CLIP_VOCAB_SIZE, len(vocab_list)
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def write_clip_tokenizer_files(folder: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the CLIP tokenizer into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_bpe()
    # each file replaced atomically: processes that build the same folder at once (the world's training lanes
    # start two stages together) never read a half-written vocabulary
    for name, text in (("vocab.json", json.dumps(vocab, ensure_ascii=False)),
                       ("merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")):
        target = folder / name
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    return folder


def clip_tokenizer(folder: str | Path | None = None, pad_token: str = "<|endoftext|>"):
    """A ``transformers.CLIPTokenizer`` with OpenAI CLIP's ids, built without the network.

    SD 1.x pads with ``<|endoftext|>`` (the default); SD 2.x pads with ``"!"``.
    """
    import tempfile

    from transformers import CLIPTokenizer

    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="erasure-clip-tokenizer-"))
    folder = write_clip_tokenizer_files(folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad_token, model_max_length=77)
