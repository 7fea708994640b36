"""ssm.pretrained against tiny random checkpoints made by transformers
(tests/fixtures/pretrained/, made by tools/make_pretrained_fixtures.py): same logits,
same greedy tokens, save/load round trips. No torch, no network."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference as ref
from safetensors.numpy import load_file, save_file  # the test extra brings it

from ssm import pretrained
from ssm.generate import generate
from ssm.layers.parts import ACTIVATIONS

FIXTURES = Path(__file__).parent / "fixtures" / "pretrained"
NAMES = ["mamba", "mamba-untied-gelu", "mamba2", "mamba2-untied-dt-limit"]


def reference(name):
    return np.load(FIXTURES / name / "reference.npz")


@pytest.mark.parametrize("name", NAMES)
def test_logits_equal_transformers(name):
    model, config = pretrained.load(FIXTURES / name)
    ref = reference(name)
    logits = np.asarray(model(jnp.asarray(ref["input_ids"])))
    err = np.abs(logits - ref["logits"]).max() / np.abs(ref["logits"]).max()
    print(f"{name}: logits vs transformers, max error {err:.1e} of the largest logit")
    assert config["model_type"] == name.split("-")[0] and logits.dtype == np.float32
    # float32 against float32 in another summation order: about 3e-7 here.
    np.testing.assert_allclose(logits, ref["logits"], rtol=1e-5, atol=1e-5 * np.abs(ref["logits"]).max())


@pytest.mark.parametrize("name", NAMES)
def test_greedy_continuation_equals_transformers_generate(name):
    model, _ = pretrained.load(FIXTURES / name)
    ref = reference(name)
    tokens = np.asarray(generate(model, jnp.asarray(ref["prompt"]), 8))
    np.testing.assert_array_equal(tokens, ref["greedy_forward"])
    np.testing.assert_array_equal(tokens, ref["generated"])


def test_the_options_reach_the_model():
    m, _ = pretrained.load(FIXTURES / "mamba2")
    assert m.head is None and m.final_norm.epsilon == 1e-5 and m.blocks[0].residual_in_fp32
    mixer = m.blocks[0].mixer
    assert (mixer.nheads, mixer.ngroups, mixer.chunk_size) == (8, 2, 4) and mixer.in_proj.bias is not None
    m, _ = pretrained.load(FIXTURES / "mamba2-untied-dt-limit")
    assert m.blocks[0].mixer.dt_limit == (0.05, 0.3) and m.head.bias is None
    m, _ = pretrained.load(FIXTURES / "mamba-untied-gelu")
    assert m.blocks[0].mixer.activation == "gelu" and m.blocks[0].mixer.conv1d.bias is None


def test_hidden_act_names_read_as_hugging_faces_functions(rng, x64):
    """transformers' ``"gelu"`` is the exact erf GELU, ``"gelu_new"`` and
    ``"gelu_pytorch_tanh"`` its tanh approximation; what :func:`pretrained.save` writes
    reads back as the same function."""
    x = 3 * rng.normal(size=256)
    for hf, formula in {"gelu": ref.gelu_erf, "gelu_new": ref.gelu_tanh, "gelu_pytorch_tanh": ref.gelu_tanh}.items():
        np.testing.assert_allclose(ACTIVATIONS[pretrained.ACTS[hf]](jnp.asarray(x)), formula(x), rtol=1e-13,
                                   atol=1e-14, err_msg=hf)
    assert set(pretrained.HF_ACTS) == set(ACTIVATIONS)  # save has a name for every activation
    for ours, hf in pretrained.HF_ACTS.items():
        assert pretrained.ACTS[hf] == ours


def flat_params(model):
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.parametrize("name", NAMES)
def test_save_then_load_round_trips_bitwise(name, tmp_path):
    model, config = pretrained.load(FIXTURES / name)
    pretrained.save(model, tmp_path / name, config=config)
    again, config2 = pretrained.load(tmp_path / name)
    a, b = flat_params(model), flat_params(again)
    assert a.keys() == b.keys()
    for p in a:
        assert a[p].dtype == b[p].dtype and np.array_equal(a[p], b[p]), p
    ids = jnp.asarray(reference(name)["input_ids"])
    assert np.array_equal(np.asarray(model(ids)), np.asarray(again(ids)))
    assert config2["pad_token_id"] == config["pad_token_id"]


@pytest.mark.parametrize("name", NAMES)
def test_save_writes_the_names_shapes_dtypes_and_config_transformers_wrote(name, tmp_path):
    """What transformers reads; loading a saved folder in transformers gives the fixture's
    logits exactly (checked with tools/make_pretrained_fixtures.py --check)."""
    model, _ = pretrained.load(FIXTURES / name)
    pretrained.save(model, tmp_path)  # no config given: everything from the model
    ours, theirs = load_file(tmp_path / "model.safetensors"), load_file(FIXTURES / name / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert (ours[key].shape, ours[key].dtype) == (theirs[key].shape, theirs[key].dtype), key
        assert np.array_equal(ours[key], theirs[key]), key
    written = json.loads((tmp_path / "config.json").read_text())
    fixture = json.loads((FIXTURES / name / "config.json").read_text())
    for key, value in written.items():
        if key not in ("expand", "time_step_limit"):
            assert fixture[key] == value, key
    assert float(written["expand"]) == float(fixture["expand"])


def test_sharded_checkpoints_load(tmp_path):
    tensors = load_file(FIXTURES / "mamba2" / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, tmp_path / file, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(FIXTURES / "mamba2" / "config.json", tmp_path)
    sharded, _ = pretrained.load(tmp_path)
    whole, _ = pretrained.load(FIXTURES / "mamba2")
    ids = jnp.asarray(reference("mamba2")["input_ids"])
    assert np.array_equal(np.asarray(sharded(ids)), np.asarray(whole(ids)))


def test_dtype_casts_parameters_and_activations():
    model, _ = pretrained.load(FIXTURES / "mamba", dtype=jnp.bfloat16)
    assert model.encoder.embedding[...].dtype == jnp.bfloat16
    assert model.blocks[0].mixer.A_log[...].dtype == jnp.float32  # the dynamics stay float32
    ref = reference("mamba")
    logits = np.asarray(model(jnp.asarray(ref["input_ids"])))
    err = np.linalg.norm(logits - ref["logits"]) / np.linalg.norm(ref["logits"])
    print(f"bf16 load: logits relative error {err:.1e}")
    assert err < 5e-2


def copy_fixture(name, tmp_path):
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    return folder


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    folder = copy_fixture("mamba", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match=r"model_type='llama' in config.json; expected one of \('mamba', 'mamba2'\)"):
        pretrained.load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "state_size": 4}))
    with pytest.raises(ValueError, match=r"A_log has shape \(32, 8\); its config.json gives \(32, 4\)"):
        pretrained.load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "mish"}))
    with pytest.raises(ValueError, match="hidden_act='mish' in config.json"):
        pretrained.load(folder)
    (folder / "config.json").write_text(json.dumps(config))
    tensors = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if k != "backbone.norm_f.weight"}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="no tensor 'backbone.norm_f.weight'"):
        pretrained.load(folder)
    save_file({**tensors, "backbone.extra": tensors["backbone.norm_f.weight"]}, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"tensors \['backbone.extra'\] have no place"):
        pretrained.load(folder)
    with pytest.raises(ValueError, match="is a file; expected a checkpoint folder"):
        pretrained.load(folder / "config.json")


def test_save_refuses_a_model_without_the_layout():
    from ssm.layers import SequenceModel

    s4d = SequenceModel(d_model=8, n_layers=1, d_output=7, vocab_size=7, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="layer must be 'mamba' or 'mamba2'; norm must be 'rms'"):
        pretrained.save(s4d, "unused")


def test_a_repo_id_offline_gives_a_clear_error(tmp_path):
    """A string that is not a folder is a Hub repo id; offline, nothing is fetched."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    code = "from ssm import pretrained; pretrained.load('nobody/no-such-mamba')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert ("OSError: path='nobody/no-such-mamba' is not a folder here, so it was taken as a Hugging Face Hub "
            "repo id, and fetching it failed (HF_HUB_OFFLINE is set") in result.stderr


