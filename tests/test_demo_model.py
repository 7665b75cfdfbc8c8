"""The demo model's path: train (resumably) -> export to the official layouts -> the real loaders, strictly."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from editor.demo import checks, stages, world
from editor.demo import model as demo
from editor.demo.checkpoints import load_checkpoint
from editor.demo.shipping import TRAINING_FILE, export, unpack
from editor.demo.train import RECIPES, StageConfig, build_cache, train
from editor.eval import main
from editor.layouts.sizes import ModelSizes
from editor.params import EditParams, Resolution
from editor.pipelines.ip2p import load_ip2p
from editor.pipelines.mgie import MGIEPaths, load_mgie

SMALL = ModelSizes.from_name(  # the recipe with the patch codec; test_demo_recipe.py covers the learnt VAE's
    "demo-patches", vision_hidden=32, vision_intermediate=128, vision_layers=2, llm_hidden=32, llm_intermediate=64,
    llm_layers=2, head_dim_model=32, head_ffn=64, head_encoder_layers=1, head_decoder_layers=1,
    cross_attention_dim=32, unet_channels=(32, 32), vae_channels=(16, 16, 16), text_hidden=32, text_layers=1,
)  # fmt: skip
PARAMS = EditParams(steps=3, resolution=Resolution(size=world.SIZE))
CACHED = 8  # training samples in the test cache


def _fp16(state):
    return {k: v.to(torch.float16).float() for k, v in state.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """2-step runs of every stage at the small sizes (MLLM, cache, MGIE, IP2P; the patch codec has no VAE stage),
    exported."""
    out = tmp_path_factory.mktemp("run")
    train("mllm", out, StageConfig(2, 2, 1e-3), sizes=SMALL)
    build_cache(out, SMALL, "cpu", CACHED, 0, ("latents", "states"))
    train("mgie", out, StageConfig(2, 2, 1e-3), sizes=SMALL, samples=CACHED, precondition=True)
    train("ip2p", out, StageConfig(2, 2, 1e-3), sizes=SMALL, samples=CACHED)
    export(out, out / "export", sizes=SMALL)
    export(out, out / "weights" / "demo", sizes=SMALL)  # where the registry looks under a weights folder
    return out


def test_the_ablation_trains_exactly_as_mgie():
    assert RECIPES["mgie"] == RECIPES["ip2p"] and RECIPES["mgie"].warmup == 0.03


def test_training_resumes_exactly(tmp_path, run):
    for folder in (tmp_path / "straight", tmp_path / "resumed"):
        shutil.copytree(run, folder, ignore=shutil.ignore_patterns("mgie*", "ip2p*", "export", "weights"))
    recipe = StageConfig(steps=6, batch=3, lr=1e-3)  # 18 samples: the 8 cached ones, in three epochs
    train("mgie", tmp_path / "straight", recipe, sizes=SMALL, samples=CACHED)
    train("mgie", tmp_path / "resumed", recipe, sizes=SMALL, until=2, samples=CACHED)
    assert torch.load(tmp_path / "resumed" / "mgie.ckpt", weights_only=True)["step"] == 2
    train("mgie", tmp_path / "resumed", recipe, sizes=SMALL, samples=CACHED)
    a = torch.load(tmp_path / "straight" / "mgie.ckpt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "mgie.ckpt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for part in a["modules"]:
        for key, value in a["modules"][part].items():
            torch.testing.assert_close(b["modules"][part][key], value, rtol=0, atol=0, msg=f"{part}.{key}")


def test_a_checkpoint_resumes_only_into_the_unet_class_it_was_trained_with(tmp_path, run):
    """The stock and the skip UNet share their keys: the checkpoint's recorded class is what tells them apart."""
    shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("export", "weights"))
    path = tmp_path / "run" / "ip2p.ckpt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["unet_class"] == "UNet2DConditionModel"  # SMALL builds the stock UNet
    torch.save(ckpt | {"unet_class": "SourceSkipUNet"}, path)
    with pytest.raises(SystemExit, match="holds a SourceSkipUNet, these sizes build a UNet2DConditionModel.*--preset"):
        train("ip2p", tmp_path / "run", StageConfig(4, 2, 1e-3), sizes=SMALL, samples=CACHED)
    train("ip2p", tmp_path / "run", StageConfig(4, 2, 1e-3), sizes=replace(SMALL, unet_source_skip=True),
          samples=CACHED, keep_every=4)  # fmt: skip
    assert torch.load(path, weights_only=True)["step"] == 4
    for step in (None, 4):  # the latest checkpoint and the kept weights: export refuses the other class too
        with pytest.raises(SystemExit, match="holds a SourceSkipUNet, these sizes build a UNet2DConditionModel"):
            export(tmp_path / "run", tmp_path / "export", sizes=SMALL, parts=("ip2p",), step=step)


