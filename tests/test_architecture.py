"""How the modules of skcnn meet: public names only, one declaration of each parameter."""

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

import skcnn
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
