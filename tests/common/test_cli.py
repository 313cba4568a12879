"""Arguments that make no sense stop at the command line with one line on stderr and exit code 2."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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
        (_voc07_svm, ["--costs", "inf"], "--costs: must be a finite number, got inf"),
        (_voc07_linear, ["--lr", "inf"], "--lr: must be a finite number, got inf"),
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


def test_ctrl_c_in_an_entry_point_is_one_line_and_exit_code_130():
    waiting = (
        "import time\nfrom common.cli import exit_on_user_error\n"
        "exit_on_user_error(lambda: print(flush=True) or time.sleep(60))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", waiting], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    process.stdout.readline()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    assert process.stderr.read() == "interrupted\n"
