"""Tiny tokenizers in the official layouts: LLaMA/LLaVA's SentencePiece BPE and CLIP's byte-level BPE.

Both are trained or assembled from a small fixed corpus, so every build writes the same bytes.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from editor.layouts.files import write_json
from editor.prompts import IM_END, IM_PATCH, IM_START
from editor.prompts import VICUNA_V1_1_SYSTEM as VICUNA_SYSTEM

LLAVA_TOKENS = (IM_PATCH, IM_START, IM_END)  # ids V, V+1, V+2 after the SentencePiece vocab
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)


def _fresh_tokenizer_dir(out_dir: Path) -> Path:
    """Create `out_dir` and drop tokenizer files a previous build left there (they would load instead)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:
        (out_dir / name).unlink(missing_ok=True)
    return out_dir


# ------------------------------------------------------------------------------- LLaMA-style tokenizer

_COLOURS = ("red", "blue", "green", "yellow", "black", "white", "purple", "orange", "pink", "golden")
_OBJECTS = (
    "sky", "car", "cat", "dog", "tree", "house", "hat", "shirt", "water", "grass",
    "flowers", "sun", "moon", "road", "boat", "bird", "mountain", "face", "hair", "background",
)  # fmt: skip
_STYLES = ("winter", "night", "sunset", "a painting", "a cartoon", "snow", "rain", "fire", "autumn", "summer")


def _edit_sentences() -> list[str]:
    """A few hundred plain English edit instructions (deterministic order)."""
    sentences = []
    for colour, obj in itertools.product(_COLOURS, _OBJECTS):
        sentences.append(f"make the {obj} {colour}")
        sentences.append(f"turn the {obj} {colour}")
    for obj in _OBJECTS:
        sentences += [f"add a {obj}", f"remove the {obj}", f"add a {obj} to the background", f"make it a {obj}"]
    for style in _STYLES:
        sentences += [f"make it {style}", f"turn the sky into {style}", f"what if it was {style}"]
    sentences += [
        "what will this image be like if",
        "make it look older",
        "make the photo brighter and sharper",
        "change the colour of the car to blue",
        "put sunglasses on the man",
        "let the woman smile",
        "replace the cat with a dog",
        "the image shows a person standing in front of a large building with 2 windows and 13 doors",
    ]
    return sentences


def _llama_corpus(extra: Iterable[str]) -> list[str]:
    return [VICUNA_SYSTEM, "USER", "ASSISTANT", "USER: ASSISTANT:", *_edit_sentences(), *extra]


def _train_sentencepiece(vocab_size: int, sentences: list[str]) -> bytes:
    """Train a BPE SentencePiece model configured like LLaMA's tokenizer.model."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece="<unk>",
        bos_piece="<s>",
        eos_piece="</s>",
        add_dummy_prefix=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _legacy_added_token(content: str, with_type: bool) -> dict[str, Any]:
    token: dict[str, Any] = {
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }
    return {"__type": "AddedToken", **token} if with_type else token


def _write_legacy_llama_configs(out_dir: Path) -> None:
    """tokenizer_config.json / special_tokens_map.json as transformers 4.28-4.30 wrote them for LLaVA."""
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    config: dict[str, Any] = {name: _legacy_added_token(text, True) for name, text in specials.items()}
    config.update(
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 2048,
            "pad_token": None,
            "padding_side": "right",
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
        }
    )
    write_json(out_dir / "tokenizer_config.json", config)
    special_map = {name: _legacy_added_token(text, False) for name, text in specials.items()}
    write_json(out_dir / "special_tokens_map.json", special_map)


def build_llama_tokenizer(
    out_dir: Path, *, vocab_size: int = 512, corpus: Iterable[str] = (), add_llava_tokens: bool = True
) -> None:
    """Write a LLaMA-style tokenizer (SentencePiece BPE + HF files) to `out_dir`.

    Ids: <unk> 0, <s> 1, </s> 2, the 256 byte pieces 3..258 (so "\\n" is <0x0A> = 13 as in LLaMA), then
    BPE merges up to `vocab_size`; with `add_llava_tokens`, <im_patch>, <im_start>, <im_end> get
    vocab_size, +1, +2 the way LLaVA added them (`add_tokens(..., special_tokens=True)`).
    """
    from transformers import LlamaTokenizer

    out_dir = _fresh_tokenizer_dir(out_dir)
    (out_dir / "tokenizer.model").write_bytes(_train_sentencepiece(vocab_size, _llama_corpus(corpus)))

    tokenizer = LlamaTokenizer.from_pretrained(out_dir, add_bos_token=True, add_eos_token=False)
    if add_llava_tokens:
        tokenizer.add_tokens(list(LLAVA_TOKENS), special_tokens=True)
    tokenizer.save_pretrained(out_dir)  # tokenizer.json (with the BOS post-processor and added tokens)

    for name in _TOKENIZER_FILES[1:]:  # keep tokenizer.model + tokenizer.json, rewrite the rest 4.30-style
        (out_dir / name).unlink(missing_ok=True)
    _write_legacy_llama_configs(out_dir)
    if add_llava_tokens:
        write_json(out_dir / "added_tokens.json", {tok: vocab_size + i for i, tok in enumerate(LLAVA_TOKENS)})


# --------------------------------------------------------------------------------- CLIP-style tokenizer

_CLIP_WORDS = ("make", "it", "the", "blue", "red", "green", "sky", "turn", "add", "remove", "photo", "of", "a")


def _byte_unicode_chars() -> list[str]:
    """GPT-2/CLIP's byte -> printable unicode table, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(shifted))]


def clip_vocab_and_merges(words: Iterable[str] = _CLIP_WORDS) -> tuple[list[str], list[tuple[str, str]]]:
    """Bytes, bytes + </w>, the merges that spell each of `words` (left to right), then the two specials."""
    chars = _byte_unicode_chars()
    vocab = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in merges:
                merges.append(pair)
                vocab.append(pair[0] + pair[1])
            pieces = [pair[0] + pair[1], *pieces[2:]]
    return [*vocab, CLIP_BOS, CLIP_EOS], merges


def build_clip_tokenizer(out_dir: Path, words: Iterable[str] = _CLIP_WORDS) -> None:
    """Write a tiny CLIPTokenizer folder (vocab.json, merges.txt, tokenizer.json, configs); max length 77.
    Each of `words` becomes one token."""
    from transformers import CLIPTokenizer

    out_dir = _fresh_tokenizer_dir(out_dir)
    vocab, merges = clip_vocab_and_merges(words)
    write_json(out_dir / "vocab.json", {token: i for i, token in enumerate(vocab)})
    merge_lines = [f"{left} {right}" for left, right in merges]
    (out_dir / "merges.txt").write_text("\n".join(["#version: 0.2", *merge_lines]) + "\n", encoding="utf-8")

    CLIPTokenizer.from_pretrained(out_dir, model_max_length=77).save_pretrained(out_dir)
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for loader_state in ("is_local", "local_files_only"):  # facts about this load, not part of the layout
        config.pop(loader_state, None)
    write_json(config_path, config)
    specials = {"bos_token": CLIP_BOS, "eos_token": CLIP_EOS, "pad_token": CLIP_EOS, "unk_token": CLIP_EOS}
    write_json(out_dir / "special_tokens_map.json", specials)
