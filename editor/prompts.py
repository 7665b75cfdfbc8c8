"""Prompt templates, special tokens and MLLM-output cleanup. Token strings are defined here and nowhere else.

MGIE (apple/ml-mgie demo.ipynb, mgie_train.py:530-531) talks to LLaVA v1 through the `vicuna_v1_1` conversation
template of haotian-liu/LLaVA @7ace501 (llava/conversation.py): system text, " USER: <message> ASSISTANT:".
The user message is the instruction in single quotes, a newline, then the image block
`<im_start>` + N x `<im_patch>` + `<im_end>`, N = (image_size / patch_size)^2 of the vision tower (256 for MGIE).
The trained answer is "<expressive instruction> [IMG0] [IMG1] ... [IMG7]</s>".
"""

from __future__ import annotations

import unicodedata

IM_PATCH = "<im_patch>"
IM_START = "<im_start>"
IM_END = "<im_end>"
NUM_IMG_TOKENS = 8
IMG_TOKENS = tuple(f"[IMG{i}]" for i in range(NUM_IMG_TOKENS))
EOS = "</s>"

VICUNA_V1_1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
MAX_INSTRUCTION_CHARS = 1000
# Strings the tokenizer maps to special ids: typed by a user they would corrupt the prompt or the [IMG] search.
RESERVED_TOKENS = (IM_PATCH, IM_START, IM_END, *IMG_TOKENS, "<s>", EOS, "<unk>")


def check_text(text: object, name: str = "instruction", reserved: tuple[str, ...] = ()) -> str:
    """Strip and validate user text; an empty or whitespace-only text is a ValueError naming the argument."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be text, got {type(text).__name__} {text!r:.40}")
    for char in text:
        if "\ud800" <= char <= "\udfff":  # a lone UTF-16 surrogate: no tokenizer or JSON encoder takes it
            raise ValueError(f"{name} contains a broken character (lone surrogate U+{ord(char):04X}); retype it")
        if unicodedata.category(char) == "Cc" and char not in "\t\n\r":
            raise ValueError(f"{name} contains the control character U+{ord(char):04X}; remove it")
    text = text.strip()
    if not text:
        raise ValueError(f"{name} is empty: type what should change, e.g. 'make the sky blue'")
    if all(unicodedata.category(char) in ("Cf", "Zs", "Zl", "Zp") or char.isspace() for char in text):
        raise ValueError(f"{name} has no visible characters (only zero-width, format or BOM characters)")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise ValueError(f"{name} is {len(text)} characters long; the limit is {MAX_INSTRUCTION_CHARS}")
    found = [token for token in reserved if token in text]
    if found:
        raise ValueError(f"{name} contains the reserved token(s) {', '.join(found)}; please remove them")
    return text


def image_block(num_patches: int) -> str:
    return IM_START + IM_PATCH * num_patches + IM_END


def mgie_prompt(instruction: str, num_patches: int) -> str:
    """The exact MGIE inference prompt (vicuna_v1_1, open assistant turn, no trailing space)."""
    message = f"what will this image be like if '{instruction}'\n{image_block(num_patches)}"
    return f"{VICUNA_V1_1_SYSTEM} USER: {message} ASSISTANT:"


def mgie_answer(expressive: str) -> str:
    """The training target after "ASSISTANT:" (without the closing </s>): text, then the 8 [IMG] tokens."""
    return f" {expressive} {' '.join(IMG_TOKENS)}"


def clean_expressive(decoded: str) -> str:
    """MGIE's `remove_alter` (apple/ml-mgie demo.ipynb cell 1), rewritten, with its empty-text crash fixed.

    `decoded` is the whole decoded sequence (prompt included, special tokens kept). Steps, in order:
    1. drop everything up to and including the first "ASSISTANT:"; 2. cut at the first "</s>";
    3. cut at the first "alternative" (any case; also catches "Alternatively"); 4. cut at the first "[IMG0]";
    5. keep the first two "."-separated pieces, each stripped, joined by "." (no space, as the reference does),
    and end with ".". The reference indexes the last character of an empty string here and crashes
    (docs/mgie.md G12); an empty result is returned as "" instead.
    """
    text = decoded
    marker = "ASSISTANT:"
    if marker in text:
        text = text[text.index(marker) + len(marker) :].strip()
    if EOS in text:
        text = text[: text.index(EOS)].strip()
    lowered = text.lower()
    if "alternative" in lowered:
        text = text[: lowered.index("alternative")]
    if IMG_TOKENS[0] in text:
        text = text[: text.index(IMG_TOKENS[0])]
    text = ".".join(piece.strip() for piece in text.split(".")[:2])
    if not text:
        return ""
    if not text.endswith("."):
        text += "."
    return text.strip()