def test_a_new_run_starts_from_given_weights_and_stops_on_its_clock(tmp_path, run):
    for folder in ("new", "raw"):
        shutil.copytree(run, tmp_path / folder, ignore=shutil.ignore_patterns("mgie*", "ip2p*", "export", "weights"))
    given = torch.load(run / "mgie.ckpt", weights_only=True)
    init = tmp_path / "unet-only.pt"
    torch.save({"modules": {"unet": given["modules"]["unet"]}}, init)
    recipe = StageConfig(50, 2, 0.0)
    train("mgie", tmp_path / "new", recipe, sizes=SMALL, samples=CACHED, init=init, max_minutes=0.0)
    got = torch.load(tmp_path / "new" / "mgie.ckpt", weights_only=True)
    assert got["step"] == 1  # out of time after the first step, checkpointed so that a rerun resumes
    for key, value in given["modules"]["unet"].items():  # lr 0: the UNet is still the given one
        torch.testing.assert_close(got["modules"]["unet"][key], value, rtol=0, atol=0, msg=key)
    head = given["modules"]["head"]
    assert any(not torch.equal(got["modules"]["head"][k], v) for k, v in head.items())  # not given: a fresh head
    assert not torch.equal(got["modules"]["precondition"]["matrix"], torch.eye(SMALL.llm_hidden))  # fitted for it
    raw = tmp_path / "head-without-preconditioner.pt"  # a head trained on the raw states (recipe v2)
    torch.save({"modules": {k: given["modules"][k] for k in ("head", "unet")}}, raw)
    train("mgie", tmp_path / "raw", recipe, sizes=SMALL, samples=CACHED, init=raw, max_minutes=0.0)
    got = torch.load(tmp_path / "raw" / "mgie.ckpt", weights_only=True)["modules"]
    torch.testing.assert_close(got["head"], head, rtol=0, atol=0)  # lr 0: the given head, fed as it was trained
    assert torch.equal(got["precondition"]["matrix"], torch.eye(SMALL.llm_hidden))


def test_export_loads_strictly_into_mgie(run):
    mllm, head, unet = demo.build_mllm(SMALL), demo.build_head(SMALL), demo.build_unet(SMALL)
    load_checkpoint(run / "mllm.ckpt", {"mllm": mllm})
    precondition = stages.Preconditioner(SMALL.llm_hidden)
    load_checkpoint(run / "mgie.ckpt", {"head": head, "unet": unet, "precondition": precondition})
    assert not torch.equal(precondition.matrix, torch.eye(SMALL.llm_hidden))  # fitted on the cached states
    precondition.fold_into(head)  # what export does: the shipped head is MGIE's own
    editor = load_mgie(MGIEPaths.from_weights_dir(run / "export" / "mgie"))
    for trained, loaded in ((mllm, editor.mllm), (head, editor.head), (unet, editor.pipe.unet)):
        expected, got = _fp16(trained.state_dict()), loaded.state_dict()
        assert expected.keys() == got.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    assert (
        editor.pipe.scheduler.config.prediction_type == demo.scheduler_config("patches")["prediction_type"] == "sample"
    )
    assert editor.pipe.scheduler.config.rescale_betas_zero_snr
    rows = editor.mllm.llm.get_input_embeddings().weight[-8:]
    torch.testing.assert_close(editor.img_embeddings, rows)  # `emb` = the [IMG] rows, as MGIE trains the head
    sample = world.dataset("test", 1, seed=5)[0]
    guidance = editor.think(world.render(sample.source), sample.terse)
    result = editor.render(world.render(sample.source), guidance, PARAMS)
    assert editor.native_size == world.SIZE and result.image.size == (world.SIZE, world.SIZE)


