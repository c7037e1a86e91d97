"""How the modules of skcnn meet: public names only, one declaration of each parameter."""

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

import skcnn
import skcnn.moved
from skcnn import CNNFeatureTransformer, LayerSearchCV
from skcnn.options import DEFAULTS, PARAMETERS, parameter_names

PACKAGE = Path(skcnn.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def _imported_modules(tree: ast.Module) -> set[str]:
    """Local names bound to skcnn modules (``from . import x``, ``from .x import y as z`` where y is a module)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module is None:
            names.update(alias.asname or alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_uses_another_modules_private_names(path):
    tree = ast.parse(path.read_text())
    modules = _imported_modules(tree)
    private_imports = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module not in (None, "compat")
        for alias in node.names
        if alias.name.startswith("_")
    ]
    private_uses = [
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in modules
        and node.attr.startswith("_")
    ]
    assert not private_imports and not private_uses


def test_every_transformer_parameter_is_declared_once_in_options():
    assert tuple(inspect.signature(CNNFeatureTransformer).parameters) == parameter_names()
    assert CNNFeatureTransformer().get_params() == dataclasses.asdict(DEFAULTS)


#: Parameters of an estimator that share a name with one of skcnn.options.PARAMETERS but are another one.
NOT_THE_DECLARED_ONE = {("LayerSearchCV", "scoring")}  # any scikit-learn scorer, not CNNClassifier's two


def _constraints_written_out(tree: ast.Module) -> list[tuple[str, str]]:
    """(class, parameter) of every key of a ``_parameter_constraints = {...}`` written out in a class."""
    written = []
    for node in ast.walk(tree):
        for statement in node.body if isinstance(node, ast.ClassDef) else []:
            target = getattr(statement, "target", None) or next(iter(getattr(statement, "targets", [])), None)
            if isinstance(target, ast.Name) and target.id == "_parameter_constraints":
                keys = statement.value.keys if isinstance(statement.value, ast.Dict) else []
                written += [(node.name, key.value) for key in keys if isinstance(key, ast.Constant)]
    return written


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_estimator_declares_the_constraints_of_a_shared_parameter_again(path):
    declared = {parameter.name for parameter in PARAMETERS}
    written = _constraints_written_out(ast.parse(path.read_text()))
    again = [pair for pair in written if pair[1] in declared and pair not in NOT_THE_DECLARED_ONE]
    assert not again, f"{again}: take them from skcnn.options.constraints_of"


@pytest.mark.parametrize("estimator", [CNNFeatureTransformer, LayerSearchCV])
def test_estimators_take_keyword_arguments_only_where_scikit_learn_does(estimator):
    parameters = inspect.signature(estimator).parameters.values()
    positional = [p.name for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional == ([] if estimator is CNNFeatureTransformer else ["transformer", "layers", "classifier"])


def test_a_positional_backbone_is_refused():
    with pytest.raises(TypeError):
        CNNFeatureTransformer("resnet18")


def test_the_errors_and_results_users_meet_are_public():
    for name in [
        "BadImagesError",
        "ImageFailure",
        "CacheError",
        "CheckpointError",
        "LayerAdvice",
        "CacheStats",
        "candidate_layers",
        "clear_networks",
        "CNNClassifier",
    ]:
        assert name in skcnn.__all__ and getattr(skcnn, name) is not None


def test_scikit_learn_private_helpers_are_imported_in_one_module():
    for path in MODULES:
        if path.name == "compat.py":
            continue
        imported = {
            (node.module, alias.name)
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sklearn")
            for alias in node.names
        }
        private = {pair for pair in imported if any(part.startswith("_") for part in (*pair[0].split("."), pair[1]))}
        assert not private, f"{path.relative_to(PACKAGE)} imports {private}: import it from skcnn.compat"


#: The parts, each allowed to import from itself and the parts before it (the
#: order of the flow); the top-level modules that every part may use come first.
PARTS = [
    "compat",
    "options",
    "files",
    "decoding",
    "network",
    "codes",
    "frozen",
    "finetuning",
    "deployment",
    "inspection",
]
#: What sits at the top of skcnn/ besides the parts: the public face, the command, the shared plumbing.
TOP_MODULES = {"__init__", "moved", "options", "compat", "files", "datasets", "demo", "cli"}


def _part(module: list[str]) -> str:
    return module[1] if len(module) > 1 else "__init__"


def _imports(path: Path) -> list[list[str]]:
    """What a module imports from skcnn by relative imports, as absolute names split at the dots."""
    package = ["skcnn", *path.relative_to(PACKAGE).parts[:-1]]
    imported = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            imported += [base + node.module.split(".")] if node.module else [[*base, a.name] for a in node.names]
    return imported


def test_the_top_of_the_package_is_the_face_and_the_parts():
    top = {path.stem for path in PACKAGE.glob("*.py")}
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    assert top == TOP_MODULES
    assert folders == set(PARTS) - TOP_MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_part_imports_only_itself_and_the_parts_before_it(path):
    own = _part(["skcnn", *path.relative_to(PACKAGE).with_suffix("").parts])
    if own not in PARTS:
        return  # the face and the command use every part
    allowed = set(PARTS[: PARTS.index(own) + 1])
    allowed |= {"deployment": {"__version__"}, "inspection": {"datasets"}}.get(own, set())
    assert {_part(module) for module in _imports(path)} <= allowed


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_through_a_path_of_before_0_8(path):
    through_old = [".".join(module[:2]) for module in _imports(path) if ".".join(module[:2]) in skcnn.moved.MOVED]
    assert not through_old


def test_the_paths_of_before_0_8_import_the_modules_themselves():
    for old, new in skcnn.moved.MOVED.items():
        module = importlib.import_module(old)
        assert module is importlib.import_module(new) and module.__name__ == new and module.__spec__.name == new


def test_a_path_of_before_0_8_is_an_attribute_of_skcnn_where_only_the_new_one_was_imported():
    """As in a Dask worker, which imports the modules a pickled task names (skcnn.frozen.dask), no more."""
    code = (
        "import skcnn, skcnn.frozen.dask as new; assert skcnn.dask is new and 'skcnn.dask' in __import__('sys').modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_models_pickled_by_0_7_load_and_predict_the_same():
    """A pipeline, a LayerSearchCV and a preprocessing recipe pickled by skcnn 0.7.0 (flat modules)."""
    old = joblib.load(Path(__file__).parent / "data" / "models_v0.7.0.joblib")
    rng = np.random.default_rng(0)  # the images they were fitted on and predicted
    X = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(12)]
    assert type(old["pipeline"][0]) is CNNFeatureTransformer and type(old["search"]) is LayerSearchCV
    assert type(old["recipe"]).__module__ == "skcnn.decoding.preprocessing"
    # The stored probabilities come from a CPU with native bf16 ("auto" precision); another CPU's
    # kernels round differently: up to 0.0012 measured on an AMD EPYC without it (0.005 in fp32).
    for model, stored in ((old["pipeline"], old["codes"]), (old["search"], old["search_proba"])):
        proba = model.predict_proba(X)
        np.testing.assert_allclose(proba, stored, atol=1e-2)
        assert (proba.argmax(axis=1) == stored.argmax(axis=1)).all()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_relative_import_names_what_is_there(path):
    """Imports inside functions too: those run only when a command needs them (``skcnn extract --dask-scheduler``)."""
    package = ["skcnn", *path.relative_to(PACKAGE).parts[:-1]]
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            name = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            module = importlib.import_module(name)
            missing += [
                f"{name}.{alias.name}"
                for alias in node.names
                if not hasattr(module, alias.name) and importlib.util.find_spec(f"{name}.{alias.name}") is None
            ]
    assert not missing
