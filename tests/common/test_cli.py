"""Arguments that make no sense stop at the command line with one line on stderr and exit code 2."""

import pytest


def _voc07_linear(argv):
    from transfer.voc07_linear import get_parser

    return get_parser().parse_args(argv)


def _voc07_svm(argv):
    from transfer.voc07_svm import get_parser

    return get_parser().parse_args(argv)


def _imagenet_linear(argv):
    from transfer.imagenet_linear import get_parser

    return get_parser().parse_args(argv)


def _knn(argv):
    from transfer.knn import get_parser

    return get_parser().parse_args(argv)


def _train_net(argv):
    from tools.train_net import parse_args

    return parse_args(["--config-file", "detection/voc0712_R50_C4.yaml", *argv])


def _run_suite(argv):
    from tools import run_suite

    return run_suite.main(["--weights", "w.pth", "--out", "suite", *argv])


def _pretrain(argv):
    from pretrain.main import parse_args

    return parse_args(argv)


@pytest.mark.parametrize(
    "parse, argv, message",
    [
        (_voc07_linear, ["--epochs", "-1"], "--epochs: must be at least 1, got -1"),
        (_voc07_linear, ["--lr", "-0.1"], "--lr: must be greater than 0, got -0.1"),
        (_voc07_linear, ["--lr", "nan"], "--lr: must be greater than 0, got nan"),
        (_voc07_linear, ["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        (_voc07_svm, ["--costs", "1", "0"], "--costs: must be greater than 0, got 0"),
        (_voc07_svm, ["--jobs", "0"], "--jobs: must not be 0"),
        (_voc07_svm, ["--workers", "-1"], "--workers: must be at least 0, got -1"),
        (_imagenet_linear, ["--data", "d", "--epochs", "0"], "--epochs: must be at least 1, got 0"),
        (_imagenet_linear, ["--data", "d", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        (_knn, ["--data", "d", "--ks", "0"], "--ks: must be at least 1, got 0"),
        (_knn, ["--data", "d", "--temperature", "0"], "--temperature: must be greater than 0, got 0"),
        (_train_net, ["--seeds", "0"], "--seeds: must be at least 1, got 0"),
        (_train_net, ["--seeds", "-2"], "--seeds: must be at least 1, got -2"),
        (_train_net, ["--num-gpus", "-1"], "--num-gpus: must be at least 1, got -1"),
        (_run_suite, ["--seeds", "0"], "--seeds: must be at least 1, got 0"),
        (_pretrain, ["--num-gpus", "0"], "--num-gpus: must be at least 1, got 0"),
    ],
)
def test_nonsense_arguments_are_one_line_errors(parse, argv, message, capsys):
    weights = [] if parse in (_train_net, _run_suite, _pretrain) else ["--weights", "w.pth"]
    with pytest.raises(SystemExit) as exit_:
        parse([*weights, *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "override, message",
    [
        (("SOLVER.BATCH_SIZE", "0"), "SOLVER.BATCH_SIZE is 0; it must be greater than 0"),
        (("SOLVER.BASE_LR", "-0.03"), "SOLVER.BASE_LR is -0.03; it must be greater than 0"),
        (("SOLVER.EPOCHS", "0"), "SOLVER.EPOCHS is 0; it must be greater than 0"),
        (("DATA.NUM_WORKERS", "-1"), "DATA.NUM_WORKERS is -1; it must be at least 0"),
    ],
)
def test_pretrain_config_values_out_of_range_are_refused_in_setup(override, message):
    from pretrain.main import parse_args, setup

    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        setup(parse_args(list(override)), world_size=1)


def test_pretrain_option_after_the_overrides_is_named_not_taken_for_a_key():
    from pretrain.main import parse_args, setup

    args = parse_args(["--config-file", "pretrain/configs/clsa_single.yaml", "DATA.ROOT", "d", "--resume", "auto"])
    with pytest.raises(ValueError, match="--resume comes after the KEY VALUE overrides; put options before them"):
        setup(args, world_size=1)
