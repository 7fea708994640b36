"""The cost of packed sequences: every causal layer with and without ``segment_ids``.

Packing several documents into one row (module :mod:`ssm.layers.segments`) changes what
a layer computes: S4 and S4D leave their FFT convolution for the recurrence (in
checkpointed chunks), Mamba and Mamba-2 mask their short convolution and reset their
scans, attention adds a segment mask to its scores, the LSTM resets its carry. For each
layer, on the same inputs in the same run, this measures:

- forward: the layer's output, jitted;
- forward + backward: ``jax.grad`` of the sum of the output with respect to the
  layer's parameters and its input (``nnx.split`` / ``nnx.merge``), jitted;

each without ``segment_ids`` (the baseline) and with them, timed by
:func:`ssm.bench.common.measure` (compiled once, one warm-up, median of the timed runs,
``block_until_ready``), with the compiled program's temporaries from XLA's memory
analysis (``temp_size_in_bytes``). Ratios are with / without.

The packed layout: each row holds ``--documents`` documents of random lengths (cut
points drawn uniformly without replacement from a fixed seed, so the lengths are the
spacings of uniform points, mean length / documents), ids 1, 2, ... and no padding.

Sizes (float32, :data:`LAYER_OPTIONS`): S4 (LegS, ``d_state`` 64, ``l_max`` = the
length) and S4D (``d_state`` 64), Mamba (``d_state`` 16), Mamba-2 (``headdim`` 16,
``d_state`` 64, ``chunk_size`` 64), attention (4 heads), LSTM, each at width
``--d-model``.

    python -m ssm.bench.segments                      # batch 8, length 4096, width 64, all six layers
    python -m ssm.bench.segments --layers s4d mamba --length 1024 --repeats 3
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssm.bench.common import Timing, emit, fmt_mib, fmt_ms, fmt_ratio, footnote, markdown_table, measure, parser, \
    run_header, started
from ssm.checks import check_positive_int

SEED = 0

#: The layers measured: name in :data:`ssm.layers.LAYERS` -> ``(options, description)``;
#: options may be a function of the length (S4's ``l_max``).
LAYER_OPTIONS = {
    "s4": (lambda length: {"d_state": 64, "measure": "legs", "l_max": length}, "S4 LegS, d_state 64, l_max = length"),
    "s4d": (lambda length: {"d_state": 64}, "S4D-LegS, d_state 64"),
    "mamba": (lambda length: {"d_state": 16}, "Mamba, d_state 16, expand 2"),
    "mamba2": (lambda length: {"d_state": 64, "headdim": 16, "chunk_size": 64},
               "Mamba-2, headdim 16, d_state 64, chunk_size 64, expand 2"),
    "attention": (lambda length: {"n_heads": 4}, "attention, 4 heads"),
    "lstm": (lambda length: {}, "LSTM"),
}


def packed_segment_ids(batch: int, length: int, documents: int, seed: int = SEED) -> np.ndarray:
    """Segment ids of rows packed with ``documents`` documents each, of random lengths.

    Each row's ``documents - 1`` cut points are drawn uniformly without replacement from
    positions 1..length-1; document k (ids from 1) runs from the k-th cut to the next.

    Args:
      batch: rows, a positive int.
      length: positions per row, at least ``documents``.
      documents: documents per row, a positive int.
      seed: of the NumPy generator.

    Returns:
      (batch, length) int32: 1 .. documents along each row, nondecreasing.

    Example:
      >>> from ssm.bench.segments import packed_segment_ids
      >>> ids = packed_segment_ids(2, 16, 3)
      >>> ids.shape, ids.dtype, ids[:, 0].tolist(), ids[:, -1].tolist()
      ((2, 16), dtype('int32'), [1, 1], [3, 3])
    """
    documents = check_positive_int("documents", documents)
    if documents > length:
        raise ValueError(f"documents={documents}; expected at most length={length} (one position each)")
    rng = np.random.default_rng(seed)
    positions = np.arange(length)
    rows = [1 + np.searchsorted(np.sort(rng.choice(np.arange(1, length), documents - 1, replace=False)),
                                positions, side="right") for _ in range(batch)]
    return np.stack(rows).astype(np.int32)


def layer_functions(name: str, d_model: int, length: int):
    """The layer ``name`` (:data:`LAYER_OPTIONS`) and its two measured programs.

    Returns:
      ``(params, forward, gradient)``: the layer's ``nnx.Param`` state;
      ``forward(params, x, segment_ids)`` its output; ``gradient(params, x,
      segment_ids)`` the gradients of ``sum(output)`` with respect to ``params`` and
      ``x``. ``segment_ids`` None runs the layer without them.
    """
    from ssm.layers import LAYERS

    options, _ = LAYER_OPTIONS[name]
    layer = LAYERS[name](d_model, **options(length), rngs=nnx.Rngs(SEED))
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def forward(params, x, segment_ids):
        return nnx.merge(graphdef, params, rest)(x, segment_ids=segment_ids)

    def total(params, x, segment_ids):
        return jnp.sum(forward(params, x, segment_ids))

    return params, forward, jax.grad(total, argnums=(0, 1))


def measure_layer(name: str, x, segment_ids, repeats: int) -> list[dict]:
    """Forward and forward+backward of layer ``name`` on ``x`` (batch, length, d_model),
    without and with ``segment_ids``: one dict per mode, ``{"layer", "mode",
    "without", "with"}`` (:class:`~ssm.bench.common.Timing` each)."""
    params, forward, gradient = layer_functions(name, x.shape[-1], x.shape[1])
    results = []
    for mode, fn in (("fwd", forward), ("fwd+bwd", gradient)):
        timings = {key: measure(fn, params, x, ids, repeats=repeats)
                   for key, ids in (("without", None), ("with", segment_ids))}
        results.append({"layer": name, "mode": mode, **timings})
    return results


def temp_ratio(a: Timing, b: Timing) -> str:
    """``a``'s temporaries over ``b``'s (:func:`~ssm.bench.common.fmt_ratio`)."""
    return fmt_ratio(a.temp_bytes, b.temp_bytes)


def table_row(result: dict) -> list[str]:
    """One result of :func:`measure_layer` as a row of the table."""
    without, with_ = result["without"], result["with"]
    return [result["layer"], result["mode"], fmt_ms(without), fmt_ms(with_), fmt_ratio(with_.seconds, without.seconds),
            fmt_mib(without), fmt_mib(with_), temp_ratio(with_, without)]


HEADER = ["layer", "mode", "ms without", "ms with segment_ids", "time with/without",
          "temp MiB without", "temp MiB with", "memory with/without"]


def main(argv=None) -> list[dict]:
    """Command line: each layer's forward and forward+backward time and XLA temporaries,
    with ``segment_ids`` against without, as a markdown table. Returns the results of
    :func:`measure_layer`, in the table's order."""
    p = parser(__doc__, repeats=5)
    p.add_argument("--batch", type=int, default=8, help="rows (default: %(default)s)")
    p.add_argument("--length", type=int, default=4096, help="positions per row (default: %(default)s)")
    p.add_argument("--d-model", type=int, default=64, help="width of every layer (default: %(default)s)")
    p.add_argument("--documents", type=int, default=8, help="documents packed per row (default: %(default)s)")
    p.add_argument("--layers", nargs="+", choices=list(LAYER_OPTIONS), default=list(LAYER_OPTIONS),
                   help="layers to measure (default: all)")
    args = p.parse_args(argv)
    for flag in ("batch", "length", "d_model", "documents", "repeats"):
        check_positive_int(f"--{flag.replace('_', '-')}", getattr(args, flag))
    run = started()
    segment_ids = jnp.asarray(packed_segment_ids(args.batch, args.length, args.documents))
    x = jax.random.normal(jax.random.key(SEED), (args.batch, args.length, args.d_model), jnp.float32)
    results, rows = [], []
    for name in args.layers:
        for result in measure_layer(name, x, segment_ids, args.repeats):
            results.append(result)
            rows.append(table_row(result))
            print(" | ".join(rows[-1]), flush=True)
    sizes = "; ".join(LAYER_OPTIONS[name][1] for name in args.layers)
    mean = args.length / args.documents
    details = (f"batch {args.batch}, length {args.length}, width {args.d_model}, float32, {args.documents} documents "
               f"per row (random lengths, mean {mean:.0f}, seed {SEED}); {sizes}; median of {args.repeats} runs")
    report = f"{run_header(details, run)}\n\n{markdown_table(HEADER, rows)}"
    if any(t.capped for r in results for t in (r["without"], r["with"])):
        report += "\n\n" + footnote(args.repeats, run.time)
    emit(report, args.out)
    return results


if __name__ == "__main__":
    main()
