"""Decode speed of published-size language models with :func:`ssm.generate.generate`:
tokens per second at batch 1 and 8 for a Mamba-130M-sized and a Mamba-2-130M-sized
model (random weights; width 768, 24 layers, the GPT-NeoX vocabulary padded to 50,280),
against two references measured in the same run: the compiled prefill's cost per
token (the parallel pass over a prompt) and the floor of reading every weight once
per decode step at the machine's measured read bandwidth.

    python -m ssm.bench.generate                    # both models, batch 1 and 8
    python -m ssm.bench.generate --models mamba --batches 1 --new-tokens 32

(:mod:`ssm.bench.generation` compares layer types across context lengths at a small
width; this one times the real sizes end to end.)
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssm.bench.common import MiB, emit, markdown_table, matmul_and_read_rates, measure, parser, run_header, started

VOCAB = 50280  # GPT-NeoX's 50,277 tokens padded to a multiple of 8, as the published checkpoints
MODELS = {
    "mamba": dict(layer="mamba", layer_kwargs=dict(d_state=16, d_conv=4, expand=2)),
    "mamba2": dict(layer="mamba2", layer_kwargs=dict(d_state=128, d_conv=4, expand=2, headdim=64, chunk_size=256)),
}


def build(name: str, d_model: int, n_layers: int):
    """A random-weight language model of the family ``name`` (a key of ``MODELS``) with tied embeddings at the
    given width and depth."""
    from ssm.layers import SequenceModel

    return SequenceModel(vocab_size=VOCAB, d_model=d_model, n_layers=n_layers, d_output=VOCAB, norm="rms", post=None,
                         tie_embeddings=True, norm_eps=1e-5, **MODELS[name], rngs=nnx.Rngs(0))


def main(argv=None) -> None:
    """Command line: decode tokens/s of each model at each batch size, against its prefill and the weight-read
    floor."""
    from ssm.generate import decoder

    p = parser(__doc__, repeats=3)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--prompt", type=int, default=128, help="prompt length (default: %(default)s)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens decoded per timed run (default: %(default)s)")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--layers", type=int, default=24)
    args = p.parse_args(argv)
    run = started()
    _, read_rate = matmul_and_read_rates(args.repeats)
    rows = []
    for name in args.models:
        model = build(name, args.d_model, args.layers)
        params = nnx.state(model, nnx.Param)
        weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
        n_params = sum(x.size for x in jax.tree.leaves(params))
        graphdef, state = nnx.split(model)
        prefill = lambda s, ids: nnx.merge(graphdef, s).prefill(ids)[0]  # noqa: E731
        for batch in args.batches:
            prompt = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (batch, args.prompt)), jnp.int32)
            t_prefill = measure(prefill, state, prompt, repeats=args.repeats)
            compile_start = time.perf_counter()
            run = decoder(model, prompt, args.new_tokens)
            compile_s = time.perf_counter() - compile_start
            jax.block_until_ready(run(prompt))  # warm-up
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                jax.block_until_ready(run(prompt))
                times.append(time.perf_counter() - t)
            total = float(np.median(times))
            # the timed run is one prefill plus new_tokens - 1 steps: take the prefill out
            per_step = max(total - t_prefill.seconds, 1e-9) / max(args.new_tokens - 1, 1)
            floor = weight_bytes / read_rate
            rows.append([name, f"{n_params / 1e6:.0f}M", str(batch), f"{batch / per_step:,.1f}",
                         f"{1e3 * per_step:.1f}", f"{1e3 * t_prefill.seconds / args.prompt:.2f}",
                         f"{1e3 * floor:.1f}", f"{per_step / floor:.1f}×", f"{compile_s:.0f}"])
            print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(["model", "params", "batch", "decode tokens/s", "ms / step", "prefill ms / token",
                            "weight-read floor ms / step", "step / floor", "compile s"], rows)
    details = (f"float32; prompt {args.prompt}, {args.new_tokens} new tokens per run, median of {args.repeats}; "
               f"read bandwidth {read_rate / 1e9:.1f} GB/s (weights {weight_bytes / MiB:.0f} MiB)")
    emit(f"{run_header(details, run)}\n\n{table}", args.out)


if __name__ == "__main__":
    main()