def test_missing_packages_name_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "safetensors" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"ssm.pretrained.load needs safetensors, which is not installed: "
                                                  r"pip install 'ssm-jax\[pretrained\]'"):
        pretrained.load(FIXTURES / "mamba")


def as_mamba_ssm(folder: Path, target: Path, pad_multiple: int) -> None:
    """The same checkpoint in mamba_ssm's layout: its config.json (MambaConfig's fields)
    and its tensor names (``backbone.embedding``), vocabulary padded its way."""
    hf = json.loads((folder / "config.json").read_text())
    ssm_cfg = {"layer": "Mamba2" if hf["model_type"] == "mamba2" else "Mamba1", "d_state": hf["state_size"],
               "d_conv": hf["conv_kernel"], "expand": hf["expand"], "bias": hf["use_bias"],
               "conv_bias": hf["use_conv_bias"]}
    if hf["model_type"] == "mamba2":
        ssm_cfg.update(headdim=hf["head_dim"], ngroups=hf["n_groups"], chunk_size=hf["chunk_size"])
    else:
        ssm_cfg.update(dt_rank=hf["time_step_rank"])
    target.mkdir()
    vocab = hf["vocab_size"] - pad_multiple // 2  # a vocabulary the padding brings back to the embedding's rows
    (target / "config.json").write_text(json.dumps(dict(
        d_model=hf["hidden_size"], n_layer=hf["num_hidden_layers"], vocab_size=vocab, ssm_cfg=ssm_cfg,
        rms_norm=True, residual_in_fp32=True, pad_vocab_size_multiple=pad_multiple,
        tie_embeddings=hf["tie_word_embeddings"], d_intermediate=0)))
    tensors = load_file(folder / "model.safetensors")
    tensors["backbone.embedding.weight"] = tensors.pop("backbone.embeddings.weight")
    save_file(tensors, target / "model.safetensors")


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_a_mamba_ssm_checkpoint_of_the_same_weights_gives_the_same_logits(name, tmp_path):
    as_mamba_ssm(FIXTURES / name, tmp_path / name, pad_multiple=16)
    model, config = pretrained.load(tmp_path / name)
    ref = reference(name)
    assert config["model_type"] == name and config["vocab_size"] == 64
    np.testing.assert_array_equal(np.asarray(model(jnp.asarray(ref["input_ids"]))),
                                  np.asarray(pretrained.load(FIXTURES / name)[0](jnp.asarray(ref["input_ids"]))))


def test_a_mamba_ssm_model_with_mlp_or_attention_layers_is_refused(tmp_path):
    as_mamba_ssm(FIXTURES / "mamba", tmp_path / "m", pad_multiple=16)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "d_intermediate": 64, "attn_layer_idx": [1]}))
    with pytest.raises(ValueError, match="d_intermediate must be 0 .*attn_layer_idx must be empty"):
        pretrained.load(tmp_path / "m")


def test_a_checkpoint_stored_in_bfloat16_loads_in_bfloat16(tmp_path):
    import ml_dtypes

    folder = tmp_path / "bf16"
    shutil.copytree(FIXTURES / "mamba2", folder)
    tensors = load_file(folder / "model.safetensors")
    save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}, folder / "model.safetensors")
    model, _ = pretrained.load(folder)
    ref = reference("mamba2")
    assert model.encoder.embedding[...].dtype == jnp.bfloat16
    logits = np.asarray(model(jnp.asarray(ref["input_ids"])), np.float32)
    err = np.abs(logits - ref["logits"]).max() / np.abs(ref["logits"]).max()
    print(f"bf16 weights: logits within {err:.1e} of the largest float32 logit")
    assert err < 5e-2  # bf16 keeps 8 bits of mantissa; the SSM dynamics stay float32
