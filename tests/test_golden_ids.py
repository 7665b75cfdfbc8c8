"""Prompt and answer ids, id for id, against golden ids from the references' tokenizer library (transformers 4.28.1,
slow LlamaTokenizer), written by tools/golden_ids.py into tests/fixtures/golden_ids.json (its docstring says how to
regenerate them). The tokenizers are the project's own: the tiny tree's, the shipped demo model's and a tiny Vicuna."""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from editor.demo.stages import MLLMStage
from editor.layouts.sizes import ModelSizes
from editor.layouts.tokenizers import build_llama_tokenizer
from editor.models.slow_llama import SlowLlamaTokenizer
from editor.models.smartedit_llm import DEFAULT_HUMAN_TEMPLATE, build_prompt_ids, load_sentencepiece, slow_tokenizer
from editor.pipelines.mgie import prompt_token_ids, training_token_ids
from editor.pipelines.mgie_checkpoint import load_tokenizer
from editor.prompts import clean_expressive

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "golden_ids.json").read_text(encoding="utf-8"))
DEMO_LLAVA = Path(__file__).parents[1] / "weights" / "demo" / "mgie" / "LLaVA-7B-v1"


def _same_model(folder: Path, golden: dict) -> None:
    digest = hashlib.sha256((folder / "tokenizer.model").read_bytes()).hexdigest()
    assert digest == golden["tokenizer_model_sha256"], (
        f"{folder}/tokenizer.model is not the one the fixtures were made with: regenerate them (tools/golden_ids.py)"
    )


def _check_mgie(tokenizer: SlowLlamaTokenizer, golden: dict) -> None:
    n = golden["num_patches"]
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in golden["added"]} == golden["added"]
    for case in golden["prompts"].values():
        assert prompt_token_ids(tokenizer, case["instruction"], n) == case["ids"], case["instruction"]
    for case in golden["training"].values():
        ids, prompt_len = training_token_ids(tokenizer, case["instruction"], case["expressive"], n)
        assert ids == case["ids"], case["expressive"]
        assert ids[:prompt_len] == golden["prompts"]["plain"]["ids"]  # inference's prompt is the training prefix
        assert ids[-9:] == [*tokenizer.convert_tokens_to_ids([f"[IMG{i}]" for i in range(8)]), tokenizer.eos_id]
    for case in golden["decode"].values():
        assert tokenizer.decode(case["ids"]) == case["text"]
        assert clean_expressive(tokenizer.decode(case["ids"])) == clean_expressive(case["text"])


def test_mgie_tiny_tree_ids_equal_the_reference(mgie, tiny_tree):
    golden = GOLDEN["mgie"]["tiny"]
    _same_model(tiny_tree / "LLaVA-7B-v1", golden)
    assert mgie.num_patches == golden["num_patches"]
    _check_mgie(mgie.tokenizer, golden)
    for case in golden["prompts"].values():
        assert mgie.prompt_ids(case["instruction"])[0].tolist() == case["ids"]
    case = golden["training"]["plain"]
    assert mgie.teacher_forced_ids(case["instruction"], case["expressive"])[0].tolist() == case["ids"][:-1]


def test_demo_model_trains_and_infers_on_the_reference_ids():
    golden = GOLDEN["mgie"]["demo"]
    _same_model(DEMO_LLAVA, golden)
    sizes = ModelSizes.from_name("demo")
    assert (sizes.vision_image_size // sizes.vision_patch_size) ** 2 == golden["num_patches"]
    tokenizer = load_tokenizer(DEMO_LLAVA)
    _check_mgie(tokenizer, golden)
    stage = SimpleNamespace(tokenizer=tokenizer, num_patches=golden["num_patches"])
    for case in golden["training"].values():  # the demo's training data goes through the same function
        sample = SimpleNamespace(terse=case["instruction"], expressive=case["expressive"])
        ids, prompt_len = MLLMStage.sequence(stage, sample)
        assert ids == case["ids"] and ids[:prompt_len] == golden["prompts"]["plain"]["ids"]


def test_the_newline_before_im_start_is_not_a_token():
    """The one place the old ids differed: 4.28 strips the "\\n" that ends the user text before <im_start>."""
    for golden in GOLDEN["mgie"].values():
        ids = golden["prompts"]["plain"]["ids"]
        start = ids.index(golden["added"]["<im_start>"])
        assert ids[start - 1] != 13  # <0x0A>
        assert 13 in golden["prompts"]["newline"]["ids"]  # a newline inside the instruction stays


@pytest.fixture(scope="module")
def vicuna(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vicuna")
    build_llama_tokenizer(
        folder, vocab_size=ModelSizes.from_name("tiny").sp_vocab, add_llava_tokens=False
    )  # as the tiny tree does
    return folder


def test_smartedit_prompt_ids_equal_the_reference(vicuna):
    golden = GOLDEN["smartedit"]["tiny"]
    _same_model(vicuna, golden)
    assert DEFAULT_HUMAN_TEMPLATE == golden["human_line"].strip()
    sp = load_sentencepiece(vicuna / "tokenizer.model")
    tokenizer = slow_tokenizer(sp)
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in golden["added"]} == golden["added"]
    for case in golden["prompts"].values():
        assert build_prompt_ids(sp, case["instruction"]) == case["ids"], case["instruction"]
    for case in golden["decode"].values():
        assert tokenizer.decode(case["ids"]) == case["text"]


def test_fixtures_cover_the_cases_the_issue_names():
    for model in ("mgie", "smartedit"):
        for golden in GOLDEN[model].values():
            assert {"plain", "quotes", "trailing_space", "newline", "non_ascii"} <= set(golden["prompts"])
    assert GOLDEN["versions"]["transformers"] == "4.28.1"
