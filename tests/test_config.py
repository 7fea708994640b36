"""Experiment configs: YAML with `extends:`, `--set` overrides, and clear errors."""

import dataclasses
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from ssm.train.config import Config, ConfigError, apply_override, dump, load_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name != "bench")  # bench presets: test_bench_memory


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return path


def test_defaults_are_a_valid_config():
    config = load_config(None)
    assert config == Config()


def test_extends_merges_key_by_key_and_set_overrides(tmp_path):
    base = write(tmp_path, "base.yaml", {"name": "base", "model": {"d_model": 32, "n_layers": 3},
                                         "optim": {"lr": 0.01}})
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\nmodel:\n  n_layers: 5\n")
    config = load_config(child, ["optim.lr=3e-4", "trainer.steps=700", "model.layer_kwargs={d_state: 16}",
                                 "optim.grad_clip=null"])
    assert config.name == "child"
    assert config.model.d_model == 32 and config.model.n_layers == 5  # inherited, overridden
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float)
    assert config.trainer.steps == 700
    assert config.model.layer_kwargs == {"d_state": 16}
    assert config.optim.grad_clip is None


def test_dump_round_trips(tmp_path):
    config = load_config(None, ["model.layer=s4", "task.params.l_noise=12", "name=x"])
    again = load_config(write(tmp_path, "dumped.yaml", dump(config)))
    assert again == config


BAD = [
    ({"bogus": 1}, r"bogus: unknown key; valid keys: \("),
    ({"model": {"n_layer": 2}}, r"model\.n_layer: unknown key; valid keys: .*'n_layers'"),
    ({"model": {"d_model": "big"}}, r"model\.d_model: expected int, got 'big' \(str\)"),
    ({"trainer": {"steps": True}}, r"trainer\.steps: expected int, got True \(bool\)"),
    ({"trainer": {"steps": 2.5}}, r"trainer\.steps: expected int, got 2\.5 \(float\)"),
    ({"optim": {"lr": -1}}, r"optim\.lr: -1\.0 must be > 0"),
    ({"model": {"layer": "gru"}}, r"model\.layer='gru'; expected one of \('s4', 's4d'"),
    ({"model": {"dropout": 1.0}}, r"model\.dropout: 1\.0 must be in \[0, 1\)"),
    ({"model": {"block": "bert"}}, r"model\.block='bert'; expected one of \('residual', 'm2'\)"),
    ({"model": {"layer_kwargs": {"d_stat": 8}}}, r"model\.layer_kwargs\.d_stat: not an option of layer 's4d'"),
    ({"task": {"name": "sorting"}}, r"task\.name='sorting'; expected one of \("),
    ({"task": {"params": {"l_nois": 3}}}, r"task\.params\.l_nois: not a parameter of task 'copying'"),
    ({"task": {"params": {"l_noise": -5}}}, r"task\.params: .*l_noise=-5"),
    ({"task": {"sizes": {"dev": 10}}}, r"task\.sizes='dev'; expected one of \('train', 'validation', 'test'\)"),
    ({"schedule": {"decay": "step"}}, r"schedule\.decay='step'; expected one of"),
    ({"optim": {"b2": 1.5}}, r"optim\.b2: 1\.5 must be in \[0, 1\)"),
    ({"model": "s4"}, r"model: expected a mapping, got 's4' \(str\)"),
]


@pytest.mark.parametrize("data, match", BAD, ids=[re.split("[:=]", m)[0].replace("\\", "") for _, m in BAD])
def test_bad_configs_name_the_key_the_value_and_the_choices(tmp_path, data, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, "bad.yaml", data))


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "broken.yaml", "model: [unclosed\n"))
    a = write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(a)
    with pytest.raises(ConfigError, match=r"--set 'optim\.lr': expected key\.path=value"):
        apply_override({}, "optim.lr")
    with pytest.raises(ConfigError, match=r"optim\.lr: expected float, got 'fast' \(str\)"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"--set '~model\.layer_kwargs\.init': the config sets no 'model\.layer_kwargs' "
                       r"to delete \(keys set under model: \('d_model',\)\)"):
        load_config(None, ["model.d_model=8", "~model.layer_kwargs.init"])


