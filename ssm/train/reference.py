"""The config reference (``docs/config.md``, ``ssm-train --config-reference``),
generated from the schema itself: every key of :class:`ssm.train.config.Config` with
its type, default and the comment on its line in the dataclass; then each task's
parameters and each layer's options with their defaults.

    python -m ssm.train.reference > docs/config.md       # after changing the schema
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing

import yaml

from ssm.train.config import Config


def field_docs(cls) -> dict[str, str]:
    """``{field: the comment on its line}`` of a dataclass and its dataclass bases,
    read from their source ("" where a field has no comment)."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        source = textwrap.dedent(inspect.getsource(klass))
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
        for node in ast.parse(source).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                docs[node.target.id] = comments.get(node.end_lineno, "")
    return docs


def type_name(tp) -> str:
    """A field's type as the reference writes it: ``int``, ``string``, ``mapping``, ``int or null``, ..."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else type_name(a) for a in typing.get_args(tp))
    return {dict: "mapping", str: "string", int: "int", float: "float", bool: "bool"}.get(tp, getattr(tp, "__name__", str(tp)))


def yaml_value(value) -> str:
    """``value`` as it is written in a YAML file."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def default_of(f: dataclasses.Field):
    """A dataclass field's default (its factory called)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def schema_rows(cls, prefix: str = "") -> list[list[str]]:
    """One row per leaf key of the dataclass ``cls`` (nested dataclasses expanded)."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows += schema_rows(hints[f.name], key + ".")
        else:
            rows.append([f"`{key}`", type_name(hints[f.name]), f"`{yaml_value(default_of(f))}`", _cell(docs[f.name])])
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table of ``rows`` under ``header``."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(r) + " |" for r in rows)])


def _summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join((inspect.cleandoc(doc or "").split("\n\n")[0]).split()).replace("``", "`")


def task_section() -> str:
    """The reference's task parameters: one table per task of :data:`ssm.data.TASKS`."""
    from ssm.data import TASKS

    out = []
    for name, task in TASKS.items():
        module = sys.modules[task.params.__module__]
        hints, docs = typing.get_type_hints(task.params), field_docs(task.params)
        rows = [[f"`{f.name}`", type_name(hints[f.name]), f"`{yaml_value(_plain(default_of(f)))}`", _cell(docs.get(f.name, ""))]
                for f in dataclasses.fields(task.params)]
        sizes = ", ".join(f"{k} {v:,}" for k, v in task.default_sizes.items()) or "every example of its files"
        out.append(f"### `{name}`\n\n{_summary(module.__doc__)} (`{module.__name__}`; default sizes: {sizes}.)\n\n"
                   + table(["task.params key", "type", "default", "meaning"], rows))
    return "\n\n".join(out)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


ARG = re.compile(r"(?:^|(?<=\. )|(?<=; ))((?:\w+, )*\w+): ")
SAME_AS = re.compile(r"as :class:`~?(?:[\w.]*\.)?(\w+)`\.?")


def arg_docs(doc: str | None) -> dict[str, str]:
    """``{argument: meaning}`` from a Google-style ``Args:`` section (one entry per line
    at its indentation, continued on deeper lines; ``a, b: text`` documents both, and
    one line may hold several sentences of the form ``name: text.``)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    if "Args:" not in lines:
        return {}
    entries: list[str] = []
    for line in lines[lines.index("Args:") + 1:]:
        if not line.strip():
            break
        if line.startswith("    ") and entries:
            entries[-1] += " " + line.strip()
        else:
            entries.append(line.strip())
    docs = {}
    for entry in entries:
        matches = list(ARG.finditer(entry))
        for m, following in zip(matches, [*matches[1:], None]):
            text = entry[m.end():following.start() if following else None].strip()
            for name in m.group(1).split(", "):
                docs[name] = " ".join(text.replace("``", "`").split()).rstrip(";")
    return docs


def layer_section() -> str:
    """The reference's layer options: one table per layer of :data:`ssm.layers.LAYERS`, from the class
    docstrings' ``Args:``."""
    from ssm.layers import LAYERS

    out, by_class = [], {cls.__name__: cls for cls in LAYERS.values()}
    for name, cls in LAYERS.items():
        params = inspect.signature(cls.__init__).parameters.values()
        docs = arg_docs(cls.__doc__)
        for key, text in docs.items():  # "as :class:`S4D`": that class's words
            same = SAME_AS.fullmatch(text)
            if same and same.group(1) in by_class:
                docs[key] = arg_docs(by_class[same.group(1)].__doc__).get(key, text)
        rows = [[f"`{p.name}`", f"`{yaml_value(_plain(p.default)) if _is_yaml(p.default) else repr(p.default)}`",
                 _cell(docs.get(p.name, ""))]
                for p in params if p.kind is p.KEYWORD_ONLY and p.name not in ("rngs", "dtype", "param_dtype")]
        out.append(f"### `{name}`: `{cls.__module__}.{cls.__name__}`\n\n{_summary(cls.__doc__)}\n\n"
                   + table(["model.layer_kwargs key", "default", "meaning"], rows))
    return "\n\n".join(out)


def _is_yaml(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, tuple, dict))


def reference() -> str:
    """The whole reference, markdown."""
    return "\n\n".join([
        "# Config reference",
        "Generated by `python -m ssm.train.reference` from the schema in `ssm/train/config.py` "
        "(also `ssm-train --config-reference`); a test keeps this file equal to it. A YAML file sets any of "
        "these keys (`extends: other.yaml` merges it over another file), `--set key=value` overrides one, "
        "`--set '~key'` deletes one. Relative `task.data_dir` and `task.params.path` in a file are relative "
        "to that file. A file may define `presets: {<name>: <overlay>}`, applied when `preset` names one "
        "(`--preset cpu`) before the `--set` overrides.",
        "## Keys",
        table(["key", "type", "default", "meaning"], schema_rows(Config)),
        "## Task parameters (`task.params`)",
        task_section(),
        "## Layer options (`model.layer_kwargs`)",
        "The model's `dtype` and `param_dtype` are `model.dtype` and `model.param_dtype`, not layer options. "
        "Layers that take `l_max` get the task's sequence length unless it is given.",
        layer_section(),
    ]) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
