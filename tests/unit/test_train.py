"""The training loop on tiny synthetic batches: schedule, learning, exact resume, failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_rfsq import observations, tiny_policy

from rsdlib.decoding import decode_rfsq_ar, make_rule, speculative_decode
from rsdlib.policies import HeadDrafter, HeadDrafterConfig, head_drafter_loss
from rsdlib.train import TrainConfig, lr_factor, read_log, train

L, N, V = 3, 2, 6


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_batches(policy, size: int = 6):
    """Observations drawn from a small pool; target tokens a fixed function of the proprio."""
    pool = policy.prepare(observations(12, seed=3))
    targets = (pool.proprio[:, :N] > 0).long()[:, None, :].expand(-1, L, -1) * 2 + torch.arange(L)[
        None, :, None
    ] % 2

    def batches(step: int, generator: torch.Generator):
        idx = torch.randint(0, 12, (size,), generator=generator)
        sub = type(pool)(
            images=pool.images[idx],
            instruction_ids=pool.instruction_ids[idx],
            instruction_mask=pool.instruction_mask[idx],
            proprio=pool.proprio[idx],
        )
        return {"obs": sub, "tokens": targets[idx]}

    return batches


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[-1] == pytest.approx(0.1, abs=1e-3)


def test_config_is_validated():
    with pytest.raises(ValueError, match=r"warmup_steps \(20\)"):
        TrainConfig(steps=10, warmup_steps=20)
    with pytest.raises(ValueError, match=r"lr \(0\)"):
        TrainConfig(lr=0)


def test_training_lowers_the_loss_and_logs(tmp_path):
    policy = tiny_policy(seed=0)
    cfg = TrainConfig(steps=30, lr=3e-3, warmup_steps=3, log_every=5, progress=False)
    batches = synthetic_batches(policy)
    with torch.no_grad():
        before = policy.loss(batches(0, torch.Generator().manual_seed(0)))[0].item()
    result = train(
        policy, batches=batches, config=cfg, run_dir=tmp_path, evaluate=lambda m: {"val_metric": 1.0}
    )
    rows = read_log(tmp_path)
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20, 25, 30]
    assert {"loss", "lr", "grad_norm", "acc_layer0", "seconds"} <= set(train_rows[-1])
    assert rows[-1]["split"] == "val"
    assert result.last_loss < 0.7 * before
    assert (tmp_path / "last" / "model.safetensors").is_file()


def test_resume_makes_exactly_the_same_updates(tmp_path):
    cfg = TrainConfig(steps=6, lr=1e-3, warmup_steps=2, log_every=1, checkpoint_every=3, progress=False)
    straight = tiny_policy(seed=0)
    train(straight, batches=synthetic_batches(straight), config=cfg, run_dir=tmp_path / "a")

    first = tiny_policy(seed=0)
    # The same run, interrupted after its step-3 checkpoint.
    calls = {"n": 0}
    batches = synthetic_batches(first)

    def interrupted(step, gen):
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["n"] += 1
        return batches(step, gen)

    with pytest.raises(KeyboardInterrupt):
        train(first, batches=interrupted, config=cfg, run_dir=tmp_path / "b")
    resumed = tiny_policy(seed=5)  # different init: everything must come from the checkpoint
    result = train(resumed, batches=synthetic_batches(resumed), config=cfg, run_dir=tmp_path / "b")
    assert result.resumed_from == 3
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        if "embed_tokens" not in k:
            assert torch.equal(a, b), k
    assert [r["step"] for r in read_log(tmp_path / "b")] == [1, 2, 3, 4, 5, 6]


def test_a_non_finite_loss_stops_training(tmp_path):
    policy = tiny_policy(seed=0)
    batches = synthetic_batches(policy)

    def nan_loss(batch):
        loss, m = policy.loss(batch)
        return loss * float("nan"), m

    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        train(
            policy,
            batches=batches,
            loss_fn=nan_loss,
            config=TrainConfig(steps=2, warmup_steps=1, progress=False),
            run_dir=tmp_path,
        )


def test_distilled_head_drafter_raises_acceptance_and_rsd_stays_exact(tmp_path):
    """The whole mechanism on a toy: distil a draft head from the main policy, then decode with it."""
    main = tiny_policy(seed=0, sharpen=3.0)
    pool = main.prepare(observations(8, seed=3))
    greedy = decode_rfsq_ar(main, pool).tokens  # (8, L, N) distillation targets
    cfg = HeadDrafterConfig(trunk_hidden_size=16, hidden_size=32, num_blocks=1, actions=main.config.actions)
    torch.manual_seed(0)
    head = HeadDrafter(config=cfg).double()

    def batches(step, generator):
        idx = torch.randint(0, 8, (8,), generator=generator)
        sub = type(pool)(
            pool.images[idx], pool.instruction_ids[idx], pool.instruction_mask[idx], pool.proprio[idx]
        )
        return {"obs": sub, "tokens": greedy[idx]}

    def accepted() -> float:
        rsd = speculative_decode(main, head.eval(), pool, rule=make_rule("exact"), gamma=L)
        assert torch.equal(rsd.tokens, greedy)
        return float(np.mean([t.accepted_layers for t in rsd.traces]))

    before = accepted()
    train(
        head,
        batches=batches,
        loss_fn=head_drafter_loss(main, head),
        config=TrainConfig(steps=60, lr=1e-2, warmup_steps=5, progress=False, log_every=20),
        run_dir=tmp_path,
    )
    after = accepted()
    assert after > before + 1.0, (before, after)
    assert all(p.grad is None for p in main.parameters())  # the main policy stayed frozen


def fake_items(n: int, seed: int = 0) -> list[dict]:
    """Demonstration items shaped as rsdlib.libero.dataset.DemoDataset yields them."""
    rng = np.random.default_rng(seed)
    items = []
    for obs in observations(n, seed=seed):
        raw = rng.normal(size=(8, 7)).astype(np.float32) * 0.3
        items.append(obs | {"actions": np.clip(raw, -1, 1), "actions_raw": raw, "valid": np.ones(8, bool)})
    return items


def test_demo_items_train_and_evaluate_every_head(tmp_path):
    from fake_rfsq import FakeRFSQ

    from rsdlib.experiments.validation import evaluate_policy
    from rsdlib.policies.data import ChunkBatches, augment_images, collate

    tok = FakeRFSQ()
    items = fake_items(10)
    for head in ("rfsq_ar", "rfsq_parallel", "l1_regression"):
        policy = tiny_policy(head)
        batches = ChunkBatches(items=items, policy=policy, batch_size=4, tokenizer=tok)
        batch = batches(0, torch.Generator().manual_seed(0))
        if head != "l1_regression":
            assert batch["tokens"].shape == (4, L, 2)
            direct = collate(items[:2], policy=policy, tokenizer=tok)["tokens"]
            want = tok.encode(torch.as_tensor(np.stack([it["actions_raw"] for it in items[:2]])))
            assert torch.equal(direct, want.transpose(1, 2))
        train(
            policy,
            batches=batches,
            config=TrainConfig(steps=2, warmup_steps=1, progress=False),
            run_dir=tmp_path / head,
        )
        metrics = evaluate_policy(policy, items[:5], tokenizer=tok, denormalize=lambda x: x, batch_size=2)
        assert "loss" in metrics and metrics["action_mae"] > 0
        if head != "l1_regression":
            assert {f"acc_layer{i}" for i in range(L)} <= set(metrics)
    imgs = torch.rand(2, 2, 3, 16, 16, dtype=torch.float64)
    a = augment_images(imgs, torch.Generator().manual_seed(0))
    b = augment_images(imgs, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == imgs.shape and not torch.equal(a, imgs)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_a_deadline_stops_with_a_checkpoint_and_a_second_call_finishes(tmp_path):
    import time

    cfg = TrainConfig(steps=5, warmup_steps=1, log_every=1, checkpoint_every=10, progress=False)
    policy = tiny_policy(seed=0)
    first = train(
        policy, batches=synthetic_batches(policy), config=cfg, run_dir=tmp_path, deadline=time.time() - 1
    )
    assert first.steps_done == 1  # the deadline had passed: one step, then a checkpoint there
    assert (tmp_path / "last" / "trainer.pt").is_file()
    again = tiny_policy(seed=3)
    second = train(again, batches=synthetic_batches(again), config=cfg, run_dir=tmp_path)
    assert second.resumed_from == 1 and second.steps_done == 5
    assert [r["step"] for r in read_log(tmp_path) if r["split"] == "train"] == [1, 2, 3, 4, 5]
