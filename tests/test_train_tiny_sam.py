"""The tiny SAM fixture's trainer (``tools/train_tiny_sam.py``).

Its own encoder call, crops and prompt frames must be the real SAM path's, or the fixture learns a model
other than the one ``Predictor`` runs; its README's command must reproduce the run.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import train_tiny_sam as trainer  # noqa: E402
from synthetic_shapes import make_scene  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return trainer.new_model(0, width=16, vit_hidden=16).eval()


@pytest.fixture(scope="module")
def scene():
    return make_scene(np.random.default_rng(3), 600, 800, n_shapes=4)


def full_and_crop(scene, ty: int, tx: int, grid: int = 32):
    full = trainer.make_sample(scene, np.random.default_rng(0), grid=64)
    crop = trainer.Sample(scene, full.pixel, full.masks, ty, tx, grid)
    return full, crop


def test_full_frame_encode_is_transformers(model, scene):
    full, _ = full_and_crop(scene, 0, 0)
    with torch.no_grad():
        ours = trainer.encode(model, [full])
        ref = model.get_image_embeddings(torch.from_numpy(full.pixel))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_window_aligned_crop_is_part_of_the_full_frame(model, scene):
    full, aligned = full_and_crop(scene, 16, 16)
    _, shifted = full_and_crop(scene, 8, 8)
    with torch.no_grad():
        whole = trainer.encode(model, [full])[0]
        a = trainer.encode(model, [aligned])[0]
        s = trainer.encode(model, [shifted])[0]
    # The neck's 3x3 conv sees zero padding on a crop's border tokens: compare the interior.
    torch.testing.assert_close(a[:, 1:-1, 1:-1], whole[:, 17:47, 17:47], atol=1e-5, rtol=1e-4)
    # At other offsets the attention windows tile the crop differently: not the same embedding.
    assert (s[:, 1:-1, 1:-1] - whole[:, 9:39, 9:39]).abs().max() > 1e-2


def test_crop_offsets_follow_alignment_and_hold_whole_shapes(scene):
    rng = np.random.default_rng(1)
    for align in (1, 16):
        for _ in range(20):
            sample = trainer.make_sample(scene, rng, grid=32, align=align)
            assert sample is not None and sample.eligible
            assert sample.ty % align == 0 and sample.tx % align == 0
            assert 0 <= sample.ty <= 32 and 0 <= sample.tx <= 32
            assert sample.pixel.shape == (1, 3, 512, 512) and sample.masks.shape[1:] == (128, 128)
            full_area = np.stack([trainer.lowres_target(m) > 0.5 for m in scene.masks]).sum((1, 2))
            for k in sample.eligible:
                assert sample.masks[k].sum() >= 0.9 * full_area[k]


def test_prompts_land_on_their_shape_in_the_1024_frame(scene):
    """A click sampled in a crop's low-res pixels, mapped to the 1024 frame, hits the same shape there;
    a box from the crop encloses the shape in the 1024 frame."""
    rng = np.random.default_rng(2)
    full_masks = np.stack([trainer.lowres_target(m) > 0.5 for m in scene.masks])
    scale = trainer.INPUT / trainer.LOWRES
    for _ in range(30):
        sample = trainer.make_sample(scene, rng, grid=32)
        click = trainer.Task(0, "click", sample, rng)
        k = [i for i in range(len(full_masks)) if np.array_equal(sample.masks[i], click.gt)][0]
        x, y = click.points[0] / scale
        assert full_masks[k][int(y), int(x)], "click lands off its shape in the full frame"
        box = trainer.Task(0, "box", sample, rng)
        k = [i for i in range(len(full_masks)) if np.array_equal(sample.masks[i], box.gt)][0]
        ys, xs = np.nonzero(full_masks[k])
        centre = np.array([xs.mean(), ys.mean()]) * scale
        assert box.box[0] <= centre[0] <= box.box[2] and box.box[1] <= centre[1] <= box.box[3]


def test_localisation_loss_falls_as_the_target_grows(model, scene):
    """-log attention mass on the target: zero on the whole crop, larger on nested smaller targets."""
    rng = np.random.default_rng(4)
    sample = trainer.make_sample(scene, rng, grid=32)
    task = trainer.Task(0, "box", sample, rng)
    probe = trainer.TokenAttentionProbe(model)
    inputs = []  # what each token->image attention was called with
    attentions = [m for n, m in model.mask_decoder.named_modules() if n.endswith("attn_token_to_image")]
    hooks = [
        m.register_forward_pre_hook(lambda m, a, kw: inputs.append((kw["query"], kw["key"])), with_kwargs=True)
        for m in attentions
    ]
    with torch.no_grad():
        emb = trainer.encode(model, [sample])
        pe = model.get_image_wide_positional_embeddings()[0].permute(1, 2, 0)
        image_pe = sample.tokens(pe).permute(2, 0, 1)[None]
        trainer.decode(model, emb, image_pe, [task], None, multimask=False)
        calls = probe.pop()
        assert len(calls) == 3 == len(inputs)  # two two-way layers and the final token->image attention
        for (module, q, k), (query, key) in zip(calls, inputs):  # the probe keeps the projections
            assert torch.equal(q, module.q_proj(query)) and torch.equal(k, module.k_proj(key))
        losses = []
        for side in (128, 64, 16, 4):
            target = torch.zeros(1, 1, 128, 128)
            target[..., :side, :side] = 1
            losses.append(float(trainer.localisation_loss(calls, target)))
    for hook in hooks:
        hook.remove()
    assert abs(losses[0]) < 1e-5
    assert losses == sorted(losses) and losses[-1] > losses[1] > 0


def test_readme_command_reproduces_the_arguments():
    parser = trainer.build_parser()
    args = parser.parse_args(
        ["--crop", "16", "--crop-align", "16", "--modes", "click,box", "--loc-weight", "0.25", "--no-subcells"]
        + ["--lr", "3e-3", "--steps", "17", "--out", "/tmp/tiny-sam-test"]
    )
    command = trainer.recipe_command(args).replace("\\\n", " ")
    words = shlex.split(command)
    assert words[:3] == ["OMP_NUM_THREADS=1", ".venv/bin/python", "tools/train_tiny_sam.py"]
    again = parser.parse_args(words[3:])
    assert vars(again) == vars(args)


def run_schedule(schedule, seconds_per_step) -> tuple[list[float], list[float], list[float]]:
    """Progress, learning rate and clock of each step the trainer's loop takes until progress reaches 1."""
    progress, rates, clock = [], [], []
    step, elapsed = 0, 0.0
    while (p := schedule.progress(step, elapsed)) < 1:
        progress.append(p)
        rates.append(schedule.lr(step, p))
        clock.append(elapsed)
        elapsed += seconds_per_step(step)
        step += 1
    return progress, rates, clock


