"""Tests for ssm.data: generated tasks checked by independent solvers, the on-disk cache,
ListOps (evaluation, LRA's generator, LRA's TSVs), byte-level text, and batches."""

import csv
import dataclasses
import pathlib
import random

import numpy as np
import pytest

import ssm.data as data
from ssm.data import IGNORE, TASKS, eval_batches, get_batch, listops, load_task

# Small settings so that every task builds in milliseconds.
TINY = {
    "copying": {"l_noise": 12, "l_memorize": 4, "n_tokens": 6},
    "selective_copying": {"l_noise": 12, "l_memorize": 4, "n_tokens": 6},
    "induction_heads": {},
    "associative_recall": {},
    "mqar": {"vocab_size": 128, "input_seq_len": 32, "num_kv_pairs": 4},
    "adding": {"seq_len": 16},
    "listops": {"max_depth": 5, "min_length": 10, "max_length": 60, "seq_len": 64},
}
SIZES = {"train": 40, "validation": 10, "test": 10}


def generated(name, n=200, seed=0, **overrides):
    task = TASKS[name]
    return task.generate(task.params(**{**TINY[name], **overrides}), n, seed)


# ----------------------------------------------------------------------------- registry


def test_registry_lists_every_task_with_valid_defaults():
    assert set(TASKS) == {*TINY, "text"}
    for name, task in TASKS.items():
        assert task.name == name
        params = task.params()  # the published defaults validate
        info = task.info(params)
        assert info.kind in ("tokens", "classification", "regression")
        if name != "text":
            assert set(task.default_sizes) == {"train", "validation", "test"}
        print(f"{name:20s} {params}\n{'':20s} {info} sizes={dict(task.default_sizes)}")
    assert TASKS["selective_copying"].params().selective and not TASKS["copying"].params().selective
    assert TASKS["listops"].info(TASKS["listops"].params()) == data.TaskInfo("classification", 2000, 16, None, 10)
    assert TASKS["mqar"].info(TASKS["mqar"].params()).seq_len == 64


@pytest.mark.parametrize("name", sorted(TINY))
def test_generation_is_deterministic_in_the_seed_with_declared_shapes(name):
    a, b, c = generated(name, seed=3), generated(name, seed=3), generated(name, seed=4)
    info = TASKS[name].info(TASKS[name].params(**TINY[name]))
    for key in ("inputs", "targets", "length"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["inputs"], c["inputs"])
    float_inputs = info.d_input is not None
    assert a["inputs"].shape == ((200, info.seq_len, info.d_input) if float_inputs else (200, info.seq_len))
    assert a["inputs"].dtype == (np.float32 if float_inputs else np.int32)
    assert a["targets"].shape == ((200, info.seq_len) if info.kind == "tokens" else (200,))
    assert a["length"].dtype == np.int32 and (a["length"] <= info.seq_len).all()
    if not float_inputs:
        assert 0 <= a["inputs"].min() and a["inputs"].max() < info.vocab_size
        real = np.arange(info.seq_len) < a["length"][:, None]
        assert (a["inputs"][~real] == 0).all()  # right-padded with 0
    if info.kind == "tokens":
        scored = a["targets"] != IGNORE
        assert scored.any() and (a["targets"][scored] < info.d_output).all()


# ----------------------------------------------------------------------------- semantics


@pytest.mark.parametrize("selective", [False, True])
def test_copying_targets_are_the_region_tokens_in_order(selective):
    name = "selective_copying" if selective else "copying"
    g = generated(name)
    M, L_noise, A = 4, 12, 6
    scattered = 0
    for x, y in zip(g["inputs"], g["targets"]):
        region, markers = x[: L_noise + M], x[L_noise + M :]
        assert (markers == A - 1).all()
        tokens = [t for t in region if t != 0]  # blanks are 0, markers never in the region
        assert len(tokens) == M and all(1 <= t <= A - 2 for t in tokens)
        assert list(y[-M:]) == tokens and (y[:-M] == IGNORE).all()
        positions = [i for i, t in enumerate(region) if t != 0]
        scattered += positions != list(range(M))
    assert scattered > 150 if selective else scattered == 0


