"""Content: the source notebook runs clean, and the contract's names behave as specified.

The reference solution is checked against independent formulations (one-hot matrix products,
math.sin loops, explicit counts), never against the notebook's own code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from support import SOURCE_NB
from support.submissions import grade_id, read, reference_answers

SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def ref() -> dict:
    """The reference solution's namespace: the imports cell plus every answer cell."""
    ns: dict = {}
    imports = next(c for c in read(SOURCE_NB).cells if grade_id(c) == "imports")
    exec(compile(imports.source, "imports", "exec"), ns)
    for name, source in reference_answers().items():
        exec(compile(source, name, "exec"), ns)
    return ns


def one_hot(ids: np.ndarray, vocab: int) -> np.ndarray:
    return (np.asarray(ids)[..., None] == np.arange(vocab)).astype(np.float64)


@pytest.mark.perf
@pytest.mark.slow
def test_source_notebook_runs_clean_with_every_test_passing(tmp_path):
    """Does the instructor's notebook run top to bottom in a real kernel with no failing cell?"""
    from nbclient import NotebookClient

    nb = read(SOURCE_NB)
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = {grade_id(c) or c.id: o.evalue[:200] for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"}
    assert not errors, f"cells failed in the reference notebook: {errors}"
    stderr = [grade_id(c) for c in nb.cells for o in c.get("outputs", [])
              if grade_id(c) and grade_id(c).startswith("test_") and o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"test cells wrote to stderr (nbgrader would score them 0): {stderr}"


@pytest.mark.parametrize("seed", SEEDS)
def test_forward_equals_one_hot_product(ref, seed):
    """Is forward the one-hot matrix product onehot(ids) @ W for ids of any shape?"""
    rng = np.random.default_rng(seed)
    vocab, dim = int(rng.integers(2, 60)), int(rng.integers(1, 20))
    emb = ref["Embedding"](vocab, dim, seed=seed)
    ids = rng.integers(0, vocab, tuple(rng.integers(1, 5, rng.integers(0, 4))))
    want = one_hot(ids, vocab) @ emb.weight.astype(np.float64)
    got = emb(ids)
    assert got.shape == ids.shape + (dim,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("seed", SEEDS)
def test_backward_equals_transposed_one_hot_product(ref, seed):
    """Is backward's gradient onehot(ids)^T @ grad, with the padding row excluded?"""
    rng = np.random.default_rng(10 + seed)
    vocab, dim, pad = 9, 6, 3
    emb = ref["Embedding"](vocab, dim, padding_idx=pad, seed=seed)
    ids = rng.integers(0, vocab, (4, 25))
    grad = rng.standard_normal((4, 25, dim))
    emb.forward(ids)
    emb.backward(grad)
    want = one_hot(ids, vocab).reshape(-1, vocab).T @ grad.reshape(-1, dim)
    want[pad] = 0.0
    np.testing.assert_allclose(emb.grad_weight, want, rtol=1e-5, atol=1e-4)


def test_initial_scale_is_one_over_sqrt_dim(ref):
    """Do rows start at unit expected squared length (std 1/sqrt(D))?"""
    emb = ref["Embedding"](4000, 256, seed=0)
    mean_sq_norm = float(np.mean(np.sum(emb.weight.astype(np.float64) ** 2, axis=1)))
    assert abs(mean_sq_norm - 1.0) < 0.02


def test_sinusoid_matches_a_math_sin_loop(ref):
    """Does the table match the paper's formula written as a plain loop over entries?"""
    length, dim, base = 40, 11, 777.0
    got = ref["create_sinusoidal_embeddings"](length, dim, base)
    for p in range(length):
        for j in range(dim):
            angle = p / base ** ((j - j % 2) / dim)
            want = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert abs(got[p, j] - want) < 1e-5, (p, j)


def test_sinusoid_offsets_are_rotations(ref):
    """Is PE[p + k] a fixed rotation of PE[p] in each (sin, cos) pair, as the text claims?"""
    pe = ref["create_sinusoidal_embeddings"](64, 8).astype(np.float64)
    k = 5
    for i in range(4):
        w = 1 / 10000 ** (2 * i / 8)
        rot = np.array([[math.cos(k * w), -math.sin(k * w)], [math.sin(k * w), math.cos(k * w)]])
        np.testing.assert_allclose(pe[:-k, 2 * i:2 * i + 2] @ rot, pe[k:, 2 * i:2 * i + 2], atol=1e-5)


def test_layer_is_token_rows_scaled_plus_positions(ref):
    """Is the layer onehot(ids) @ W * sqrt(D) + P, with positions unscaled?"""
    rng = np.random.default_rng(5)
    layer = ref["EmbeddingLayer"](30, 16, max_seq_len=12, pos_encoding="learned", scale_embeddings=True, seed=1)
    ids = rng.integers(0, 30, (3, 10))
    want = one_hot(ids, 30) @ layer.token_embedding.weight.astype(np.float64) * 4.0 + layer.pos_encoding.weight[:10]
    np.testing.assert_allclose(layer(ids), want, rtol=1e-5, atol=1e-5)


def test_published_parameter_counts(ref):
    """Do the counts reproduce GPT-2 small (124.3 M, 31.7% embeddings) and GPT-3 (0.37%)?"""
    gpt2 = ref["transformer_param_counts"](50257, 768, 12, 1024)
    assert gpt2["total"] == 124_318_464 and round(gpt2["embedding_fraction"], 3) == 0.317
    gpt3 = ref["transformer_param_counts"](50257, 12288, 96, 2048)
    assert gpt3["total"] == 174_588_899_328 and 0.0036 < gpt3["embedding_fraction"] < 0.0037
    assert ref["embedding_memory_bytes"](50257, 12288) == 2_470_232_064


def test_memory_counts_bytes_per_dtype(ref):
    """Are memory figures itemsize-based for every dtype, with 2/3/4 copies for sgd/momentum/adam?"""
    for dtype in [np.int8, np.float16, np.float32, np.float64]:
        size = np.zeros(1, dtype).nbytes
        assert ref["embedding_memory_bytes"](100, 7, dtype) == 700 * size
        assert ref["lookup_bytes_moved"](100, 7, dtype) == 1400 * size
        for opt, copies in [("sgd", 2), ("momentum", 3), ("adam", 4)]:
            assert ref["training_memory_bytes"](100, 7, dtype, opt) == copies * 700 * size


def test_quantisation_error_is_at_most_half_a_step(ref):
    """Is every rebuilt entry within scale / 2 of the original, over rows of very different sizes?"""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((200, 48)) * 10.0 ** rng.uniform(-4, 4, (200, 1))).astype(np.float32)
    q, scale = ref["quantize_int8"](w)
    back = ref["dequantize_int8"](q, scale, np.arange(200))
    assert q.dtype == np.int8 and scale.dtype == np.float32
    assert np.all(np.abs(back.astype(np.float64) - w) <= scale[:, None].astype(np.float64) * 0.5 * (1 + 1e-6))
    assert np.all(np.abs(q).max(axis=1) == 127)


def test_access_patterns_have_their_defining_property(ref):
    """Are the patterns sequential, uniform, sorted and constant as named?"""
    make = ref["make_access_pattern"]
    assert np.array_equal(make("sequential", 10, 4), np.arange(10) % 4)
    rand, srt = make("random", 50_000, 100, seed=1), make("sorted", 50_000, 100, seed=1)
    counts = np.bincount(rand, minlength=100)
    assert counts.min() > 380 and counts.max() < 620, "random ids should be uniform"
    assert np.all(np.diff(srt) >= 0) and not np.all(np.diff(rand) >= 0)
    assert not make("repeated", 10, 5).any()
    assert np.array_equal(srt, np.sort(rand)), "sorted ids are the random ids of the same seed, sorted (Part 7 relies on it)"
    with pytest.raises(ValueError):
        make("strided", 10, 5)


def test_benchmark_reports_median_and_consistent_bandwidth(ref):
    """Does benchmark_lookup report bytes for the table's dtype and gb_per_s = bytes / seconds / 1e9?"""
    emb = ref["Embedding"](500, 32, seed=0)
    emb.weight = emb.weight.astype(np.float16)
    result = ref["benchmark_lookup"](emb, np.arange(400), repeats=3)
    assert result["bytes"] == 2 * 400 * 32 * 2
    assert result["gb_per_s"] == pytest.approx(result["bytes"] / result["seconds"] / 1e9)


@pytest.mark.parametrize("bad, error", [([1.5], TypeError), (np.array([True]), TypeError), ([-1], IndexError), ([7], IndexError)])
def test_forward_rejects_bad_ids(ref, bad, error):
    """Are non-integer ids a TypeError and out-of-range ids an IndexError naming the id?"""
    emb = ref["Embedding"](7, 3, seed=0)
    with pytest.raises(error) as caught:
        emb(bad)
    if error is IndexError:
        assert str(bad[0]) in str(caught.value)


SPEED_LIMITS = [  # (hidden speed test, the visible check cell, its constant, the Part's text cell)
    ("test_embedding_forward_vectorised", "speed_check_embedding", "FORWARD_LIMIT", "part1-intro"),
    ("test_embedding_backward_vectorised", "speed_check_embedding", "BACKWARD_LIMIT", "part1-intro"),
    ("test_sinusoidal_vectorised", "speed_check_sinusoid", "SINUSOID_LIMIT", "part2-intro"),
]


@pytest.mark.parametrize("test_cell, check_cell, constant, text_cell", SPEED_LIMITS, ids=[s[2] for s in SPEED_LIMITS])
def test_visible_speed_checks_use_the_hidden_tests_limits(test_cell, check_cell, constant, text_cell):
    """Does each visible speed check, and the text, state the same limit as its hidden speed test?"""
    import re

    cells = read(SOURCE_NB).cells
    by_grade_id = {grade_id(c): c.source for c in cells}
    hidden = re.findall(r"check_speed\(.*?limit=([0-9.]+)", by_grade_id[test_cell], flags=re.S)
    assert len(hidden) == 1, f"{test_cell}: expected one check_speed(..., limit=LIMIT), found {hidden}"
    visible = re.findall(rf"^{constant} = ([0-9.]+)", by_grade_id[check_cell], flags=re.M)
    assert visible == hidden, f"{check_cell}: {constant} is {visible}, the hidden test {test_cell} allows {hidden}"
    text = next(c.source for c in cells if c.id == text_cell)
    assert f"{hidden[0]}x" in text, f"{text_cell} does not state the limit {hidden[0]}x of {test_cell}"


SPEED_SIZES = [  # (hidden speed test, how it sets V and D, how it draws ids: their count in group 1)
    ("test_embedding_forward_vectorised", r"V, D = (\d+), (\d+)\n", r"rng\.integers\(0, V, (\d+)\)"),
    ("test_embedding_backward_vectorised", r"V, D, N = (\d+), (\d+), \d+\n", r"V, D, N = \d+, \d+, (\d+)\n"),
]


@pytest.mark.parametrize("test_cell, sets_vd, draws_ids", SPEED_SIZES, ids=["forward", "backward"])
def test_the_text_and_the_visible_check_state_the_hidden_speed_tests_sizes(test_cell, sets_vd, draws_ids):
    """Do Part 1's text and the time-yourself cell use the ids count, V and D of each hidden speed test?"""
    import re

    cells = read(SOURCE_NB).cells
    hidden = next(c.source for c in cells if grade_id(c) == test_cell)
    (vocab, dim), = re.findall(sets_vd, hidden)
    (count,) = re.findall(draws_ids, hidden)
    text = " ".join(next(c.source for c in cells if c.id == "part1-intro").split())
    stated = rf"{int(count):,} ids,? \(?V = {int(vocab):,}, D = {dim}\b"
    assert re.search(stated, text), f"part1-intro does not state {int(count):,} ids, V = {int(vocab):,}, D = {dim}"
    visible = next(c.source for c in cells if grade_id(c) == "speed_check_embedding")
    assert f"Embedding({vocab}, {dim}, seed=0)" in visible, f"speed_check_embedding does not build Embedding({vocab}, {dim})"
    assert f"integers(0, {vocab}, {count})" in visible, f"speed_check_embedding does not draw {count} ids below {vocab}"


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_forward_returns_float32_whatever_the_table_dtype(ref, dtype):
    """Does forward keep its float32 contract after a caller replaces the table with another dtype?"""
    emb = ref["Embedding"](20, 3, seed=0)
    table = np.random.default_rng(4).standard_normal((20, 3)).astype(dtype)
    emb.weight = table
    got = emb(np.array([[19, 0, 7]]))
    assert got.dtype == np.float32, f"expected float32 rows from a {np.dtype(dtype).name} table, got {got.dtype}"
    np.testing.assert_allclose(got[0], table[[19, 0, 7]].astype(np.float32))


def test_sinusoid_keeps_angles_accurate_at_large_positions(ref):
    """Are the angles computed in float64: is the table within 1e-6 of math.sin/cos near position 20,000?"""
    length, dim = 20_001, 6
    got = ref["create_sinusoidal_embeddings"](length, dim)
    for p in range(length - 50, length):
        for j in range(dim):
            angle = p / 10000.0 ** ((j - j % 2) / dim)
            want = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert abs(float(got[p, j]) - want) < 1e-6, (p, j, float(got[p, j]), want)


def test_zipf_ids_follow_one_over_rank_and_sorted_is_sorted_random(ref):
    """Do Zipf ids have frequencies proportional to 1 / (k + 1), and are 'sorted' ids the 'random'
    ids of the same seed, sorted, as the docstring says?"""
    make = ref["make_access_pattern"]
    ids = make("zipf", 400_000, 20, seed=9)
    assert ids.dtype == np.int64 and ids.min() == 0 and ids.max() == 19
    probs = 1 / np.arange(1, 21)
    np.testing.assert_allclose(np.bincount(ids, minlength=20) / ids.size, probs / probs.sum(), atol=3e-3)
    assert np.array_equal(make("zipf", 1000, 20, seed=9), make("zipf", 1000, 20, seed=9))
    assert np.array_equal(make("sorted", 5000, 300, seed=4), np.sort(make("random", 5000, 300, seed=4)))


@pytest.mark.parametrize("seed", SEEDS)
def test_sparse_gradient_scatters_to_the_dense_gradient(ref, seed):
    """Does scattering the sparse (ids, rows) into zeros give onehot(ids)^T @ grad, with only the
    looked-up ids listed?"""
    rng = np.random.default_rng(20 + seed)
    vocab, dim = 40, 5
    ids = rng.integers(0, 12, (3, 9))
    grad = rng.standard_normal((3, 9, dim))
    got_ids, rows = ref["sparse_embedding_grad"](ids, grad, vocab)
    dense = np.zeros((vocab, dim))
    dense[got_ids] = rows
    np.testing.assert_allclose(dense, one_hot(ids, vocab).reshape(-1, vocab).T @ grad.reshape(-1, dim), rtol=1e-5, atol=1e-5)
    assert got_ids.tolist() == sorted(set(ids.ravel().tolist())) and rows.dtype == np.float32


@pytest.mark.parametrize("num_shards", [1, 3, 7, 13])
def test_sharded_lookup_is_the_one_hot_product(ref, num_shards):
    """Do shard_table and sharded_lookup together compute onehot(ids) @ W for any number of shards?"""
    rng = np.random.default_rng(num_shards)
    table = rng.standard_normal((13, 4)).astype(np.float32)
    shards = ref["shard_table"](table, num_shards)
    assert [len(s) for s in shards] == [len(s) for s in np.array_split(table, num_shards)]
    ids = rng.integers(0, 13, (2, 6))
    np.testing.assert_allclose(ref["sharded_lookup"](shards, ids), one_hot(ids, 13) @ table.astype(np.float64), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("devices", [1, 2, 4, 8])
def test_allreduce_bytes_match_a_simulated_ring(ref, devices):
    """Does a simulated ring all-reduce (reduce-scatter, then all-gather, one chunk per step) sum the
    partial outputs and make each device send exactly allreduce_bytes_per_device bytes?"""
    rng = np.random.default_rng(devices)
    num_ids, dim = 16, 8
    partials = [rng.standard_normal((num_ids, dim)).astype(np.float32) for _ in range(devices)]
    chunks = [np.array_split(p.copy(), devices) for p in partials]
    sent = [0] * devices
    # Run the two phases on copies so each step reads the values of the previous step.
    for phase in ("reduce", "gather"):
        for step in range(devices - 1):
            outgoing = []
            for r in range(devices):
                c = (r - step + (1 if phase == "gather" else 0)) % devices
                outgoing.append((r, c, chunks[r][c].copy()))
                sent[r] += chunks[r][c].nbytes
            for r, c, data in outgoing:
                dst = (r + 1) % devices
                chunks[dst][c] = chunks[dst][c] + data if phase == "reduce" else data
    total = np.sum(partials, axis=0)
    for r in range(devices):
        np.testing.assert_allclose(np.concatenate(chunks[r]), total, rtol=1e-5, atol=1e-5)
    assert sent == [ref["allreduce_bytes_per_device"](num_ids, dim, devices)] * devices


def test_decode_step_costs_count_one_row_and_one_matrix_vector_product(ref):
    """Are the decoding costs one row's bytes, the table's bytes and 2 flops per table entry of
    h @ W.T?"""
    table = np.zeros((300, 24), dtype=np.float16)
    costs = ref["decode_step_costs"](300, 24, np.float16)
    assert costs == {"lookup_bytes": table[0].nbytes, "lm_head_flops": 2 * table.size, "lm_head_bytes": table.nbytes}


@pytest.mark.parametrize("seed", SEEDS)
def test_nearest_neighbors_is_the_brute_force_ranking(ref, seed):
    """Are the neighbours every other row sorted by (-cosine, id), on tables with exact ties (rows
    scaled by powers of two) and zero rows?"""
    rng = np.random.default_rng(30 + seed)
    base = rng.integers(-3, 4, (6, 4)).astype(np.float64)
    table = np.concatenate([base, 2.0 * base[:3], 0.25 * base[3:], np.zeros((2, 4))])[rng.permutation(14)]
    norms = [math.sqrt(sum(x * x for x in row)) for row in table]
    for q in range(len(table)):
        sims = [0.0 if norms[q] == 0 or norms[j] == 0 else float(table[q] @ table[j]) / (norms[q] * norms[j])
                for j in range(len(table))]
        want = sorted((j for j in range(len(table)) if j != q), key=lambda j: (round(-sims[j], 12), j))
        assert ref["nearest_neighbors"](table, q, len(table) - 1).tolist() == want, q


def test_training_demo_learns_what_the_text_says(ref):
    """Do Part 9's corpus and training cells, run on the reference, bring the loss to the bigram floor
    and give every printed word neighbours of its own class?"""
    import matplotlib

    matplotlib.use("Agg")
    ns = dict(ref)
    for cell in read(SOURCE_NB).cells:
        if grade_id(cell) in ("train_corpus", "train_tied"):
            exec(compile(cell.source, grade_id(cell), "exec"), ns)
    losses, floor = ns["train_losses"], ns["bigram_floor"]
    assert losses[:3].mean() > np.log(len(ns["VOCAB"])) - 0.6 and losses[-10:].mean() < floor + 0.1
    for word in ["cat", "eats", "apple", "big", "sweet", "the"]:
        mine = ns["WORD_CLASS"][ns["WORD_ID"][word]]
        neighbours = ns["nearest_neighbors"](ns["trained_table"], ns["WORD_ID"][word], 3)
        assert all(ns["WORD_CLASS"][j] == mine for j in neighbours), word
