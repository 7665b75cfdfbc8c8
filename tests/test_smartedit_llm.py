"""SmartEdit's LLM side (docs/smartedit.md §2.3, §2.4, §3.3, §3.4): the LoRA merge equals PEFT's unmerged forward,
the vocabulary rows come from the right files, the prompt ids follow transformers 4.28's slow tokenizer, and
decoding keeps the states at the positions whose input is an `<img_i>`.

Tiny and offline: a 300-piece SentencePiece model trained on the spot, 32-wide 2-layer LLaMAs. `peft` is needed only
by the merge test (a dev dependency). The exact ids of the reference run need Vicuna's tokenizer.model (slow test).
"""

import random

import pytest
import sentencepiece as spm
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

from editor.layouts.tokenizers import _train_sentencepiece
from editor.loading import CheckpointError
from editor.models.smartedit_llm import (
    DEFAULT_HUMAN_TEMPLATE,
    SYSTEM,
    answer_text,
    assemble_llm_state,
    build_prompt_ids,
    choose_human_template,
    encode_like_slow_llama,
    generate_img_states,
    load_sentencepiece,
    merge_lora,
    smartedit_prompt,
    splice_image,
    temperature_sampler,
)

BASE = 300  # SentencePiece size V: <img> 300, <im_start> 301, <im_end> 302, <img_0>.. 303..334
IMG, IM_START, IM_END, IMG0 = BASE, BASE + 1, BASE + 2, BASE + 3
EOS = 2
LAYERS = 2


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    corpus = [SYSTEM, DEFAULT_HUMAN_TEMPLATE, "make the sky blue", "Certainly, I can generate the visual for you"]
    return spm.SentencePieceProcessor(model_proto=_train_sentencepiece(BASE, corpus))


def tiny_config(vocab: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )


# --- merge_lora -----------------------------------------------------------------------------------------------


def _peft_model():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        LlamaModel(tiny_config(64)), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    for name, param in model.named_parameters():
        if "lora_B" in name:  # PEFT initialises B to zero, which would make any merge look right
            nn.init.normal_(param, std=0.5)
    return model.eval()