def test_induction_heads_target_is_the_token_after_the_first_trigger():
    g = generated("induction_heads")
    trigger = 20 - 2
    for x, y in zip(g["inputs"], g["targets"]):
        x, y = list(x), list(y)
        assert x[-1] == trigger and x[:-1].count(trigger) == 1
        answer = None
        for i in range(len(x) - 1):
            if x[i] == trigger:
                answer = x[i + 1]
                break
        assert y[-1] == answer and all(t == IGNORE for t in y[:-1])


def test_associative_recall_target_is_the_queried_keys_value():
    g = generated("associative_recall")
    V = 20
    for x, y in zip(g["inputs"], g["targets"]):
        x = list(x)
        assert x[-2] == V - 2
        table = {}
        for i in range(0, len(x) - 2, 2):
            key, value = x[i], x[i + 1]
            assert key < (V - 2) // 2 <= value < V - 2
            assert table.setdefault(key, value) == value  # a key keeps its value
        assert x[-1] in table
        assert y[-1] == table[x[-1]] and (y[:-1] == IGNORE).all()


def test_mqar_targets_are_the_values_of_the_queried_keys():
    V, L, D = 128, 32, 4
    g = generated("mqar")
    gaps = []
    for x, y in zip(g["inputs"], g["targets"]):
        x, y = list(x), list(y)
        table = {}
        for i in range(0, 2 * D, 2):
            assert 1 <= x[i] < V // 2 <= x[i + 1] < V
            table[x[i]] = x[i + 1]
        assert len(table) == D and len(set(table.values())) == D
        queried = []
        for t in range(L):
            if y[t] != IGNORE:
                assert t >= 2 * D and (t - 2 * D) % 2 == 0
                assert y[t] == table[x[t]]
                queried.append(x[t])
                gaps.append((t - 2 * D) // 2)
        assert sorted(queried) == sorted(table)  # every key queried exactly once
    # power_a = 0.01: p(gap = i) ~ (i + 1)^-0.99, so gap 0 is the commonest by far
    counts = np.bincount(gaps)
    print("MQAR gap histogram:", counts.tolist())
    assert counts[0] == counts.max()


def test_mqar_without_random_fill_leaves_zeros():
    g = generated("mqar", random_non_queries=False)
    x = g["inputs"][0]
    assert (x[8:][g["targets"][0][8:] == IGNORE] == 0).all()


def test_adding_target_is_the_sum_of_the_marked_values():
    g = generated("adding")
    for x, y in zip(g["inputs"], g["targets"]):
        marked = [i for i in range(16) if x[i, 1] == 1.0]
        assert len(marked) == 2 and marked[0] < 8 <= marked[1]
        assert (x[:, 1] != 0).sum() == 2 and (0 <= x[:, 0]).all() and (x[:, 0] < 1).all()
        assert y == pytest.approx(float(x[marked[0], 0]) + float(x[marked[1], 0]), abs=1e-6)


# ----------------------------------------------------------------------------- ListOps


def np_evaluate(source):
    """Independent evaluator: recursive descent with LRA's own operator definitions."""
    tokens = source.replace("(", " ").replace(")", " ").replace("]", " ] ").split()
    ops = {
        "[MIN": min,
        "[MAX": max,
        "[MED": lambda a: int(np.median(a)),
        "[SM": lambda a: int(np.sum(a) % 10),
    }

    def parse(i):
        if tokens[i] in ops:
            op, args, i = tokens[i], [], i + 1
            while tokens[i] not in ("]", "X"):
                value, i = parse(i)
                args.append(value)
            return ops[op](args), i + 1
        return int(tokens[i]), i + 1

    value, end = parse(0)
    assert end == len(tokens)
    return value


@pytest.mark.parametrize(
    "source, value",
    [
        ("7", 7),
        ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
        ("[MIN 4 7 ]", 4),
        ("[MED 1 2 ]", 1),  # int(1.5)
        ("[MED 3 8 1 ]", 3),
        ("[MED 1 2 7 9 ]", 4),  # int(4.5)
        ("[SM 7 8 9 ]", 4),
        ("[SM [MAX 9 1 ] [MIN 5 6 ] ]", 4),
        ("[MIN [MED 2 6 ] [SM 5 5 ] 3 ]", 0),
        ("( ( ( ( [MAX 2 ) 9 ) ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )", 9),  # the TSVs' parentheses
        ("[MAX 2 9 X", 9),  # the tokenized closing token
    ],
)
def test_listops_evaluate_hand_written_expressions(source, value):
    assert listops.evaluate(source) == value == np_evaluate(source)


@pytest.mark.parametrize("bad", ["", "[MAX 2 9", "[MAX 2 ] ]", "[FOO 1 2 ]", "1 2", "[MIN ]"])
def test_listops_evaluate_rejects_malformed_expressions(bad):
    with pytest.raises(ValueError):
        listops.evaluate(bad)


# LRA's generator (lra_benchmarks/data/listops.py), transcribed with an explicit
# random.Random in place of the module-level random.
LRA_OPS, LRA_END = ["[MIN", "[MAX", "[MED", "[SM"], "]"


def lra_generate_tree(rnd, depth, max_depth, max_args):
    r = rnd.random() if depth < max_depth else 1
    if r > 0.25:
        return rnd.choice(range(10)), 1
    length, values = 2, []
    for _ in range(rnd.randint(2, max_args)):
        sub_t, sub_l = lra_generate_tree(rnd, depth + 1, max_depth, max_args)
        values.append(sub_t)
        length += sub_l
    t = (rnd.choice(LRA_OPS), values[0])
    for value in values[1:]:
        t = (t, value)
    return (t, LRA_END), length


def lra_to_string(t):
    if isinstance(t, str):
        return t
    if isinstance(t, int):
        return str(t)
    return "( " + lra_to_string(t[0]) + " " + lra_to_string(t[1]) + " )"


def lra_to_value(t):
    if not isinstance(t, tuple):
        return t
    left, right = lra_to_value(t[0]), lra_to_value(t[1])
    if left in LRA_OPS:
        return (left, [right])
    if right == LRA_END:
        return {"[MIN": min, "[MAX": max, "[MED": lambda a: int(np.median(a)), "[SM": lambda a: np.sum(a) % 10}[
            left[0]
        ](left[1])
    return (left[0], left[1] + [right])


def test_listops_generation_matches_lra_generator_draw_for_draw():
    params = listops.ListOpsParams(min_length=10, max_length=60, seq_len=64)
    g = listops.generate(params, 30, seed=11)
    rnd, expected, seen = random.Random(11), [], set()
    while len(expected) < 30:
        tree, length = lra_generate_tree(rnd, 1, 10, 10)
        if 10 < length < 60 and tree not in seen:
            seen.add(tree)
            expected.append((lra_to_string(tree), lra_to_value(tree), length))
    for (source, value, length), x, y, n in zip(expected, g["inputs"], g["targets"], g["length"]):
        assert n == length and y == value
        np.testing.assert_array_equal(x[:n], listops.tokenize(source))
        assert (x[n:] == listops.PAD).all()
        assert listops.evaluate(listops.decode(x)) == y == np_evaluate(source)


def test_listops_labels_equal_evaluate_of_the_decoded_inputs():
    g = generated("listops", n=100, seed=5)
    assert (10 < g["length"]).all() and (g["length"] < 60).all()
    assert len({bytes(x) for x in g["inputs"]}) == 100  # deduplicated
    for x, y in zip(g["inputs"], g["targets"]):
        source = listops.decode(x)
        assert listops.evaluate(source) == y == np_evaluate(source)
        np.testing.assert_array_equal(listops.tokenize(source), x[x != 0])
    print("label histogram:", np.bincount(g["targets"], minlength=10).tolist())


def write_lra_tsv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["Source", "Target"])
        writer.writerows(rows)