def test_schedule_on_pace_is_by_steps_whatever_the_clock():
    """A run fast enough for its steps gets exactly the step schedule: the same model on any such machine."""
    runs = [
        run_schedule(trainer.LearningRateSchedule(4e-3, 1000, budget=600.0), lambda step, f=f: f * 0.6)
        for f in (0.5, 0.97)
    ]
    for progress, _, _ in runs:
        assert len(progress) == 1000
        assert progress == [step / 1000 for step in range(1000)]
    assert runs[0][1] == runs[1][1]
    rates = runs[0][1]
    assert rates[0] == pytest.approx(4e-5) and max(rates) == pytest.approx(4e-3, rel=0.03)
    assert rates[-1] < 1e-7


@pytest.mark.parametrize("slowdown_from", [0, 600])
def test_schedule_too_slow_for_its_steps_ends_annealed_within_the_budget(slowdown_from):
    """1.25x too slow from the start, or 3x slower from step 600 on: the cosine's end follows the clock, so the
    last step falls inside the budget with a learning rate near 0, and nothing jumps where the clock takes over."""
    schedule = trainer.LearningRateSchedule(4e-3, 1000, budget=600.0)

    def seconds_per_step(step: int) -> float:
        return (0.75 if slowdown_from == 0 else 1.8) if step >= slowdown_from else 0.5

    progress, rates, clock = run_schedule(schedule, seconds_per_step)
    took_over = schedule.clock_from[0]
    assert (took_over == 100) if slowdown_from == 0 else (600 < took_over < 1000)
    assert progress[:took_over] == [step / 1000 for step in range(took_over)]
    last_step_seconds = seconds_per_step(len(progress) - 1)
    assert len(progress) < 1000 and 600.0 - 2 * last_step_seconds < clock[-1] <= 600.0  # the budget, all of it
    assert rates[-1] < 1e-3 * 4e-3
    after = np.diff(rates[100:])
    assert (after <= 1e-12).all()  # decreasing after the warm-up
    assert np.abs(np.diff(progress)).max() < 3 * seconds_per_step(999) / 600.0


