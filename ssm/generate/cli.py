"""Generate text from a trained byte-level model: ``ssm-generate``, ``python -m
ssm.generate`` or, in a clone, ``python generate.py`` (the same command).

    ssm-generate --model runs/text-mamba --prompt "def main(" --max-new-tokens 200
    ssm-generate --model runs/text-mamba --prompt "import " --temperature 0.8 --top-p 0.95 --seed 1

``--model`` is a run folder trained on the ``text`` task (its bytes are the tokens:
the prompt is encoded as UTF-8, the output decoded with invalid bytes replaced);
``--step`` picks one of its checkpoints (default: the latest). Greedy unless a
``--seed`` or a sampling option is given. Prints the text, then the time of the
compilation and of the decode (tokens per second) on standard error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", required=True, help="a run folder of a model trained on the text task")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=100, help="bytes to generate (default: %(default)s)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 1.0 when sampling)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely bytes")
    p.add_argument("--top-p", type=float, help="sample within the nucleus of this probability mass")
    p.add_argument("--seed", type=int, help="sampling seed (any sampling option without it: seed 0)")
    p.add_argument("--step", type=int, help="the checkpoint to load (default: the latest)")
    return p.parse_args(argv)


def main(argv=None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    prog = prog or os.path.basename(sys.argv[0])
    import jax
    import numpy as np

    from ssm.generate import decoder
    from ssm.train import ConfigError, load_model
    from ssm.train.checkpoint import DamagedCheckpoints

    try:
        model, config = load_model(args.model, step=args.step)
    except (ConfigError, DamagedCheckpoints) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if config.task.name != "text":
        print(f"{prog}: {args.model} was trained on the {config.task.name!r} task; only text (byte-level) runs "
              f"turn a prompt into tokens here", file=sys.stderr)
        return 2
    prompt = np.frombuffer(args.prompt.encode("utf-8"), np.uint8).astype(np.int32)[None]
    sample = args.seed is not None or any(v is not None for v in (args.temperature, args.top_k, args.top_p))
    try:
        start = time.perf_counter()
        run = decoder(model, prompt, args.max_new_tokens, sample=sample, temperature=args.temperature or 1.0,
                      top_k=args.top_k, top_p=args.top_p)
        compiled = time.perf_counter() - start
        start = time.perf_counter()
        tokens = jax.block_until_ready(run(prompt, jax.random.key(args.seed or 0) if sample else None))
        decoded = time.perf_counter() - start
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print(bytes(np.asarray(tokens[0], np.uint8).tolist()).decode("utf-8", errors="replace"))
    print(f"{args.max_new_tokens} new tokens in {decoded:.2f} s ({args.max_new_tokens / decoded:,.0f} tokens/s, "
          f"prompt of {prompt.shape[1]} included); compiled in {compiled:.1f} s", file=sys.stderr)
    return 0


def console() -> None:
    """The ``ssm-generate`` console script."""
    sys.exit(main(prog="ssm-generate"))