def test_a_key_is_deleted_with_a_tilde_and_a_mapping_replaced_by_deleting_then_setting_it():
    s4d = ROOT / "configs" / "copying" / "s4d.yaml"
    base = load_config(s4d)
    assert base.model.layer == "s4d" and base.model.layer_kwargs  # S4D options, which Mamba refuses
    with pytest.raises(ConfigError, match=r"not an option of layer 'mamba'.*--set '~model\.layer_kwargs"):
        load_config(s4d, ["model.layer=mamba"])
    mamba = load_config(s4d, ["model.layer=mamba", "~model.layer_kwargs"])
    assert mamba.model.layer == "mamba" and mamba.model.layer_kwargs == {}
    key = next(iter(base.model.layer_kwargs))
    one_less = load_config(s4d, [f"~model.layer_kwargs.{key}"])
    assert one_less.model.layer_kwargs == {k: v for k, v in base.model.layer_kwargs.items() if k != key}
    replaced = load_config(s4d, ["~model.layer_kwargs", "model.layer_kwargs={d_state: 8}"])
    assert replaced.model.layer_kwargs == {"d_state": 8}
    merged = load_config(s4d, ["model.layer_kwargs={d_state: 8}"])  # without the ~, a mapping merges
    assert merged.model.layer_kwargs == {**base.model.layer_kwargs, "d_state": 8}


def run_train(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_help_and_print_config_work_without_training():
    out = run_train("--help")
    assert out.returncode == 0 and "--set" in out.stdout and "--print-config" in out.stdout
    out = run_train("--print-config", "--set", "model.d_model=48")
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["model"]["d_model"] == 48 and printed["name"] == "default"
    bad = run_train("--set", "model.layer=gru")
    assert bad.returncode == 2 and "model.layer='gru'; expected one of" in bad.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_every_shipped_config_is_valid(path):
    config = load_config(path)
    assert config.name


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*/s4d.yaml")))
def test_print_config_spells_out_the_task_defaults_and_reads_back_as_the_same_run(path):
    from ssm import data
    from ssm.train.config import dump, from_dict, with_task_defaults

    config = load_config(ROOT / path)
    full = with_task_defaults(config)
    task = data.get_task(config.task.name)
    assert set(full.task.params) == {f.name for f in dataclasses.fields(task.params)}
    assert set(full.task.sizes) >= set(config.task.sizes) and full.task.sizes.items() >= config.task.sizes.items()
    again = from_dict(Config, yaml.safe_load(dump(full)))
    assert data.make_params(task, again.task.params) == data.make_params(task, config.task.params)
    assert again.task.sizes == full.task.sizes and again.model == config.model and again.optim == config.optim


def test_model_dtypes_are_model_keys_and_refused_among_the_layer_options():
    config = load_config(None, ["model.dtype=bfloat16"])
    assert config.model.dtype == "bfloat16" and config.model.param_dtype == "float32"
    for key in ("dtype", "param_dtype"):
        with pytest.raises(ConfigError, match=rf"model\.layer_kwargs\.{key}: set model\.{key} instead"):
            load_config(None, [f"model.layer_kwargs.{key}=bfloat16"])
    with pytest.raises(ConfigError, match=r"model\.dtype='bf16'; expected one of"):
        load_config(None, ["model.dtype=bf16"])


MODEL_CONFIGS = [p for p in CONFIGS if p.stem != "task"]


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in MODEL_CONFIGS])
def test_every_shipped_config_has_a_cpu_preset_no_larger_than_itself(path):
    from ssm import data

    published, cpu = load_config(path), load_config(path, ["preset=cpu"])
    assert cpu.preset == "cpu" and published.preset is None
    assert cpu.trainer.steps <= published.trainer.steps and cpu.model.d_model <= published.model.d_model
    task = data.get_task(published.task.name)
    sizes = [task.info(data.make_params(task, c.task.params)).seq_len for c in (published, cpu)]
    assert sizes[1] <= sizes[0]
    assert dataclasses.replace(cpu, preset=None) != published or path.name == "default.yaml"


