"""The README as a user meets it: its Python blocks run top to bottom as one script in a
fresh interpreter, and every shell command in it is checked by what it is (a make target
that exists, a training command whose config resolves, the evaluation example run small,
a benchmark preset and subset that exist, extras that exist). A command of a kind not
known here fails the suite, so no new README command goes unchecked."""

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

import yaml

from ssm.bench import grid, memory

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def blocks(lang: str) -> list[str]:
    return [body for tag, body in re.findall(r"```(\w+)\n(.*?)```", README, re.S) if tag == lang]


def commands() -> list[list[str]]:
    """Each shell command of the README's bash blocks as argv (continuations joined,
    comments dropped, ``a && b`` split in two)."""
    out = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                out.append(words[:cut])
                words = words[cut + 1:]
    return out


def kind(argv: list[str]) -> str | None:
    if argv[0] == "make":
        return "make"
    if argv[0] == "ssm-train" or argv[0].endswith("python") and (argv[1:2] == ["train.py"]
                                                                 or argv[1:3] == ["-m", "ssm.train"]):
        return "help" if "--help" in argv else "evaluate" if "--evaluate" in argv else "train"
    if argv[0] == "ssm-generate" or argv[0].endswith("python") and (argv[1:2] == ["generate.py"]
                                                                    or argv[1:3] == ["-m", "ssm.generate"]):
        return "generate"
    if argv[0].endswith("python") and argv[1:3] == ["-m", "ssm.bench.memory"]:
        return "bench"
    if argv[0].endswith("python") and argv[1:3] == ["-m", "venv"] or argv[0].endswith("pip"):
        return "setup"
    return None


def of_kind(name: str) -> list[list[str]]:
    return [argv for argv in commands() if kind(argv) == name]


def run(argv: list[str], timeout=300) -> subprocess.CompletedProcess:
    if argv[0].endswith("python"):
        argv = [sys.executable, *argv[1:]]
    elif argv[0] == "ssm-train":  # the console script of the environment running the tests
        argv = [str(pathlib.Path(sys.executable).parent / "ssm-train"), *argv[1:]]
    return subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def with_workdir(argv: list[str], workdir: pathlib.Path) -> list[str]:
    argv = list(argv)
    argv[argv.index("--workdir") + 1] = str(workdir)
    return argv


def test_python_blocks_run_top_to_bottom_as_one_script():
    script = "\n\n".join(blocks("python"))
    assert script.count("SequenceModel(") >= 2 and "ssm.linen" in script
    result = run(["python", "-c", script])
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_shell_command_is_of_a_kind_this_file_checks():
    argvs = commands()
    assert len(argvs) >= 8
    unknown = [shlex.join(a) for a in argvs if kind(a) is None]
    assert not unknown, f"README commands no test checks: {unknown}"


def test_make_commands_name_targets_of_the_makefile():
    for argv in of_kind("make"):
        result = run(["make", "-n", *argv[1:]])
        assert result.returncode == 0, (argv, result.stderr)


def test_training_commands_resolve_their_config_and_overrides(tmp_path):
    argvs = [a for a in of_kind("train") if "--workdir" not in a]
    assert len(argvs) >= 3
    for argv in argvs:
        result = run(argv + ["--print-config"] * ("--print-config" not in argv))
        assert result.returncode == 0, (argv, result.stderr[-2000:])
        config = yaml.safe_load(result.stdout)
        for override in argv[argv.index("--set") + 1:] if "--set" in argv else []:
            key, value = override.split("=", 1)
            node = config
            for part in key.split("."):
                node = node[part]
            expected = float(value) if isinstance(node, float) else yaml.safe_load(value)  # YAML 1.1 reads 3e-3 as text
            assert node == expected, (override, node)


def test_help_commands_print_the_help():
    argvs = of_kind("help")
    assert argvs
    for argv in argvs:
        result = run(argv)
        assert result.returncode == 0 and "Shipped configs" in result.stdout, (argv, result.stderr[-2000:])


def trained_for(argv: list[str], tmp_path: pathlib.Path) -> pathlib.Path:
    """Run the README's training command that writes the folder ``argv`` reads, cut to a
    few steps on a few examples with a model of width 8 and one block (the README's own
    numbers are measured, not asserted here; what reads the folder then runs as written
    on a small model); the folder it made, under ``tmp_path``."""
    folder = argv[argv.index("--workdir" if "--workdir" in argv else "--model") + 1]
    (train,) = [a for a in of_kind("train") if "--workdir" in a and a[a.index("--workdir") + 1] == folder]
    workdir = tmp_path / pathlib.Path(folder).name
    small = ["--set", "trainer.steps=4", "trainer.eval_every=4", "schedule.warmup_steps=0", "model.d_model=8",
             "model.n_layers=1", "task.sizes.train=64", "task.sizes.validation=16", "task.sizes.test=16"]
    result = run(with_workdir(train, workdir) + small)
    assert result.returncode == 0, result.stderr[-2000:]
    return workdir


def test_the_evaluation_example_trains_then_scores_the_longer_length(tmp_path):
    """The README's train-then-evaluate pair; the evaluation runs exactly as written but for the folder."""
    (evaluate,) = of_kind("evaluate")
    workdir = trained_for(evaluate, tmp_path)
    result = run(with_workdir(evaluate, workdir))
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    length = int(evaluate[evaluate.index("--set") + 1].split("=")[1])
    assert record["task_params"] == {"input_seq_len": length}
    assert record["examples"] == int(evaluate[evaluate.index("--examples") + 1])
    assert 0.0 <= record["accuracy"] <= 1.0


def test_the_generation_example_trains_then_writes_text(tmp_path):
    (generate,) = of_kind("generate")
    workdir = trained_for(generate, tmp_path)
    argv = list(generate)
    argv[argv.index("--model") + 1] = str(workdir)
    result = run(argv)
    assert result.returncode == 0, result.stderr[-2000:]
    prompt = argv[argv.index("--prompt") + 1]
    assert result.stdout.startswith(prompt) and "tokens/s" in result.stderr


def test_benchmark_commands_name_a_preset_and_a_subset_that_exist():
    argvs = of_kind("bench")
    assert argvs
    for argv in argvs:
        args = memory.parse_args(argv[3:])
        cells = grid.expand(grid.load_preset(grid.preset_path(args.preset)))
        assert grid.select(cells, args.only), argv


def test_setup_commands_install_extras_the_package_has():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = [m.group(1) for argv in of_kind("setup") for w in argv if (m := re.fullmatch(r"\.\[([\w,]+)\]", w))]
    assert named
    for group in named:
        assert set(group.split(",")) <= extras, (group, extras)