def test_ip2p_export_is_a_stock_diffusers_pipeline(run):
    editor = load_ip2p([run / "export" / "ip2p"], name="ip2p-demo", hint="hint")
    sample = world.dataset("test", 1, seed=6)[0]
    image = world.render(sample.source)
    guidance = editor.think(image, sample.terse)
    assert guidance.expressive == sample.terse and guidance.source == "instruction"
    ours = editor.render(image, guidance, PARAMS).image
    stock = editor.pipe(
        prompt=sample.terse, image=image, num_inference_steps=PARAMS.steps, guidance_scale=PARAMS.text_guidance,
        image_guidance_scale=PARAMS.image_guidance, generator=torch.Generator().manual_seed(PARAMS.seed),
    ).images[0]  # fmt: skip
    assert list(ours.getdata()) == list(stock.getdata())
    other = editor.guidance_from_text(image, sample.terse, "make it darker")
    assert other.source == "user" and not torch.equal(other.prompt_embeds, guidance.prompt_embeds)


def test_eval_demo_scores_both_models_per_split_and_operation(run, tmp_path):
    main(["demo", "--weights", str(run / "weights"), "--per-split", "2", "--steps", "2", "--out", str(tmp_path)])
    report = (tmp_path / "report.md").read_text()
    for heading in ("### mgie-demo", "### ip2p-demo", "| all held-out | 8 |", "| reasoning | 2 |", "| combo | 2 |"):
        assert heading in report
    rows = [json.loads(line) for line in (tmp_path / "mgie-demo.jsonl").read_text().splitlines()]
    assert [r["split"] for r in rows] == ["test"] * 2 + ["combo"] * 2 + ["paraphrase"] * 2 + ["reasoning"] * 2
    assert all(0 <= r["l1"] <= 1 and isinstance(r["correct"], bool) for r in rows)
    summary = json.loads((tmp_path / "ip2p-demo.summary.json").read_text())
    assert summary["overall"]["n"] == 8 and set(summary["split"]) == {"test", "combo", "paraphrase", "reasoning"}


def test_diffusion_stages_refuse_an_unfinished_vae(tmp_path):
    learnt = replace(SMALL, latent_codec="vae", latent_channels=4)
    train("vae", tmp_path, StageConfig(3, 2, 1e-3), sizes=learnt, until=1)
    with pytest.raises(SystemExit, match="unfinished VAE"):
        train("mgie", tmp_path, StageConfig(2, 2, 1e-3), sizes=learnt)


def test_the_patch_codec_has_no_vae_stage_to_train(tmp_path):
    for stage in ("vae", "decoder"):
        with pytest.raises(SystemExit, match="patch codec"):
            train(stage, tmp_path, StageConfig(2, 2, 1e-3), sizes=SMALL)


def test_training_pixels_equal_the_clip_processor(run):
    from transformers import CLIPImageProcessorPil

    from editor.demo.stages import clip_pixels, to_tensor

    scenes = [s.source for s in world.dataset("test", 3, seed=2)]
    processor = CLIPImageProcessorPil.from_pretrained(run / "export" / "mgie" / "clip-vit-large-patch14")
    expected = processor(images=[world.render(s) for s in scenes], return_tensors="pt").pixel_values
    torch.testing.assert_close(clip_pixels(to_tensor(scenes, "cpu")), expected, rtol=0, atol=1e-5)


def test_the_log_counts_training_time_over_resumed_runs(tmp_path, run):
    shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("mgie*", "ip2p*", "export", "weights"))
    folder = tmp_path / "run"
    recipe = StageConfig(steps=50, batch=1, lr=1e-3)
    train("ip2p", folder, recipe, sizes=SMALL, samples=CACHED, until=25)
    first = torch.load(folder / "ip2p.ckpt", weights_only=True)["seconds"]
    train("ip2p", folder, recipe, sizes=SMALL, samples=CACHED)
    lines = (folder / "ip2p.log").read_text().splitlines()
    seconds = [float(line.split()[1].rstrip("s")) for line in lines]
    assert [int(line.split()[0]) for line in lines] == [25, 50]
    assert abs(seconds[0] - first) <= 1  # the log rounds to whole seconds
    assert seconds[1] >= round(first)  # the second run's clock went on from the first run's, not from zero