def test_a_preset_is_applied_before_the_overrides_and_an_unknown_one_is_named(tmp_path):
    path = write(tmp_path, "x.yaml", {"name": "x", "trainer": {"steps": 100},
                                      "presets": {"small": {"trainer": {"steps": 10, "batch_size": 4}}}})
    assert load_config(path).trainer.steps == 100
    small = load_config(path, ["preset=small"])
    assert (small.trainer.steps, small.trainer.batch_size) == (10, 4)
    assert load_config(path, ["trainer.steps=7", "preset=small"]).trainer.steps == 7  # --set wins, in any order
    with pytest.raises(ConfigError, match=r"preset: 'big' is not a preset of .*x\.yaml; its presets: \('small',\)"):
        load_config(path, ["preset=big"])


def test_data_paths_in_a_file_are_relative_to_it_and_on_the_command_line_to_the_cwd(tmp_path, monkeypatch):
    folder = tmp_path / "experiments"
    folder.mkdir()
    (tmp_path / "corpus.txt").write_text("some text " * 100)
    write(folder, "base.yaml", {"task": {"name": "text", "params": {"path": "../corpus.txt"}},
                                "presets": {"other": {"task": {"params": {"path": "other.txt"}}}}})
    child = write(folder, "child.yaml", "extends: base.yaml\nname: child\n")
    monkeypatch.chdir(tmp_path / "experiments")  # anywhere but the file's folder's parent
    monkeypatch.chdir(ROOT)
    assert load_config(child).task.params["path"] == str(tmp_path / "corpus.txt")
    assert load_config(child, ["preset=other"]).task.params["path"] == str(folder / "other.txt")
    assert load_config(child, ["task.params.path=mine.txt"]).task.params["path"] == "mine.txt"
    listops = write(folder, "listops.yaml", {"task": {"name": "listops", "data_dir": "lra"}})
    assert load_config(listops).task.data_dir == str(folder / "lra")
    stdlib = write(folder, "stdlib.yaml", {"task": {"name": "text", "params": {"path": "stdlib:json"}}})
    assert load_config(stdlib).task.params["path"] == "stdlib:json"
    inside = write(folder, "inside.yaml", {"task": {"name": "text", "data_dir": "texts", "params": {"path": "a.txt"}}})
    resolved = load_config(inside).task
    assert resolved.data_dir == str(folder / "texts") and resolved.params["path"] == "a.txt"  # read inside data_dir


def test_a_key_set_twice_in_a_file_is_refused_naming_it_and_its_line(tmp_path):
    path = write(tmp_path, "twice.yaml", "name: x\nmodel:\n  d_model: 32\n  n_layers: 2\n  d_model: 64\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml', line 5: key 'd_model' is set twice"):
        load_config(path)
    same_key_elsewhere = write(tmp_path, "fine.yaml", "model: {d_model: 32}\ntrainer: {steps: 3}\noptim: {lr: 1.0e-3}\n")
    assert load_config(same_key_elsewhere).model.d_model == 32


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "", ".."])
def test_a_name_is_one_folder_name(name):
    with pytest.raises(ConfigError, match="name: .* must be one folder name"):
        load_config(None, [f"name={name!r}" if name else "name=''"])


def test_extends_must_name_a_file(tmp_path):
    with pytest.raises(ConfigError, match=r"extends: 5 must be a file name"):
        load_config(write(tmp_path, "x.yaml", "extends: 5\n"))


