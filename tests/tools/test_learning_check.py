"""tools/learning_check.py's table of runs and its config overrides, on hand-made results."""

import subprocess
from types import SimpleNamespace

import pytest

import tools.learning_check as entry
from common.errors import UserError


def _result(method, variant, seed, curve, seconds=300.0):
    return {
        "method": method,
        "variant": variant,
        "seed": seed,
        "curve": [[step, top1] for step, top1 in zip((0, 500, 1000), curve)],
        "margin": curve[-1] - curve[0],
        "seconds": seconds,
    }


def test_the_table_lists_every_run_and_each_methods_mean_gain_per_variant():
    results = [
        _result("clsa", "plain", 0, (45.0, 50.0, 70.0)),
        _result("clsa", "plain", 1, (40.0, 42.0, 61.0)),
        _result("mocov2", "plain", 0, (45.0, 44.0, 55.0)),
        _result("mocov2", "plain", 1, (40.0, 39.0, 46.0)),
        _result("clsa", "coloured", 0, (18.0, 15.0, 20.0)),
    ]
    lines = entry.table(results).splitlines()
    assert lines[0] == "| method | variant | seed | kNN top-1 (k = 20) at steps 0 / 500 / 1000 | gain | wall time |"
    assert lines[3] == "| clsa | plain | 1 | 40.0 / 42.0 / 61.0 | +21.0 | 300 s |"
    # plain: CLSA (25 + 21) / 2 = 23, MoCo v2 (10 + 6) / 2 = 8; coloured: CLSA alone.
    assert lines[-2] == "- plain: mean gain over 2 seed(s): clsa +23.0, mocov2 +8.0; CLSA - MoCo v2: +15.0 points"
    assert lines[-1] == "- coloured: mean gain over 1 seed(s): clsa +2.0"


def test_config_overrides_after_the_options_reach_the_run(tmp_path, monkeypatch, capsys):
    calls, output = [], ["--out", str(tmp_path)]

    def fake_run(out, method, variant, seed, overrides=()):
        calls.append(list(overrides))
        return {**_result(method, variant, seed, (45.0, 40.0, 60.0)), "passed": True}

    def run_in_process(command, **kwargs):  # a grid's run, parsed by main as its subprocess would parse it
        entry.main(command[2:])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(entry, "run", fake_run)
    monkeypatch.setattr(entry, "subprocess", SimpleNamespace(run=run_in_process, STDOUT=subprocess.STDOUT))
    entry.main(
        ["--method", "mocov2", "--variant", "plain", "--seed", "0", "--out", str(tmp_path), "SOLVER.EPOCHS", "160"]
    )
    entry.main([*output, "--method", "mocov2", "--variant", "plain", "--seed", "0", "--", "SOLVER.EPOCHS", "160"])
    assert calls == [["SOLVER.EPOCHS", "160"]] * 2
    calls.clear()
    entry.main(["--method", "mocov2", "--seed", "0", "1", "--out", str(tmp_path), "--", "SOLVER.EPOCHS", "160"])
    assert calls == [["SOLVER.EPOCHS", "160"]] * 8  # 4 runs, each in its subprocess and then read back
    assert "mocov2 plain seed 0: kNN top-1 (k=20) 45.0 / 40.0 / 60.0 (+15.0 points" in capsys.readouterr().out
    calls.clear()
    # A bad override stops the grid before any of its runs starts, naming only the user's overrides.
    with pytest.raises(UserError, match="KEY VALUE pairs, got \\['SOLVER.EPOCHS'\\]"):
        entry.main([*output, "--method", "clsa", "mocov2", "--seed", "0", "1", "--", "SOLVER.EPOCHS"])
    with pytest.raises(UserError, match="Non-existent key: FOO.BAR"):
        entry.main([*output, "--method", "mocov2", "--seed", "0", "1", "--", "FOO.BAR", "1"])
    assert calls == []
