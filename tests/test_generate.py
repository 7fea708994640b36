"""ssm.generate: greedy decoding equals the argmax of the full forward pass re-run on
the growing sequence, for every causal layer; the step logits equal the parallel
ones; sampling is reproducible and keeps to top-k and top-p (against a NumPy
reference of the filters); eos; bad input named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssm.generate import filter_logits, generate
from ssm.layers import SequenceModel

V = 11
CAUSAL = {"s4": dict(d_state=4, l_max=32), "s4d": dict(d_state=4), "mamba": dict(d_state=4),
          "mamba2": dict(d_state=4, headdim=4, chunk_size=4), "attention": dict(n_heads=2), "lstm": {}}


def lm(layer, **kw):
    return SequenceModel(vocab_size=V, d_model=8, n_layers=2, d_output=V, layer=layer,
                         layer_kwargs={**CAUSAL[layer], **kw}, rngs=nnx.Rngs(0))


def prompt_ids(rng, batch=2, length=5):
    return rng.integers(0, V, (batch, length)).astype(np.int32)


@pytest.mark.parametrize("layer", CAUSAL)
def test_greedy_generation_equals_the_argmax_of_the_forward_pass_on_the_growing_sequence(rng, layer):
    model = lm(layer)
    prompt = prompt_ids(rng)
    out = generate(model, prompt, 6)  # a NumPy prompt
    np.testing.assert_array_equal(np.asarray(out[:, :5]), prompt)
    # Causal: one parallel pass over the generated sequence gives the logits of every
    # prefix, so each new token is the argmax of the pass over the tokens before it.
    parallel = model(out[:, :-1])
    np.testing.assert_array_equal(np.asarray(out[:, 5:]), np.asarray(jnp.argmax(parallel[:, 4:], -1)))
    # The logits behind it: prefill, then one step per token, equal the parallel pass.
    logits, state = model.prefill(out[:, :5], max_len=out.shape[1])
    step = nnx.jit(lambda m, token, s: m.step(token, s))  # compiled once, not op by op
    steps = [logits[:, -1]]
    for t in range(5, out.shape[1] - 1):
        step_logits, state = step(model, out[:, t], state)
        steps.append(step_logits)
    np.testing.assert_allclose(np.stack(steps, 1), np.asarray(parallel[:, 4:]), rtol=2e-4, atol=2e-5)


def test_sampling_is_reproducible_with_a_key_and_top_k_1_is_greedy(rng):
    model = lm("mamba")
    prompt = prompt_ids(rng, batch=4)
    a = generate(model, prompt, 8, key=jax.random.key(3), temperature=1.5)
    b = generate(model, prompt, 8, key=jax.random.key(3), temperature=1.5)
    c = generate(model, prompt, 8, key=jax.random.key(4), temperature=1.5)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    np.testing.assert_array_equal(np.asarray(generate(model, prompt, 8, key=jax.random.key(5), top_k=1)),
                                  np.asarray(generate(model, prompt, 8)))


def test_top_k_and_top_p_keep_the_tokens_the_definitions_name(rng):
    logits = rng.normal(size=(6, 20)) * 3
    kept = np.isfinite(np.asarray(filter_logits(jnp.asarray(logits), top_k=4)))
    for row, keep in zip(logits, kept):
        np.testing.assert_array_equal(np.flatnonzero(keep), np.sort(np.argsort(-row)[:4]))
    for p in (0.3, 0.9, 1.0):
        kept = np.isfinite(np.asarray(filter_logits(jnp.asarray(logits), temperature=0.7, top_p=p)))
        for row, keep in zip(logits, kept):
            probs = np.exp(row / 0.7 - (row / 0.7).max())
            probs /= probs.sum()
            order = np.argsort(-probs)
            before = np.cumsum(probs[order]) - probs[order]  # the mass of the more likely tokens
            n = len(row) if p == 1.0 else int((before < p).sum())  # the smallest prefix reaching p
            np.testing.assert_array_equal(np.flatnonzero(keep), np.sort(order[:n]), err_msg=str(p))


def test_after_eos_a_row_emits_only_eos(rng):
    model = lm("s4d")
    prompt = prompt_ids(rng, batch=8)
    free = np.asarray(generate(model, prompt, 10, key=jax.random.key(0), temperature=3.0))[:, 5:]
    eos = int(free[0, 2])  # a token that occurs mid-way in the first row
    out = np.asarray(generate(model, prompt, 10, key=jax.random.key(0), temperature=3.0, eos_id=eos))[:, 5:]
    for row_free, row in zip(free, out):
        hits = np.flatnonzero(row_free == eos)
        if hits.size:
            first = hits[0]
            np.testing.assert_array_equal(row[:first + 1], row_free[:first + 1])
            assert (row[first:] == eos).all()
        else:
            np.testing.assert_array_equal(row, row_free)


@pytest.mark.parametrize("call, message", [
    (lambda m: generate(m, np.arange(4), 3), r"prompt has shape \(4,\).*\(batch, length >= 1\)"),
    (lambda m: generate(m, np.ones((1, 4)), 3), r"dtype float"),
    (lambda m: generate(m, np.ones((1, 4), np.int32), 0), r"max_new_tokens=0"),
    (lambda m: generate(m, np.ones((1, 4), np.int32), 3, key=jax.random.key(0), temperature=0.0), "temperature=0.0"),
    (lambda m: generate(m, np.ones((1, 4), np.int32), 3, key=jax.random.key(0), top_p=1.5), "top_p=1.5"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call(lm("s4d"))


def test_a_layer_without_recurrence_says_so():
    model = SequenceModel(vocab_size=V, d_model=8, n_layers=1, d_output=V, layer="m2", layer_kwargs=dict(l_max=16),
                          rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="MonarchMixer has no recurrent mode"):
        generate(model, np.ones((1, 4), np.int32), 3)


def test_top_p_below_one_samples_within_the_nucleus(rng):
    model = lm("lstm")
    prompt = prompt_ids(rng, batch=3)
    out = generate(model, prompt, 4, key=jax.random.key(2), top_p=0.5)
    logits = model(jnp.asarray(prompt))[:, -1]
    kept = np.isfinite(np.asarray(filter_logits(logits, top_p=0.5)))
    assert all(kept[i, int(out[i, 5])] for i in range(3))


def test_generate_py_writes_text_from_a_byte_level_run_as_users_run_it(tmp_path):
    import pathlib
    import subprocess
    import sys

    from ssm.train import load_config, train_and_evaluate
    from ssm.train.config import dump

    root = pathlib.Path(__file__).resolve().parents[1]
    overrides = ["task.name=text", "task.params={path: 'stdlib:json', glob: '*.py', seq_len: 32, "
                 "max_bytes: 20000}", "task.sizes={validation: 8, test: 8}", "model.layer=mamba",
                 "model.layer_kwargs={d_state: 4}", "model.d_model=16", "model.n_layers=1", "trainer.steps=4",
                 "trainer.batch_size=8", "trainer.devices=1", "schedule.warmup_steps=1", "logging.plot=false",
                 f"task.cache_dir={tmp_path / 'cache'}"]
    workdir = tmp_path / "text-run"
    train_and_evaluate(load_config(None, overrides), workdir)

    def run(command, *args):
        return subprocess.run([*command, "--model", str(workdir), "--prompt", "def é", "--max-new-tokens", "12", *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=240)

    script = [sys.executable, str(root / "generate.py")]
    greedy = run(script)
    assert greedy.returncode == 0, greedy.stderr
    assert greedy.stdout.startswith("def é") and "12 new tokens in" in greedy.stderr and "tokens/s" in greedy.stderr
    console = [str(pathlib.Path(sys.executable).parent / "ssm-generate")]
    assert run(console).stdout == greedy.stdout  # the same command
    sampled = run([sys.executable, "-m", "ssm.generate"], "--seed", "3", "--top-k", "5")  # (reproducible: above)
    assert sampled.returncode == 0 and sampled.stdout.startswith("def é")
    other = tmp_path / "copying-run"  # a run folder of another task: refused from its config alone
    other.mkdir()
    (other / "config.yaml").write_text(dump(load_config(None, [])))
    refused = subprocess.run([*script, "--model", str(other), "--prompt", "x"], capture_output=True, text=True, timeout=240)
    assert refused.returncode == 2 and "trained on the 'copying' task" in refused.stderr


def test_generate_py_continues_a_pretrained_folder_with_its_tokenizer(tmp_path):
    import json
    import pathlib
    import shutil
    import subprocess
    import sys

    from tokenizers import Tokenizer, models, pre_tokenizers

    import ssm.pretrained

    root = pathlib.Path(__file__).resolve().parents[1]
    folder = tmp_path / "mamba"
    shutil.copytree(root / "tests" / "fixtures" / "pretrained" / "mamba", folder)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(folder / "tokenizer.json"))
    out = subprocess.run([sys.executable, str(root / "generate.py"), "--model", str(folder), "--prompt", "t5 t9 t17",
                          "--max-new-tokens", "6"], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    model, config = ssm.pretrained.load(folder)
    ids = generate(model, np.asarray([[5, 9, 17]], np.int32), 6, eos_id=config.get("eos_token_id"))
    assert out.stdout.strip() == tokenizer.decode([int(t) for t in np.asarray(ids[0])])
    (folder / "tokenizer.json").unlink()
    missing = subprocess.run([sys.executable, str(root / "generate.py"), "--model", str(folder), "--prompt", "t1"],
                             capture_output=True, text=True, timeout=240)
    assert missing.returncode == 2 and "has no tokenizer.json" in missing.stderr


def test_repeated_generation_compiles_once(rng):
    from ssm.generate import _decode

    model = lm("s4d")  # 5 new tokens: a shape no other test here compiles
    prompt = prompt_ids(rng)
    before = _decode._cache_size()
    generate(model, prompt, 5)
    compiled = _decode._cache_size()
    assert compiled == before + 1  # through jit's cache (an ahead-of-time compile per call bypassed it)
    again = [generate(model, prompt_ids(rng), 5) for _ in range(2)]  # same shapes, other prompts
    assert _decode._cache_size() == compiled and not np.array_equal(np.asarray(again[0]), np.asarray(again[1]))
