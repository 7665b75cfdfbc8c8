"""The greedy loop equals transformers' generate() (ids, trigram ban over the prompt, last-layer states)."""

import torch
from PIL import Image

from editor.models.llava import greedy_decode

IMAGE = Image.new("RGB", (40, 30), (10, 200, 30))


def _inputs(mgie, instruction="make the frame red"):
    ids = mgie.prompt_ids(instruction)
    return ids, mgie._embed(IMAGE, ids)


def test_greedy_decode_equals_generate_with_ids_and_embeds(mgie):
    llm = mgie.mllm.llm
    ids, embeds = _inputs(mgie)
    out = greedy_decode(llm, ids, embeds, max_new_tokens=24, no_repeat_ngram_size=3, should_stop=lambda _: False)
    with torch.inference_mode():
        ref = llm.generate(input_ids=ids, inputs_embeds=embeds, attention_mask=torch.ones_like(ids), do_sample=False,
                           num_beams=1, max_new_tokens=24, min_new_tokens=24, no_repeat_ngram_size=3, eos_token_id=None,
                           pad_token_id=0, return_dict_in_generate=True, output_hidden_states=True)  # fmt: skip
    assert out.ids == ref.sequences[0].tolist()
    assert len(out.ids) == ids.shape[1] + 24 and out.states.shape[0] == len(out.ids) - 1
    ref_states = torch.cat([step[-1][0] for step in ref.hidden_states])  # last entry = final-norm state
    torch.testing.assert_close(out.states, ref_states, atol=1e-5, rtol=1e-5)


def test_trigram_ban_sees_the_prompt(mgie):
    """With the ban over prompt + output no generated trigram may repeat one of the prompt's."""
    ids, embeds = _inputs(mgie)
    out = greedy_decode(mgie.mllm.llm, ids, embeds, 30, 3, lambda _: False)
    trigrams = lambda seq: {tuple(seq[i : i + 3]) for i in range(len(seq) - 2)}  # noqa: E731
    n = out.num_prompt
    assert not trigrams(out.ids[n - 2 :]) & trigrams(out.ids[:n])


def test_states_match_a_teacher_forced_forward(mgie):
    ids, embeds = _inputs(mgie)
    out = greedy_decode(mgie.mllm.llm, ids, embeds, 10, 3, lambda _: False)
    full = mgie._embed(IMAGE, torch.tensor([out.ids]))
    with torch.inference_mode():
        states = mgie.mllm.final_states(full)[0, :-1]
    torch.testing.assert_close(out.states, states, atol=1e-4, rtol=1e-4)


def test_splice_replaces_exactly_the_patch_slots(mgie):
    ids = mgie.prompt_ids("x")
    features = torch.randn(1, mgie.num_patches, mgie.mllm.config.text.hidden_size)
    with torch.inference_mode():
        embeds = mgie.mllm.embed_with_image(ids, features, mgie.im_start_id)
        plain = mgie.mllm.llm.get_input_embeddings()(ids)
    s = ids[0].tolist().index(mgie.im_start_id)
    assert torch.equal(embeds[0, s + 1 : s + 1 + mgie.num_patches], features[0])
    assert torch.equal(embeds[0, : s + 1], plain[0, : s + 1])
    assert torch.equal(embeds[0, s + 1 + mgie.num_patches :], plain[0, s + 1 + mgie.num_patches :])