def test_shipped_weights_are_resume_points(tmp_path, run):
    """`unpack` turns the exported fp16 folders back into checkpoints that training continues from."""
    record = json.loads((run / "export" / TRAINING_FILE).read_text())
    assert {stage: record[stage]["step"] for stage in record} == dict.fromkeys(("mllm", "mgie", "ip2p"), 2)
    unpack(run / "export", tmp_path, SMALL)
    unet = demo.build_unet(SMALL)
    load_checkpoint(run / "mgie.ckpt", {"unet": unet})
    resumed = torch.load(tmp_path / "mgie.ckpt", weights_only=True)
    assert resumed["step"] == 2 and "optimizer" not in resumed
    for key, value in _fp16(unet.state_dict()).items():
        torch.testing.assert_close(resumed["modules"]["unet"][key], value, rtol=0, atol=0, msg=key)
    # MGIE's head comes back in the preconditioned coordinates it trained in: same condition as the trained one
    head, precondition = demo.build_head(SMALL), stages.Preconditioner(SMALL.llm_hidden)
    load_checkpoint(run / "mgie.ckpt", {"head": head, "precondition": precondition})
    again, precondition_again = demo.build_head(SMALL), stages.Preconditioner(SMALL.llm_hidden)
    load_checkpoint(tmp_path / "mgie.ckpt", {"head": again, "precondition": precondition_again})
    torch.testing.assert_close(precondition_again.matrix, precondition.matrix, rtol=0, atol=0)
    states, emb = torch.randn(4, 8, SMALL.llm_hidden), torch.randn(8, SMALL.llm_hidden)
    with torch.no_grad():
        expected = head(precondition(states, emb), emb)
        got = again(precondition_again(states, emb), emb)
    assert (got - expected).norm() < 0.01 * expected.norm()  # fp16 weights on the way
    (tmp_path / "cache").symlink_to(run / "cache")
    train("mgie", tmp_path, StageConfig(3, 2, 1e-3), sizes=SMALL, samples=CACHED)
    assert torch.load(tmp_path / "mgie.ckpt", weights_only=True)["step"] == 3


def test_a_refined_mllm_is_what_export_ships_and_unpack_resumes(tmp_path, run):
    """Stage `refine` trains the MLLM after the diffusion stages: export ships its MLLM (not stage (a)'s) and records
    it; unpack gives it back as refine.ckpt, and a refine run resumes from there with a fresh parse head."""
    for name in ("mllm.ckpt", "mgie.ckpt", "ip2p.ckpt"):
        shutil.copy(run / name, tmp_path / name)
    (tmp_path / "cache").symlink_to(run / "cache")
    train("refine", tmp_path, StageConfig(2, 2, 1e-3), sizes=SMALL, samples=CACHED)
    export(tmp_path, tmp_path / "export", sizes=SMALL)
    record = json.loads((tmp_path / "export" / TRAINING_FILE).read_text())
    assert record["refine"]["step"] == 2 and record["mllm"]["step"] == 2
    refined, stage_a = demo.build_mllm(SMALL), demo.build_mllm(SMALL)
    load_checkpoint(tmp_path / "refine.ckpt", {"mllm": refined})
    load_checkpoint(run / "mllm.ckpt", {"mllm": stage_a})
    shipped = load_mgie(MGIEPaths.from_weights_dir(tmp_path / "export" / "mgie")).mllm.state_dict()
    for key, value in _fp16(refined.state_dict()).items():
        torch.testing.assert_close(shipped[key].float(), value, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(v, stage_a.state_dict()[k]) for k, v in refined.state_dict().items())
    again = tmp_path / "again"
    unpack(tmp_path / "export", again, SMALL)
    assert torch.load(again / "refine.ckpt", weights_only=True)["step"] == 2
    (again / "cache").symlink_to(run / "cache")
    train("refine", again, StageConfig(3, 2, 1e-3), sizes=SMALL, samples=CACHED)
    assert torch.load(again / "refine.ckpt", weights_only=True)["step"] == 3


