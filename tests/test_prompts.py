"""The MGIE prompt string, its token ids, and the reference's expressive-text cleanup, pinned against docs/mgie.md."""

import pytest

from editor.prompts import (
    IM_END,
    IM_PATCH,
    IM_START,
    IMG_TOKENS,
    RESERVED_TOKENS,
    check_text,
    clean_expressive,
    mgie_answer,
    mgie_prompt,
)

SPEC_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: what will this image be like if "
    "'make the frame red'\n<im_start>" + "<im_patch>" * 256 + "<im_end> ASSISTANT:"
)


def test_prompt_string_matches_spec_exactly():
    assert mgie_prompt("make the frame red", 256) == SPEC_PROMPT


def test_answer_format_is_the_training_target():
    assert (
        mgie_answer("the frame turns red.")
        == " the frame turns red. [IMG0] [IMG1] [IMG2] [IMG3] [IMG4] [IMG5] [IMG6] [IMG7]"
    )


def test_prompt_token_ids(mgie):
    """BOS first, no EOS, the image block is exactly <im_start> + N x <im_patch> + <im_end>, and the text around it
    round-trips. Ids are relative to the tiny vocabulary V: <im_patch>=V, <im_start>=V+1, <im_end>=V+2, [IMG0]=V+3."""
    tok = mgie.tokenizer
    ids = mgie.prompt_ids("make the frame red")[0].tolist()
    vocab = len(tok) - 11
    patch, start, end = tok.convert_tokens_to_ids([IM_PATCH, IM_START, IM_END])
    assert (patch, start, end) == (vocab, vocab + 1, vocab + 2)
    assert tok.convert_tokens_to_ids(list(IMG_TOKENS)) == list(range(vocab + 3, vocab + 11))
    n = mgie.num_patches
    assert ids[0] == 1 and ids[-1] != 2 and ids.count(1) == 1
    s = ids.index(start)
    assert ids[s + 1 : s + 1 + n] == [patch] * n and ids[s + 1 + n] == end and ids.count(patch) == n
    assert tok.decode(ids[1:s]).endswith("if 'make the frame red'")
    assert tok.decode(ids[s + n + 2 :]) == "ASSISTANT:"
    assert tok.decode(ids).endswith("<im_patch> <im_end> ASSISTANT:")
    # the newline before <im_start> is stripped, as the reference's transformers-4.28 slow tokenizer strips the
    # whitespace next to an added token (tests/test_golden_ids.py pins the ids)
    assert ids[s - 1] != tok.convert_tokens_to_ids("<0x0A>")


@pytest.mark.parametrize(
    ("decoded", "expected"),
    [
        ("... ASSISTANT: The frame turns red. [IMG0] [IMG1]</s>", "The frame turns red."),
        (
            "USER: x ASSISTANT: The frame turns red. The glasses shine. More text. [IMG0]",
            "The frame turns red.The glasses shine.",
        ),
        ("ASSISTANT: Red frame</s> ignored", "Red frame."),
        ("ASSISTANT: The frame is red. Alternatively, it could be pink.", "The frame is red."),
        ("ASSISTANT: A red frame, an alternative look", "A red frame, an."),
        ("ASSISTANT: [IMG0] [IMG1]", ""),
        ("ASSISTANT:", ""),
        ("ASSISTANT: ...", "."),
        ("no marker at all. second. third", "no marker at all.second."),
    ],
)
def test_clean_expressive_follows_remove_alter(decoded, expected):
    assert clean_expressive(decoded) == expected


def test_clean_expressive_uses_first_assistant_marker():
    assert clean_expressive("sys ASSISTANT: Blue sky. ASSISTANT: again") == "Blue sky.ASSISTANT: again."


@pytest.mark.parametrize("bad", ["", "   ", "\n\t", None, 3])
def test_empty_or_non_text_instruction_is_rejected(bad):
    with pytest.raises(ValueError, match="instruction"):
        check_text(bad)


def test_reserved_tokens_are_rejected():
    with pytest.raises(ValueError, match=r"reserved token\(s\) \[IMG0\]"):
        check_text("make [IMG0] red", reserved=RESERVED_TOKENS)
    assert check_text("  make it red  ", reserved=RESERVED_TOKENS) == "make it red"


def test_overlong_instruction_is_rejected():
    with pytest.raises(ValueError, match="limit is 1000"):
        check_text("x" * 1001)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("make it \ud800 red", "lone surrogate U\\+D800"),
        ("\udfff", "lone surrogate U\\+DFFF"),
        ("\x00\x00\x00", "control character U\\+0000"),
        ("make it\x00red", "control character U\\+0000"),
        ("\u200b\u200c\u200d", "no visible characters"),
        ("\ufeff", "no visible characters"),
        ("\u2060 \u200b\ufeff", "no visible characters"),
        (12345, "must be text, got int 12345"),
        (True, "must be text, got bool"),
        (["make it red"], "must be text, got list"),
    ],
)
def test_hostile_text_is_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        check_text(bad, name="expressive instruction")
    assert check_text("make it\tred\n") == "make it\tred"  # ordinary whitespace stays allowed
    assert check_text("\u200bmake it red") == "\u200bmake it red"  # invisible characters among visible ones pass
