"""Packed documents in the byte-level text task (``pack: true``): the rows against a
pure-Python reading of the files into documents, pieces and next-fit rows; batches and
the cache with ``segment_ids``; ``pack: false`` unchanged; parameter errors."""

import collections
import hashlib
import json

import numpy as np
import pytest

import ssm.data as data
from ssm.data import IGNORE, eval_batches, get_batch, load_task, take
from ssm.data.cache import FORMAT_VERSION, cache_key
from ssm.data.text import TEXT, TextParams

SEP = 10  # "\n"
FRACTIONS = {"validation_fraction": 0.15, "test_fraction": 0.15}


def write_files(folder, rng, sizes, separator=-1, rate=0.05):
    """Files f0, f1, ... of random bytes (a ``separator`` byte at about ``rate`` of the
    positions); returns their contents, in the order the task reads them."""
    folder.mkdir()
    contents = []
    for i, size in enumerate(sizes):
        b = rng.integers(0, 256, size).astype(np.uint8)
        if separator >= 0:
            b[rng.random(size) < rate] = separator
        (folder / f"f{i}.bin").write_bytes(b.tobytes())
        contents.append(b.tobytes())
    return contents


def reference_documents(contents, separator, max_bytes, validation_fraction, test_fraction):
    """{split: [document bytes]}: the read bytes cut at file ends, after each separator and
    at the split bounds, written as a loop over bytes."""
    if max_bytes:
        kept, left = [], max_bytes
        for c in contents:
            if left <= 0:
                break
            kept.append(c[:left])
            left -= len(kept[-1])
        contents = kept
    stream = b"".join(contents)
    n = len(stream)
    n_val, n_test = int(n * validation_fraction), int(n * test_fraction)
    bounds = [0, n - n_val - n_test, n - n_test, n]
    cuts = set(bounds)
    offset = 0
    for c in contents:
        offset += len(c)
        cuts.add(offset)
    if separator >= 0:
        cuts |= {i + 1 for i, byte in enumerate(stream) if byte == separator}
    cuts = sorted(cuts)
    out = {}
    for split, lo, hi in zip(data.SPLITS, bounds[:-1], bounds[1:]):
        out[split] = [stream[a:b] for a, b in zip(cuts, cuts[1:]) if lo <= a and b <= hi]
    return out


def reference_pieces(doc, seq_len):
    """A document's unpacked windows: (inputs, targets) of at most seq_len pairs each."""
    inputs, targets = doc[:-1], doc[1:]
    return [(inputs[i : i + seq_len], targets[i : i + seq_len]) for i in range(0, len(inputs), seq_len)]


def reference_next_fit(sizes, capacity):
    """Rows (lists of sizes) of next fit: a new row when the next item does not fit."""
    rows = []
    for size in sizes:
        if not rows or sum(rows[-1]) + size > capacity:
            rows.append([])
        rows[-1].append(size)
    return rows


def row_segments(inputs, targets, segment_ids, length):
    """The pieces of one packed row, in order, checking that each is one contiguous run
    of its id (1, 2, ... in order) and that the tail beyond ``length`` is padding."""
    seg = segment_ids.tolist()
    assert all(s == 0 for s in seg[length:]) and all(s > 0 for s in seg[:length])
    assert (inputs[length:] == 0).all() and (targets[length:] == IGNORE).all()
    pieces = []
    for s in range(1, max(seg[:length], default=0) + 1):
        where = [i for i, v in enumerate(seg) if v == s]
        assert where and where == list(range(where[0], where[-1] + 1)), (s, seg)  # one contiguous run
        assert where[0] == sum(len(x) for x, _ in pieces)  # ids in order, no gap
        pieces.append((bytes(inputs[where].astype(np.uint8)), bytes(targets[where].astype(np.uint8))))
    assert sum(len(p[0]) for p in pieces) == length
    return pieces