def test_the_condition_check_tells_a_used_condition_from_an_ignored_one(run, monkeypatch):
    editor = load_mgie(MGIEPaths.from_weights_dir(run / "export" / "mgie"))
    samples = world.dataset("test", 3, seed=5)

    def columns(rows):  # t -> (cond edit, cond outside, null edit, null outside, copy edit)
        return {r.split("|")[1].strip(): [float(c) for c in r.split("|")[2:7]] for r in rows[3:]}

    used = columns(checks.condition_use(editor, samples, expressive=True, timesteps=(999,)))["999"]
    assert used[0] != used[2] and used[4] > 0
    real = editor.guidance_from_text
    monkeypatch.setattr(  # a condition that is the null one for every sample: nothing for the UNet to use
        editor, "guidance_from_text",
        lambda *a: (lambda g: replace(g, prompt_embeds=g.negative_prompt_embeds))(real(*a)),
    )  # fmt: skip
    ignored = columns(checks.condition_use(editor, samples, expressive=True, timesteps=(999,)))["999"]
    assert ignored[0] == ignored[2] and ignored[1] == ignored[3]


def test_the_perfect_mllm_check_edits_from_the_ground_truth_expressive_text(run, monkeypatch):
    editor = load_mgie(MGIEPaths.from_weights_dir(run / "export" / "mgie"))
    samples = world.dataset("test", 3, seed=5)
    real_guidance, real_render, texts = editor.guidance_from_text, editor.render, []

    def spy(image, terse, text):
        texts.append(text)
        return real_guidance(image, terse, text)

    monkeypatch.setattr(editor, "guidance_from_text", spy)
    rates = checks.perfect_mllm_edits(editor, samples, PARAMS)
    assert texts == [s.expressive for s in samples] and set(rates) == {"all"} | {s.op for s in samples}
    goals = {world.render(s.source).tobytes(): world.render(s.target) for s in samples}

    def exact(image, guidance, params):  # a head + UNet that make every goal exactly
        return replace(real_render(image, guidance, params), image=goals[image.tobytes()])

    monkeypatch.setattr(editor, "render", exact)
    assert checks.perfect_mllm_edits(editor, samples, PARAMS)["all"].startswith("100.0 % of 3")


def test_the_unet_width_flags_change_only_the_unet_and_refuse_widths_the_unet_cannot_build():
    from editor.demo.model import unet_sizes

    assert unet_sizes(None, None) == demo.SIZES
    wide = unet_sizes([64, 128, 128], 4)
    assert wide == replace(demo.SIZES, unet_channels=(64, 128, 128), unet_heads=4)
    assert demo.build_unet(wide).config.block_out_channels == (64, 128, 128)
    for channels, heads in (([60, 128, 128], 4), ([64, 128, 128], 3), ([0, 64], None)):
        with pytest.raises(SystemExit, match="multiple of 8"):
            unet_sizes(channels, heads)
    with pytest.raises(SystemExit, match="--unet-heads goes with --unet-channels"):
        unet_sizes(None, 4)
    patches = ModelSizes.from_name("demo-patches")  # --preset: the base the width flags change
    assert unet_sizes(None, None, patches) == patches
    assert unet_sizes([64, 64, 64], None, patches).latent_codec == "patches"
    unet = demo.build_unet(patches)
    assert (unet.config.in_channels, unet.config.out_channels) == (96, 48)
    assert demo.build_vae(patches).config.latent_channels == 48


def test_a_compact_resume_point_starts_a_new_run_from_its_weights(tmp_path, run):
    from editor.demo.checkpoints import read_modules, save_modules

    point = tmp_path / "next" / "mgie.safetensors"
    save_modules(run / "mgie.ckpt", point)
    assert json.loads(point.with_suffix(".json").read_text())["step"] == 2
    saved, compact = read_modules(run / "mgie.ckpt"), read_modules(point)
    assert compact.keys() == saved.keys() == {"head", "unet", "precondition"}
    assert compact["unet"]["conv_in.weight"].dtype == torch.float16
    assert torch.equal(compact["precondition"]["matrix"], saved["precondition"]["matrix"])  # whitening kept fp32
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "cache").symlink_to(run / "cache")
    shutil.copy(run / "mllm.ckpt", folder / "mllm.ckpt")
    train("mgie", folder, StageConfig(1, 2, 0.0), sizes=SMALL, samples=CACHED, init=point)
    unet = demo.build_unet(SMALL)
    load_checkpoint(folder / "mgie.ckpt", {"unet": unet})
    expected = compact["unet"]["conv_in.weight"].float()
    torch.testing.assert_close(unet.state_dict()["conv_in.weight"], expected, rtol=0, atol=0)  # lr 0: unchanged


