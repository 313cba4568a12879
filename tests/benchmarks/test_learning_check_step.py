"""benchmarks/learning_check_step.py times the learning check's real steps, here one per row."""

import torch

from benchmarks import learning_check_step


def test_each_method_times_each_arch_in_both_precisions_against_its_first_row(capsys):
    threads = torch.get_num_threads()
    try:
        learning_check_step.main(["--archs", "resnet18_w16", "resnet18_w32", "--steps", "1", "--warmup", "0"])
    finally:
        torch.set_num_threads(threads)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[:3] for row in rows] == [
        [method, arch, precision]
        for method in ("clsa", "mocov2")
        for arch in ("resnet18_w16", "resnet18_w32")
        for precision in ("fp32", "bf16")
    ]
    assert rows[0][4] == rows[4][4] == "1.00x"  # each method's first row is its own baseline