def test_train_steps_fit_a_fixed_batch():
    """The whole step (encoder, instance and sub-cell losses, prompts, correction rounds, localisation and
    candidate losses) trains: repeated on one batch, its loss falls."""
    torch.manual_seed(0)
    model = trainer.new_model(0, width=16, vit_hidden=16).train()
    scene = make_scene(np.random.default_rng(5), 300, 300, n_shapes=3)
    batch = [trainer.make_sample(scene, np.random.default_rng(6), grid=32)]
    subcell_head = torch.nn.Linear(16, 16)
    params = list(model.parameters()) + list(subcell_head.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    probe = trainer.TokenAttentionProbe(model)
    losses = []
    for _ in range(25):
        loss, stats = trainer.train_step(
            model,
            batch,
            np.random.default_rng(7),  # the same prompts every step
            rounds=2,
            aux="channels",
            subcell_head=subcell_head,
            modes=("click", "box", "union"),
            probe=probe,
            loc_weight=0.5,
            candidate_weight=0.5,
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert set(stats["mode_iou"]) == {"click", "box", "union"}
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])  # measured 0.65, np.round(losses, 2).tolist()


def test_frozen_encoder_step_trains_only_the_decoder(model, scene):
    """``--freeze-encoder``: the step's loss reaches the prompt encoder and mask decoder, not the ViT."""
    batch = [trainer.make_sample(scene, np.random.default_rng(6), grid=32)]
    model.zero_grad()
    loss, _ = trainer.train_step(
        model, batch, np.random.default_rng(7), rounds=1, aux="channels", modes=("click",), train_encoder=False
    )
    loss.backward()
    assert all(p.grad is None for p in model.vision_encoder.parameters())
    assert model.mask_decoder.mask_tokens.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_coverage_by_distance_shows_a_disk_around_the_click():
    """The breakdown's falloff measure: a mask that is a disk around the click, on a shape much larger than
    the disk, covers the target near the click and none of it far away."""
    from tiny_sam_breakdown import DISTANCES, coverage_by_distance

    h, w = 512, 1024  # the 1024 frame is the image itself: distances in image px
    yy, xx = np.mgrid[0:h, 0:w]
    gt = (xx > 100) & (xx < 900) & (yy > 50) & (yy < 460)
    click = (500.0, 256.0)
    disk = np.hypot(xx - click[0], yy - click[1]) < 48
    counts = coverage_by_distance(disk, gt, click)
    covered = counts[0, 0] / np.maximum(counts[0, 1], 1)
    assert DISTANCES[:3] == (0, 32, 64)
    assert covered[0] == 1.0 and 0.3 < covered[1] < 0.7 and covered[2] == covered[3] == 0.0
    assert counts[1, 0].sum() == 0  # the disk lies inside the target: nothing else covered
    whole = coverage_by_distance(gt, gt, click)
    assert np.array_equal(whole[0, 0], whole[0, 1])  # the exact mask covers every ring fully


