"""The package's import rules (docs/ARCHITECTURE.md), checked on the source with `ast`.

Every module under keras_deeplab/ is parsed (nothing is imported or executed), every
``import`` / ``from ... import`` in it is resolved (relative imports included, imports inside
functions included), and three rules are checked:

1. no module imports the package root (`import keras_deeplab`, `from keras_deeplab import X`,
   `from .. import X` that lands on the root, `importlib.import_module("keras_deeplab")`):
   only keras_deeplab/__init__.py may (`import keras_deeplab.sub`, with or without ``as``,
   imports the submodule it names);
2. the base modules (version, utils, provenance, np_metrics) import only what the table allows
   (each other, in one direction), so every subpackage can use them without a cycle;
3. every other top-level unit imports only the units its row of the table in
   docs/ARCHITECTURE.md ("What each package may import") names.

The table is read from the document itself, so the document and this test cannot disagree.
"""

import ast
import os
import re

import pytest

ROOT = "keras_deeplab"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(REPO, ROOT)
ARCHITECTURE = os.path.join(REPO, "docs", "ARCHITECTURE.md")
BASE_MODULES = ("version", "utils", "provenance", "np_metrics")


def _modules():
    """(dotted module name, is_package, path) of every .py file under keras_deeplab/."""
    found = []
    for dirpath, dirnames, filenames in os.walk(PACKAGE_DIR):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found.append((".".join(parts), is_package, path))
    return found


