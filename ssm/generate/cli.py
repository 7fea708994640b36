"""Generate text from a trained byte-level model: ``ssm-generate``, ``python -m
ssm.generate`` or, in a clone, ``python generate.py`` (the same command).

    ssm-generate --model runs/text-mamba --prompt "def main(" --max-new-tokens 200
    ssm-generate --model runs/text-mamba --prompt "import " --temperature 0.8 --top-p 0.95 --seed 1

``--model`` is a run folder trained on the ``text`` task (its bytes are the tokens:
the prompt is encoded as UTF-8, the output decoded with invalid bytes replaced;
``--step`` picks one of its checkpoints, default the latest), or a Hugging Face Mamba
or Mamba-2 folder (:mod:`ssm.pretrained`) with its ``tokenizer.json`` (read with
``tokenizers``; generation stops at the config's ``eos_token_id``). Greedy unless a
``--seed`` or a sampling option is given. Prints the text, then the time of the
compilation and of the decode (tokens per second) on standard error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    """The command line of ``ssm-generate``."""
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
    """``ssm-generate``: continue a prompt with a trained model; returns the exit status."""
    args = parse_args(argv, prog)
    prog = prog or os.path.basename(sys.argv[0])
    import jax
    import numpy as np

    from ssm.generate import decoder
    from ssm.train import ConfigError
    from ssm.train.checkpoint import DamagedCheckpoints

    try:
        model, encode, decode, eos_id = _load(args)
    except (ConfigError, DamagedCheckpoints, ImportError, OSError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    prompt = np.asarray(encode(args.prompt), np.int32)[None]
    sample = args.seed is not None or any(v is not None for v in (args.temperature, args.top_k, args.top_p))
    try:
        start = time.perf_counter()
        run = decoder(model, prompt, args.max_new_tokens, sample=sample, temperature=args.temperature or 1.0,
                      top_k=args.top_k, top_p=args.top_p, eos_id=eos_id)
        compiled = time.perf_counter() - start
        start = time.perf_counter()
        tokens = jax.block_until_ready(run(prompt, jax.random.key(args.seed or 0) if sample else None))
        decoded = time.perf_counter() - start
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print(decode([int(t) for t in np.asarray(tokens[0])]))
    print(f"{args.max_new_tokens} new tokens in {decoded:.2f} s ({args.max_new_tokens / decoded:,.0f} tokens/s, "
          f"prompt of {prompt.shape[1]} included); compiled in {compiled:.1f} s", file=sys.stderr)
    return 0


def _load(args):
    """``(model, encode, decode, eos_id)`` for ``--model``: a byte-level run folder or a
    pretrained folder with its tokenizer."""
    import pathlib

    from ssm.train import ConfigError, load_model, run_config

    folder = pathlib.Path(args.model)
    if (folder / "config.json").is_file() and not (folder / "config.yaml").is_file():
        from ssm import pretrained
        from ssm.extras import require

        if not (folder / "tokenizer.json").is_file():
            raise ConfigError(f"{folder} has no tokenizer.json: the prompt cannot be turned into its token ids")
        require("pretrained", "tokenizers", what="ssm-generate on a pretrained folder")
        from tokenizers import Tokenizer

        model, hf_config = pretrained.load(folder)
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        eos = hf_config.get("eos_token_id")
        return (model, lambda text: tokenizer.encode(text).ids, tokenizer.decode,
                eos if isinstance(eos, int) else None)
    task = run_config(folder).task.name  # refused before the model is built and restored
    if task != "text":
        raise ConfigError(f"{folder} was trained on the {task!r} task; only text (byte-level) runs "
                          f"turn a prompt into tokens here")
    model, _ = load_model(folder, step=args.step)
    return (model, lambda text: list(text.encode("utf-8")),
            lambda ids: bytes(ids).decode("utf-8", errors="replace"), None)


def console() -> None:
    """The ``ssm-generate`` console script."""
    sys.exit(main(prog="ssm-generate"))