def test_batches_from_a_worker_process_are_the_inline_ones():
    """``--workers 1`` makes the same batches in a background process: the same model, only faster."""
    args = trainer.build_parser().parse_args(["--crop-batch", "2"])
    inline, background = trainer.batch_stream(args, 11, 0), trainer.batch_stream(args, 11, 1)
    try:
        for _ in range(2):
            a, b = next(inline), next(background)
            assert [(s.ty, s.tx) for s in a] == [(s.ty, s.tx) for s in b]
            assert all(np.array_equal(s.pixel, t.pixel) and np.array_equal(s.masks, t.masks) for s, t in zip(a, b))
    finally:
        background.close()


def test_calibration_keeps_the_best_match_offset(tmp_path):
    """calibrate_match_offset scores each offset factor through the real Predictor and saves the model with
    the best one applied to MATCH's offset (and nothing else changed)."""
    import tiny_sam_wiring as wiring

    model = trainer.new_model(0, width=wiring.WIDTH, vit_hidden=16, heads=1)
    wiring.wire_prompt_path(model)
    trainer.save(model.eval(), tmp_path)
    best, table = trainer.calibrate_match_offset(tmp_path, factors=(1.0, 1.5), scenes_per_size=1)
    assert set(table) == {1.0, 1.5} and all(0.0 <= v <= 1.0 for v in table.values())
    assert table[best] == max(table.values())
    from transformers import SamModel

    saved = dict(SamModel.from_pretrained(tmp_path).named_parameters())
    name = "mask_decoder.transformer.layers.0.cross_attn_image_to_token.k_proj.weight"
    expected = dict(model.named_parameters())[name].detach().clone()
    for row, col in wiring.match_offset_entries():
        expected[row, col] *= best
    assert torch.allclose(saved[name].detach(), expected)
    for other, p in model.named_parameters():
        if other != name:
            assert torch.equal(saved[other].detach(), p.detach()), other


def test_calibration_scores_count_failed_prompts_as_zero_and_leave_the_offset(tmp_path):
    """Each factor's score is the mean IoU of the clicks and negative clicks tiny_sam_bars measures, with a
    prompt below FAILED_PROMPT counted 0; the engine's MATCH offset is as before afterwards."""
    import tiny_sam_wiring as wiring
    from tiny_sam_bars import bar_scenes, click_ious, negative_click_shares

    from maskwright import Predictor
    from maskwright.engines.sam_registry import load_sam_engine

    model = trainer.new_model(0, width=wiring.WIDTH, vit_hidden=16, heads=1)
    wiring.wire_prompt_path(model)
    trainer.save(model.eval(), tmp_path)
    engine = load_sam_engine(str(tmp_path), decoder="torch")
    name = "mask_decoder.transformer.layers.0.cross_attn_image_to_token.k_proj.weight"
    before = engine.model.get_parameter(name).detach().clone()
    scenes = bar_scenes(5, per_size=1)
    scores = trainer.calibration_scores(engine, scenes, (1.0, 1.3))
    assert torch.allclose(engine.model.get_parameter(name), before)
    predictor = Predictor(engine)
    ious = np.array(click_ious(predictor, scenes) + negative_click_shares(predictor, scenes)[2])
    assert 0 < (ious < trainer.FAILED_PROMPT).sum() < len(ious)  # the untrained model fails some prompts
    expected = np.where(ious < trainer.FAILED_PROMPT, 0.0, ious).mean()
    assert scores[1.0] == pytest.approx(expected) and scores[1.0] < ious.mean()


def test_tests_verdict_tells_a_passing_model_from_a_failing_one(tmp_path):
    """The trainer's last word on a run: the committed fixture meets the tests' bars, an untrained model not."""
    import tiny_sam_wiring as wiring

    fixture = Path(__file__).parent / "fixtures" / "tiny-sam"
    assert trainer.tests_verdict(fixture).startswith("On the tests' scenes this model meets every bar")
    model = trainer.new_model(0, width=wiring.WIDTH, vit_hidden=16, heads=1)
    wiring.wire_prompt_path(model)
    trainer.save(model.eval(), tmp_path)
    assert "FAILS a bar" in trainer.tests_verdict(tmp_path)


