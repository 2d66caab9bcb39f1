"""Action tokenizers: normaliser, RFSQ, FAST, binning, the shared interface and the sweep helpers.

Everything runs on synthetic expert-like episodes with tiny models; the one RFSQ training
(module fixture) takes a few seconds on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.fft import dct, idct

from rsdlib.tokenizers import (
    ActionTokenizer,
    BinningTokenizer,
    FASTTokenizer,
    MalformedTokens,
    Normaliser,
    RFSQTokenizer,
    digits_to_index,
    index_to_digits,
    load_tokenizer,
)
from rsdlib.tokenizers.data import demo_files, split_episodes, synthetic_episodes
from rsdlib.tokenizers.evaluate import choose_default, code_usage, equal_token_comparison, evaluate_tokenizer
from rsdlib.tokenizers.normaliser import DEFAULT_PERCENTILES

H, A = 8, 7


@pytest.fixture(scope="module")
def split():
    episodes = synthetic_episodes(16, generator=torch.Generator().manual_seed(0), length=100)
    return split_episodes(episodes, held_out_fraction=0.25, horizon=H, seed=0, source="synthetic")


@pytest.fixture(scope="module")
def normaliser(split):
    return Normaliser().fit(split.train.reshape(-1, A))


@pytest.fixture(scope="module")
def rfsq(split, normaliser):
    torch.set_num_threads(1)
    tok = RFSQTokenizer(
        num_latents=4, num_layers=3, levels=[8, 5, 5, 5], hidden=64, depth=1, steps=400, batch_size=128, lr=3e-3,
        seed=0, normaliser=normaliser,
    )  # fmt: skip
    return tok.fit(split.train, progress=False)


# -- normaliser ---------------------------------------------------------------------------


def test_normaliser_is_an_exact_inverse_inside_the_range_and_keeps_the_gripper_binary(split, normaliser):
    x = torch.as_tensor(split.held_out)
    y = normaliser.normalise(x)
    assert y.dtype == torch.float64 and y.abs().max() <= 1
    assert set(y[..., 6].unique().tolist()) <= {-1.0, 1.0}
    inside = ((y.abs() < 1) | (torch.arange(A) == 6)).all(-1)  # actions with no clamped entry
    assert inside.float().mean() > 0.5
    back = normaliser.denormalise(y)
    torch.testing.assert_close(back[inside], x[inside], rtol=0, atol=1e-12)


def test_normaliser_maps_percentiles_to_the_bounds_clamps_and_thresholds_the_gripper():
    x = torch.stack([torch.linspace(-3, 5, 1001)] * A, dim=1)
    x[:, 6] = torch.where(torch.arange(1001) % 2 == 0, -1.0, 1.0)
    norm = Normaliser().fit(x)
    lower, upper = DEFAULT_PERCENTILES
    lo, hi = torch.quantile(x[:, 0], lower / 100), torch.quantile(x[:, 0], upper / 100)
    probe = torch.zeros(3, A, dtype=torch.float64)
    probe[:, 0] = torch.stack([lo, hi, torch.tensor(100.0, dtype=torch.float64)])
    probe[:, 6] = torch.tensor([0.3, -0.2, 0.0])
    y = norm.normalise(probe)
    torch.testing.assert_close(y[:, 0], torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    assert y[:, 6].tolist() == [1.0, -1.0, -1.0]
    # whatever a decoder emits for the gripper, the robot gets -1 or +1
    assert norm.denormalise(torch.tensor([[0.0] * 6 + [0.2], [0.0] * 6 + [-0.9]]))[:, 6].tolist() == [
        1.0,
        -1.0,
    ]


def test_normaliser_handles_a_constant_dimension_and_round_trips_through_json(tmp_path):
    x = torch.randn(200, A, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[:, 3] = 0.25  # e.g. a rotation the expert never uses
    norm = Normaliser().fit(x)
    assert norm.normalise(x)[:, 3].abs().max() == 0
    torch.testing.assert_close(norm.denormalise(norm.normalise(x))[:, 3], x[:, 3], rtol=0, atol=1e-12)
    loaded = Normaliser.load(norm.save(tmp_path / "n.json"))
    assert loaded == norm and torch.equal(loaded.normalise(x), norm.normalise(x))


def test_normaliser_rejects_bad_input():
    with pytest.raises(RuntimeError, match="not fitted"):
        Normaliser().normalise(torch.zeros(2, A))
    norm = Normaliser().fit(torch.randn(50, A))
    with pytest.raises(ValueError, match="action_dim"):
        norm.normalise(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="NaN"):
        norm.normalise(torch.full((2, A), float("nan")))
    with pytest.raises(ValueError, match="gripper_dim"):
        Normaliser(gripper_dim=7)


# -- RFSQ -----------------------------------------------------------------------------------


def test_rfsq_ids_have_the_contract_shape_and_decode_exactly_to_the_forward_pass(rfsq, split):
    ids = rfsq.encode(split.held_out)
    assert ids.shape == (len(split.held_out), 4, 3) and ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < rfsq.codebook_size == 1000
    decoded = rfsq.decode(ids)
    assert decoded.shape == (len(split.held_out), H, A)
    assert torch.equal(decoded, rfsq.reconstruct(split.held_out))  # bit for bit, not just close


def test_rfsq_tokens_depend_on_their_own_chunk_only(rfsq, split):
    # The prototype normalised latents per batch/vector, so tokens could not be decoded alone.
    x = split.held_out[:64]
    ids = rfsq.encode(x)
    alone = torch.cat([rfsq.encode(x[i : i + 1]) for i in range(0, 64, 9)])
    assert torch.equal(alone, ids[::9])
    torch.testing.assert_close(rfsq.decode(ids[:1]), rfsq.decode(ids)[:1], rtol=0, atol=1e-6)


def test_every_rfsq_layer_carries_information(rfsq, split):
    usage = code_usage(rfsq, split.held_out)
    # The prototype's fixed grid left layers after the first on one index: entropy 0 bits.
    assert all(u["entropy_bits"] > 3.0 for u in usage), [u["entropy_bits"] for u in usage]
    rows = evaluate_tokenizer(rfsq, split.held_out, data="held_out")
    mse = [r["mse_normalised"] for r in rows]
    assert all(b < a for a, b in zip(mse, mse[1:], strict=False)), mse
    # In latent space each layer shrinks the quantization error by a large factor.
    x = rfsq.normaliser.normalise(torch.as_tensor(split.held_out)).float()
    with torch.no_grad():
        z = rfsq.model.quantizer.clamp_value
        target = (lambda v: (v / z).tanh() * z)(rfsq.model.latents(x))
        ids = rfsq.encode(split.held_out)
        residuals = [
            (target - rfsq.model.quantized_from_ids(ids[:, :, :k])).abs().max().item() for k in (1, 2, 3)
        ]
    assert residuals[1] < residuals[0] / 3 and residuals[2] < residuals[1] / 3, residuals


def test_rfsq_decodes_every_prefix_and_rejects_bad_ids(rfsq, split):
    ids = rfsq.encode(split.held_out[:10])
    for k in range(1, 4):
        assert rfsq.decode(ids[:, :, :k]).shape == (10, H, A)
    with pytest.raises(ValueError, match="1 <= k <= L"):
        rfsq.decode(ids[:, :, :0])
    with pytest.raises(ValueError, match="1 <= k <= L"):
        rfsq.decode(torch.cat([ids, ids[:, :, :1]], dim=-1))
    with pytest.raises(ValueError, match="shape"):
        rfsq.decode(ids[:, :3])
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        rfsq.decode(torch.full_like(ids, 1000))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        rfsq.decode(torch.full_like(ids, -1))  # -1 would otherwise mean "dropped layer" inside ResidualFSQ
    with pytest.raises(TypeError, match="integer"):
        rfsq.decode(ids.float())
    with pytest.raises(ValueError, match=r"\(B, H=8, A=7\)"):
        rfsq.encode(np.zeros((4, 7, 7)))


def test_rfsq_save_load_gives_the_same_tokens_and_chunks(rfsq, split, tmp_path):
    rfsq.save(tmp_path / "rfsq")
    loaded = RFSQTokenizer.load(tmp_path / "rfsq")
    assert (loaded.num_layers, loaded.num_latents, loaded.levels, loaded.codebook_size) == (
        3,
        4,
        [8, 5, 5, 5],
        1000,
    )
    assert (loaded.horizon, loaded.action_dim) == (H, A)
    ids = rfsq.encode(split.held_out)
    assert torch.equal(loaded.encode(split.held_out), ids)
    assert torch.equal(loaded.decode(ids), rfsq.decode(ids))
    assert isinstance(load_tokenizer(tmp_path / "rfsq"), RFSQTokenizer)
    with pytest.raises(ValueError, match="'rfsq' tokenizer, not a 'fast'"):
        FASTTokenizer.load(tmp_path / "rfsq")


def test_a_compacted_rfsq_halves_its_file_and_decodes_within_half_precision(rfsq, split, tmp_path):
    from safetensors.torch import load_file

    from rsdlib.tokenizers.rfsq import WEIGHTS_FILE, compact

    folder = rfsq.save(tmp_path / "rfsq")
    before = (folder / WEIGHTS_FILE).stat().st_size
    compact(folder)
    assert 0.45 < (folder / WEIGHTS_FILE).stat().st_size / before < 0.55
    assert {v.dtype for v in load_file(str(folder / WEIGHTS_FILE)).values()} == {torch.float16}
    half = RFSQTokenizer.load(folder)
    assert {p.dtype for p in half.model.parameters()} == {torch.float32}  # upcast on load
    ids = rfsq.encode(split.held_out)
    # float16 keeps ~3 decimal digits: actions move far less than one quantisation step
    assert (half.decode(ids) - rfsq.decode(ids)).abs().max() < 2e-3
    assert (half.encode(split.held_out) != ids).float().mean() < 0.02  # only values on a boundary move
    with pytest.raises(ValueError, match="float16 or torch.bfloat16"):
        compact(folder, torch.float32)
    (folder / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(Exception, match="unreadable"):
        compact(folder)


def test_a_truncated_rfsq_gives_the_same_prefix_tokens_and_decodes(rfsq, split):
    ids = rfsq.encode(split.held_out[:50])
    short = rfsq.truncated(2)
    assert short.num_layers == 2 and torch.equal(short.encode(split.held_out[:50]), ids[:, :, :2])
    for k in (1, 2):
        assert torch.equal(short.decode(ids[:, :, :k]), rfsq.decode(ids[:, :, :k]))
    with pytest.raises(ValueError, match="1..3"):
        rfsq.truncated(4)


def test_rfsq_training_is_seeded(split, normaliser):
    def fit(seed):
        kw = dict(num_latents=2, num_layers=2, hidden=16, depth=1, steps=5, batch_size=8, seed=seed)
        return RFSQTokenizer(**kw, normaliser=normaliser).fit(split.train, progress=False)

    a, b, c = fit(0), fit(0), fit(1)
    assert a.history == b.history and a.history != c.history
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))


def test_index_to_digits_matches_residual_fsq_and_inverts():
    levels = [8, 5, 5, 5]
    ids = torch.arange(1000)
    digits = index_to_digits(ids, levels)
    assert digits.shape == (1000, 4) and (digits.max(0).values == torch.tensor(levels) - 1).all()
    assert torch.equal(digits_to_index(digits, levels), ids)
    tok = RFSQTokenizer(levels=levels, hidden=8, depth=0)
    fsq = tok.model.quantizer.layers[0]
    assert torch.equal(digits, fsq.indices_to_level_indices(ids).long())
    assert torch.equal(
        tok.index_to_digits(ids.view(10, 100)), digits.view(10, 100, 4)
    )  # the method the rules call
    with pytest.raises(ValueError):
        index_to_digits(torch.tensor([1000]), levels)


def test_rfsq_rejects_bad_settings_and_unfitted_use():
    with pytest.raises(ValueError, match="num_latents"):
        RFSQTokenizer(num_latents=9)
    with pytest.raises(ValueError, match="levels"):
        RFSQTokenizer(levels=[8, 1])
    with pytest.raises(RuntimeError, match="not fitted"):
        RFSQTokenizer(hidden=8).encode(np.zeros((1, H, A)))


# -- FAST -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast(split, normaliser):
    return FASTTokenizer(scale=10, vocab_size=256, normaliser=normaliser).fit(split.train)


def test_fast_decodes_exactly_what_it_encoded_up_to_rounding(fast, split):
    ids = fast.encode(split.held_out)
    lengths = fast.num_tokens(ids)
    assert len(ids) == len(split.held_out) and lengths.float().mean() < H * A  # BPE compresses
    assert lengths.min() < lengths.max()  # variable length
    y = fast.normaliser.normalise(torch.as_tensor(split.held_out)).numpy()
    expected = idct(np.rint(dct(y, norm="ortho", axis=1) * 10) / 10, norm="ortho", axis=1)
    np.testing.assert_allclose(fast.decode_normalised(ids).numpy(), expected, rtol=0, atol=1e-12)
    decoded = fast.decode(ids)
    assert decoded.shape == (len(ids), H, A) and set(decoded[..., 6].unique().tolist()) <= {-1.0, 1.0}


def test_fast_raises_on_malformed_ids(fast, split):
    ids = fast.encode(split.held_out[:4])
    with pytest.raises(MalformedTokens, match="truncated"):
        fast.decode([ids[0][:-1]])
    with pytest.raises(MalformedTokens, match="truncated"):
        fast.decode([torch.cat([ids[0], ids[0][:1]])])
    with pytest.raises(MalformedTokens, match="truncated"):
        fast.decode([torch.tensor([], dtype=torch.long)])
    with pytest.raises(MalformedTokens, match="outside the vocabulary"):
        fast.decode([torch.tensor([fast.vocab_size])])
    with pytest.raises(MalformedTokens, match="list of 1-D"):
        fast.decode(ids[0])


def test_fast_finer_scale_costs_tokens_and_buys_accuracy(split, normaliser):
    rows = [
        evaluate_tokenizer(FASTTokenizer(scale=s, vocab_size=256, normaliser=normaliser).fit(split.train), split.held_out)[0]
        for s in (2, 20)
    ]  # fmt: skip
    assert rows[0]["tokens_per_chunk"] < rows[1]["tokens_per_chunk"]
    assert rows[0]["mse_normalised"] > rows[1]["mse_normalised"]


def test_fast_save_load_and_bad_settings(fast, split, tmp_path):
    loaded = load_tokenizer(fast.save(tmp_path / "fast"))
    assert isinstance(loaded, FASTTokenizer) and loaded == fast
    ids = fast.encode(split.held_out[:32])
    assert all(torch.equal(a, b) for a, b in zip(loaded.encode(split.held_out[:32]), ids, strict=True))
    with pytest.raises(ValueError, match="vocab_size"):
        FASTTokenizer(scale=100, vocab_size=64)


# -- binning ---------------------------------------------------------------------------------


def test_binning_errs_by_at_most_half_a_bin_and_round_trips(split, normaliser, tmp_path):
    tok = BinningTokenizer(normaliser=normaliser).fit(split.train)
    ids = tok.encode(split.held_out)
    assert ids.shape == (len(split.held_out), H * A) and ids.min() >= 0 and ids.max() <= 255
    y = normaliser.normalise(torch.as_tensor(split.held_out))
    assert (tok.decode_normalised(ids) - y).abs().max() <= 1 / 256 + 1e-12
    assert torch.equal(tok.encode(tok.decode(ids)), ids)  # bin centres stay in their bins
    loaded = BinningTokenizer.load(tok.save(tmp_path / "bin"))
    assert torch.equal(loaded.decode(ids), tok.decode(ids))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tok.decode(torch.full_like(ids, 256))
    with pytest.raises(ValueError, match="H\\*A=56"):
        tok.decode(ids[:, :-1])


# -- the interface and the data ----------------------------------------------------------------


def test_every_tokenizer_implements_the_interface(rfsq, fast):
    assert set(ActionTokenizer.registry) >= {"rfsq", "fast", "binning"}
    for tok in (rfsq, fast, BinningTokenizer(normaliser=rfsq.normaliser)):
        assert tok.fitted and tok.vocab_size > 1 and (tok.horizon, tok.action_dim) == (H, A)


def test_loading_a_missing_tokenizer_names_the_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="02_action_tokenizers"):
        load_tokenizer(tmp_path / "nothing")


def test_missing_demonstrations_name_the_notebook_that_makes_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_demonstrations"):
        demo_files(tmp_path / "libero_spatial")


def test_split_holds_out_whole_episodes(split):
    assert not set(split.train_episodes) & set(split.held_out_episodes)
    # 10 + 6 episodes in two pseudo task files: ceil(25%) of each is held out (3 + 2)
    assert len(split.held_out_episodes) == 5 and len(split.train) == 11 * 100


def test_choose_default_takes_the_fewest_tokens_that_meet_the_targets():
    sweep = [
        {"num_latents": 4, "levels": [8, 5, 5, 5], "mse_normalised": [5e-2, 8e-3, 2e-3, 9e-4]},
        {"num_latents": 8, "levels": [8, 5, 5, 5], "mse_normalised": [2e-2, 5e-3, 8e-4, 7e-4]},
    ]
    pick = choose_default(sweep)
    assert (pick["num_latents"], pick["num_layers"], pick["tokens_per_chunk"]) == (4, 4, 16) and pick[
        "meets_targets"
    ]
    fallback = choose_default(sweep, full_target=1e-4)
    assert not fallback["meets_targets"] and fallback["mse_full"] == 7e-4


def test_equal_token_comparison_pairs_each_fast_row_with_an_rfsq_prefix():
    rows = [
        {"tokenizer": "rfsq", "data": "d", "setting": "k=1", "tokens_per_chunk": 4.0, "mse_normalised": 0.1},
        {"tokenizer": "rfsq", "data": "d", "setting": "k=2", "tokens_per_chunk": 8.0, "mse_normalised": 0.01},
        {
            "tokenizer": "fast",
            "data": "d",
            "setting": "scale=10",
            "tokens_per_chunk": 9.5,
            "mse_normalised": 0.02,
        },
    ]
    (pair,) = equal_token_comparison(rows, "d")
    assert pair["rfsq_setting"] == "k=2" and pair["rfsq_no_worse"]


def test_report_draws_from_rows_and_writes_tables(rfsq, split):
    import matplotlib.pyplot as plt

    from rsdlib.tokenizers import report

    rows = evaluate_tokenizer(rfsq, split.held_out[:64], data="held-out")
    rows += evaluate_tokenizer(
        BinningTokenizer(normaliser=rfsq.normaliser), split.held_out[:64], data="held-out"
    )
    for fig in (
        report.plot_error_vs_budget(rows, x="bits_per_chunk", datasets=["held-out"]),
        report.plot_code_usage(code_usage(rfsq, split.held_out[:64])),
        report.plot_example_chunk(
            {"original": split.held_out[0].tolist(), "decoded": {"1": split.held_out[1].tolist()}}
        ),
    ):
        plt.close(fig)
    table = report.comparison_table(rows, ["held-out"])
    assert [t["setting"] for t in table] == ["k=1", "k=2", "k=3", "bins=256"]
    assert "MSE norm. (held-out)" in table[0]
