"""The demo recipe's parts: varied training scenes, the latent cache, the region-weighted loss, probes, the curve."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch

from editor.demo import cache, checks, curve, judge, keeping, refine, stages, variety, world
from editor.demo import model as demo
from editor.layouts.sizes import ModelSizes
from editor.loading import CheckpointError
from editor.params import EditParams
from editor.pipelines import spec
from editor.pipelines.registry import load_editor

SMALL = ModelSizes.from_name(  # the learnt-VAE codec of the earlier recipes, whose stages these tests cover
    "demo", unet_channels=(16, 16), vae_channels=(16, 16, 16), cross_attention_dim=16, latent_channels=4,
    latent_codec="vae",
)  # fmt: skip


def test_restyle_changes_only_the_background():
    sample = world.dataset("train", 1, seed=3)[0]
    other = variety.restyle(sample, random.Random(0))
    assert other.source.background == other.target.background != sample.source.background
    assert (other.source.shapes, other.target.shapes) == (sample.source.shapes, sample.target.shapes)
    assert (other.terse, other.expressive, other.op) == (sample.terse, sample.expressive, sample.op)
    assert judge.score(world.render(other.target), other).correct


def test_training_stream_restyles_about_a_quarter_and_is_reproducible():
    drawn = [stages.train_sample(0, i) for i in range(400)]
    plain = [world.make_sample(random.Random(f"0/train/{i}"), "train") for i in range(400)]
    share = sum(a.source.background != b.source.background for a, b in zip(drawn, plain, strict=True)) / 400
    assert 0.18 < share < 0.32
    assert stages.batch_samples(0, 3, 4) == drawn[12:16]


def test_user_edits_change_only_the_edited_shape_and_judge_their_own_target_correct():
    for i in range(20):
        edit = variety.user_edit(random.Random(i), size=128)
        source, target = judge.as_float(edit.source), judge.as_float(edit.target)
        changed = np.abs(source - target).max(axis=2) > judge.CHANGE_THRESHOLD
        assert 0.003 < changed.mean() < 0.25, edit.terse
        assert source[0, 0].min() > 0.75  # a plain light canvas
        assert judge.score_images(edit.target, edit.source, edit.target, tone=False).correct
        assert not judge.score_images(edit.source, edit.source, edit.target, tone=False).correct


def test_drawings_are_pictures_in_range():
    images = [variety.drawing(random.Random(i)) for i in range(8)]
    assert all(a.shape == (world.SIZE, world.SIZE, 3) and 0 <= a.min() and a.max() <= 255 for a in images)
    assert len({a.tobytes() for a in images}) == 8


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    vae = demo.build_vae(SMALL).eval()
    cache.build_latents(out, vae, samples=10, seed=0, device="cpu", batch=4)
    return out, vae


def test_cache_holds_the_stream_encoded_and_walks_epochs(built, monkeypatch):
    out, vae = built
    data = cache.Cache(out, 10, with_states=False)
    with torch.no_grad():
        expected = vae.encode(stages.to_tensor([stages.train_sample(0, 7).source], "cpu")).latent_dist.mode()
    # batched vs single encodes sum in another order on several threads: equal up to one fp16 step
    torch.testing.assert_close(data.source[7].float(), expected[0].half().float(), atol=2e-3, rtol=2e-3)
    assert data.terse[7] == stages.train_sample(0, 7).terse
    rows = [data.batch(1, step, 5, "cpu") for step in range(4)]  # two epochs of 10
    first = sorted(t for b in rows[:2] for t in b.terse)
    assert first == sorted(data.terse) == sorted(t for b in rows[2:] for t in b.terse)
    assert [b.terse for b in rows[:2]] != [b.terse for b in rows[2:]]  # a new order each epoch
    assert data.batch(1, 1, 5, "cpu").terse == rows[1].terse
    with pytest.raises(ValueError, match="another sample count"):
        cache.Cache(out, 12, with_states=False)
    with pytest.raises(FileNotFoundError, match="run the cache stage"):
        cache.Cache(out, 2 * cache.PART + 1, with_states=False)


def test_states_from_another_mllm_step_are_refused(built):
    out, _ = built
    torch.save({"states": torch.zeros(10, 8, 4), "emb": torch.zeros(8, 4), "mllm_step": 5, "seed": 0},
               out / "cache" / "states-00000.pt")  # fmt: skip
    assert cache.Cache(out, 10, with_states=True, mllm_step=5).states.shape == (10, 8, 4)
    with pytest.raises(ValueError, match="MLLM step"):
        cache.Cache(out, 10, with_states=True, mllm_step=6)


def test_region_weights_mark_the_latents_the_edit_changes():
    source = torch.zeros(2, 4, 16, 16)
    target = source.clone()
    target[0, 2, 3:5, 6:9] = 0.5  # one channel is enough
    target[1, :, 0, 0] = stages.REGION_THRESHOLD / 2  # below the threshold: unchanged
    weight = stages.region_weights(source, target)
    assert weight.shape == (2, 1, 16, 16)
    assert (weight[0, 0, 3:5, 6:9] == 1 + stages.REGION_WEIGHT).all()
    assert weight.sum() == 2 * 256 + 6 * stages.REGION_WEIGHT


def test_edit_loss_runs_on_cached_batches(built):
    out, _ = built
    batch = cache.Cache(out, 10, with_states=False).batch(0, 0, 4, "cpu")
    stage = stages.DiffusionStage(SMALL, "cpu", scaling_factor=1.0)
    cond, null = torch.randn(4, 77, SMALL.cross_attention_dim), torch.zeros(1, 77, SMALL.cross_attention_dim)
    losses = [stage.edit_loss(batch, cond, null, torch.Generator().manual_seed(0)) for _ in range(2)]
    assert losses[0].item() > 0 and losses[0].item() == losses[1].item()  # seeded noise, timesteps and dropout
    losses[0].backward()
    assert stage.unet.conv_in.weight.grad.abs().sum() > 0


def test_probe_finds_what_the_states_hold_and_not_more():
    gen = torch.Generator().manual_seed(0)
    labels = [random.Random(i).choice("abc") for i in range(600)]
    states = torch.randn(600, 8, 6, generator=gen)
    for i, label in enumerate(labels):
        states[i, 3, 0] += 6.0 * "abc".index(label)  # one direction carries the fact
    facts = [{"carried": label, "noise": random.Random(f"n{i}").choice("xy")} for i, label in enumerate(labels)]
    results = checks.probe(states[:500], facts[:500], states[500:], facts[500:])
    assert results["carried"][0] > 0.95
    assert results["noise"][0] < 0.7


def test_edit_facts_read_the_expressive_text():
    sample = world.dataset("test", 30, seed=1)
    recolour = next(s for s in sample if s.op == "recolour")
    facts = checks.edit_facts(recolour)
    assert facts["operation"] == "recolour" and facts["result"] in world.COLOURS
    assert facts["object place"] in world.CELL_NAMES.values()


def test_curve_reads_stage_logs_and_plots(tmp_path):
    (tmp_path / "mgie.log").write_text("25 60s {'loss': 1.0}\n50 120s {'loss': 0.5}\n")
    assert curve.stage_minutes(tmp_path / "mgie.log") == {25: 1.0, 50: 2.0}
    row = {
        "overall": {"edit_acc": 0.5, "bg_psnr": 27.0},
        "split": {"reasoning": {"edit_acc": 0.4}},
        "op": {op: {"edit_acc": 0.5} for op in world.OPS},
    }
    rows = [{"model": "mgie-demo", "step": s, "cpu_minutes": s / 10, **row} for s in (100, 200)]
    curve.plot(rows, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    json.dumps(rows)


def test_a_demo_folder_carries_its_own_app_settings(tmp_path):
    assert spec.folder_defaults(tmp_path) == EditParams()
    (tmp_path / spec.DEFAULTS_FILE).write_text(json.dumps(demo.APP_DEFAULTS))
    own = spec.folder_defaults(tmp_path)
    assert (own.steps, own.text_guidance, own.image_guidance) == tuple(demo.APP_DEFAULTS.values())
    (tmp_path / spec.DEFAULTS_FILE).write_text('{"steps": "many"}')
    with pytest.raises(CheckpointError, match="editor_defaults.json"):
        spec.folder_defaults(tmp_path)


def test_the_decoder_stage_trains_the_decoder_alone(tmp_path):
    from editor.demo.checkpoints import load_vae
    from editor.demo.train import StageConfig, train

    train("vae", tmp_path, StageConfig(2, 2, 1e-3), sizes=SMALL)
    before = load_vae(tmp_path, SMALL, "cpu").state_dict()
    train("decoder", tmp_path, StageConfig(2, 4, 1e-2), sizes=SMALL)
    after = load_vae(tmp_path, SMALL, "cpu")
    assert after.config.scaling_factor == load_vae(tmp_path, SMALL, "cpu", decoder=False).config.scaling_factor
    changed = {k.split(".")[0] for k, v in after.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"decoder", "post_quant_conv"}


def test_sharded_cache_builds_equal_one_build(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "PART", 4)  # 10 samples: parts of 4, 4 and 2
    vae = demo.build_vae(SMALL).eval()
    for k in (1, 0):
        cache.build_latents(tmp_path / "sharded", vae, samples=10, seed=0, device="cpu", batch=4, shard=(k, 2))
    cache.build_latents(tmp_path / "single", vae, samples=10, seed=0, device="cpu", batch=4)
    a, b = (cache.Cache(tmp_path / name, 10, with_states=False) for name in ("sharded", "single"))
    assert torch.equal(a.source, b.source) and a.terse == b.terse and len(a.terse) == 10


def test_the_vae_posterior_std_stays_fixed_while_training():
    stage = stages.VAEStage(SMALL, "cpu")
    before = stage.vae.encoder.conv_in.weight.detach().clone()
    optimizer = torch.optim.AdamW(stage.vae.parameters(), lr=1e-2, weight_decay=0.0)
    for step in range(3):
        stage.loss(stages.batch_samples(0, step, 4), None, 0, step)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    posterior = stage.vae.encode(stages.to_tensor([world.dataset("test", 1)[0].source], "cpu")).latent_dist
    torch.testing.assert_close(posterior.std, torch.full_like(posterior.std, math.exp(stages.LOGVAR_INIT / 2)))
    assert not torch.equal(stage.vae.encoder.conv_in.weight, before)  # the rest of the encoder trains


def test_the_head_preconditioner_whitens_the_spread_and_folds_into_the_head_exactly():
    gen = torch.Generator().manual_seed(0)
    hidden = SMALL.llm_hidden
    emb = torch.randn(8, hidden, generator=gen)
    offsets = 5 * torch.randn(8, hidden, generator=gen)  # large per-position constants, small per-sample spread
    states = offsets + 0.05 * torch.randn(256, 8, hidden, generator=gen)
    pre = stages.Preconditioner(hidden).fit(states, emb)
    x = pre(states, emb) + emb
    spread = (x - x.mean(0)).pow(2).mean().sqrt()
    assert 0.5 < spread < 1.5  # the per-sample variation is unit-size now (it was 0.05)
    assert (x.mean(0) - x.mean((0, 1))).norm(dim=1).mean() < 2 * hidden**0.5  # the offsets no longer dominate
    head = demo.build_head(SMALL).eval()
    with torch.no_grad():
        before = head(pre(states[:3], emb), emb)
        pre.fold_into(head)
        after = head(states[:3], emb)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pre(states[:3], emb), states[:3])  # the identity once folded


def test_the_shape_mask_covers_the_shapes_and_nothing_else():
    scene = world.dataset("test", 1)[0].source
    pixels = world.render_array(scene)
    mask = stages.shape_mask(scene, pixels)
    assert 0 < mask.mean() < 0.6
    background = world.render_array(dataclasses.replace(scene, shapes=()))
    assert np.abs(pixels - background)[~mask].max() <= 12  # outside the mask: the background itself
    assert not stages.shape_mask(dataclasses.replace(scene, shapes=()), background).any()


def test_the_decoder_stage_weighs_the_shapes_up_and_the_vae_stage_weighs_every_pixel_alike():
    samples = stages.batch_samples(0, 0, 8)
    _, flat = stages.VAEStage(SMALL, "cpu").images(samples, 0, 0)
    assert torch.equal(flat, torch.ones_like(flat))
    decoder = stages.DecoderStage(demo.build_vae(SMALL))
    x, weights = decoder.images(samples, 0, 0)
    assert set(weights.unique().tolist()) == {1.0, 1.0 + stages.SHAPE_WEIGHT}
    assert weights.shape == (8, 1, *x.shape[2:])
    assert (weights[6:] == 1).all()  # the last quarter: free drawings, no world shapes to find


class _RoundTrip:
    """A stand-in VAE whose round trip gives back either the image or the image with every shape gone."""

    def __init__(self, drop_shapes: bool, scenes: list[world.Scene]) -> None:
        self.drop, self.scenes = drop_shapes, scenes

    def encode(self, x):
        return type("E", (), {"latent_dist": type("D", (), {"mode": lambda _: x})()})()

    def decode(self, z):
        if self.drop:
            plain = [world.render_array(dataclasses.replace(s, shapes=())) for s in self.scenes]
            z = stages.arrays_to_tensor(plain, "cpu")
        return type("O", (), {"sample": z})()


def test_shapes_kept_tells_a_round_trip_that_keeps_the_shapes_from_one_that_drops_them():
    scenes = [s.source for s in world.dataset("test", 6)]
    kept = checks.shapes_kept(_RoundTrip(False, scenes), scenes)
    dropped = checks.shapes_kept(_RoundTrip(True, scenes), scenes)
    assert kept and kept.keys() == dropped.keys()
    assert all(v.startswith("100 % of") for v in kept.values()), kept
    assert all(v.startswith("0 % of") for v in dropped.values()), dropped


def test_mean_edit_loss_scores_two_parts_under_the_same_noise(built):
    out, _ = built
    latents = torch.load(out / "cache" / "latents-00000.pt", weights_only=True)
    states = {"states": torch.randn(10, 8, SMALL.llm_hidden, generator=torch.Generator().manual_seed(0))}
    stage = stages.MGIEStage(SMALL, "cpu", 1.0, torch.randn(8, SMALL.llm_hidden))
    score = checks.mean_edit_loss(stage, latents, states, batch=4, seed=7)
    batches = [slice(0, 4), slice(4, 8), slice(8, 10)]
    expected = [
        stage.loss(cache.Batch(latents["source"][rows], latents["target_mean"][rows], latents["target_std"][rows],
                               latents["terse"][rows], states["states"][rows]), torch.Generator().manual_seed(7 + i))
        for i, rows in enumerate(batches)
    ]  # fmt: skip
    assert score == pytest.approx(sum(loss["edit"].item() for loss in expected) / 3)
    assert checks.mean_edit_loss(stage, latents, states, batch=4, seed=7) == score  # same part, same noise: no gap
    other = {"states": states["states"].flip(0)}  # the same samples, other conditions
    assert checks.mean_edit_loss(stage, latents, other, batch=4, seed=7) != score


def test_parse_labels_name_each_cells_shape_and_leave_empty_cells_none():
    scene = world.dataset("train", 1, seed=5)[0].source
    labels = refine.parse_labels([scene])
    assert labels.shape == (1, 9, 3)
    occupied = {refine.CELLS.index(s.cell): s for s in scene.shapes}
    for cell in range(9):
        if cell in occupied:
            s = occupied[cell]
            names = [refine.CLASSES[a][i] for a, i in zip(refine.CLASSES, labels[0, cell].tolist(), strict=True)]
            assert names == [s.kind, s.colour, s.size]
        else:
            assert labels[0, cell].tolist() == [0, 0, 0]


def test_refine_anchors_each_cached_sample_to_its_own_states(tmp_path):
    torch.manual_seed(0)
    maker = stages.MLLMStage(SMALL, "cpu", tmp_path)  # the MLLM that "built the cache" of stream seed 3
    with torch.no_grad():
        cached_states = maker.forward([stages.train_sample(3, i) for i in range(6)])[1].half()
    stage = refine.RefineStage(SMALL, "cpu", tmp_path, cached_states, cache_seed=3)
    stage.mllm.load_state_dict(maker.mllm.state_dict())
    samples, rows = stage.batch(seed=1, step=2, size=2)
    assert [s.terse for s in samples[:2]] == [stages.train_sample(1, 6 + 4 + i).terse for i in range(2)]  # fresh
    assert [s.terse for s in samples[2:]] == [stages.train_sample(3, i).terse for i in rows.tolist()]
    losses = stage.step_loss(seed=1, step=2, size=2)
    assert losses["anchor"].item() < 1e-5  # the same MLLM: only fp16 rounding of the cached states
    assert losses["ins"].item() > 0 and losses["parse"].item() > 0
    losses["loss"].backward()
    assert stage.parse.linear.weight.grad.abs().sum() > 0
    assert stage.mllm.vision.get_parameter("encoder.layers.0.mlp.fc1.weight").grad.abs().sum() > 0
    # L_ins': a fact word's token weighs 1 + FACT_WEIGHT, any other 1, padding (-100) nothing
    vocab = stage.mllm.llm.lm_head.out_features
    fact = stage.fact_ids[0].item()
    other = next(i for i in range(vocab) if i not in stage.fact_ids.tolist())
    logits = torch.zeros(3, vocab)
    logits[:, other] = 10.0  # the fact token is predicted wrong, the other right
    labels = torch.tensor([fact, other, -100])
    ce = torch.nn.functional.cross_entropy(logits[:2], labels[:2], reduction="none")
    w = 1 + refine.FACT_WEIGHT
    torch.testing.assert_close(stage.instruction_loss(logits, labels), (w * ce[0] + ce[1]) / (w + 1))
    misaligned = refine.RefineStage(SMALL, "cpu", tmp_path, cached_states, cache_seed=4)  # another stream's rows
    misaligned.mllm.load_state_dict(maker.mllm.state_dict())
    assert misaligned.step_loss(seed=1, step=2, size=2)["anchor"].item() > 100 * losses["anchor"].item()


def test_the_latent_mask_holds_the_edited_pixels_latents_and_their_neighbours():
    region = np.zeros((64, 64), dtype=bool)
    region[10, 10] = True  # latent position (2, 2) at factor 4
    mask = keeping.latent_mask(region, 4)[0, 0]
    assert mask.shape == (16, 16)
    assert mask.sum() == 9 and mask[1:4, 1:4].all()


def test_start_timesteps_run_down_from_the_start_to_zero():
    assert keeping.start_timesteps(999, 20)[:2] == [999, 946] and keeping.start_timesteps(999, 20)[-1] == 0
    assert len(keeping.start_timesteps(999, 20)) == 20
    assert keeping.start_timesteps(5, 20) == [5, 4, 3, 2, 1, 0]  # no repeats


def test_sampling_from_the_barely_noised_source_keeps_the_scene_and_makes_no_edit():
    editor = load_editor("mgie-demo", device="cpu", dtype=torch.float32)
    samples = [s for s in checks.held_out(2) if s.op != "tone"][:4]
    rows = keeping.start_sweep(editor, samples, [0, 999], steps=4, text=3.0, image=2.0)
    kept = [score for _, score in rows[0]]
    assert not any(score.correct for score in kept)  # the source back: the edit is not made
    assert min(score.background_psnr for score in kept) > 25  # the VAE's round trip of the source
    assert np.mean([s.background_psnr for _, s in rows[999]]) < np.mean([s.background_psnr for s in kept])


def test_the_high_noise_share_draws_that_share_from_the_top_fifth():
    stage = stages.DiffusionStage(SMALL, "cpu", scaling_factor=1.0)
    uniform = stage.timesteps(4000, torch.Generator().manual_seed(0))
    assert 0.15 < (uniform >= 800).float().mean() < 0.25
    stage.high_noise_share = 0.5
    biased = stage.timesteps(4000, torch.Generator().manual_seed(0))
    assert 0.55 < (biased >= 800).float().mean() < 0.65 and biased.min() >= 0 and biased.max() < 1000