def test_instance_loss_across_images_separates_look_alikes_of_other_images():
    """Per image, only that image's shapes are negatives; with ``across``, the shapes of the batch's other
    images are too: one-hot codes that repeat from image to image cost nothing per image, but across images
    each token finds as many look-alikes as true partners (about log 2 more; SupCon's floor is log of the
    partners' count, the same in both)."""
    scenes = [make_scene(np.random.default_rng(s), 480, 640, n_shapes=3) for s in (5, 6)]
    batch = [trainer.make_sample(s, np.random.default_rng(0), grid=64) for s in scenes]

    def embedding(shared: bool) -> torch.Tensor:
        emb = torch.zeros(2, 16, 64, 64)
        for i, sample in enumerate(batch):
            labels = trainer.token_labels(sample.scene)
            for label in np.unique(labels[labels >= 0]):
                channel = label + (0 if shared or i == 0 else 8)  # shared: image 1 reuses image 0's codes
                emb[i, channel][torch.from_numpy(labels == label)] = 1.0
        return emb

    def loss(shared: bool, across: bool) -> float:
        emb = embedding(shared)
        return float(trainer.instance_embedding_loss(None, emb, batch, np.random.default_rng(1), across=across))

    assert loss(shared=True, across=False) == pytest.approx(loss(shared=False, across=False))
    assert loss(shared=True, across=True) > loss(shared=False, across=True) + 0.5


