"""Published Mamba and Mamba-2 checkpoints in the Hugging Face layout.

``load(path)`` reads a folder of ``MambaForCausalLM`` or ``Mamba2ForCausalLM``
(``config.json`` and ``model.safetensors``, or shards ``model-0000i-of-0000n.safetensors``
with ``model.safetensors.index.json``) into a :class:`~ssm.layers.SequenceModel` that
computes the same function; ``save(model, path)`` writes that layout back, with
Hugging Face's tensor names and layouts, so ``transformers`` loads it. Weights are
read with safetensors' NumPy API: no torch. A ``path`` that is not a folder is a Hub
repo id, fetched with ``huggingface_hub`` (``pip install 'ssm-jax[pretrained]'``).

Layouts (Hugging Face -> ours): linear weights (out, in) -> kernels (in, out); the
depthwise convolution (channels, 1, width) -> (width, channels); norm ``weight`` ->
``scale``; ``A_log``, ``D``, ``dt_bias`` as they are; ``lm_head.weight`` is the
embedding when ``tie_word_embeddings`` (not stored then). Both keep in_proj's order:
Mamba ``[x, z]``, Mamba-2 ``[z, x, B, C, dt]``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssm.extras import require
from ssm.layers import SequenceModel
from ssm.layers.mamba import Mamba
from ssm.layers.mamba2 import Mamba2

__all__ = ["load", "save", "from_mamba_ssm", "model_kwargs", "model_config", "hf_name", "to_ours", "to_hf",
           "read_tensors", "CLASSES", "ACTS", "HF_ACTS", "WEIGHTS", "INDEX"]

#: The Hugging Face class of each ``model_type`` read and written.
CLASSES = {"mamba": "MambaForCausalLM", "mamba2": "Mamba2ForCausalLM"}
#: Hugging Face's ``hidden_act`` -> ours (``ssm.layers.parts.ACTIVATIONS``).
ACTS = {"silu": "silu", "swish": "silu", "relu": "relu", "tanh": "tanh", "linear": "identity",
        "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
#: Ours -> Hugging Face's ``hidden_act`` (what :func:`save` writes).
HF_ACTS = {"silu": "silu", "relu": "relu", "tanh": "tanh", "identity": "linear",
           "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
#: The file names of the weights, unsharded, and of a sharded checkpoint's index.
WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"


def _require(what: str, *modules: str) -> None:
    require("pretrained", *modules, what=what)


# Configuration -------------------------------------------------------------------
def _get(config: dict, key: str, default=None):
    value = config.get(key, default)
    if value is None:
        raise ValueError(f"config.json has no {key!r}; a {config.get('model_type')} config needs it")
    return value


def _float(value) -> float:
    """A number of config.json; transformers 5 writes infinity as ``{"__float__": "Infinity"}``."""
    return float(value["__float__"] if isinstance(value, dict) and "__float__" in value else value)


def _whole(name: str, value: float) -> int:
    if not float(value).is_integer():
        raise ValueError(f"{name}={value!r} must be a whole number")
    return int(value)


def from_mamba_ssm(config: dict) -> dict:
    """A ``mamba_ssm`` ``config.json`` (``d_model``, ``n_layer``, ``vocab_size``,
    ``ssm_cfg``, ``rms_norm``, ``residual_in_fp32``, ``pad_vocab_size_multiple``,
    ``tie_embeddings``; ``MambaLMHeadModel``'s) -> the Hugging Face config of the same
    model, with mamba_ssm's defaults (Mamba: d_state 16; Mamba-2: d_state 128, head
    width 64, chunk 256; norms' epsilon 1e-5). Models with MLP or attention layers
    (``d_intermediate``, ``attn_layer_idx``) or LayerNorm have no such config: refused
    (a ValueError naming why).

    Args:
      config: the parsed ``config.json`` of a ``mamba_ssm`` checkpoint.

    Returns:
      A dict in the layout of Hugging Face's ``MambaConfig`` / ``Mamba2Config``.
    """
    ssm_cfg = dict(config.get("ssm_cfg") or {})
    kind = {"Mamba1": "mamba", "Mamba2": "mamba2"}.get(ssm_cfg.pop("layer", "Mamba1"))
    problems = [why for why, bad in [
        ("ssm_cfg.layer must be 'Mamba1' or 'Mamba2'", kind is None),
        ("d_intermediate must be 0 (no MLP layers)", config.get("d_intermediate", 0)),
        ("attn_layer_idx must be empty", config.get("attn_layer_idx")),
        ("rms_norm must be true", not config.get("rms_norm", True))] if bad]
    if problems:
        raise ValueError(f"mamba_ssm config.json describes a model ssm.pretrained cannot build: {'; '.join(problems)}")
    d, multiple = _get(config, "d_model"), config.get("pad_vocab_size_multiple", 8)
    vocab = _get(config, "vocab_size")
    hf = dict(model_type=kind, hidden_size=d, num_hidden_layers=_get(config, "n_layer"),
              vocab_size=vocab + (-vocab % multiple), conv_kernel=ssm_cfg.get("d_conv", 4),
              expand=ssm_cfg.get("expand", 2), use_bias=ssm_cfg.get("bias", False),
              use_conv_bias=ssm_cfg.get("conv_bias", True), hidden_act="silu", layer_norm_epsilon=1e-5,
              residual_in_fp32=config.get("residual_in_fp32", True),
              tie_word_embeddings=config.get("tie_embeddings", True))
    if kind == "mamba":
        hf.update(state_size=ssm_cfg.get("d_state", 16), time_step_rank=ssm_cfg.get("dt_rank", "auto"),
                  intermediate_size=int(hf["expand"] * d))
    else:
        headdim = ssm_cfg.get("headdim", 64)
        hf.update(state_size=ssm_cfg.get("d_state", 128), head_dim=headdim,
                  num_heads=int(hf["expand"] * d) // headdim, n_groups=ssm_cfg.get("ngroups", 1),
                  chunk_size=ssm_cfg.get("chunk_size", 256),
                  time_step_limit=list(ssm_cfg.get("dt_limit", (0.0, math.inf))))
    return hf


def model_kwargs(config: dict) -> dict:
    """A Hugging Face ``config.json`` (dict) -> :class:`SequenceModel` arguments (without
    ``vocab_size``/``d_output``, which the embedding's shape gives, and ``rngs``).

    Args:
      config: a ``MambaConfig`` or ``Mamba2Config`` as a dict (``model_type`` ``"mamba"``
        or ``"mamba2"``).

    Returns:
      A dict of keyword arguments of :class:`~ssm.layers.SequenceModel`.
    """
    kind = config.get("model_type")
    if kind not in CLASSES:
        raise ValueError(f"model_type={kind!r} in config.json; expected one of {tuple(CLASSES)}")
    act = _get(config, "hidden_act", "silu")
    if act not in ACTS:
        raise ValueError(f"hidden_act={act!r} in config.json; expected one of {tuple(ACTS)}")
    d = _get(config, "hidden_size")
    common = dict(d_state=_get(config, "state_size"), d_conv=_get(config, "conv_kernel", 4),
                  conv_bias=bool(config.get("use_conv_bias", True)), bias=bool(config.get("use_bias", False)),
                  activation=ACTS[act])
    if kind == "mamba":
        d_inner = config.get("intermediate_size") or int(_get(config, "expand", 2) * d)
        rank = config.get("time_step_rank", "auto")
        layer_kwargs = dict(common, expand=_whole("intermediate_size / hidden_size", d_inner / d),
                            dt_rank=math.ceil(d / 16) if rank == "auto" else int(rank))
    else:
        d_inner = int(_get(config, "expand", 2) * d)
        heads, headdim = _get(config, "num_heads"), _get(config, "head_dim")
        if heads * headdim != d_inner:
            raise ValueError(f"num_heads * head_dim = {heads} * {headdim} must equal expand * hidden_size "
                             f"= {d_inner}")
        limit = config.get("time_step_limit") or (0.0, math.inf)
        layer_kwargs = dict(common, expand=d_inner / d, headdim=headdim, ngroups=_get(config, "n_groups", 1),
                            chunk_size=_get(config, "chunk_size", 256), dt_limit=tuple(map(_float, limit)),
                            norm_eps=_get(config, "layer_norm_epsilon", 1e-5))
    return dict(d_model=d, n_layers=_get(config, "num_hidden_layers"), layer=kind, layer_kwargs=layer_kwargs,
                norm="rms", prenorm=True, post=None, tie_embeddings=bool(config.get("tie_word_embeddings", True)),
                head_bias=False, norm_eps=_get(config, "layer_norm_epsilon", 1e-5),
                residual_in_fp32=bool(config.get("residual_in_fp32", True)))


def model_config(model: SequenceModel) -> dict:
    """The Hugging Face ``config.json`` (dict) of a Mamba or Mamba-2 :class:`SequenceModel`;
    a model Hugging Face's classes cannot express raises ``ValueError`` naming why.

    Args:
      model: a :class:`~ssm.layers.SequenceModel` with token inputs, RMS pre-norm
        blocks of Mamba or Mamba-2 layers, no post projection, MLP or pooling.

    Returns:
      A JSON-serializable dict, the inverse of :func:`model_kwargs`.
    """
    if not isinstance(model, SequenceModel) or not isinstance(model.encoder, nnx.Embed):
        raise ValueError(f"model must be a SequenceModel with token inputs; got {type(model).__name__}")
    first = model.blocks[0]
    mixer = first.mixer
    kind = {Mamba: "mamba", Mamba2: "mamba2"}.get(type(mixer))
    problems = [name for name, bad in [
        ("layer must be 'mamba' or 'mamba2'", kind is None),
        ("norm must be 'rms'", not isinstance(first.norm, nnx.RMSNorm)),
        ("prenorm must be True", not first.prenorm or model.final_norm is None),
        ("post must be None", first.out is not None), ("mlp must be None", first.mlp is not None),
        ("pool must be None", model.pool is not None),
        ("an untied head must have no bias", model.head is not None and model.head.bias is not None),
    ] if bad]
    if problems:
        raise ValueError(f"model has no Hugging Face Mamba layout: {'; '.join(problems)}")
    vocab, d = model.encoder.embedding.shape
    eps = float(model.final_norm.epsilon)
    config: dict[str, Any] = dict(
        architectures=[CLASSES[kind]], model_type=kind, vocab_size=vocab, hidden_size=d,
        num_hidden_layers=len(model.blocks), state_size=mixer.d_state, conv_kernel=mixer.conv1d.width,
        expand=mixer.d_inner // d if mixer.d_inner % d == 0 else mixer.d_inner / d,
        use_bias=mixer.in_proj.bias is not None, use_conv_bias=mixer.conv1d.bias is not None,
        hidden_act=HF_ACTS[mixer.activation], layer_norm_epsilon=eps,
        residual_in_fp32=first.residual_in_fp32, tie_word_embeddings=model.head is None,
        dtype=str(np.dtype(model.encoder.embedding[...].dtype)))
    if kind == "mamba":
        config.update(intermediate_size=mixer.d_inner, time_step_rank=mixer.dt_rank)
    else:
        if mixer.norm.eps != eps:
            raise ValueError(f"the gated norm's norm_eps={mixer.norm.eps!r} differs from the block norms' "
                             f"{eps!r}; Hugging Face's Mamba-2 has one layer_norm_epsilon")
        config.update(num_heads=mixer.nheads, head_dim=mixer.headdim, n_groups=mixer.ngroups,
                      chunk_size=mixer.chunk_size, time_step_limit=list(mixer.dt_limit))
    return config


# Tensor names and layouts --------------------------------------------------------
def hf_name(path: tuple) -> str:
    """Our parameter path, e.g. ``('blocks', 0, 'mixer', 'in_proj', 'kernel')``, -> its
    Hugging Face name ``backbone.layers.0.mixer.in_proj.weight`` (a str; a ValueError
    for a path with no such name)."""
    special = {("encoder", "embedding"): "backbone.embeddings.weight",
               ("final_norm", "scale"): "backbone.norm_f.weight", ("head", "kernel"): "lm_head.weight"}
    if path in special:
        return special[path]
    if path[0] != "blocks":
        raise ValueError(f"parameter {path!r} has no Hugging Face name")
    *rest, leaf = path[2:]
    leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
    return ".".join(["backbone", "layers", str(path[1]), *rest, leaf])


def _is_conv(path: tuple) -> bool:
    return path[-2:] == ("conv1d", "kernel")


def to_ours(path: tuple, w: np.ndarray) -> np.ndarray:
    """A Hugging Face tensor -> our layout: conv (C, 1, K) -> (K, C); linear (out, in) ->
    (in, out); others unchanged. ``path`` is our parameter path (:func:`hf_name`),
    ``w`` a NumPy array; returns a NumPy array (a view)."""
    if _is_conv(path):
        if w.ndim != 3 or w.shape[1] != 1:
            raise ValueError(f"{hf_name(path)} has shape {w.shape}; expected (channels, 1, width)")
        return w[:, 0, :].T
    return w.T if path[-1] == "kernel" else w


def to_hf(path: tuple, w: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_ours`: our parameter at ``path`` (NumPy) -> the Hugging
    Face layout (conv (K, C) -> (C, 1, K); kernels (in, out) -> (out, in))."""
    if _is_conv(path):
        return w.T[:, None, :]
    return w.T if path[-1] == "kernel" else w


# Files ---------------------------------------------------------------------------
def _folder(path) -> Path:
    """An existing folder, or a Hub repo id fetched (config and safetensors only)."""
    folder = Path(os.fspath(path)).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ValueError(f"path={os.fspath(path)!r} is a file; expected a checkpoint folder or a Hub repo id")
    _require(f"ssm.pretrained.load({os.fspath(path)!r}) (a Hub repo id)", "huggingface_hub")
    import huggingface_hub

    try:
        return Path(huggingface_hub.snapshot_download(
            os.fspath(path), allow_patterns=["config.json", "*.safetensors", INDEX, "tokenizer*"]))
    except Exception as e:  # offline, no such repo, no network: say what was tried
        offline = " (HF_HUB_OFFLINE is set: only the local cache is searched)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise OSError(f"path={os.fspath(path)!r} is not a folder here, so it was taken as a Hugging Face Hub "
                      f"repo id, and fetching it failed{offline}: {type(e).__name__}: {e}") from e


def read_tensors(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of ``model.safetensors`` in ``folder`` (a ``Path``), or of the shards
    its index names: ``{Hugging Face name: NumPy array}`` in the stored dtypes."""
    from safetensors.numpy import load_file

    if (folder / INDEX).exists():
        files = sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))
    elif (folder / WEIGHTS).exists():
        files = [WEIGHTS]
    else:
        raise FileNotFoundError(f"{folder} has neither {WEIGHTS} nor {INDEX}")
    tensors: dict[str, np.ndarray] = {}
    for name in files:
        tensors.update(load_file(folder / name))
    if "backbone.embedding.weight" in tensors:  # mamba_ssm's name, as transformers accepts it
        tensors.setdefault("backbone.embeddings.weight", tensors.pop("backbone.embedding.weight"))
    return tensors


# Public API ----------------------------------------------------------------------
def load(path, *, dtype=None) -> tuple[SequenceModel, dict]:
    """Read a Hugging Face ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` checkpoint, or a
    ``mamba_ssm`` one whose weights are safetensors (:func:`from_mamba_ssm`).

    Args:
      path: a folder with ``config.json`` and ``model.safetensors`` (or shards and
        their index), or a Hub repo id (any string that is not a folder here), fetched
        with ``huggingface_hub.snapshot_download``.
      dtype: parameters' and activations' dtype; None: the checkpoint's (its
        embedding's). ``A_log``, ``D`` and the step-size biases stay float32 at least.

    Returns:
      ``(model, config)``: a :class:`SequenceModel` with ``ids`` (batch, length) ->
      logits (batch, length, vocab) equal to the checkpoint's (vocab: the embedding's
      rows, padding included), and ``config.json`` as a dict (a mamba_ssm config:
      its Hugging Face equivalent).
    """
    _require("ssm.pretrained.load", "safetensors")
    folder = _folder(path)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} has no config.json")
    config = json.loads((folder / "config.json").read_text())
    if "model_type" not in config and "d_model" in config:  # mamba_ssm's layout
        config = from_mamba_ssm(config)
    kwargs = model_kwargs(config)
    tensors = read_tensors(folder)
    if "backbone.embeddings.weight" not in tensors:
        raise ValueError(f"{folder}: no backbone.embeddings.weight among {sorted(tensors)[:5]}...")
    embedding = tensors["backbone.embeddings.weight"]
    dtype = jnp.dtype(embedding.dtype if dtype is None else dtype)
    vocab = embedding.shape[0]
    abstract = nnx.eval_shape(lambda: SequenceModel(**kwargs, vocab_size=vocab, d_output=vocab, dtype=dtype,
                                                    param_dtype=dtype, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    used = set()
    leaves = []
    for path_, var in nnx.to_flat_state(state):
        name = hf_name(path_)
        if name not in tensors:
            raise ValueError(f"{folder}: the checkpoint has no tensor {name!r}, which its config.json needs")
        w = to_ours(path_, tensors[name])
        want = var.get_value()
        if w.shape != want.shape:
            raise ValueError(f"{folder}: {name} has shape {tensors[name].shape}; its config.json gives "
                             f"{to_hf(path_, np.empty(want.shape)).shape}")
        used.add(name)
        leaves.append((path_, var.replace(jnp.asarray(w, want.dtype))))
    if kwargs["tie_embeddings"]:
        used.add("lm_head.weight")  # a tied head stored anyway is the embedding
    extra = sorted(set(tensors) - used)
    if extra:
        raise ValueError(f"{folder}: tensors {extra} have no place in the model its config.json describes")
    return nnx.merge(graphdef, nnx.from_flat_state(leaves)), config


def save(model: SequenceModel, path, *, config: dict | None = None) -> Path:
    """Write ``model`` in the Hugging Face layout: ``path/config.json`` and
    ``path/model.safetensors`` (Hugging Face's names, layouts and dtypes; a tied head
    is not stored, as ``save_pretrained`` does). ``config``: more ``config.json``
    fields (e.g. the token ids of the config :func:`load` returned); those the model
    determines are taken from the model. Returns the folder."""
    _require("ssm.pretrained.save", "safetensors")
    from safetensors.numpy import save_file

    hf_config = {**(config or {}), **model_config(model)}
    folder = Path(os.fspath(path))
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {hf_name(p): np.ascontiguousarray(to_hf(p, np.asarray(jax.device_get(v.get_value()))))
               for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return folder
