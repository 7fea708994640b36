"""The SSD benchmark, ``python -m ssm.bench.ssd``: a tiny run in-process prints a row per
form and mode, the two forms agree, and XLA's count of the forward's flops drops by
exactly the scores ``C_t . B_s`` no longer computed for every head."""

import math

import pytest

from ssm.bench import ssd

# Two groups of two heads; 40 positions in chunks of 16 (the last one padded).
TINY = dict(batch=1, length=40, heads=4, headdim=4, groups=2, d_state=16, chunk_size=16)


def test_a_tiny_run_prints_both_forms_and_counts_the_saving(capsys):
    argv = ["--repeats", "1", "--lengths", str(TINY["length"])]
    for name, value in TINY.items():
        if name != "length":
            argv += [f"--{name.replace('_', '-')}", str(value)]
    results = ssd.main(argv)
    out = capsys.readouterr().out
    assert "batch 1, 4 heads of 4, 2 group(s), d_state 16, chunk 16, float32" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| " + " | ".join(ssd.HEADER) + " |"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[1:]]
    assert [row[:3] for row in rows] == [[form, "40", mode] for mode in ("fwd", "fwd+bwd") for form in ssd.FORMS]
    for row in rows:
        assert math.isfinite(float(row[3].rstrip("†"))) and float(row[3].rstrip("†")) >= 0, row
        assert all(float(cell.rstrip("×")) > 0 for cell in (row[4], row[6], row[8], row[10])), row
    for row in rows[1::2]:  # the per-group rows against their baseline
        print(f"{row[2]}: per group vs expanded, max rel. diff {row[-1]}")
        assert float(row[-1]) < 1e-5, row
    assert [(r["length"], r["mode"], r["form"]) for r in results] == [(40, row[2], row[0]) for row in rows]
    # The forward's saving is the (b, c, q, s) scores for the H - G heads beyond one per
    # group, 2 N flops each (a multiply-add per state entry): nothing else differs.
    expanded, grouped = (r["timing"].flops for r in results[:2])
    chunks = -(-TINY["length"] // TINY["chunk_size"])
    saved = (2 * TINY["batch"] * chunks * (TINY["heads"] - TINY["groups"]) * TINY["chunk_size"] ** 2
             * TINY["d_state"])
    print(f"XLA forward flops: expanded {expanded:.0f}, per group {grouped:.0f}, saved {expanded - grouped:.0f}")
    assert expanded - grouped == saved
    backward_saved = results[2]["timing"].flops - results[3]["timing"].flops
    assert backward_saved >= 3 * saved  # the scores' two gradient products as well


def test_heads_must_be_a_multiple_of_groups():
    with pytest.raises(ValueError, match="--heads=6 must be a multiple of --groups=4"):
        ssd.main(["--heads", "6", "--groups", "4"])