def test_supervised_contrastive_loss_is_its_definition():
    """SupCon per token: -mean over its positives p of log(exp(s_ip) / sum over k != i of exp(s_ik)), written
    out with (N, N) masks; the trainer's O(N C) form must give the same value and gradient, and skip tokens
    without a positive."""
    torch.manual_seed(0)
    z0 = torch.nn.functional.normalize(torch.randn(60, 8), dim=1)
    y = torch.randint(0, 4, (60,))
    y[7] = 99  # alone in its class: no positive, left out of the mean

    def definition(z):
        sim = z @ z.T / 0.1
        others = ~torch.eye(len(z), dtype=torch.bool)
        log_prob = sim - torch.stack([torch.logsumexp(sim[i][others[i]], 0) for i in range(len(z))])[:, None]
        positive = (y[:, None] == y[None, :]) & others
        per_token = [-log_prob[i][positive[i]].mean() for i in range(len(z)) if positive[i].any()]
        return torch.stack(per_token).mean()

    grads = []
    for loss_of in (definition, lambda z: trainer._supcon(z, y, 0.1)):
        z = z0.clone().requires_grad_()
        value = loss_of(z)
        value.backward()
        grads.append((value.detach(), z.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
    assert grads[1][1][7].abs().sum() > 0  # a lone token is still another token's negative


@pytest.mark.parametrize("multimask", [True, False])
def test_fast_mask_decoder_is_transformers(scene, multimask):
    """The trainer's mask decoder (channels-last tokens, matrix-product upscaling, only the masks returned) gives
    SamMaskDecoder's masks, scores and gradients, with and without a fed-back mask."""
    model = trainer.new_model(1, width=16, vit_hidden=16)
    batch = [trainer.make_sample(scene, np.random.default_rng(0), grid=32)]
    tasks = [trainer.Task(0, mode, batch[0], np.random.default_rng(2)) for mode in ("box", "box")]
    full_pe = model.get_image_wide_positional_embeddings()[0].permute(1, 2, 0)
    image_pe = batch[0].tokens(full_pe).permute(2, 0, 1)[None].expand(2, -1, -1, -1)
    fed_back = torch.randn(2, 1, 128, 128) * 4

    def outputs_and_grads():
        model.zero_grad()
        emb = trainer.encode(model, batch).expand(2, -1, -1, -1)
        out, loss = [], 0
        for masks_in in (None, fed_back):
            masks, iou = trainer.decode(model, emb, image_pe, tasks, masks_in, multimask=multimask)
            loss = loss + (masks * torch.linspace(-1, 1, masks.shape[-1])).sum() + iou.sum() * 100
            out += [masks.detach(), iou.detach()]
        loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    stock, grads = outputs_and_grads()
    trainer.fast_mask_decoder(model)
    fast, fast_grads = outputs_and_grads()
    assert stock[0].shape == fast[0].shape == (2, 3 if multimask else 1, 128, 128)
    for a, b in zip(stock, fast):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4 * a.abs().max())
    # The masks not returned are not made: their hypernetworks get no gradient, where the stock path's is 0.
    # (In a training step the click's multimask round and the others' single masks use all four.)
    unused = tuple(f"mask_decoder.output_hypernetworks_mlps.{i}." for i in ((0,) if multimask else (1, 2, 3)))
    assert {n for n in grads if n.startswith(unused)} == grads.keys() - fast_grads.keys()
    assert "mask_decoder.upscale_conv1.weight" in fast_grads and not fast_grads.keys() - grads.keys()
    scale = max(float(g.abs().max()) for g in grads.values())  # some are zero up to rounding (key biases)
    for name, grad in grads.items():
        expected = fast_grads.get(name, torch.zeros_like(grad))
        assert torch.allclose(grad, expected, rtol=1e-3, atol=1e-5 * scale), name


def test_decode_on_the_full_frame_is_transformers(model, scene):
    """On the whole frame, the trainer's decoder call (its dense no-mask broadcast over the embedding's
    grid, the previous logits fed back) gives SamModel's masks and scores for the same prompt."""
    sample = trainer.make_sample(scene, np.random.default_rng(0), grid=64)
    task = trainer.Task(0, "click", sample, np.random.default_rng(4))
    points, labels, _ = trainer.task_tokens(task)
    with torch.no_grad():
        emb = trainer.encode(model, [sample])
        image_pe = model.get_image_wide_positional_embeddings()
        first, first_iou = trainer.decode(model, emb, image_pe, [task], None, multimask=True)
        again, _ = trainer.decode(model, emb, image_pe, [task], first[:, :1], multimask=False)
        without, _ = trainer.decode(model, emb, image_pe, [task], None, multimask=False)
        kwargs = dict(image_embeddings=emb, input_points=torch.from_numpy(points)[None, None], multimask_output=True)
        kwargs["input_labels"] = torch.from_numpy(labels)[None, None]
        expected = model(**kwargs)
        expected_again = model(**kwargs | {"input_masks": first[:, :1], "multimask_output": False})
    assert first.shape == (1, 3, 256, 256)
    assert torch.allclose(first, expected.pred_masks[:, 0], atol=1e-4)
    assert torch.allclose(first_iou, expected.iou_scores[:, 0], atol=1e-5)
    assert torch.allclose(again, expected_again.pred_masks[:, 0], atol=1e-4)
    assert (again - without).abs().max() > 1e-2  # the fed-back mask is used


def test_crop_pixels_are_the_padded_frames(scene):
    """make_sample normalises only its crop's window of the input; the values are the full frame's, padding
    (zeros past the resized 600x800 -> 768x1024 image) included."""
    from maskwright.engines import sam_common

    frame = sam_common.preprocess_sam(scene.image)[0]
    rng = np.random.default_rng(8)
    bottoms = []
    for _ in range(12):
        sample = trainer.make_sample(scene, rng, grid=32)
        y, x = 16 * sample.ty, 16 * sample.tx
        assert np.array_equal(sample.pixel, frame[:, :, y : y + 512, x : x + 512])
        bottoms.append(y + 512)
    assert max(bottoms) > 768  # some crops reach into the padding
