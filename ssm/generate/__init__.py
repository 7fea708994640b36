"""Text generation with recurrent inference: one compiled prefill of the prompt, then
every new token from the model's ``step`` inside ``lax.scan`` (no Python loop per
token), for any causal :class:`~ssm.layers.SequenceModel` (S4, S4D, Mamba, Mamba-2,
attention with its KV cache, LSTM).

    tokens = generate(model, prompt, 64)                                   # greedy
    tokens = generate(model, prompt, 64, key=jax.random.key(0), temperature=0.8, top_p=0.9)

Sampling: logits / ``temperature``, then only the ``top_k`` largest and the smallest
set whose probability reaches ``top_p`` (nucleus) keep their mass; greedy (argmax)
when ``key`` is None. After ``eos_id`` a row keeps emitting ``eos_id``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from ssm.checks import check_positive_int

__all__ = ["generate", "decoder", "filter_logits", "next_token"]


def filter_logits(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """``logits`` scaled by 1/``temperature``, with every token outside the ``top_k``
    largest and outside the nucleus of mass ``top_p`` set to -inf (the most likely token
    always stays): top-k sampling (Fan et al., 2018) and nucleus sampling (Holtzman et
    al., 2020, "The Curious Case of Neural Text Degeneration").

    Args:
      logits: (batch, vocab), any float dtype.
      temperature: > 0.
      top_k: keep the k largest (None: all).
      top_p: keep the smallest set of most likely tokens whose probability reaches
        ``top_p`` (None or 1.0: all).

    Returns:
      (batch, vocab) float32.

    Example:
      >>> import jax.numpy as jnp
      >>> from ssm.generate import filter_logits
      >>> filter_logits(jnp.array([[1.0, 3.0, 2.0]]), top_k=2)
      Array([[-inf,   3.,   2.]], dtype=float32)
      >>> probs = jnp.array([[0.5, 0.3, 0.15, 0.05]])
      >>> jnp.isfinite(filter_logits(jnp.log(probs), top_p=0.7))  # 0.5 + 0.3 reach 0.7
      Array([[ True,  True, False, False]], dtype=bool)
    """
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and top_p < 1.0:  # 1.0: the whole distribution
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the more likely tokens
        keep_sorted = before < top_p  # the first token always (before = 0)
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


def next_token(logits, key, temperature: float, top_k: int | None, top_p: float | None):
    """The next token of every row: argmax when ``key`` is None, else a draw from the
    :func:`filter_logits` distribution.

    Args:
      logits: (batch, vocab).
      key: a ``jax.random`` key, or None (greedy).
      temperature, top_k, top_p: as :func:`filter_logits` (used only with a key).

    Returns:
      (batch,) int32 ids.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ssm.generate import next_token
      >>> logits = jnp.array([[1.0, 3.0, 2.0], [5.0, 0.0, 0.0]])
      >>> next_token(logits, None, 1.0, None, None)
      Array([1, 0], dtype=int32)
      >>> next_token(logits, jax.random.key(0), 1.0, 1, None)  # top_k=1: the draw is the argmax
      Array([1, 0], dtype=int32)
    """
    if key is None:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits, temperature, top_k, top_p)).astype(jnp.int32)


def _check(prompt, max_new_tokens, temperature, top_k, top_p):
    prompt = jnp.asarray(prompt)
    if prompt.ndim != 2 or not jnp.issubdtype(prompt.dtype, jnp.integer) or prompt.shape[1] == 0:
        raise ValueError(f"prompt has shape {prompt.shape} and dtype {prompt.dtype}; expected token ids "
                         f"(batch, length >= 1) (prompts of equal length; one prompt is a batch of one)")
    check_positive_int("max_new_tokens", max_new_tokens)
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r}; expected > 0 (greedy: pass no key)")
    if top_k is not None:
        check_positive_int("top_k", top_k)
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r}; expected 0 < top_p <= 1")
    return prompt.astype(jnp.int32)


def generate(model, prompt, max_new_tokens: int, *, key=None, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, eos_id: int | None = None):
    """Continue ``prompt`` (batch, length) int ids by ``max_new_tokens`` tokens.

    Args:
      model: a :class:`~ssm.layers.SequenceModel` with token inputs and ``pool=None``
        (its layers causal); run in evaluation mode (no dropout).
      prompt: (batch, length) ids, every row of the same length.
      max_new_tokens: tokens to add.
      key: a ``jax.random`` key to sample with; None: greedy.
      temperature, top_k, top_p: as :func:`filter_logits` (sampling only).
      eos_id: once a row emits it, the row continues with ``eos_id`` only.

    Returns:
      (batch, length + max_new_tokens) int32: the prompt, then the new tokens.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from ssm.generate import generate
      >>> from ssm.layers import SequenceModel
      >>> model = SequenceModel(d_model=4, n_layers=2, d_output=10, vocab_size=10, layer="s4d",
      ...                       layer_kwargs=dict(d_state=8), rngs=nnx.Rngs(0))
      >>> prompt = jnp.array([[1, 2, 3, 4]])  # (batch, length) token ids
      >>> tokens = generate(model, prompt, 8)  # greedy; sampling: key=jax.random.key(0), temperature=0.8, ...
      >>> tokens.shape, tokens.dtype, bool((tokens[:, :4] == prompt).all())
      ((1, 12), dtype('int32'), True)
    """
    prompt, graphdef, state, static = _arguments(model, prompt, max_new_tokens, temperature, top_k, top_p, eos_id)
    keys = None if key is None else jax.random.split(key, max_new_tokens)
    new = _decode(graphdef, state, prompt, keys, temperature=float(temperature), **static)  # jit's cache: compiled once
    return jnp.concatenate([prompt, new], axis=1)


def decoder(model, prompt, max_new_tokens: int, *, sample: bool = False, temperature: float = 1.0,
            top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None):
    """:func:`generate` compiled ahead of time for prompts of ``prompt``'s shape:
    ``run(prompt, key) -> tokens`` (``key`` None unless ``sample``). For timing the
    decode apart from its compilation (``ssm-generate`` prints both).

    Args:
      model, prompt, max_new_tokens, temperature, top_k, top_p, eos_id: as
        :func:`generate`; ``prompt`` gives the shape compiled for.
      sample: compile the sampling decoder (``run`` then needs a key) instead of the
        greedy one.

    Returns:
      ``run(prompt, key=None) -> (batch, length + max_new_tokens) int32``, for prompts
      of the compiled shape.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from ssm.generate import decoder, generate
      >>> from ssm.layers import SequenceModel
      >>> model = SequenceModel(d_model=4, n_layers=2, d_output=10, vocab_size=10, layer="s4d",
      ...                       layer_kwargs=dict(d_state=8), rngs=nnx.Rngs(0))
      >>> prompt = jnp.array([[1, 2, 3, 4]])  # (batch, length) token ids
      >>> run = decoder(model, prompt, 8)  # compiled here, once
      >>> bool((run(prompt) == generate(model, prompt, 8)).all())
      True
    """
    prompt, graphdef, state, static = _arguments(model, prompt, max_new_tokens, temperature, top_k, top_p, eos_id)
    keys = jax.random.split(jax.random.key(0), max_new_tokens) if sample else None
    compiled = _decode.lower(graphdef, state, prompt, keys, temperature=float(temperature), **static).compile()

    def run(prompt, key=None):
        if sample != (key is not None):
            raise ValueError("this decoder was compiled " + ("to sample: pass a key" if sample else "greedy: pass no key"))
        prompt = _check(prompt, max_new_tokens, temperature, top_k, top_p)
        keys = None if key is None else jax.random.split(key, max_new_tokens)
        return jnp.concatenate([prompt, compiled(graphdef, state, prompt, keys, temperature=float(temperature))], axis=1)

    return run


def _arguments(model, prompt, max_new_tokens, temperature, top_k, top_p, eos_id):
    """What :func:`generate` and :func:`decoder` pass :func:`_decode`: the checked prompt,
    the model split into graph and state, and the static arguments."""
    prompt = _check(prompt, max_new_tokens, temperature, top_k, top_p)
    if getattr(model, "pool", None) is not None or getattr(model, "encoder", None) is None:
        raise ValueError("model must be a SequenceModel with token inputs and pool=None")
    graphdef, state = nnx.split(model)
    static = dict(max_new_tokens=max_new_tokens, top_k=top_k, top_p=None if top_p is None or top_p == 1.0 else float(top_p),
                  eos_id=eos_id)
    return prompt, graphdef, state, static


@functools.partial(jax.jit, static_argnames=("max_new_tokens", "top_k", "top_p", "eos_id"))
def _decode(graphdef, state, prompt, keys, max_new_tokens, temperature, top_k, top_p, eos_id):
    model = nnx.merge(graphdef, state)
    model.eval()  # a copy inside this trace: the caller's model keeps its mode
    logits, cache = model.prefill(prompt, max_len=prompt.shape[1] + max_new_tokens)

    def pick(logits, i):
        return next_token(logits, None if keys is None else keys[i], temperature, top_k, top_p)

    first = pick(logits[:, -1], 0)
    done = jnp.zeros(first.shape, bool) if eos_id is None else first == eos_id

    def body(carry, i):
        token, cache, done = carry
        logits, cache = model.step(token, cache)
        token = pick(logits, i)
        if eos_id is not None:
            token = jnp.where(done, eos_id, token)
            done = done | (token == eos_id)
        return (token, cache, done), token

    _, rest = jax.lax.scan(body, (first, cache, done), jnp.arange(1, max_new_tokens))
    return jnp.concatenate([first[:, None], rest.T], axis=1)