@pytest.mark.parametrize("override", ["optim.lr=.inf", "optim.lr=.nan", "optim.lr=1e999", "schedule.min_lr_ratio=.nan"])
def test_non_finite_numbers_are_refused(override):
    with pytest.raises(ConfigError, match=rf"{re.escape(override.split('=')[0])}: .* is not a finite number"):
        load_config(None, [override])


def test_steps_must_fit_the_step_counter():
    with pytest.raises(ConfigError, match=r"trainer\.steps: 100000000000000000000 must be below 2\*\*31"):
        load_config(None, ["trainer.steps=100000000000000000000"])


def test_the_pretrained_model_options_reach_the_model(tmp_path):
    from flax import nnx

    from ssm import data
    from ssm.train.trainer import build_model

    config = load_config(None, ["model.layer=mamba", "model.norm=rms", "model.post=null",
                                "model.norm_eps=1e-5", "model.residual_in_fp32=true", "model.head_bias=false"])
    task = data.get_task(config.task.name)
    model = build_model(config, task.info(data.make_params(task, config.task.params)), nnx.Rngs(0))
    assert model.final_norm.epsilon == 1e-5 and model.blocks[0].norm.epsilon == 1e-5
    assert model.blocks[0].residual_in_fp32 and model.head.bias is None
    with pytest.raises(ConfigError, match=r"model\.norm_eps: 0\.0 must be > 0"):
        load_config(None, ["model.norm_eps=0.0"])


def test_model_block_m2_reaches_the_model_and_a_contradiction_names_its_key():
    from flax import nnx

    from ssm import data
    from ssm.layers import M2Block
    from ssm.train.trainer import build_model, check_before_work

    m2 = ["model.layer=m2", "model.block=m2", "model.post=null", "model.mlp=monarch"]
    config = load_config(None, [*m2, "model.prenorm=false"])
    task = data.get_task(config.task.name)
    model = build_model(config, task.info(data.make_params(task, config.task.params)), nnx.Rngs(0))
    assert all(isinstance(block, M2Block) for block in model.blocks) and model.final_norm is None
    with pytest.raises(ConfigError, match=r"^model\.prenorm=True with block='m2': .* set prenorm=False"):
        check_before_work(load_config(None, m2))


def test_the_layers_the_task_sizes_are_the_layers_built_for_a_length():
    """``trainer.SIZED_BY_LENGTH`` names the layers whose constructor takes ``l_max``, and
    the task's length reaches theirs unless the config gives one."""
    import inspect

    from ssm.layers import LAYERS
    from ssm.train.trainer import SIZED_BY_LENGTH, build_model

    assert set(SIZED_BY_LENGTH) == {name for name, cls in LAYERS.items()
                                    if "l_max" in inspect.signature(cls.__init__).parameters}
    from flax import nnx

    from ssm import data

    for given, expected in (([], None), (["model.layer_kwargs={l_max: 40}"], 40)):
        config = load_config(None, ["task.params={l_noise: 16, l_memorize: 4}", "model.d_model=4", "model.n_layers=1",
                                    "model.layer=s4", *given])
        task = data.get_task(config.task.name)
        info = task.info(data.make_params(task, config.task.params))
        assert build_model(config, info, nnx.Rngs(0)).blocks[0].mixer.l_max == (expected or info.seq_len)


def test_model_embedding_std_reaches_the_embedding_and_a_bad_one_is_named():
    import numpy as np
    from flax import nnx

    from ssm import data
    from ssm.train.trainer import build_model

    config = load_config(None, ["model.d_model=64", "model.n_layers=1", "model.embedding_std=0.5"])
    task = data.get_task(config.task.name)
    model = build_model(config, task.info(data.make_params(task, config.task.params)), nnx.Rngs(0))
    assert 0.4 < float(np.std(np.asarray(model.encoder.embedding[...]))) < 0.6  # Flax's default would be 1/8
    with pytest.raises(ConfigError, match=r"model.embedding_std: -1.0 must be > 0"):
        load_config(None, ["model.embedding_std=-1.0"])
