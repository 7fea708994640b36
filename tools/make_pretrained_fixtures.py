"""Make the tiny Hugging Face Mamba / Mamba-2 checkpoints that ``tests/test_pretrained.py``
checks ``ssm.pretrained`` against (not run by CI or the tests).

    python tools/make_pretrained_fixtures.py            # write tests/fixtures/pretrained/
    python tools/make_pretrained_fixtures.py --check DIR [DIR ...]

The first form makes a separate virtualenv under ``.cache/fixtures-venv`` (ignored by
git) with ``torch``, ``transformers`` and ``safetensors``, re-runs itself there, and
writes one folder per model into ``tests/fixtures/pretrained/<name>/``: what
``save_pretrained`` writes (``config.json``, ``model.safetensors``) and
``reference.npz`` with

- ``input_ids`` (2, 12) int64 and ``logits`` (2, 12, vocab) float32: the model's
  forward pass;
- ``prompt`` (2, 6) int64, ``generated`` (2, 6 + 8): ``generate(do_sample=False)``;
- ``greedy_forward`` (2, 6 + 8): greedy decoding by re-running the full forward pass
  on the growing sequence (equal to ``generated`` except where transformers' own
  decoding step differs from its forward pass: its Mamba-2 step ignores
  ``time_step_limit``).

Every parameter is random (norm weights, biases, ``A_log``, ``D`` and ``dt_bias``
included), so a weight put in the wrong place shows in the logits.

``--check DIR`` loads folders written by ``ssm.pretrained.save`` (named after a
fixture) with transformers and prints how far their logits are from the fixture's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "fixtures-venv"
OUT = ROOT / "tests" / "fixtures" / "pretrained"
# A CPU build of exactly this torch is what the fixtures were made with; pip may
# otherwise choose a CUDA build of several GB.
REQUIREMENTS = ["torch==2.13.0", "transformers", "safetensors"]
SEED = 0
VOCAB = 64

COMMON = dict(vocab_size=VOCAB, num_hidden_layers=2, layer_norm_epsilon=1e-5, pad_token_id=0,
              bos_token_id=0, eos_token_id=0)
MODELS = {
    # Tied head, biases everywhere, a dt rank above one, the residual in float32.
    "mamba": ("mamba", dict(hidden_size=16, state_size=8, expand=2, conv_kernel=4, time_step_rank=4,
                            use_bias=True, use_conv_bias=True, residual_in_fp32=True,
                            tie_word_embeddings=True)),
    # Untied head without a bias, no biases, another activation after the convolution.
    "mamba-untied-gelu": ("mamba", dict(hidden_size=16, state_size=4, expand=2, conv_kernel=3,
                                        time_step_rank=2, use_bias=False, use_conv_bias=False,
                                        hidden_act="gelu", residual_in_fp32=False,
                                        tie_word_embeddings=False)),
    # Eight heads in two groups, biases, chunks shorter than the inputs.
    "mamba2": ("mamba2", dict(hidden_size=32, num_heads=8, head_dim=8, state_size=8, n_groups=2,
                              expand=2, conv_kernel=4, chunk_size=4, use_bias=True,
                              use_conv_bias=True, residual_in_fp32=True, tie_word_embeddings=True)),
    # Four groups of one head each, untied, a time_step_limit that clips.
    "mamba2-untied-dt-limit": ("mamba2", dict(hidden_size=16, num_heads=4, head_dim=8, state_size=4,
                                              n_groups=4, expand=2, conv_kernel=4, chunk_size=8,
                                              use_bias=False, use_conv_bias=True,
                                              time_step_limit=(0.05, 0.3), residual_in_fp32=True,
                                              tie_word_embeddings=False)),
}


def ensure_venv() -> Path:
    """The fixtures virtualenv's python, made and filled on first use."""
    python = VENV / "bin" / "python"
    if not python.exists():
        venv.create(VENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
    return python


def randomize(model, torch) -> None:
    """Every parameter drawn anew, at scales that keep the logits O(1)-O(10)."""
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if name.endswith("A_log"):
                value = torch.log(1 + 7 * torch.rand(p.shape, generator=g, dtype=p.dtype))
            elif name.endswith(("dt_bias", "dt_proj.bias")):
                value = noise * 0.5 - 2  # softplus: steps around 0.1
            elif "norm" in name or name.endswith(".D"):
                value = 1 + 0.3 * noise
            elif "embeddings" in name:
                value = noise
            elif p.ndim == 1:  # biases
                value = 0.2 * noise
            else:  # projections (out, in) and conv kernels (channels, 1, width)
                value = noise / p[0].numel() ** 0.5
            p.copy_(value)


def make(name: str, family: str, options: dict) -> None:
    import numpy as np
    import torch
    import transformers

    config_cls, model_cls = ((transformers.MambaConfig, transformers.MambaForCausalLM) if family == "mamba"
                             else (transformers.Mamba2Config, transformers.Mamba2ForCausalLM))
    torch.manual_seed(SEED)
    model = model_cls(config_cls(**COMMON, **options)).eval()
    randomize(model, torch)
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr()
    rng = np.random.default_rng(SEED)
    ids = torch.as_tensor(rng.integers(1, VOCAB, size=(2, 12)))
    prompt, n_new = ids[:, :6], 8
    with torch.no_grad():
        logits = model(ids).logits.float()
        model.generation_config.eos_token_id = None  # decode all n_new tokens
        generated = model.generate(prompt, max_new_tokens=n_new, do_sample=False,
                                   pad_token_id=0, use_cache=True)
        greedy = prompt
        for _ in range(n_new):
            greedy = torch.cat([greedy, model(greedy).logits[:, -1].argmax(-1, keepdim=True)], 1)
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    np.savez_compressed(folder / "reference.npz", input_ids=ids.numpy(), logits=logits.numpy(),
                        prompt=prompt.numpy(), generated=generated.numpy(),
                        greedy_forward=greedy.numpy())
    same = bool((generated == greedy).all())
    print(f"{name}: logits {tuple(logits.shape)}, |logits| max {float(logits.abs().max()):.2f}, "
          f"generate == greedy forward: {same}")


def check(folders: list[str]) -> None:
    """Load what ``ssm.pretrained.save`` wrote with transformers; compare with the fixture."""
    import numpy as np
    import torch
    import transformers

    for folder in map(Path, folders):
        ref = np.load(OUT / folder.name / "reference.npz")
        model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
        with torch.no_grad():
            logits = model(torch.as_tensor(ref["input_ids"])).logits.float().numpy()
        err = np.abs(logits - ref["logits"]).max() / np.abs(ref["logits"]).max()
        print(f"{folder.name}: transformers loads it; logits vs the fixture's: max error {err:.1e} "
              f"of the largest logit")
        if not err < 1e-5:
            raise SystemExit(f"{folder}: logits differ from the fixture's ({err:.1e})")


def write_readme() -> None:
    import safetensors
    import torch
    import transformers

    lines = [
        "# Tiny random Hugging Face Mamba / Mamba-2 checkpoints",
        "",
        "Made by `python tools/make_pretrained_fixtures.py` with transformers "
        f"{transformers.__version__}, torch {torch.__version__} and safetensors "
        f"{safetensors.__version__}, on CPU (transformers' PyTorch path, no CUDA kernels).",
        "Each folder is what `save_pretrained` writes, plus `reference.npz` (the logits of",
        "`input_ids`, `generate(do_sample=False)` from `prompt`, and greedy decoding by the full",
        "forward pass; see the script's docstring). Every parameter is random.",
        "",
        "| folder | class | what it covers |",
        "|---|---|---|",
    ]
    what = {
        "mamba": "tied head, in/out projection and conv biases, dt rank 4, residual in float32",
        "mamba-untied-gelu": "untied head without a bias, no biases, `hidden_act=\"gelu\"`, conv width 3",
        "mamba2": "8 heads in 2 groups, biases, chunk 4 (shorter than the inputs), tied head",
        "mamba2-untied-dt-limit": "4 groups of one head, untied, `time_step_limit=(0.05, 0.3)` (clips; "
                                  "transformers' decoding step ignores the limit, which here happens not "
                                  "to change `generated`)",
    }
    for name, (family, _) in MODELS.items():
        cls = "MambaForCausalLM" if family == "mamba" else "Mamba2ForCausalLM"
        lines.append(f"| `{name}` | `{cls}` | {what[name]} |")
    lines += ["", "`python tools/make_pretrained_fixtures.py --check DIR ...` loads folders written by",
              "`ssm.pretrained.save` (named as a fixture) with transformers and compares their logits",
              "with the fixture's. Checked once with the versions above: what `ssm.pretrained.save` writes",
              "from each fixture loads in transformers and gives the fixture's logits exactly.", ""]
    (OUT / "README.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", nargs="+", metavar="DIR", help="folders written by ssm.pretrained.save")
    args = parser.parse_args()
    python = ensure_venv()
    if Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(str(python), [str(python), __file__, *sys.argv[1:]])
    if args.check:
        check(args.check)
        return
    for name, (family, options) in MODELS.items():
        make(name, family, options)
    write_readme()
    sizes = {str(p.relative_to(OUT)): p.stat().st_size for p in sorted(OUT.rglob("*")) if p.is_file()}
    print(json.dumps(sizes, indent=1), f"\ntotal {sum(sizes.values())} bytes")


if __name__ == "__main__":
    main()
