"""LLaMA token ids and decoded text as transformers 4.28's slow `LlamaTokenizer` gave them, rebuilt on SentencePiece.

Both references ran that tokenizer at inference, so their models only ever saw its ids:
- MGIE: the demo loads `AutoTokenizer.from_pretrained(LLaVA-7B-v1)` (apple/ml-mgie demo.ipynb cell 2) inside LLaVA
  @7ace501, whose pinned transformers (git cae78c46, 4.28.0.dev0) has no `LlamaTokenizerFast` (haotian-liu/LLaVA#5),
  so the slow class loads; training loads it with `use_fast=False` (apple/ml-mgie mgie_train.py:688-694).
- SmartEdit: `AutoTokenizer.from_pretrained(vicuna, use_fast=False)` under transformers==4.28.1
  (TencentARC/SmartEdit test/DS_SmartEdit_test.py `main()`, requirements.txt).

Encoding (`PreTrainedTokenizer.tokenize` of 4.28): the text is cut around the added tokens (longest match first);
whitespace touching an added token is stripped on both sides (the references add them as plain strings); every
remaining chunk is SentencePiece-encoded on its own, so each starts with a fresh "▁"; BOS is prepended, no EOS.
`<s>`, `</s>` and `<unk>` typed in the text are cut out too, without the stripping (they are `AddedToken`s with
lstrip = rstrip = False). Transformers 5's tokenizers keep a newline before an added token and give other ids.

Decoding (`_decode` + `LlamaTokenizer.convert_tokens_to_string` of 4.28.1, skip_special_tokens=False, no cleanup:
LlamaTokenizer's `clean_up_tokenization_spaces` default is False): runs of ordinary ids are decoded by SentencePiece
(which drops each run's leading "▁"), added tokens stay as their text, and the pieces are joined by single spaces;
inside a run, `<s>`/`</s>`/`<unk>` are written as text with a space before them unless they open the run or follow
another of them. The golden fixtures in tests/fixtures/ (tools/golden_ids.py) pin both directions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import sentencepiece as spm

SPECIAL_TOKENS = ("<s>", "</s>", "<unk>")  # SentencePiece ids 1, 2, 0 in LLaMA's tokenizer.model


class SlowLlamaTokenizer:
    """`sp` plus the added tokens (text -> id) of the reference tokenizer; `encode` and `decode` follow 4.28."""

    def __init__(self, sp: spm.SentencePieceProcessor, added: Mapping[str, int] | None = None) -> None:
        self.sp, self.added = sp, {}
        self.specials = {token: sp.piece_to_id(token) for token in SPECIAL_TOKENS}
        self._special_ids = {i: t for t, i in self.specials.items()}
        self._set_added(dict(added or {}))

    def _set_added(self, added: dict[str, int]) -> None:
        self.added = added
        self._by_id = {i: t for t, i in added.items()}
        cut = sorted([*added, *self.specials], key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(t) for t in cut) + ")")

    @classmethod
    def from_file(cls, model_file: str | Path, added: Mapping[str, int] | None = None) -> SlowLlamaTokenizer:
        return cls(spm.SentencePieceProcessor(model_file=str(model_file)), added)

    @classmethod
    def from_folder(cls, folder: str | Path) -> SlowLlamaTokenizer:
        """`tokenizer.model` and, when present, `added_tokens.json` (LLaVA's `<im_patch>`, `<im_start>`, `<im_end>`)."""
        folder = Path(folder)
        added_file = folder / "added_tokens.json"
        added = json.loads(added_file.read_text(encoding="utf-8")) if added_file.exists() else {}
        return cls.from_file(folder / "tokenizer.model", added)

    def add_tokens(self, tokens: Iterable[str]) -> None:
        """`tokenizer.add_tokens(tokens)`: each token not yet in the vocabulary gets the next id, len(self)."""
        added = dict(self.added)
        for token in tokens:
            if token not in added and self.sp.piece_to_id(token) == self.sp.unk_id() and token != "<unk>":
                added[token] = self.sp.get_piece_size() + len(added)
        self._set_added(added)

    def __len__(self) -> int:
        return self.sp.get_piece_size() + len(self.added)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self.added.get(tokens, self.sp.piece_to_id(tokens))
        return [self.convert_tokens_to_ids(token) for token in tokens]

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    def encode(self, text: str, bos: bool = True) -> list[int]:
        """Ids of `text`, BOS first when `bos` (what `tokenizer(text).input_ids` gave), never EOS."""
        parts = self._split.split(text)  # even indices: text chunks (maybe empty); odd: added or special tokens
        for i in range(1, len(parts), 2):
            if parts[i] in self.added:  # strip the neighbours of an added token, never of <s>/</s>/<unk>
                parts[i - 1], parts[i + 1] = parts[i - 1].rstrip(), parts[i + 1].lstrip()
        ids = [self.bos_id] if bos else []
        for i, part in enumerate(parts):
            if i % 2:
                ids.append(self.added.get(part, self.specials.get(part)))
            elif part:
                ids += self.sp.encode(part)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """`tokenizer.decode(ids)` of 4.28.1: special tokens kept, no cleanup of spaces."""
        texts: list[str] = []
        run: list[int] = []
        for token in ids:
            if token in self._by_id:
                if run:
                    texts.append(self._decode_run(run))
                    run = []
                texts.append(self._by_id[token])
            else:
                run.append(token)
        if run:
            texts.append(self._decode_run(run))
        return " ".join(texts)

    def _decode_run(self, ids: list[int]) -> str:
        out, pending, after_special = "", [], False
        for i, token in enumerate(ids):
            if token in self._special_ids:
                if not after_special and i:
                    out += " "
                out += self.sp.decode(pending) + self._special_ids[token]
                pending, after_special = [], True
            else:
                pending.append(token)
                after_special = False
        return out + self.sp.decode(pending)