def test_a_cache_of_another_codec_is_refused_with_the_fix(tmp_path, run):
    (tmp_path / "cache").symlink_to(run / "cache")
    shutil.copy(run / "mllm.ckpt", tmp_path / "mllm.ckpt")
    with pytest.raises(SystemExit, match="rebuild it with the same --preset"):
        train("ip2p", tmp_path, StageConfig(1, 2, 1e-3), sizes=replace(SMALL, latent_channels=12), samples=CACHED)


def test_the_high_noise_share_flag_refuses_values_outside_zero_to_one(capsys):
    from editor.demo.train import main as train_main

    for value in ("1.5", "nan", "-0.1"):
        with pytest.raises(SystemExit):
            train_main(["mgie", "--high-noise-share", value])
        assert "between 0 and 1" in capsys.readouterr().err


def test_the_high_noise_share_is_refused_by_a_stage_without_diffusion_timesteps(tmp_path, run):
    shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("mgie*", "export", "weights"))
    for stage, extra in (("mllm", {}), ("distil", {"teacher": tmp_path / "run" / "ip2p.ckpt", "samples": CACHED})):
        with pytest.raises(SystemExit, match="has none"):
            train(stage, tmp_path / "run", StageConfig(1, 2, 1e-3), sizes=SMALL, high_noise_share=0.5, **extra)


def test_an_ablation_folder_without_its_vae_weights_names_the_vae_once(tmp_path, run):
    from editor.loading import MissingWeightsError

    folder = tmp_path / "ip2p"
    shutil.copytree(run / "export" / "ip2p", folder)
    shutil.rmtree(folder / "vae")
    (folder / "vae").mkdir()
    (folder / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))  # no weights beside it
    with pytest.raises(MissingWeightsError, match="could not load the VAE") as caught:
        load_ip2p([folder], name="ip2p-demo", hint="HINT")
    assert str(caught.value).count("HINT") == 1


def test_distil_teaches_the_head_the_ablations_reading_of_the_canonical_text_and_ships_its_unet(tmp_path, run):
    """editor.demo.distil on the 8 cached samples: the targets are the teacher's text encoding of
    `world.canonical_terse`, the fit falls, the teacher's UNet ships untouched, and the exported MGIE computes, from
    the ground-truth expressive text, exactly the condition the stage trained."""
    from transformers import CLIPTokenizer

    from editor.demo.cache import Cache
    from editor.demo.checkpoints import read_modules
    from editor.demo.distil import DistilStage
    from editor.demo.train import PRECONDITION_SAMPLES

    out = tmp_path / "run"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("mgie*", "export", "weights"))
    with pytest.raises(SystemExit, match="needs --teacher"):
        train("distil", out, StageConfig(1, 2, 1e-3), sizes=SMALL, samples=CACHED)
    with pytest.raises(SystemExit, match="not an ablation"):
        train("distil", out, StageConfig(1, 2, 1e-3), sizes=SMALL, samples=CACHED, teacher=out / "mllm.ckpt")
    teacher = out / "ip2p.ckpt"
    other = torch.load(teacher, weights_only=True) | {"unet_class": "SourceSkipUNet"}
    torch.save(other, tmp_path / "skip-teacher.pt")  # the skip recipe's ablation, given to a stock-UNet run
    with pytest.raises(SystemExit, match="--preset"):
        train("distil", out, StageConfig(1, 2, 1e-3), sizes=SMALL, samples=CACHED, teacher=tmp_path / "skip-teacher.pt")
    data = Cache(out, CACHED, with_states=True, mllm_step=2)
    stage = DistilStage(SMALL, "cpu", out, data, teacher, PRECONDITION_SAMPLES)
    text = demo.build_text_encoder(SMALL)
    load_checkpoint(teacher, {"text": text})
    tokenizer = CLIPTokenizer.from_pretrained(out / "clip_tokenizer")
    for i in (0, 5):
        words = world.canonical_terse(stages.train_sample(0, i))
        ids = tokenizer([words], padding="max_length", max_length=77, return_tensors="pt").input_ids
        torch.testing.assert_close(stage.targets[stage.target_of[i]], text(ids)[0][0], msg=words)
    rows = torch.arange(CACHED)
    before = stage.loss(rows)["fit"].item()
    train("distil", out, StageConfig(40, 8, 3e-3), sizes=SMALL, samples=CACHED, teacher=teacher)
    load_checkpoint(out / "distil.ckpt", stage.modules)
    assert stage.loss(rows)["fit"].item() < before / 20
    for key, value in read_modules(teacher)["unet"].items():  # frozen: the teacher's UNet, bit for bit
        torch.testing.assert_close(stage.unet.state_dict()[key], value, rtol=0, atol=0, msg=key)

    export(out, out / "export", sizes=SMALL, parts=("mgie",), mgie_stage="distil")
    record = json.loads((out / "export" / TRAINING_FILE).read_text())["mgie"]
    assert record["stage"] == "distil" and record["step"] == 40
    editor = load_mgie(MGIEPaths.from_weights_dir(out / "export" / "mgie"))
    assert all(torch.equal(editor.pipe.unet.state_dict()[k], v) for k, v in _fp16(stage.unet.state_dict()).items())
    sample = stages.train_sample(0, 3)  # a cached training sample: the MLLM gives the cache's states for it
    image = world.render(sample.source)
    got = editor.guidance_from_text(image, sample.terse, sample.expressive).prompt_embeds
    with torch.no_grad():
        trained = stage.condition(data.states[3:4])
    torch.testing.assert_close(got.float(), trained, rtol=0.02, atol=0.02)  # fp16 weights and states