def test_listops_reads_lra_tsv_files_tokenized_like_generated_data(tmp_path):
    rnd = random.Random(0)
    trees = []
    while len(trees) < 9:
        tree, length = lra_generate_tree(rnd, 1, 10, 10)
        if 4 <= length < 60:
            trees.append(tree)
    rows = [[lra_to_string(t), lra_to_value(t)] for t in trees]
    for name, part in zip(listops.TSV_FILES.values(), (rows[:5], rows[5:7], rows[7:])):
        write_lra_tsv(tmp_path / name, part)
    ds, info = load_task("listops", {"seq_len": 2000}, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert {k: len(v) for k, v in ds.items()} == {"train": 5, "validation": 2, "test": 2}
    assert info.seq_len == 2000 and info.vocab_size == len(listops.VOCAB) == 16
    train = ds["train"][:]
    assert train["inputs"].dtype == np.int32
    for (source, label), x, y, n in zip(rows, train["inputs"], train["targets"], train["length"]):
        assert "(" in source and y == label
        ids = listops.tokenize(source)
        assert n == len(ids) and list(x[:n]) == ids and listops.evaluate(listops.decode(x)) == label
    # sizes cap what is read; a missing file is a clear error
    ds, _ = load_task("listops", sizes={"train": 3}, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert len(ds["train"]) == 3 and len(ds["test"]) == 2
    (tmp_path / "basic_test.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="basic_test.tsv"):
        load_task("listops", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_listops_tsv_with_unknown_token_names_the_line(tmp_path):
    for name in listops.TSV_FILES.values():
        write_lra_tsv(tmp_path / name, [["[MAX 1 2 ]", 2], ["[FIRST 1 2 ]", 1]])
    with pytest.raises(ValueError, match="line 3.*FIRST"):
        load_task("listops", data_dir=tmp_path, cache_dir=tmp_path / "cache")


# ----------------------------------------------------------------------------- text


def test_text_windows_are_next_byte_pairs_covering_each_split(tmp_path):
    text = "".join(f"line {i:02d}: the quick brown fox\n" for i in range(10)).encode()
    assert len(text) == 290
    (tmp_path / "corpus.txt").write_bytes(text)
    params = {"path": "corpus.txt", "seq_len": 16, "validation_fraction": 0.1, "test_fraction": 0.1}
    ds, info = load_task("text", params, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert info == data.TaskInfo("tokens", 16, 256, None, 256)
    bounds = [0, 290 - 29 - 29, 290 - 29, 290]
    for split, lo, hi in zip(("train", "validation", "test"), bounds[:-1], bounds[1:]):
        rows = ds[split][:]
        assert rows["inputs"].dtype == np.int32
        inputs = b"".join(bytes(x[:n].astype(np.uint8)) for x, n in zip(rows["inputs"], rows["length"]))
        targets = b"".join(bytes(y[:n].astype(np.uint8)) for y, n in zip(rows["targets"], rows["length"]))
        assert inputs == text[lo : hi - 1] and targets == text[lo + 1 : hi]
        assert rows["length"][:-1].tolist() == [16] * (len(rows["length"]) - 1)  # only the last is short
        beyond = np.arange(16) >= rows["length"][:, None]
        assert (rows["inputs"][beyond] == 0).all() and (rows["targets"][beyond] == IGNORE).all()
    assert (ds["validation"][:]["length"] < 16).any()  # a short last window


def test_text_reads_a_folder_in_path_order_skipping_hidden_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_bytes(b"A" * 100)
    (tmp_path / "b" / "c.txt").write_bytes(b"C" * 100)
    (tmp_path / ".hidden").write_bytes(b"H" * 100)
    ds, _ = load_task("text", {"seq_len": 50}, data_dir=tmp_path, cache_dir=tmp_path / ".cache")
    allbytes = np.concatenate([ds[s][:]["inputs"].ravel() for s in ("train", "validation", "test")])
    assert ord("H") not in allbytes and ord("A") in allbytes and ord("C") in allbytes
    assert ds["train"][0]["inputs"][0] == ord("A")


def test_text_glob_and_max_bytes_choose_what_is_read(tmp_path):
    (tmp_path / "a.py").write_bytes(b"A" * 100)
    (tmp_path / "b.txt").write_bytes(b"B" * 100)
    (tmp_path / "c.py").write_bytes(b"C" * 100)
    ds, _ = load_task("text", {"seq_len": 10, "glob": "*.py", "max_bytes": 150}, data_dir=tmp_path,
                      cache_dir=tmp_path / ".cache")

    def split_bytes(r):  # the windows' inputs, then the split's last byte (a target only)
        inputs = b"".join(bytes(x[:n].astype(np.uint8)) for x, n in zip(r["inputs"], r["length"]))
        return inputs + bytes([r["targets"][-1, r["length"][-1] - 1]])

    read = b"".join(split_bytes(ds[s][:]) for s in ("train", "validation", "test"))
    assert read == b"A" * 100 + b"C" * 50


def test_text_reads_the_python_standard_library(tmp_path):
    import sysconfig

    ds, _ = load_task("text", {"path": "stdlib:json", "glob": "*.py", "seq_len": 64}, cache_dir=tmp_path)
    first = sorted((pathlib.Path(sysconfig.get_paths()["stdlib"]) / "json").rglob("*.py"))[0].read_bytes()
    assert bytes(ds["train"][0]["inputs"].astype(np.uint8)) == first[:64]
    from ssm.data.text import sources, TextParams
    assert not any("site-packages" in f.parts for f in sources(TextParams(path="stdlib:", glob="*.py"), None))


def test_text_without_a_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="path"):
        load_task("text", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="neither"):
        load_task("text", {"path": str(tmp_path / "missing.txt")}, cache_dir=tmp_path)


# ----------------------------------------------------------------------------- cache


def counting(monkeypatch, name):
    """Replace a task's generate by a wrapper that records the splits it builds."""
    calls = []
    task = TASKS[name]

    def generate(params, n, seed):
        calls.append((n, seed))
        return task.generate(params, n, seed)

    monkeypatch.setitem(TASKS, name, dataclasses.replace(task, generate=generate))
    return calls


def test_second_load_reads_the_cache_without_generating(tmp_path, monkeypatch):
    calls = counting(monkeypatch, "copying")
    ds1, info1 = load_task("copying", TINY["copying"], seed=1, sizes=SIZES, cache_dir=tmp_path)
    assert sorted(n for n, _ in calls) == [10, 10, 40] and len({s for _, s in calls}) == 3  # a seed per split
    ds2, info2 = load_task("copying", TINY["copying"], seed=1, sizes=SIZES, cache_dir=tmp_path)
    assert len(calls) == 3 and info1 == info2
    for split in SIZES:
        np.testing.assert_array_equal(ds1[split][:]["inputs"], ds2[split][:]["inputs"])
    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == ["copying"]
    # any change of parameters, seed or sizes is another folder
    load_task("copying", {**TINY["copying"], "l_noise": 13}, seed=1, sizes=SIZES, cache_dir=tmp_path)
    load_task("copying", TINY["copying"], seed=2, sizes=SIZES, cache_dir=tmp_path)
    load_task("copying", TINY["copying"], seed=1, sizes={**SIZES, "test": 11}, cache_dir=tmp_path)
    assert len(calls) == 12 and len(list(tmp_path.iterdir())) == 4
    # splits differ from each other and from another seed
    a, b = ds1["train"][:10]["inputs"], ds1["validation"][:]["inputs"]
    assert not np.array_equal(a, b)


def test_cache_is_memory_mapped_and_formatted_numpy(tmp_path):
    ds, _ = load_task("induction_heads", sizes=SIZES, cache_dir=tmp_path)
    train = ds["train"]
    assert train.cache_files and str(tmp_path) in train.cache_files[0]["filename"]
    row = train[0]
    assert isinstance(row["inputs"], np.ndarray) and row["inputs"].dtype == np.int32
    meta = next(tmp_path.glob("induction_heads-*")) / "ssm_task.json"
    assert '"task": "induction_heads"' in meta.read_text()


def test_interrupted_build_leaves_no_cache_folder(tmp_path, monkeypatch):
    import datasets

    save = datasets.DatasetDict.save_to_disk

    def save_then_die(self, path, **kwargs):
        save(self, path, **kwargs)  # every Arrow file written, the folder not yet renamed
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        load_task("copying", TINY["copying"], sizes=SIZES, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", save)
    calls = counting(monkeypatch, "copying")
    ds, _ = load_task("copying", TINY["copying"], sizes=SIZES, cache_dir=tmp_path)
    assert len(calls) == 3 and len(ds["test"]) == 10


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_cache_with_a_missing_or_truncated_arrow_file_is_built_again(tmp_path, monkeypatch, capsys, damage):
    first, _ = load_task("copying", TINY["copying"], sizes=SIZES, cache_dir=tmp_path)
    expected = first["train"][:]["inputs"]
    del first
    (arrow,) = next(tmp_path.glob("copying-*")).glob("train/*.arrow")
    if damage == "missing":
        arrow.unlink()
    else:
        with open(arrow, "r+b") as f:
            f.truncate(arrow.stat().st_size // 2)
    calls = counting(monkeypatch, "copying")
    again, _ = load_task("copying", TINY["copying"], sizes=SIZES, cache_dir=tmp_path)
    assert "is damaged (train/" in capsys.readouterr().out and len(calls) == 3
    np.testing.assert_array_equal(again["train"][:]["inputs"], expected)


def test_ids_outside_the_vocabulary_are_refused_when_a_dataset_is_built(tmp_path, monkeypatch):
    task = TASKS["copying"]

    def generate(params, n, seed):
        columns = task.generate(params, n, seed)
        columns["inputs"][3, 5] = params.n_tokens  # one past the vocabulary
        return columns

    monkeypatch.setitem(TASKS, "copying", dataclasses.replace(task, generate=generate))
    with pytest.raises(ValueError, match=r"copying train split: inputs hold 1 ids outside \[0, 10\) \(e\.g\. 10\)"):
        load_task("copying", {**TINY["copying"], "n_tokens": 10}, sizes=SIZES, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing cached


def test_print_example_rows(tmp_path):
    """Shows the formats a reader can expect (run with -s)."""
    for name in sorted(TINY):
        ds, info = load_task(name, TINY[name], sizes={"train": 2, "validation": 1, "test": 1}, cache_dir=tmp_path)
        row = ds["train"][0]
        print(f"\n{name}: {info}")
        if name == "listops":
            print("  source:", listops.decode(row["inputs"]), " -> target", row["targets"])
        elif name == "adding":
            marked = np.flatnonzero(row["inputs"][:, 1])
            print("  values:", [round(float(v), 2) for v in row["inputs"][:, 0]])
            print("  marked:", marked.tolist(), " -> target", round(float(row["targets"]), 4))
        else:
            print("  inputs: ", " ".join(map(str, row["inputs"])))
            print("  targets:", " ".join("." if t == IGNORE else str(t) for t in row["targets"]))
        print("  length:", row["length"])


# ----------------------------------------------------------------------------- batches


@pytest.fixture
def copying_splits(tmp_path):
    ds, _ = load_task("copying", TINY["copying"], sizes={"train": 40, "validation": 10, "test": 10}, cache_dir=tmp_path)
    return ds


def test_get_batch_is_a_pure_function_of_step_and_seed(copying_splits):
    train = copying_splits["train"]
    a, b = get_batch(train, 7, 8, seed=0), get_batch(train, 7, 8, seed=0)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["inputs"], get_batch(train, 7, 8, seed=1)["inputs"])
    assert a["inputs"].dtype == a["targets"].dtype == a["length"].dtype == np.int32
    assert a["mask"].dtype == bool and a["mask"].shape == (8, 20) and a["mask"].all()
    assert a["valid"].all()


def test_get_batch_visits_each_example_once_per_epoch_in_a_new_order(tmp_path):
    ds, _ = load_task("induction_heads", sizes={"train": 40, "validation": 1, "test": 1}, cache_dir=tmp_path)
    train = ds["train"]
    everything = train[:]["inputs"]
    assert len({bytes(x) for x in everything}) == 40  # rows identify examples
    orders = []
    for epoch in range(2):  # 40 examples, batch 8: 5 steps per epoch
        rows = np.concatenate([get_batch(train, 5 * epoch + i, 8, seed=0)["inputs"] for i in range(5)])
        index = [int(np.flatnonzero((everything == r).all(axis=1))[0]) for r in rows]
        assert sorted(index) == list(range(40))
        orders.append(index)
    assert orders[0] != orders[1]
    np.testing.assert_array_equal(
        get_batch(train, 12, 8, seed=0)["inputs"], everything[data.epoch_permutation(40, 0, 2)[16:24]]
    )


def test_get_batch_drops_the_incomplete_last_batch(copying_splits):
    train = copying_splits["train"]  # 40 examples, batch 16: 2 steps per epoch, 8 left out
    first = get_batch(train, 2, 16, seed=0)["inputs"]
    np.testing.assert_array_equal(first, train[:]["inputs"][data.epoch_permutation(40, 0, 1)[:16]])


def test_eval_batches_pad_the_last_batch_and_mark_it_invalid(copying_splits):
    val = copying_splits["validation"]  # 10 examples
    batches = list(eval_batches(val, 4))
    assert len(batches) == 3 and all(b["inputs"].shape == (4, 20) for b in batches)
    assert [b["valid"].tolist() for b in batches][-1] == [True, True, False, False]
    last = batches[-1]
    assert (last["targets"][2:] == IGNORE).all() and not last["mask"][2:].any() and (last["length"][2:] == 0).all()
    rows = np.concatenate([b["inputs"][b["valid"]] for b in batches])
    np.testing.assert_array_equal(rows, val[:]["inputs"])
    assert all(b[k].dtype == np.int32 for b in batches for k in ("inputs", "targets", "length"))


@pytest.mark.parametrize("name", ["adding", "listops"])
def test_batches_keep_int32_and_float32_with_variable_lengths(tmp_path, name):
    ds, info = load_task(name, TINY[name], sizes=SIZES, cache_dir=tmp_path)
    batch = get_batch(ds["train"], 0, 8, seed=0)
    *_, last = eval_batches(ds["validation"], 8)
    for b in (batch, last):
        assert b["length"].dtype == np.int32 and b["mask"].shape == (8, info.seq_len)
        np.testing.assert_array_equal(b["mask"].sum(axis=1), b["length"])
        if name == "adding":
            assert b["inputs"].dtype == b["targets"].dtype == np.float32 and b["inputs"].shape == (8, 16, 2)
        else:
            assert b["inputs"].dtype == b["targets"].dtype == np.int32 and b["targets"].shape == (8,)
            assert (b["inputs"][~b["mask"]] == 0).all()
    if name == "listops":
        assert len(set(batch["length"].tolist())) > 1


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_get_clear_errors(tmp_path, copying_splits):
    with pytest.raises(ValueError, match="task='copy'; expected one of .*'copying'"):
        load_task("copy", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['noise'\].*'l_noise'"):
        load_task("copying", {"noise": 3}, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="l_noise=-1 must be a non-negative integer"):
        load_task("copying", {"l_noise": -1}, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="n_tokens=2.5 must be an integer >= 3"):
        TASKS["copying"].params(n_tokens=2.5)
    with pytest.raises(ValueError, match="power_a=0 must be a number > 0"):
        TASKS["mqar"].params(power_a=0)
    with pytest.raises(ValueError, match="num_kv_pairs=20 must be at most input_seq_len / 4 = 16"):
        TASKS["mqar"].params(num_kv_pairs=20)
    with pytest.raises(ValueError, match="input_seq_len=41 must be even"):
        TASKS["associative_recall"].params(input_seq_len=41)
    with pytest.raises(ValueError, match="seq_len=100 must hold"):
        TASKS["listops"].params(seq_len=100)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_task("copying", sizes={"val": 3}, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="seed=-1"):
        load_task("copying", seed=-1, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="batch_size=41 is larger than the split"):
        get_batch(copying_splits["train"], 0, 41, seed=0)
    with pytest.raises(ValueError, match="step=-1"):
        get_batch(copying_splits["train"], -1, 4, seed=0)
    with pytest.raises(RuntimeError, match="distinct ListOps expressions"):
        listops.generate(listops.ListOpsParams(max_depth=1, min_length=0, max_length=2, seq_len=4), 11, seed=0)
