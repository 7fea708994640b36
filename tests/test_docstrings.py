"""The API reference is complete: every module on the site's API pages declares its
public names in ``__all__`` and documents each of them; the numerical and layer modules
show a short example of each public function and class, and those examples run.

The module list is read from the automodule lines of ``docs/api/*.md``, so a page added
there is checked here without a change to this file.
"""

import ast
import doctest
import importlib
import inspect
import io
import pathlib
import re
import tokenize

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Modules whose public functions and classes each carry an ``Example:`` (a doctest).
EXAMPLE_MODULES = ("ssm.hippo", "ssm.hippo_online", "ssm.kernels", "ssm.scan", "ssm.ssd", "ssm.attention",
                   "ssm.monarch", "ssm.linalg", "ssm.solve", "ssm.optim", "ssm.groups", "ssm.layers",
                   "ssm.layers.segments", "ssm.layers.parts",
                   "ssm.linen", "ssm.generate")


def api_modules() -> list[str]:
    """The modules of the API pages: ``{automodule} ssm.x`` (MyST) or ``.. automodule:: ssm.x`` (rST)."""
    pattern = re.compile(r"^\s*(?:```\{automodule\}|\.\. automodule::)\s+(\S+)\s*$", re.M)
    names = [m for page in sorted((ROOT / "docs" / "api").glob("*.md")) for m in pattern.findall(page.read_text())]
    assert names, "no automodule line found in docs/api/*.md"
    return sorted(set(names))


MODULES = api_modules()


def test_the_numerical_and_layer_modules_all_have_api_pages():
    assert set(EXAMPLE_MODULES) <= set(MODULES)


def _documented_constants(module) -> set[str]:
    """Names of ``module``'s top-level assignments that carry a doc comment (``#:`` on the
    lines just before or at the end of the line) or a docstring right after: what autodoc
    shows for data."""
    source = inspect.getsource(module)
    comments = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    body = ast.parse(source).body
    found = set()
    for i, node in enumerate(body):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):  # a = ..., a: T = ..., a, b = ...
            targets = [n.id for t in getattr(node, "targets", [getattr(node, "target", None)])
                       for n in ast.walk(t) if isinstance(n, ast.Name)]
        else:
            continue
        before = comments.get(node.lineno - 1, "").startswith("#:")
        after = comments.get(node.end_lineno, "").startswith("#:")
        following = body[i + 1] if i + 1 < len(body) else None
        docstring = (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                     and isinstance(following.value.value, str) and following.value.value.strip())
        if before or after or docstring:
            found.update(targets)
    return found


def _own_doc(obj) -> str:
    """``obj``'s own docstring: a class's is not inherited, nor the signature a dataclass
    or a NamedTuple writes in place of a missing one."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not isinstance(doc, str):
        return ""
    if inspect.isclass(obj) and re.fullmatch(rf"{re.escape(obj.__name__)}\(.*\)", doc.strip(), re.S):
        return ""
    return doc.strip()


def _public_methods(cls):
    """``(name, function)`` of the public methods (and ``__call__``) a user reaches on ``cls``
    from its ssm classes."""
    seen = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("ssm"):
            continue
        for name, value in vars(klass).items():
            if name in seen or (name.startswith("_") and name != "__call__"):
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if inspect.isfunction(value) or isinstance(value, property):
                seen.add(name)
                yield name, value


def _is_documentable(obj) -> bool:
    """Functions (also wrapped ones, e.g. by ``functools.lru_cache``), classes and modules
    carry their own docstrings; anything else is a constant."""
    return inspect.isroutine(obj) or inspect.isclass(obj) or inspect.ismodule(obj) or hasattr(obj, "__wrapped__")


@pytest.mark.parametrize("name", MODULES)
def test_every_public_name_is_in_all_and_documented(name):
    module = importlib.import_module(name)
    assert _own_doc(module), f"{name} has no module docstring"
    assert isinstance(getattr(module, "__all__", None), (list, tuple)), f"{name} defines no __all__"
    assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ lists a name twice"
    constants = _documented_constants(module)
    missing, undocumented, no_example = [], [], []
    for public in module.__all__:
        if not hasattr(module, public):
            missing.append(public)
            continue
        obj = getattr(module, public)
        if not _is_documentable(obj):
            if public not in constants:
                undocumented.append(f"{public} (a constant: give it a '#:' comment)")
            continue
        doc = _own_doc(obj)
        if not doc:
            undocumented.append(public)
        elif name in EXAMPLE_MODULES and not inspect.ismodule(obj) and not ("Example:" in doc and ">>>" in doc):
            no_example.append(public)
        if inspect.isclass(obj):
            undocumented += [f"{public}.{method}" for method, fn in _public_methods(obj) if not inspect.getdoc(fn)]
    assert not missing, f"{name}.__all__ names what the module lacks: {missing}"
    assert not undocumented, f"{name}: no docstring for {undocumented}"
    assert not no_example, f"{name}: no 'Example:' with '>>>' in the docstrings of {no_example}"


def test_no_public_name_of_the_package_is_left_out_of_all():
    """Every public function and class a page's module defines itself is in its ``__all__``
    (so the page shows it), unless the module imports it for its own use from elsewhere."""
    for name in MODULES:
        module = importlib.import_module(name)
        own = [n for n, v in vars(module).items()
               if not n.startswith("_") and (inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == name]
        left_out = sorted(set(own) - set(module.__all__))
        assert not left_out, f"{name} defines {left_out} but leaves them out of __all__ (or name them with a '_')"


def _doctests(name: str) -> list[doctest.DocTest]:
    """The examples of ``name``'s docstring and of every object in its ``__all__`` (a
    package's names come from its submodules) with their methods, each run with no
    globals of its own: an example imports what it uses, as a reader copying it would."""
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(recurse=False).find(module, name, globs={})
    finder = doctest.DocTestFinder()
    for public in module.__all__:
        obj = getattr(module, public)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            tests += finder.find(obj, f"{name}.{public}", module=inspect.getmodule(obj), globs={})
    unique = {t.name: t for t in tests if t.examples}
    return sorted(unique.values(), key=lambda t: t.name)


@pytest.mark.parametrize("name", EXAMPLE_MODULES)
def test_the_examples_in_the_docstrings_run(name):
    tests = _doctests(name)
    assert tests, f"{name} has no examples"
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    print(f"{name}: {result.attempted} examples in {len(tests)} docstrings")
    assert result.failed == 0, out.getvalue()


def test_every_public_function_and_class_of_the_package_has_a_docstring():
    undocumented = []
    for path in sorted((ROOT / "ssm").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            definition = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if definition and not node.name.startswith("_"):
                if not (ast.get_docstring(node) or "").strip():
                    undocumented.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not undocumented, "public names without a docstring:\n" + "\n".join(undocumented)
