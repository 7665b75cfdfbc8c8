"""Golden prompt token ids from the references' own tokenizer library (a dev-time tool; the package never imports it).

The ids MGIE and SmartEdit saw are decided by the tokenizer code of transformers 4.28 (slow `LlamaTokenizer`), not by
the weights, so any SentencePiece model shows the rule. Two steps, two interpreters:

    # 1. with the project's venv: write the tokenizers to test (tiny MGIE/SmartEdit, the demo model's) + a manifest
    python -m tools.golden_ids prepare --out /tmp/golden [--llava weights/LLaVA-7B-v1] [--vicuna weights/vicuna-7b-v1-1]
    # 2. with a side venv holding the reference versions (PyPI; no model hub needed):
    python3 -m venv /tmp/v428
    /tmp/v428/bin/pip install transformers==4.28.1 tokenizers==0.13.3 sentencepiece protobuf
    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python /tmp/v428/bin/python -m tools.golden_ids golden --from /tmp/golden \
        --out tests/fixtures/golden_ids.json

Step 2 rebuilds every prompt string the way the reference code does (not with editor.prompts) and tokenizes it the way
the reference loads its tokenizer:
- MGIE inference (apple/ml-mgie demo.ipynb cells 2 and 4): `AutoTokenizer.from_pretrained(LLaVA-7B-v1)`, then
  `[IMG0..7]`, `<im_patch>`, `<im_start>`, `<im_end>` added with `add_tokens(..., special_tokens=True)`. The LLaVA
  submodule pins transformers git cae78c46, which has no LlamaTokenizerFast (haotian-liu/LLaVA#5), so that call gave
  the slow class: here `use_fast=False` stands for it (4.28.1 would otherwise convert to a fast tokenizer).
- MGIE training (apple/ml-mgie mgie_train.py): a SentencePiece folder without added tokens, `use_fast=False`,
  `model_max_length=512`; `<im_patch>`, `<im_start>`, `<im_end>` added as LLaVA's `initialize_vision_tokenizer` adds
  them, then `[IMG0..7]`; the whole conversation "... ASSISTANT: {expressive} [IMG0] ... [IMG7]</s>" in one call.
- SmartEdit inference (TencentARC/SmartEdit test/DS_SmartEdit_test.py, model/DS_SmartEdit_model.py
  `setup_tokens_for_conversation`): `use_fast=False`, `model_max_length=512`, `<img>` (not special), `<im_start>`,
  `<im_end>` (special), `<img_0..31>` (not special); the prompt built from one Human template line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
from pathlib import Path

INSTRUCTIONS = {  # name -> instruction, as a user would type it
    "plain": "make the frame red",
    "quotes": "make the 'old' sign say \"open\"",
    "trailing_space": "turn the sky blue ",
    "leading_space": " add a hat",
    "newline": "make the car green\nand the road wet",
    "non_ascii": "färbe den Himmel grün – ça va? 猫",
}
EXPRESSIVES = {  # name -> expressive instruction (MGIE's answer text)
    "plain": "the frame turns red.",
    "quotes": 'The sign\'s text changes to "open", in white letters.',
    "non_ascii": "Der Himmel wird grün, ça brille.",
}
SMARTEDIT_HUMAN_LINE = "Please generate a visual that represents the former picture and message [cap]. "  # line 29

MGIE_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
SMARTEDIT_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant can generate <img>. "
    "The assistant needs to conduct the image to image translation task based on given image and text information. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
IMG = [f"[IMG{i}]" for i in range(8)]
LLAVA_TOKENS = ["<im_patch>", "<im_start>", "<im_end>"]
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


# --------------------------------------------------------------------------------- step 1: project venv


def prepare(out: Path, llava: Path | None, vicuna: Path | None) -> None:
    from editor.layouts.sizes import ModelSizes
    from editor.layouts.tokenizers import build_llama_tokenizer

    repo = Path(__file__).resolve().parents[1]
    tiny, demo = ModelSizes.from_name("tiny"), ModelSizes.from_name("demo")
    manifest = []
    build_llama_tokenizer(out / "mgie-tiny", vocab_size=tiny.sp_vocab)
    manifest.append({"name": "tiny", "model": "mgie", "dir": "mgie-tiny", "num_patches": _patches(tiny)})
    shutil.copytree(repo / "weights/demo/mgie/LLaVA-7B-v1", out / "mgie-demo", dirs_exist_ok=True)
    manifest.append({"name": "demo", "model": "mgie", "dir": "mgie-demo", "num_patches": _patches(demo)})
    build_llama_tokenizer(out / "smartedit-tiny", vocab_size=tiny.sp_vocab, add_llava_tokens=False)
    manifest.append({"name": "tiny", "model": "smartedit", "dir": "smartedit-tiny"})
    if llava:
        manifest.append({"name": "real", "model": "mgie", "dir": str(llava.resolve()), "num_patches": 256})
    if vicuna:
        manifest.append({"name": "real", "model": "smartedit", "dir": str(vicuna.resolve())})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    print(f"wrote {len(manifest)} tokenizers to {out}")


def _patches(sizes) -> int:
    return (sizes.vision_image_size // sizes.vision_patch_size) ** 2


# ------------------------------------------------------------------------------ step 2: reference venv


def _slow_copy(src: Path, dst: Path, with_added: bool) -> Path:
    """The SentencePiece files of `src` (no tokenizer.json: the slow class reads tokenizer.model)."""
    dst.mkdir(parents=True, exist_ok=True)
    names = TOKENIZER_FILES + (("added_tokens.json",) if with_added else ())
    for name in names:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    return dst


def _vicuna_v1_prompt(system: str, user: str, answer: str | None) -> str:
    """LLaVA / FastChat's two-separator vicuna template: sep " ", sep2 "</s>", roles USER / ASSISTANT."""
    prompt = f"{system} USER: {user} ASSISTANT:"
    return prompt if answer is None else f"{prompt} {answer}</s>"