def test_the_canonical_ablation_reads_each_cached_samples_canonical_instruction(tmp_path, run, monkeypatch, capsys):
    """`ip2p --canonical` (a teacher for distil) trains on world.canonical_terse of the very samples in the batch."""
    from editor.demo.train import main as train_main

    out = tmp_path / "run"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("mgie*", "ip2p*", "export", "weights"))
    seen = []
    original = stages.IP2PStage.loss

    def loss(self, batch, gen):
        seen.append((batch.terse, batch.source.clone()))
        return original(self, batch, gen)

    monkeypatch.setattr(stages.IP2PStage, "loss", loss)
    train("ip2p", out, StageConfig(2, 4, 1e-3), sizes=SMALL, samples=CACHED, canonical=True)
    from editor.demo.cache import Cache

    data = Cache(out, CACHED, with_states=False)
    canonical = [world.canonical_terse(stages.train_sample(0, i)) for i in range(CACHED)]
    assert canonical != data.terse  # the cache's own words differ: the flag has something to change
    for texts, source in seen:
        for words, latent in zip(texts, source, strict=True):
            row = next(i for i in range(CACHED) if torch.equal(data.source[i], latent))
            assert words == canonical[row]
    with pytest.raises(SystemExit):
        train_main(["mgie", "--canonical", "--out", str(out)])
    assert "the mgie stage reads none" in capsys.readouterr().err


def test_the_place_check_measures_where_add_and_move_draw(run, monkeypatch):
    """checks.placement: an editor that makes every goal exactly overlaps the true change fully; one that changes
    nothing draws no area and overlaps nothing; only add and move samples count, add's also per place named."""
    editor = load_ip2p([run / "export" / "ip2p"], name="ip2p-demo")
    samples = [s for s in world.dataset("test", 40, seed=5) if s.op in ("add", "move", "remove")][:8]
    assert {"add", "move"} <= {s.op for s in samples}
    goals = {world.render(s.source).tobytes(): world.render(s.target) for s in samples}
    real_render = editor.render

    def exact(image, guidance, params):
        return replace(real_render(image, guidance, params), image=goals[image.tobytes()])

    monkeypatch.setattr(editor, "render", exact)
    made = checks.placement(editor, samples, PARAMS)
    assert {"add", "move"} <= set(made) and all(v.endswith("area 1.00, IoU 1.00") for v in made.values()), made
    places = [k for k in made if k.startswith("add at the ")]  # one row per place an add names, adding up to add's
    assert set(made) == {"add", "move", *places} and places
    assert sum(int(made[k].split(",")[0][2:]) for k in places) == int(made["add"].split(",")[0][2:])

    def unchanged(image, guidance, params):
        return replace(real_render(image, guidance, params), image=image)

    monkeypatch.setattr(editor, "render", unchanged)
    assert all(v.endswith("area 0.00, IoU 0.00") for v in checks.placement(editor, samples, PARAMS).values())