CASES = {  # separator, max_bytes, seq_len
    "files": (-1, 0, 16),
    "separator": (SEP, 0, 16),
    "separator-max-bytes-short-rows": (SEP, 300, 5),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_packed_rows_hold_each_documents_windows_intact_in_next_fit_order(tmp_path, rng, case):
    separator, max_bytes, seq_len = CASES[case]
    sizes = [0, 1, 2, 3, *rng.integers(5, 60, 3).tolist(), 250, *rng.integers(20, 120, 2).tolist()]
    contents = write_files(tmp_path / "text", rng, sizes, separator)
    params = {"seq_len": seq_len, "pack": True, "separator": separator, "max_bytes": max_bytes, **FRACTIONS}
    ds, info = load_task("text", params, data_dir=tmp_path / "text", cache_dir=tmp_path / "cache")
    assert info == data.TaskInfo("tokens", seq_len, 256, None, 256, packed=True)
    docs = reference_documents(contents, separator, max_bytes, **FRACTIONS)
    for split in data.SPLITS:
        rows = ds[split][:]
        assert set(rows) == {"inputs", "targets", "length", "segment_ids"}
        assert all(rows[k].dtype == np.int32 for k in rows)
        assert rows["segment_ids"].shape == rows["inputs"].shape == (len(rows["length"]), seq_len)
        packed = [row_segments(*(rows[k][i] for k in ("inputs", "targets", "segment_ids", "length")))
                  for i in range(len(rows["length"]))]
        expected = [piece for doc in docs[split] for piece in reference_pieces(doc, seq_len)]
        got = [piece for row in packed for piece in row]
        # the same multiset of pairs and of pieces, each piece whole; and in document order
        assert all(len(x) == len(y) for x, y in got + expected)
        pairs = collections.Counter(pair for x, y in got for pair in zip(x, y))
        assert pairs == collections.Counter(pair for x, y in expected for pair in zip(x, y))
        assert collections.Counter(got) == collections.Counter(expected)
        assert got == expected
        # the rows are next fit's
        assert [[len(x) for x, _ in row] for row in packed] == reference_next_fit([len(x) for x, _ in expected], seq_len)
        if separator >= 0:  # a separator only ends a document: never an input, the last target of a piece
            for x, y in got:
                assert SEP not in x and SEP not in y[:-1]
            assert any(y[-1] == SEP for _, y in got)
    print(case, {s: (len(ds[s]), float(np.mean(ds[s][:]["length"])) / seq_len) for s in data.SPLITS})


def test_no_pair_crosses_a_file_boundary(tmp_path):
    """Files of one byte value each (file k holds byte k + 1): a pair of two files' bytes
    would pair two values, and a piece of two documents would hold both."""
    folder = tmp_path / "text"
    folder.mkdir()
    lengths = [7, 3, 12, 1, 9, 2, 20, 5]
    for k, n in enumerate(lengths):
        (folder / f"f{k}.bin").write_bytes(bytes([k + 1]) * n)
    ds, _ = load_task("text", {"seq_len": 8, "pack": True, "validation_fraction": 0.1, "test_fraction": 0.1},
                      data_dir=folder, cache_dir=tmp_path / "cache")
    counts = collections.Counter()
    for split in data.SPLITS:
        rows = ds[split][:]
        for x, y, seg, n in zip(rows["inputs"], rows["targets"], rows["segment_ids"], rows["length"]):
            for s in range(1, seg.max() + 1):
                values = set(x[seg == s].tolist()) | set(y[seg == s].tolist())
                assert len(values) == 1, (split, x, y, seg)
                counts[values.pop()] += int((seg == s).sum())
    # each file gives one pair fewer than its bytes, less one more per split bound inside it
    n = sum(lengths)
    bounds = {n - int(n * 0.1) - int(n * 0.1), n - int(n * 0.1)}
    starts = np.cumsum([0, *lengths])
    expected = {k + 1: m - 1 - sum(lo < b < lo + m for b in bounds) for k, (lo, m) in enumerate(zip(starts, lengths))}
    assert dict(counts) == {k: v for k, v in expected.items() if v}


def test_batches_carry_segment_ids_and_eval_pads_them_with_zero(tmp_path, rng):
    write_files(tmp_path / "text", rng, [300, 41, 120, 77], SEP)
    ds, _ = load_task("text", {"seq_len": 16, "pack": True, "separator": SEP, **FRACTIONS},
                      data_dir=tmp_path / "text", cache_dir=tmp_path / "cache")
    train, validation = ds["train"], ds["validation"]
    for batch in (take(train, [3, 0, 5]), get_batch(train, 2, 4, seed=0)):
        assert batch["segment_ids"].dtype == np.int32 and batch["segment_ids"].shape == batch["inputs"].shape
        np.testing.assert_array_equal(batch["mask"], batch["segment_ids"] != 0)
        np.testing.assert_array_equal(batch["mask"], np.arange(16) < batch["length"][:, None])
    np.testing.assert_array_equal(take(train, [3, 0, 5])["segment_ids"], train[:]["segment_ids"][[3, 0, 5]])
    n = len(validation)
    batch_size = n + 3  # one batch, three padding rows
    (batch,) = eval_batches(validation, batch_size)
    assert batch["segment_ids"].dtype == np.int32 and batch["segment_ids"].shape == (batch_size, 16)
    np.testing.assert_array_equal(batch["segment_ids"][:n], validation[:]["segment_ids"])
    assert (batch["segment_ids"][n:] == 0).all() and not batch["valid"][n:].any() and batch["valid"][:n].all()
    np.testing.assert_array_equal(batch["mask"], batch["segment_ids"] != 0)
    # a second load memory-maps the cache: the same int32 segment_ids
    again, _ = load_task("text", {"seq_len": 16, "pack": True, "separator": SEP, **FRACTIONS},
                         data_dir=tmp_path / "text", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert again["train"][:]["segment_ids"].dtype == np.int32
    np.testing.assert_array_equal(again["train"][:]["segment_ids"], train[:]["segment_ids"])


def test_pack_false_is_todays_stream_of_windows_in_todays_cache_folder(tmp_path, rng):
    (contents,) = write_files(tmp_path / "text", rng, [200])
    params = {"path": "f0.bin", "seq_len": 16, **FRACTIONS}
    ds, info = load_task("text", params, data_dir=tmp_path / "text", cache_dir=tmp_path / "cache")
    assert info == data.TaskInfo("tokens", 16, 256, None, 256) and not info.packed
    rows = ds["train"][:]
    assert set(rows) == {"inputs", "targets", "length"}
    hi = 200 - int(200 * 0.15) * 2
    stream = b"".join(bytes(x[:n].astype(np.uint8)) for x, n in zip(rows["inputs"], rows["length"]))
    assert stream == contents[: hi - 1]  # one stream across everything: no document cuts
    # the folder is the one the key of before pack/separator existed names
    f = (tmp_path / "text" / "f0.bin").resolve()
    old_key = {
        "format": FORMAT_VERSION, "task": "text", "version": TEXT.version,
        "params": {"path": "f0.bin", "seq_len": 16, "validation_fraction": 0.15, "test_fraction": 0.15,
                   "glob": "*", "max_bytes": 0},
        "sizes": {}, "seed": None, "files": [[str(f), f.stat().st_size, f.stat().st_mtime_ns]],
    }
    digest = hashlib.sha256(json.dumps(old_key, sort_keys=True).encode()).hexdigest()[:12]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"text-{digest}"]
    # and the new fields enter the key only when set
    key = lambda **kw: cache_key(TEXT, TextParams(**{**params, **kw}), 0, {}, [f])["params"]  # noqa: E731
    assert key() == old_key["params"]
    assert key(pack=True) == {**old_key["params"], "pack": True}
    assert key(pack=True, separator=SEP) == {**old_key["params"], "pack": True, "separator": SEP}


def test_parameter_errors_name_the_field_and_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match=r"TextParams: pack='yes' must be true or false"):
        TextParams(pack="yes")
    for bad in (256, -2, 1.5, True):
        with pytest.raises(ValueError, match=rf"TextParams: separator={bad!r} must be "):
            TextParams(pack=True, separator=bad)
    with pytest.raises(ValueError, match=r"TextParams: separator=10 needs pack: true"):
        TextParams(separator=10)
    assert TextParams(pack=True, separator=np.int64(0)).separator == 0  # normalised to a plain int
    assert type(TextParams(pack=np.bool_(True)).pack) is bool
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['packed'\]"):
        load_task("text", {"packed": True}, cache_dir=tmp_path)
    # a split whose bytes are all separators holds no document with a pair
    text = bytearray(b"x" * 100)
    text[85:100] = bytes([SEP]) * 15
    (tmp_path / "t.txt").write_bytes(bytes(text))
    with pytest.raises(ValueError, match=r"the test split of 15 text bytes holds no document of at least 2 bytes"):
        load_task("text", {"path": "t.txt", "pack": True, "separator": SEP, **FRACTIONS}, data_dir=tmp_path,
                  cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # nothing cached


def test_packing_does_not_change_the_loss_of_any_document(tmp_path, rng):
    """A causal model scores each packed piece exactly as it scores that piece alone (a
    document's unpacked window, the test above): per-piece summed losses agree, and so
    do the split's totals (float32 rounding only)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from ssm.layers import SequenceModel

    write_files(tmp_path / "text", rng, [40, 7, 90, 3, 55], separator=SEP, rate=0.08)
    params = {"seq_len": 16, "pack": True, "separator": SEP, **FRACTIONS}
    ds, _ = load_task("text", params, data_dir=tmp_path / "text", cache_dir=tmp_path / "cache")
    rows = ds["train"][:]
    model = SequenceModel(d_model=8, n_layers=2, d_output=256, vocab_size=256, layer="mamba",
                          layer_kwargs=dict(d_state=4), rngs=nnx.Rngs(0))

    @nnx.jit
    def losses(model, inputs, targets, mask, segment_ids):
        logits = model(inputs, mask=mask, segment_ids=segment_ids)
        out = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(mask, targets, 0))
        return jnp.where(mask, out, 0.0)

    mask = np.arange(16)[None] < rows["length"][:, None]
    packed = np.asarray(losses(model, rows["inputs"], rows["targets"], mask, rows["segment_ids"]))
    alone = []
    for i in range(len(rows["length"])):
        for s in range(1, rows["segment_ids"][i].max() + 1):
            where = rows["segment_ids"][i] == s
            x, y = rows["inputs"][i][where][None], rows["targets"][i][where][None]
            piece = np.asarray(losses(model, x, y, np.ones_like(x, bool), np.ones_like(x)))
            np.testing.assert_allclose(packed[i][where].sum(), piece.sum(), rtol=2e-6)
            alone.append(piece.sum())
    assert len(alone) > len(rows["length"])  # rows do hold several pieces
    np.testing.assert_allclose(packed.sum(), np.sum(alone), rtol=2e-6)
    assert not np.allclose(np.asarray(losses(model, rows["inputs"], rows["targets"], mask, np.ones_like(mask, int))),
                           packed)  # without segment_ids the documents would leak into each other


def test_the_trainer_trains_on_packed_rows_and_counts_real_tokens(tmp_path, rng):
    """``task.params.pack: true`` through ``train_and_evaluate``: segment_ids reach the model
    (a layer that cannot take them is a config error up front), and tokens/s counts the
    real positions of each batch, not its padding."""
    from pathlib import Path

    from ssm.train import ConfigError, load_config, train_and_evaluate

    write_files(tmp_path / "text", rng, [70, 9, 120, 30, 64], separator=SEP, rate=0.1)
    shipped = Path(__file__).resolve().parents[1] / "configs" / "text"
    overrides = ["model.d_model=8", "model.n_layers=1", "model.layer_kwargs={d_state: 4}", "trainer.steps=3",
                 "trainer.batch_size=2", "trainer.log_every=1", "trainer.eval_every=3", "trainer.devices=1",
                 "checkpoint.every=3", "schedule.warmup_steps=1", "logging.progress=false", "logging.plot=false",
                 f"task.params={{path: {tmp_path / 'text'}, glob: '*', seq_len: 16, pack: true, separator: {SEP}}}",
                 "task.params.validation_fraction=0.2", "task.params.test_fraction=0.2",
                 f"task.cache_dir={tmp_path / 'cache'}"]
    config = load_config(shipped / "mamba.yaml", overrides)
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["status"] == "completed" and np.isfinite(summary["final"]["test"]["loss"])
    train, _ = load_task("text", dict(config.task.params), cache_dir=tmp_path / "cache")
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in logged if r["split"] == "train"]
    assert [r["step"] for r in logged] == [1, 2, 3]
    reals = [get_batch(train["train"], r["step"] - 1, 2, seed=config.trainer.seed)["mask"].sum() for r in logged]
    assert min(reals) < 2 * 16  # some batch has padding, so counting it would show
    for r, real in zip(logged, reals):
        np.testing.assert_allclose(r["tokens_per_s"] * r["step_time_s"], real, rtol=1e-9)
    with pytest.raises(ConfigError, match="task.params.pack: .*model.layer='m2'"):
        train_and_evaluate(load_config(shipped / "m2.yaml", [*overrides, "~model.layer_kwargs"]), tmp_path / "m2")