def _as_released(peft_state: dict) -> dict:
    """PEFT 0.21 keys -> the PEFT 0.4 layout of LLM-15000/adapter_model.bin (base weight at `q_proj.weight`,
    `model.` in front, the rotary `inv_freq` buffers old transformers saved)."""
    state = {"model." + key.replace(".base_layer.", "."): value for key, value in peft_state.items()}
    for i in range(LAYERS):
        state[f"model.base_model.model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    return state


def test_merge_lora_equals_the_unmerged_adapter_forward():
    peft_model = _peft_model()
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        expected = peft_model(input_ids=ids).last_hidden_state
    released = _as_released(peft_model.state_dict())
    assert "model.base_model.model.layers.0.self_attn.q_proj.lora_A.default.weight" in released

    plain = LlamaModel(tiny_config(64)).eval()
    plain.load_state_dict(merge_lora(released), strict=True)
    with torch.no_grad():
        got = plain(input_ids=ids).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    plain.load_state_dict(merge_lora(released, scale=0.0), strict=True)
    with torch.no_grad():
        assert not torch.allclose(plain(input_ids=ids).last_hidden_state, expected, atol=1e-3)  # the LoRA matters


def test_merge_lora_accepts_the_new_peft_layout():
    peft_state = _peft_model().state_dict()
    assert any(".base_layer.weight" in key for key in peft_state)
    old = merge_lora(_as_released(peft_state))
    for new in (merge_lora(peft_state), merge_lora({"model." + k: v for k, v in peft_state.items()})):
        assert new.keys() == old.keys()
        assert all(torch.equal(new[k], old[k]) for k in old)


PREFIX = "model.base_model.model.layers.0.self_attn.q_proj."
MERGED = "layers.0.self_attn.q_proj.weight"


def _one_module(rank=8, dtype=torch.float32) -> dict:
    return {
        PREFIX + "weight": torch.randn(6, 5).to(dtype),
        PREFIX + "lora_A.default.weight": torch.randn(rank, 5).to(dtype),
        PREFIX + "lora_B.default.weight": torch.randn(6, rank).to(dtype),
    }


def _wab(state: dict) -> tuple[torch.Tensor, ...]:
    return tuple(state[PREFIX + s].float() for s in ("weight", "lora_A.default.weight", "lora_B.default.weight"))


def test_merge_lora_scale_comes_from_the_adapter_config_and_is_computed_in_float32():
    state = _one_module(rank=4, dtype=torch.float16)
    w, a, b = _wab(state)
    merged = merge_lora(state, adapter_config={"r": 4, "lora_alpha": 12})
    assert merged.keys() == {MERGED} and merged[MERGED].dtype == torch.float16
    assert torch.equal(merged[MERGED], (w + 3.0 * (b @ a)).half())


def test_merge_lora_defaults_to_r8_alpha16_without_an_adapter_config():
    state = _one_module(rank=8)
    w, a, b = _wab(state)
    torch.testing.assert_close(merge_lora(state)[MERGED], w + 2.0 * (b @ a))
    torch.testing.assert_close(merge_lora(state, scale=0.5)[MERGED], w + 0.5 * (b @ a))


@pytest.mark.parametrize(
    "edit, kwargs, message",
    [
        (lambda s: s.pop(PREFIX + "lora_B.default.weight"), {}, r"lora_A.default.weight' has no matching lora_B"),
        (lambda s: s.pop(PREFIX + "lora_A.default.weight"), {}, r"lora_B.default.weight' has no matching lora_A"),
        (lambda s: s.pop(PREFIX + "weight"), {}, r"has no base weight"),
        (lambda s: s.update({PREFIX + "lora_B.default.weight": torch.zeros(6, 3)}), {}, r"found .*\(6, 3\)"),
        (lambda s: None, {"adapter_config": {"r": 4, "lora_alpha": 8}}, r"rank 8, but adapter_config says r=4"),
        (lambda s: s.update(_one_module(rank=4)), {}, r"rank 4, but the default \(r=8, alpha=16\) says r=8"),
        (lambda s: s.update({PREFIX + "lora_A.other.weight": torch.zeros(8, 5)}), {}, r"several LoRA adapters"),
        (lambda s: s.update({PREFIX + "lora_magnitude_vector": torch.zeros(6)}), {}, r"unsupported LoRA tensor"),
    ],
)
def test_merge_lora_errors_name_the_key(edit, kwargs, message):
    state = _one_module()
    edit(state)
    with pytest.raises(CheckpointError, match=message):
        merge_lora(state, **kwargs)


# --- assemble_llm_state -----------------------------------------------------------------------------------------


def _rows(n: int, offset: float, hidden: int = 3) -> torch.Tensor:
    return (offset + torch.arange(n, dtype=torch.float32))[:, None].expand(n, hidden).clone()  # row i = offset + i


def test_vocabulary_rows_come_from_the_right_files():
    base, total = 10, 45  # 35 new tokens
    merged = {"embed_tokens.weight": _rows(total, 1000), "norm.weight": torch.ones(3)}
    llava = {"model.embed_tokens.weight": _rows(base + 3, 2000), "lm_head.weight": _rows(base + 3, 3000)}
    qformer = {"lm_head.weight": _rows(total, 4000), "mm_projector.weight": torch.zeros(3, 2)}
    state = assemble_llm_state(merged, llava, qformer)
    assert state.keys() == {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    embed, head = state["model.embed_tokens.weight"][:, 0], state["lm_head.weight"][:, 0]
    assert embed.tolist() == [2000 + i for i in range(base)] + [1000 + i for i in range(base, total)]
    assert head.tolist() == [3000 + i for i in range(base)] + [4000 + i for i in range(base, total)]

    prefixed = {"llm." + k: v for k, v in llava.items()}  # read_llava_v1_state's naming
    explicit = assemble_llm_state(merged, prefixed, qformer, base_vocab_size=8)
    assert explicit["lm_head.weight"][:, 0].tolist()[7:9] == [3007, 4008]


def test_assemble_checks_sizes():
    merged = {"embed_tokens.weight": _rows(45, 0)}
    llava = {"model.embed_tokens.weight": _rows(13, 0), "lm_head.weight": _rows(13, 0)}
    with pytest.raises(CheckpointError, match=r"lm_head.weight is \(44, 3\), expected \(45, 3\)"):
        assemble_llm_state(merged, llava, {"lm_head.weight": _rows(44, 0)})
    with pytest.raises(CheckpointError, match=r"LLaVA embed_tokens is \(13, 4\)"):
        assemble_llm_state(
            merged, {**llava, "model.embed_tokens.weight": _rows(13, 0, 4)}, {"lm_head.weight": _rows(45, 0)}
        )
    with pytest.raises(CheckpointError, match=r"LLaVA has none of the keys"):
        assemble_llm_state(merged, {"lm_head.weight": _rows(13, 0)}, {"lm_head.weight": _rows(45, 0)})


def test_merged_and_assembled_state_loads_into_a_causal_lm():
    peft_model = _peft_model()  # vocab 64 = 29 base + 35 new
    llava = {"model.embed_tokens.weight": torch.randn(32, 32), "lm_head.weight": torch.randn(32, 32)}
    state = assemble_llm_state(
        merge_lora(_as_released(peft_model.state_dict())), llava, {"lm_head.weight": torch.randn(64, 32)}
    )
    LlamaForCausalLM(tiny_config(64)).load_state_dict(state, strict=True)


# --- prompt ---------------------------------------------------------------------------------------------------

HEAD = "A chat between a curious user and an artificial intelligence assistant. The assistant can generate"
MIDDLE = (
    ". The assistant needs to conduct the image to image translation task based on given image and text information."
    " The assistant gives helpful, detailed, and polite answers to the user's questions. USER: Please generate a"
    ' visual that represents the former picture and message "'
)


def test_prompt_string_follows_the_reference():
    assert smartedit_prompt("  make the sky\nblue ") == (
        f"{SYSTEM} USER: Please generate a visual that represents the former picture and message "
        '"<im_start> <img_0> <im_end>make the skyblue". ASSISTANT:'
    )


def test_prompt_ids_are_encoded_chunk_by_chunk_around_added_tokens(sp):
    ids = build_prompt_ids(sp, "make the sky blue")
    expected = [1, *sp.encode(HEAD), IMG, *sp.encode(MIDDLE), IM_START, IMG0, IM_END]
    expected += sp.encode('make the sky blue". ASSISTANT:')
    assert ids == expected
    assert ids.count(IMG0) == 1 and ids[ids.index(IM_START) : ids.index(IM_START) + 3] == [IM_START, IMG0, IM_END]
    for i, token in enumerate(ids):  # no whitespace-only piece right before an added token
        if token >= BASE:
            assert ids[i - 1] >= BASE or sp.id_to_piece(ids[i - 1]).strip("▁ ")
    assert sp.piece_to_id("<0x0A>") not in build_prompt_ids(sp, "make the sky\nblue")


def test_whitespace_touching_an_added_token_is_dropped_on_both_sides(sp):
    ids = encode_like_slow_llama(sp, "the sky  <img_1> \tblue <im_start><im_end>  red ")
    assert ids == [1, *sp.encode("the sky"), IMG0 + 1, *sp.encode("blue"), IM_START, IM_END, *sp.encode("red ")]
    assert encode_like_slow_llama(sp, "<img_10><img_1>") == [1, IMG0 + 10, IMG0 + 1]  # longest match first


def test_prompt_rejects_reserved_tokens_and_bad_templates(sp):
    with pytest.raises(ValueError, match="reserved token"):
        build_prompt_ids(sp, "make <img_3> red")
    with pytest.raises(ValueError, match=r"must contain '\[cap\]' once"):
        build_prompt_ids(sp, "make it red", "Please edit the image")
    other = build_prompt_ids(sp, "make it red", "Edit this: [cap]")
    assert other[-len(sp.encode('make it red" ASSISTANT:')) - 3 :][:3] == [IM_START, IMG0, IM_END]


def test_template_choice_is_deterministic_unless_a_generator_is_given():
    templates = ["a [cap]", "b [cap]", "c [cap]"]
    assert choose_human_template() == DEFAULT_HUMAN_TEMPLATE
    assert choose_human_template(templates) == "a [cap]"
    picks = [choose_human_template(templates, random.Random(seed)) for seed in range(20)]
    assert set(picks) == set(templates)
    assert picks == [choose_human_template(templates, random.Random(seed)) for seed in range(20)]


# --- decoding and the capture rule ----------------------------------------------------------------------------


class ScriptedHead(nn.Module):
    """A rigged lm_head: the real logits plus a large bias on the next id of `script` (one entry per call)."""

    def __init__(self, head: nn.Linear, script: list[int]) -> None:
        super().__init__()
        self.head, self.script, self.calls = head, script, 0

    @property
    def weight(self) -> torch.Tensor:
        return self.head.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)
        bias = torch.zeros_like(logits)
        bias[..., self.script[min(self.calls, len(self.script) - 1)]] = 1e4
        self.calls += 1
        return logits + bias


def _lm(script: list[int] | None = None) -> LlamaForCausalLM:
    llm = LlamaForCausalLM(tiny_config(BASE + 35)).eval()
    if script is not None:
        llm.lm_head = ScriptedHead(llm.lm_head, script)
    return llm


def _full_forward_states(llm, prompt, features, generated) -> torch.Tensor:
    """Teacher-forced final-norm states over prompt (image spliced) + generated, at the generated positions."""
    with torch.no_grad():
        spliced = splice_image(llm, prompt, features, IMG0)
        tail = llm.get_input_embeddings()(torch.tensor([generated]))
        states = llm.model(inputs_embeds=torch.cat([spliced, tail], 1), use_cache=False).last_hidden_state[0]
    return states[spliced.shape[1] :]


TEXT = [3 + byte for byte in b"Sure"]  # byte-fallback pieces <0x53>.. sit at ids 3..258, as in LLaMA
IMGS = list(range(IMG0, IMG0 + 32))


@pytest.mark.parametrize(
    "script, kwargs, expected_ids",
    [
        (TEXT + IMGS + [IMG0] * 3 + [EOS], {}, TEXT + IMGS),  # stops after the 32nd <img_i>, without EOS
        (TEXT + IMGS[:3] + [EOS, 9], {}, TEXT + IMGS[:3] + [EOS]),  # EOS first
        (TEXT + IMGS, {"num_img_tokens": 4}, TEXT + IMGS[:4]),
        (TEXT + IMGS, {"max_new_tokens": 6}, TEXT + IMGS[:2]),
        (TEXT + IMGS + [EOS], {"temperature": 0.7, "generator": torch.Generator().manual_seed(1)}, TEXT + IMGS),
    ],
)
def test_capture_rule_keeps_states_where_the_input_is_an_img_token(sp, script, kwargs, expected_ids):
    llm = _lm(script)
    prompt = build_prompt_ids(sp, "make the sky blue")
    features = torch.randn(4, 32)
    out = generate_img_states(llm, sp, prompt, features, **kwargs)
    assert out.ids == expected_ids
    full = _full_forward_states(llm, prompt, features, out.ids)
    at_img = [j for j, t in enumerate(out.ids) if t >= IMG0]
    assert out.states.shape == (len(at_img), 32)
    torch.testing.assert_close(out.states, full[at_img], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.states, full[[j - 1 for j in at_img]])  # not the states that predicted them
    assert out.text == "Sure" == answer_text(sp, out.ids)


def test_sampling_is_reproducible_with_a_generator(sp):
    llm = _lm()
    prompt, features = build_prompt_ids(sp, "make it red"), torch.randn(4, 32)
    runs = [
        generate_img_states(llm, sp, prompt, features, max_new_tokens=12, temperature=0.7,
                            generator=torch.Generator().manual_seed(seed)).ids
        for seed in (3, 3, 4)
    ]  # fmt: skip
    assert runs[0] == runs[1] and len(runs[0]) == 12
    assert runs[0] != runs[2]
    logits = torch.randn(1, 50)
    pick = temperature_sampler(0.7, torch.Generator().manual_seed(5))
    reference = torch.multinomial(torch.softmax(logits / 0.7, -1), 1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(pick(logits), reference) and temperature_sampler(0.0) is None


def test_decoding_checks_its_inputs(sp):
    prompt = build_prompt_ids(sp, "make it red")
    with pytest.raises(ValueError, match=f"placeholder id {IMG0} once, found it 2x"):
        generate_img_states(_lm(), sp, prompt + [IMG0], torch.randn(4, 32))
    small = LlamaForCausalLM(tiny_config(BASE + 3)).eval()
    with pytest.raises(
        ValueError, match=r"has 303 output rows; SmartEdit needs 335 \(V=300, 3 LLaVA tokens, 32 <img_i>\)"
    ):
        generate_img_states(small, sp, prompt, torch.randn(4, 32))


# --- the reference run (real Vicuna tokenizer) -------------------------------------------------------------------

# TencentARC/SmartEdit#15 (fp32 run, 2024-06-01): the prompt ids, then the generated ids (the answer sentence, <img_0>..
# <img_31>, EOS). The issue shows the instruction only as ids; it is decoded back with the same tokenizer below.
REFERENCE_PROMPT = [
    1, 319, 13563, 1546, 263, 12758, 1404, 322, 385, 23116, 21082, 20255, 29889, 450, 20255, 508, 5706, 32000, 869,
    450, 20255, 4225, 304, 7512, 278, 1967, 304, 1967, 13962, 3414, 2729, 373, 2183, 1967, 322, 1426, 2472, 29889, 450,
    20255, 4076, 8444, 29892, 13173, 29892, 322, 1248, 568, 6089, 304, 278, 1404, 29915, 29879, 5155, 29889, 3148,
    1001, 29901, 3529, 5706, 263, 7604, 393, 11524, 278, 4642, 7623, 322, 2643, 376, 32001, 32003, 32002, 10726, 278,
    11203, 297, 19571, 304, 263, 281, 4369, 1642, 319, 1799, 9047, 13566, 29901,
]  # fmt: skip
REFERENCE_SENTENCE = [315, 13946, 368, 29892, 306, 508, 5706, 278, 7604, 366, 29915, 276, 3063, 363]  # fmt: skip
REFERENCE_ANSWER = [*REFERENCE_SENTENCE, *range(32003, 32035), 2]


def _vicuna_tokenizer():
    from editor.weights.catalog import DEFAULT_WEIGHTS_DIR, MODELS, component_dir

    vicuna = next(c for c in MODELS["smartedit-7b"].components if c.folder == "vicuna-7b-v1-1")
    path = component_dir(DEFAULT_WEIGHTS_DIR, vicuna) / "tokenizer.model"
    if not path.exists():
        pytest.fail(
            f"{path} is missing: this regression test needs Vicuna-7B v1.1's tokenizer.model. Get it with "
            f"`python -m editor.weights download smartedit-7b` (or set {vicuna.env})"
        )
    return load_sentencepiece(path)


@pytest.mark.slow
def test_prompt_ids_match_the_reference_run():
    sp = _vicuna_tokenizer()
    start, end = REFERENCE_PROMPT.index(32002) + 1, len(REFERENCE_PROMPT) - 5  # 5 = "▁A SS IST ANT :"
    quoted = sp.decode(REFERENCE_PROMPT[start:end])  # the instruction, the closing quote, the template's "."
    tail = '"' + DEFAULT_HUMAN_TEMPLATE.split("[cap]")[1]
    assert quoted.endswith(tail), quoted
    assert build_prompt_ids(sp, quoted[: -len(tail)]) == REFERENCE_PROMPT
    assert answer_text(sp, REFERENCE_ANSWER) == "Certainly, I can generate the visual you're looking for"