def _resolve_from(module, is_package, node):
    """Absolute module named by an ``ImportFrom`` node written in ``module``."""
    if not node.level:
        return node.module
    package = module.split(".") if is_package else module.split(".")[:-1]
    if node.level - 1 > len(package) - 1:
        raise ValueError(f"{module}: relative import beyond the top-level package")
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(source, module, is_package):
    """Every import in ``source`` as (lineno, target module, how), where ``how`` is
    "root" for an import that binds or loads the package root itself, else "module"."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT:
                    out.append((node.lineno, alias.name, "root"))
                elif alias.name.startswith(ROOT + "."):
                    out.append((node.lineno, alias.name, "module"))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_from(module, is_package, node)
            if target == ROOT:
                out.append((node.lineno, ROOT, "root"))
            elif target and target.startswith(ROOT + "."):
                out.append((node.lineno, target, "module"))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if (name in ("import_module", "__import__") and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value == ROOT):
                out.append((node.lineno, ROOT, "root"))
    return out


def unit_of(module):
    """The top-level unit a module belongs to: "data" for keras_deeplab.data.cityscapes,
    "utils" for keras_deeplab.utils; None for the root itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def allowed_imports():
    """{unit: set of units it may import} from the table in docs/ARCHITECTURE.md.

    A row is ``| `unit` | `a`, `b`, ... |``; ``*`` means every unit. Base modules are
    named explicitly in their own rows; every other unit may also import every base module.
    """
    with open(ARCHITECTURE, encoding="utf-8") as f:
        text = f.read()
    match = re.search(r"^## What each package may import\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"{ARCHITECTURE}: no '## What each package may import' section"
    table = {}
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not line.lstrip().startswith("| `"):
            continue
        unit = cells[0].strip("`")
        table[unit] = set(re.findall(r"`([^`]+)`", cells[1]))
    assert table, f"{ARCHITECTURE}: the import table has no rows"
    for unit, targets in table.items():
        if unit not in BASE_MODULES:
            targets.update(BASE_MODULES)
    return table


def _violations():
    table = allowed_imports()
    every_unit = set(table)
    root_imports, layer_imports, unknown = [], [], set()
    for module, is_package, path in _modules():
        rel = os.path.relpath(path, REPO)
        with open(path, encoding="utf-8") as f:
            found = imports_of(f.read(), module, is_package)
        unit = unit_of(module)
        for lineno, target, how in found:
            if how == "root" and module != ROOT:
                root_imports.append(f"{rel}:{lineno} imports the package root ({target})")
        if unit is None:
            continue  # the root __init__ re-exports everything
        if unit not in table:
            unknown.add(unit)
            continue
        allowed = every_unit if "*" in table[unit] else table[unit]
        for lineno, target, how in found:
            dep = unit_of(target)
            if how == "module" and dep not in (None, unit) and dep not in allowed:
                layer_imports.append(f"{rel}:{lineno} ({unit}) imports {target} ({dep})")
    return root_imports, layer_imports, unknown


def test_no_module_imports_the_package_root():
    root_imports, _, _ = _violations()
    assert not root_imports, (
        "Import submodules instead (from keras_deeplab.models.presets import ...):\n"
        + "\n".join(root_imports))


def test_every_unit_is_in_the_architecture_table():
    _, _, unknown = _violations()
    assert not unknown, (f"{sorted(unknown)}: add a row to the table in {ARCHITECTURE} "
                         "saying what it may import")


def test_imports_follow_the_layering():
    _, layer_imports, _ = _violations()
    assert not layer_imports, (
        f"Imports the table in {ARCHITECTURE} does not allow (move the code to the stage "
        "that owns it, or change the design and the table together):\n"
        + "\n".join(layer_imports))


def test_base_modules_import_only_base_modules():
    table = allowed_imports()
    for name in BASE_MODULES:
        assert table[name] <= set(BASE_MODULES), (name, table[name])


def test_table_has_no_cycle():
    table = allowed_imports()
    state = {}

    def visit(unit, path):
        if state.get(unit) == "done":
            return
        assert state.get(unit) != "open", f"import cycle allowed by the table: {path + [unit]}"
        state[unit] = "open"
        for dep in table.get(unit, ()):
            if dep != "*" and dep != unit:
                visit(dep, path + [unit])
        state[unit] = "done"

    for unit in table:
        if "*" not in table[unit]:
            visit(unit, [])


@pytest.mark.parametrize("source,module,is_package,expected", [
    ("import keras_deeplab as kd", "keras_deeplab.demo", False, [(1, ROOT, "root")]),
    ("import keras_deeplab.models  # registers", "keras_deeplab.inference.runners", False,
     [(1, "keras_deeplab.models", "module")]),
    ("from keras_deeplab import models", "keras_deeplab.cli", False, [(1, ROOT, "root")]),
    ("def f():\n    from .. import data", "keras_deeplab.training.fit", False,
     [(2, ROOT, "root")]),
    ("from . import cli", "keras_deeplab.demo", False, [(1, ROOT, "root")]),
    ("import importlib\nimportlib.import_module('keras_deeplab')", "keras_deeplab.demo", False,
     [(2, ROOT, "root")]),
    ("from . import labels", "keras_deeplab.data", True, [(1, "keras_deeplab.data", "module")]),
    ("from ..utils import register", "keras_deeplab.layers.aspp", False,
     [(1, "keras_deeplab.utils", "module")]),
    ("import keras_deeplab.data.labels as labels", "keras_deeplab.demo", False,
     [(1, "keras_deeplab.data.labels", "module")]),
    ("import keras\nfrom keras import ops", "keras_deeplab.utils", False, []),
])
def test_import_parser_on_known_sources(source, module, is_package, expected):
    """The checker itself: each way of reaching the root is caught, submodule imports are
    resolved to the module they name (relative ones included), third-party ones ignored."""
    assert imports_of(source, module, is_package) == expected


def _concept_rows():
    """(concept, [(path, [names])]) from the "Where each concept lives" table: backticked
    tokens ending in ``.py`` or ``/`` are paths (relative to the last directory named in the
    row unless they start with keras_deeplab/), backticked identifiers are names that the
    last named file must define."""
    with open(ARCHITECTURE, encoding="utf-8") as f:
        text = f.read()
    match = re.search(r"^## Where each concept lives\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"{ARCHITECTURE}: no '## Where each concept lives' section"
    rows = []
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("concept", "") or set(cells[0]) <= {"-"}:
            continue
        entries, directory = [], None
        for token in re.findall(r"`([^`]+)`", cells[1]):
            if token.endswith((".py", "/")):
                path = token if token.startswith(ROOT + "/") else os.path.join(directory or "",
                                                                                token)
                directory = path if path.endswith("/") else os.path.dirname(path) + "/"
                entries.append((path, []))
            else:
                name = token.split("(")[0]
                if re.fullmatch(r"[A-Za-z_]\w*", name) and entries:
                    entries[-1][1].append(name)
        rows.append((cells[0], entries))
    return rows


def _top_level_definitions(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_concept_table_names_what_the_files_define():
    """Each path in the "Where each concept lives" table exists, and each name it cites is
    defined (not merely imported) at the top level of that file."""
    rows = _concept_rows()
    assert len(rows) >= 20, rows
    problems = []
    for concept, entries in rows:
        assert entries, f"{concept}: the row names no file"
        for path, names in entries:
            full = os.path.join(REPO, path)
            if not os.path.exists(full):
                problems.append(f"{concept}: {path} does not exist")
                continue
            if names and path.endswith(".py"):
                missing = set(names) - _top_level_definitions(full)
                if missing:
                    problems.append(f"{concept}: {path} does not define {sorted(missing)}")
    assert not problems, "docs/ARCHITECTURE.md is out of date:\n" + "\n".join(problems)

