"""The packed-sequence benchmark, ``python -m ssm.bench.segments``: its packed layout, and
a tiny run in-process that prints the table with a row per layer and mode and finite
positive measurements."""

import doctest
import math

import numpy as np
import pytest

from ssm.bench import segments


def test_packed_segment_ids_hold_the_documents_asked_for():
    ids = segments.packed_segment_ids(5, 64, 8, seed=3)
    assert ids.shape == (5, 64) and ids.dtype == np.int32
    steps = np.diff(ids, axis=1)
    assert set(np.unique(steps)) <= {0, 1}  # nondecreasing, one new document at a time
    np.testing.assert_array_equal(ids[:, 0], 1)
    np.testing.assert_array_equal(ids[:, -1], 8)  # eight documents in every row
    lengths = [np.bincount(row)[1:] for row in ids]
    assert len({tuple(x) for x in lengths}) > 1  # random lengths, not one layout repeated
    np.testing.assert_array_equal(segments.packed_segment_ids(5, 64, 8, seed=3), ids)  # the seed fixes them
    with pytest.raises(ValueError, match="documents=9; expected at most length=8"):
        segments.packed_segment_ids(1, 8, 9)
    assert doctest.testmod(segments, verbose=False).failed == 0


def test_a_tiny_run_prints_a_row_per_layer_and_mode(capsys):
    results = segments.main(["--batch", "1", "--length", "32", "--d-model", "8", "--repeats", "1",
                             "--documents", "4", "--layers", "s4d", "mamba"])
    out = capsys.readouterr().out
    assert "batch 1, length 32, width 8, float32, 4 documents per row" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| " + " | ".join(segments.HEADER) + " |"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[1:]]
    assert [row[:2] for row in rows] == [["s4d", "fwd"], ["s4d", "fwd+bwd"], ["mamba", "fwd"], ["mamba", "fwd+bwd"]]
    for row in rows:
        ms_without, ms_with = (float(cell.rstrip("†")) for cell in row[2:4])
        ratio = float(row[4].rstrip("×"))
        assert all(math.isfinite(v) and v >= 0 for v in (ms_without, ms_with)) and ratio > 0, row
        assert all(math.isfinite(float(cell)) and float(cell) >= 0 for cell in row[5:7]), row  # MiB, 1 decimal
    assert [(r["layer"], r["mode"]) for r in results] == [tuple(row[:2]) for row in rows]
    for r in results:
        for timing in (r["without"], r["with"]):
            assert math.isfinite(timing.seconds) and timing.seconds > 0
            assert timing.temp_bytes is None or timing.temp_bytes > 0