def _mgie_user(instruction: str, num_patches: int) -> str:
    text = f"what will this image be like if '{instruction}'"
    return text + "\n" + "<im_start>" + "<im_patch>" * num_patches + "<im_end>"


def mgie_cases(folder: Path, num_patches: int, work: Path) -> dict:
    from transformers import AutoTokenizer

    demo = AutoTokenizer.from_pretrained(_slow_copy(folder, work / "demo", True), use_fast=False)
    demo.add_tokens(IMG, special_tokens=True)
    demo.add_tokens(LLAVA_TOKENS[:1], special_tokens=True)
    demo.add_tokens(LLAVA_TOKENS[1:], special_tokens=True)
    train = AutoTokenizer.from_pretrained(
        _slow_copy(folder, work / "train", False), model_max_length=512, padding_side="right", use_fast=False
    )
    train.pad_token = train.unk_token
    if "<im_patch>" not in train.get_vocab():  # a plain LLaMA/Vicuna folder: LLaVA adds its tokens first
        train.add_tokens(LLAVA_TOKENS[:1], special_tokens=True)
        train.add_tokens(LLAVA_TOKENS[1:], special_tokens=True)
    train.add_tokens(IMG, special_tokens=True)
    assert train.get_vocab() == demo.get_vocab(), "training and demo vocabularies differ"

    prompts = {}
    for name, instruction in INSTRUCTIONS.items():
        text = _vicuna_v1_prompt(MGIE_SYSTEM, _mgie_user(instruction, num_patches), None)
        prompts[name] = {"instruction": instruction, "ids": demo(text).input_ids}
    answers = {}
    for name, expressive in EXPRESSIVES.items():
        instruction = INSTRUCTIONS["plain"]
        answer = f"{expressive} {' '.join(IMG)}"
        text = _vicuna_v1_prompt(MGIE_SYSTEM, _mgie_user(instruction, num_patches), answer)
        ids = train(text, max_length=train.model_max_length, truncation=True).input_ids
        answers[name] = {"instruction": instruction, "expressive": expressive, "ids": ids}
    decoded = {}
    for name, case in answers.items():
        decoded[name] = {"ids": case["ids"], "text": demo.decode(case["ids"])}
        cut = case["ids"][len(prompts["plain"]["ids"]) :]
        decoded[name + "_answer"] = {"ids": cut, "text": demo.decode(cut)}
    added = {t: demo.convert_tokens_to_ids(t) for t in LLAVA_TOKENS + IMG}
    return {"num_patches": num_patches, "added": added, "prompts": prompts, "training": answers, "decode": decoded}


