import json
import re

import pytest

from common.cli import exit_on_user_error
from detection.results import aggregate_trials
from tools import report


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def suite(tmp_path):
    """A checkpoint's suite folder: VOC07 linear once, VOC detection over two seeds, no COCO."""
    s = tmp_path / "clsa_single_200ep"
    _write(
        s / "voc07_linear" / "results.json",
        {"task": "voc07_linear", "metrics": {"voc07_per_image_AP": 90.04, "voc07_mAP": 80.0}},
    )
    trials = []
    for seed, ap50 in ((0, 80.0), (1, 82.0)):
        trials.append(s / "voc_det" / f"seed_{seed}" / "results.json")
        _write(
            trials[-1],
            {
                "task": "detection",
                "datasets": {},
                "data_root": "/d",
                "config": "c.yaml",
                "weights": {"path": "w.pkl", "sha256": "x"},
                "iterations": 10,
                "notes": {},
                "seed": seed,
                "metrics": {"bbox": {"AP50": ap50, "AP": 50.0, "AP75": 55.0}},
            },
        )
    # What tools/train_net.py --seeds writes next to the trials.
    _write(s / "voc_det" / "results.json", aggregate_trials(trials))
    return s


def _row(markdown, name):
    line = next(row for row in markdown.splitlines() if row.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_table3_has_the_paper_rows_exactly(suite):
    markdown, data = report.build_report([suite])
    assert "| Measurement | VOC07 Accuracy | VOC07+12 AP50 | COCO AP | COCO APS |" in markdown
    assert _row(markdown, "MoCo v2 (paper)") == ["87.1", "82.5", "42.0", "20.8"]
    assert _row(markdown, "SwAV (paper)") == ["88.9", "82.6", "42.1", "19.7"]
    assert _row(markdown, "CLSA (paper)") == ["93.6", "83.2", "42.3", "24.4"]
    assert _row(markdown, "Supervised (paper)") == ["87.5", "81.3", "40.8", "20.1"]


def test_our_row_shows_mean_and_std_over_seeds_and_names_what_is_missing(suite):
    markdown, data = report.build_report([suite])
    ours = _row(markdown.split("### Extended")[0], "clsa_single_200ep (ours)")
    assert ours[0] == "90.0 (frozen features)"
    assert ours[1] == "81.0 ± 1.0"  # population std of 80 and 82
    assert ours[2] == ours[3] == "— (COCO detection not run)"
    assert data["ours"]["clsa_single_200ep"]["table3"]["COCO AP"] == {"missing": "COCO detection not run"}
    assert not re.search(r"\|\s*0\.0\s*\|", markdown.split("### Extended")[0]), "missing must never read as 0"


def test_a_detector_that_found_nothing_says_after_how_many_iterations(suite):
    results = json.loads((suite / "voc_det" / "results.json").read_text())
    results["metrics"]["bbox"]["AP50"], results["metrics_std"]["bbox"]["AP50"] = 0.0, 0.0
    (suite / "voc_det" / "results.json").write_text(json.dumps(results))
    markdown, data = report.build_report([suite])
    assert _row(markdown, "clsa_single_200ep (ours)")[1] == "0.0 ± 0.0 (nothing detected after 10 iterations)"
    assert data["ours"]["clsa_single_200ep"]["table3"]["VOC07+12 AP50"]["iterations"] == 10


def test_a_detector_that_found_almost_nothing_keeps_its_digits(suite):
    results = json.loads((suite / "voc_det" / "results.json").read_text())
    results["metrics"]["bbox"]["AP50"], results["metrics_std"]["bbox"]["AP50"] = 0.0213, 0.004
    (suite / "voc_det" / "results.json").write_text(json.dumps(results))
    markdown, _ = report.build_report([suite])
    expected = "0.021 ± 0.004 (almost nothing detected after 10 iterations)"
    assert _row(markdown, "clsa_single_200ep (ours)")[1] == expected


def test_voc07_accuracy_takes_the_reference_protocol_and_names_it_and_the_extended_table_keeps_the_rest(suite):
    _write(suite / "voc07_svm" / "results.json", {"task": "voc07_svm", "metrics": {"voc07_svm_mAP": 85.0}})
    _write(
        suite / "voc07_clsa" / "results.json",
        {
            "task": "voc07_linear",
            "protocol_name": "clsa",
            "metrics": {"voc07_per_image_AP": 93.64, "voc07_mAP": 88.0, "best_epoch": 40},
        },
    )
    markdown, data = report.build_report([suite])
    table3, extended = markdown.split("### Extended")
    assert _row(table3, "clsa_single_200ep (ours)")[0] == "93.6 (reference protocol)"
    assert data["ours"]["clsa_single_200ep"]["table3"]["VOC07 Accuracy"]["protocol"] == "reference protocol"
    # The frozen-feature protocol's numbers and the SVM stay in the extended table.
    columns = [c.title for c in report.EXTENDED]
    row = dict(zip(columns, _row(extended, "clsa_single_200ep (ours)")))
    assert (row["VOC07 linear per-class mAP"], row["VOC07 linear per-image AP"]) == ("80.0", "90.0")
    assert row["VOC07 SVM mAP"] == "85.0"

    (suite / "voc07_clsa" / "results.json").unlink()
    (suite / "voc07_clsa" / "FAILED").write_text("exit code 1: killed\n")
    markdown, _ = report.build_report([suite])
    assert _row(markdown.split("### Extended")[0], "clsa_single_200ep (ours)")[0] == "90.0 (frozen features)"


def test_a_failed_stage_shows_its_reason(suite):
    (suite / "coco_det").mkdir()
    (suite / "coco_det" / "FAILED").write_text("exit code 1: out of memory\n")
    markdown, _ = report.build_report([suite])
    assert "— (failed: exit code 1: out of memory)" in markdown


def test_synthetic_data_is_flagged_as_smoke_scale(suite, tmp_path):
    (tmp_path / "datasets" / "VOC2007").mkdir(parents=True)
    (tmp_path / "datasets" / "VOC2007" / ".synthetic.json").write_text("{}")
    results = suite / "voc07_linear" / "results.json"
    doc = json.loads(results.read_text())
    results.write_text(json.dumps({**doc, "data_root": str(tmp_path / "datasets" / "VOC2007")}))
    markdown, data = report.build_report([suite])
    assert "SMOKE-SCALE" in markdown and "not paper reproductions" in markdown
    assert data["ours"]["clsa_single_200ep"]["synthetic_data"] is True


def test_main_writes_markdown_json_and_a_png(suite, capsys):
    report.main([str(suite)])
    assert (suite / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((suite / "report.json").read_text())["paper"]["CLSA"] == [93.6, 83.2, 42.3, 24.4]
    out = capsys.readouterr().out
    assert (suite / "report.md").read_text() in out and out.startswith("environment: torch")


def _error_line(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        exit_on_user_error(report.main, argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_a_truncated_results_json_is_one_error_line_naming_it(suite, capsys):
    results = suite / "voc07_linear" / "results.json"
    results.write_text(results.read_text()[:20])
    assert str(results) in _error_line([str(suite)], capsys)
    assert not (suite / "report.md").exists()


def test_a_folder_without_any_stage_is_refused(tmp_path, capsys):
    (tmp_path / "somewhere" / "notes").mkdir(parents=True)
    err = _error_line([str(tmp_path / "somewhere")], capsys)
    assert "holds no stage folder" in err and "run_suite.py" in err
    assert not list((tmp_path / "somewhere").glob("report.*"))


def test_pretrain_dir_adds_the_curves_of_its_metrics_also_of_an_older_run(suite, tmp_path, capsys):
    run = tmp_path / "pretrain"
    run.mkdir()
    # An older run's lines: its instance accuracy under "top1", and no "epoch".
    lines = [{"iteration": 19, "loss": 8.0, "top1": 0.1}, {"iteration": 39, "loss": 7.0, "top1": 0.3}]
    (run / "metrics.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report.main([str(suite), "--pretrain-dir", str(run)])
    assert (suite / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    panel = next(ax for ax in report.curves(run).axes if ax.get_title() == "instance-discrimination accuracy")
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in panel.get_lines()] == [([19, 39], [0.1, 0.3])]

    (run / "metrics.json").unlink()  # a checkpoint's folder without its run's metrics
    (suite / "curves.png").unlink()
    report.main([str(suite), "--pretrain-dir", str(run)])
    assert f"no curves.png: {run} has no metrics.json" in capsys.readouterr().out
    assert not (suite / "curves.png").exists()


def test_report_png_shows_our_missing_cells_as_not_run(suite):
    _, data = report.build_report([suite])
    ax = report.figure(data).axes[0]
    ours = [(t.get_text(), t.get_color()) for t in ax.texts][-4:]  # our row comes after the paper's four
    assert ours == [("90.0", "black"), ("81.0", "black"), ("not run", "red"), ("not run", "red")]
