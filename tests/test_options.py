"""The table of shared parameters: estimators and commands take their defaults, constraints and options from it."""

import argparse
import dataclasses
import inspect

import pytest
from sklearn.base import clone

from skcnn import CNNClassifier, CNNFeatureTransformer, LayerSearchCV, cli, options
from skcnn.compat import Interval, StrOptions
from skcnn.options import DEFAULTS, FINETUNING, PARAMETERS, constraints_of, declared

#: Each estimator, and how it reads the table: (training, several_backbones) of constraints_of.
ESTIMATORS = {
    CNNFeatureTransformer: (False, True),
    CNNClassifier: (True, False),
    LayerSearchCV: (True, False),
}

#: Each command with a minimal command line, the estimator whose parameters its options set, and
#: those of its options of the same names that are not the parameter as the table declares it.
COMMANDS = {
    # --layer: a list of layers (one parameter value, or several tapped)
    "extract": (["extract", "photos", "--cache", "codes.h5"], CNNFeatureTransformer, {"layer"}),
    # backbone: a positional argument; --layer: the search's candidates; no --cache-layer: it taps them all at once
    "layers": (
        ["layers", "resnet18", "--search", "photos"],
        CNNFeatureTransformer,
        {"backbone", "layer", "cache_layers"},
    ),
    "layers --search": (["layers", "resnet18", "--search", "photos"], LayerSearchCV, set()),
    "finetune": (["finetune", "photos", "--out", "model.joblib"], CNNClassifier, set()),
}


def comparable(constraints: list) -> list:
    """Constraints that compare equal when they accept the same values (sklearn's objects do not)."""
    shown = []
    for constraint in constraints:
        if isinstance(constraint, StrOptions):
            shown.append(("StrOptions", frozenset(constraint.options)))
        elif isinstance(constraint, Interval):
            shown.append(("Interval", constraint.type, constraint.left, constraint.right, constraint.closed))
        else:
            shown.append(constraint)
    return shown


def from_table(estimator) -> list[str]:
    """The parameters whose constraints ``estimator`` takes from the table."""
    training, several = ESTIMATORS[estimator]
    names = [parameter.name for parameter in PARAMETERS]
    return [
        name
        for name, constraints in estimator._parameter_constraints.items()
        if name in names
        and comparable(constraints)
        == comparable(constraints_of(name, training=training, several_backbones=several)[name])
    ]


def test_the_estimators_take_their_constraints_from_the_table():
    assert from_table(CNNFeatureTransformer) == list(CNNFeatureTransformer._parameter_constraints)
    assert from_table(CNNClassifier) == list(CNNClassifier._parameter_constraints)
    # LayerSearchCV's scoring takes any scikit-learn scorer: not CNNClassifier's parameter.
    assert from_table(LayerSearchCV) == ["class_weight"]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda estimator: estimator.__name__)
def test_every_parameter_from_the_table_has_its_default(estimator):
    training, _ = ESTIMATORS[estimator]
    signature = inspect.signature(estimator).parameters
    for name in from_table(estimator):
        assert signature[name].default == declared(name, training=training).default, name
        assert estimator().get_params()[name] == declared(name, training=training).default, name


def test_the_defaults_dataclasses_are_the_table():
    assert dataclasses.asdict(DEFAULTS) == {p.name: p.default for p in PARAMETERS if not p.training}
    assert dataclasses.asdict(FINETUNING) == {p.name: p.default for p in PARAMETERS if p.training}
    assert (DEFAULTS.batch_size, FINETUNING.batch_size, DEFAULTS.layer, FINETUNING.layer) == (
        8,
        32,
        "penultimate",
        "auto",
    )


def test_each_parameter_is_declared_once_for_extraction_and_once_for_training():
    keys = [(parameter.name, parameter.training) for parameter in PARAMETERS]
    assert len(keys) == len(set(keys))
    twice = {name for name, training in keys if (name, not training) in keys}
    assert twice == {"batch_size", "input_size", "layer", "tta"}


def test_the_fine_tuning_choices_are_those_of_the_fine_tuning_modules():
    from skcnn.finetuning import augment, training

    assert all(callable(augment.resolve_augment(policy, (32, 32))) for policy in options.AUGMENT_POLICIES)
    assert set(options.SCORINGS) == set(training.SCORERS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_from_the_table_has_its_flag_default_and_choices(command):
    argv, estimator, not_the_parameter = COMMANDS[command]
    training, _ = ESTIMATORS[estimator]
    parser = cli.build_parser()
    subparser = parser._subparsers._group_actions[0].choices[argv[0]]  # argparse keeps subcommands here
    actions = {action.dest: action for action in subparser._actions}
    offered = [
        name
        for name in from_table(estimator)
        if declared(name, training=training).cli_flag is not None and name not in not_the_parameter
    ]
    assert offered, command
    for name in offered:
        parameter = declared(name, training=training)
        assert parameter.cli_flag in actions[name].option_strings, name
        action = actions[name]
        # argparse reads a default given as text (--crop's "weights") as it reads the command line
        default = action.type(action.default) if isinstance(action.default, str) and action.type else action.default
        assert default == cli.COMMAND_DEFAULTS.get(name, parameter.default), name
        for choice in parameter.choices:  # each of them is taken, as itself
            assert vars(parser.parse_args([*argv, parameter.cli_flag, choice]))[name] == choice, name
        if (
            parameter.choices
            and parameter.number is None
            and not parameter.cli_words
            and str not in parameter.constraints
        ):
            assert list(actions[name].choices) == list(parameter.choices), name


def test_every_option_in_the_table_is_offered_by_a_command():
    parser = cli.build_parser()
    offered = set()
    for argv, estimator, not_the_parameter in COMMANDS.values():
        training, _ = ESTIMATORS[estimator]
        subparser = parser._subparsers._group_actions[0].choices[argv[0]]
        flags = {(action.dest, flag) for action in subparser._actions for flag in action.option_strings}
        for name in set(from_table(estimator)) - not_the_parameter:
            parameter = declared(name, training=training)
            if (name, parameter.cli_flag) in flags:
                offered.add((name, parameter.training))
    flagged = {(parameter.name, parameter.training) for parameter in PARAMETERS if parameter.cli_flag}
    assert flagged == offered, flagged ^ offered


def test_a_value_outside_the_range_is_refused_on_the_command_line(capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["extract", "photos", "--cache", "codes.h5", "--crop", "1.5"])
    assert "argument --crop: expected weights, none or a number in (0, 1]; got '1.5'" in capsys.readouterr().err


def test_an_undeclared_name_is_a_clear_error():
    with pytest.raises(KeyError, match="'pooling_size' is not declared"):
        declared("pooling_size")
    with pytest.raises(ValueError, match="progress has no command-line option"):
        cli.add_parameter_arguments(argparse.ArgumentParser(), "progress")


@pytest.mark.parametrize(
    "estimator",
    [
        CNNFeatureTransformer(batch_size=3, pooling=["avg", "max"], crop=0.5),
        CNNClassifier(batch_size=4, class_weight="balanced", memory_limit="2GB"),
    ],
    ids=type,
)
def test_clone_and_get_params_keep_every_parameter(estimator):
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params()
    assert copy.set_params(batch_size=5).get_params()["batch_size"] == 5