def smartedit_cases(folder: Path, work: Path) -> dict:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        _slow_copy(folder, work / "vicuna", False), model_max_length=512, padding_side="right", use_fast=False
    )
    tok.pad_token = tok.unk_token
    tok.add_tokens(["<img>"], special_tokens=False)
    tok.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    tok.add_tokens([f"<img_{i}>" for i in range(32)], special_tokens=False)
    human = SMARTEDIT_HUMAN_LINE.strip()
    prompts = {}
    for name, instruction in INSTRUCTIONS.items():
        text_prompt = instruction.split("CLIP: ")[0].rstrip()  # the benchmark line, cut as the script cuts it
        caption = "<im_start>" + " <img_0> " + "<im_end>" + text_prompt
        text = _vicuna_v1_prompt(SMARTEDIT_SYSTEM, human.replace("[cap]", f'"{caption}"'), None).replace("\n", "")
        prompts[name] = {"instruction": instruction, "ids": tok(text).input_ids}
    first = tok.convert_tokens_to_ids("<img_0>")
    sentence = tok("Certainly, I can generate the visual you're looking for", add_special_tokens=False).input_ids
    generated = prompts["plain"]["ids"] + sentence + list(range(first, first + 32)) + [tok.eos_token_id]
    added = {t: tok.convert_tokens_to_ids(t) for t in ["<img>", "<im_start>", "<im_end>"]}
    decoded = {"prompt_and_answer": {"ids": generated, "text": tok.decode(generated)}}
    return {"human_line": SMARTEDIT_HUMAN_LINE, "added": added, "prompts": prompts, "decode": decoded}


def golden(source: Path, out: Path) -> None:
    import tempfile

    import sentencepiece
    import tokenizers
    import transformers

    result = {
        "generator": "tools/golden_ids.py (python -m tools.golden_ids; see its docstring)",
        "versions": {
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentencepiece": sentencepiece.__version__,
        },
        "mgie": {},
        "smartedit": {},
    }
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    for entry in manifest:
        folder = source / entry["dir"]
        sha = hashlib.sha256((folder / "tokenizer.model").read_bytes()).hexdigest()
        with tempfile.TemporaryDirectory() as work:
            if entry["model"] == "mgie":
                cases = mgie_cases(folder, entry["num_patches"], Path(work))
            else:
                cases = smartedit_cases(folder, Path(work))
        result[entry["model"]][entry["name"]] = {"tokenizer_model_sha256": sha, **cases}
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1, ensure_ascii=False)
    text = re.sub(r"\[\n\s+(-?\d[-\d,\s]*?)\n\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    out.write_text(text + "\n", encoding="utf-8")  # one line per id list
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="project venv: write the tokenizers and a manifest")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--llava", type=Path, help="a real LLaVA-7B-v1 folder (its tokenizer.model) to add")
    p.add_argument("--vicuna", type=Path, help="a real vicuna-7b-v1-1 folder to add")
    g = sub.add_parser("golden", help="reference venv (transformers 4.28.1): write the golden ids")
    g.add_argument("--from", dest="source", type=Path, required=True)
    g.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.out, args.llava, args.vicuna)
    else:
        golden(args.source, args.out)


if __name__ == "__main__":
    main()
