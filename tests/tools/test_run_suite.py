import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

REPO = Path(__file__).resolve().parents[2]


def _suite(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, str(REPO / "tools/run_suite.py"), *args], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


def test_a_second_run_with_the_same_checkpoint_runs_no_stage(checkpoint, tmp_path):
    first = _suite("--weights", str(checkpoint), "--out", str(tmp_path), "--only", "convert")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "convert: done" in first.stdout and (tmp_path / "convert" / "model_d2.pkl").is_file()
    stamp = json.loads((tmp_path / "convert" / "stage.json").read_text())
    assert stamp["weights_sha256"] and stamp["command"][-1].endswith("model_d2.pkl")

    second = _suite("--weights", str(checkpoint), "--out", str(tmp_path), "--only", "convert")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "convert: already done for this checkpoint and data, skipped" in second.stdout


def test_results_of_another_checkpoint_or_profile_are_never_reused_or_overwritten(checkpoint, tmp_path):
    assert _suite("--weights", str(checkpoint), "--out", str(tmp_path), "--only", "convert").returncode == 0
    other = tmp_path.parent / "other.pth"
    torch.save(torchvision.models.resnet50().state_dict(), other)
    clash = _suite("--weights", str(other), "--out", str(tmp_path), "--only", "convert")
    assert clash.returncode != 0 and "written by another run" in clash.stderr
    stamp = json.loads((tmp_path / "convert" / "stage.json").read_text())
    from common.io import sha256_file

    assert stamp["weights_sha256"] == sha256_file(checkpoint), "the first run's results must be kept"


def test_a_checkpoint_no_stage_can_read_is_refused_once_before_anything_is_written(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("not a checkpoint")
    proc = _suite("--weights", str(bad), "--out", str(tmp_path / "suite"))
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {bad}: ") and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "suite").exists() and "[suite]" not in proc.stdout


def test_a_failed_stage_is_recorded_with_its_error_and_the_run_fails(checkpoint, tmp_path):
    out = tmp_path / "suite"
    proc = _suite("--weights", str(checkpoint), "--out", str(out), "--only", "convert", "--stage-args", "convert=--bad")
    assert proc.returncode == 1 and "failed stages: convert" in proc.stderr
    failed = (out / "convert" / "FAILED").read_text()
    assert failed.startswith("exit code 2: error: unrecognized arguments: --bad"), failed
    status = _suite("--status", str(out))
    assert status.returncode == 0 and status.stdout == f"convert          failed: {failed.split(': ', 1)[1]}"


def test_relative_paths_are_taken_from_the_callers_folder(checkpoint, tmp_path):
    proc = _suite("--weights", checkpoint.name, "--out", "suite", "--only", "convert", cwd=checkpoint.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (checkpoint.parent / "suite" / "convert" / "model_d2.pkl").is_file()
    assert not (REPO / "suite").exists()


def test_a_suite_of_another_checkpoint_is_refused_before_any_stage_writes(checkpoint, tmp_path):
    """The foreign suite has only a voc07_svm stage; convert, which runs first, must not write into it."""
    foreign = tmp_path / "voc07_svm"
    foreign.mkdir()
    (foreign / "stage.json").write_text(json.dumps({"stage": "voc07_svm", "weights_sha256": "0" * 64}))
    proc = _suite("--weights", str(checkpoint), "--out", str(tmp_path), "--only", "convert")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "written by another run" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voc07_svm"]


def test_other_data_under_the_same_out_is_not_taken_as_done(checkpoint, tmp_path, synthetic_root):
    """Another $DETECTRON2_DATASETS, or the same root with another split list, is another suite."""
    import os
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "VOC2007" / "ImageSets", data / "VOC2007" / "ImageSets")
    env = {**os.environ, "DETECTRON2_DATASETS": str(data)}

    def run():
        return _suite("--weights", str(checkpoint), "--out", str(tmp_path / "suite"), "--only", "convert", env=env)

    assert run().returncode == 0
    stamp = json.loads((tmp_path / "suite" / "convert" / "stage.json").read_text())
    assert stamp["data"]["root"] == str(data) and stamp["data"]["files"] > 0
    assert "already done" in run().stdout
    with open(data / "VOC2007" / "ImageSets" / "Main" / "aeroplane_test.txt", "a") as f:
        f.write("009999 -1\n")
    edited = run()
    assert edited.returncode != 0 and "data" in edited.stderr and "another run" in edited.stderr
    env["DETECTRON2_DATASETS"] = str(synthetic_root)
    moved = run()
    assert moved.returncode != 0 and "another run" in moved.stderr


@pytest.mark.slow  # a VOC07 SVM stage on the synthetic set: ~20-60 s on a busy 2-core machine
def test_a_stage_log_is_live_and_ctrl_c_stops_the_stage_without_a_traceback(checkpoint, tmp_path, synthetic_root):
    import os
    import signal
    import time

    log = tmp_path / "suite" / "voc07_svm" / "log.txt"
    suite = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tools/run_suite.py"),
            "--weights",
            str(checkpoint),
            "--out",
            str(tmp_path / "suite"),
            "--only",
            "voc07_svm",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DETECTRON2_DATASETS": str(synthetic_root)},
        # As at a terminal: a shell without job control starts background jobs with SIGINT ignored,
        # which the suite would inherit (CI run that way failed here).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # The stage prints while it runs: its lines reach log.txt then, not when it ends.
    while not (log.is_file() and len(log.read_text().splitlines()) > 1):
        assert suite.poll() is None, suite.communicate()
        time.sleep(0.2)
    stage = [int(pid) for pid in Path(f"/proc/{suite.pid}/task/{suite.pid}/children").read_text().split()]
    assert stage and not (tmp_path / "suite" / "voc07_svm" / "results.json").exists()
    suite.send_signal(signal.SIGINT)
    stdout, stderr = suite.communicate(timeout=120)
    assert suite.returncode == 130 and "Traceback" not in stderr and "interrupted" in stderr, stderr
    assert "the same command resumes" in stdout
    for pid in stage:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert (tmp_path / "suite" / "voc07_svm" / "FAILED").read_text().startswith("interrupted")


def test_imagenet_knn_stage_runs_with_imagenet_and_fills_its_report_column(checkpoint, tmp_path, synthetic_root):
    refused = _suite("--weights", str(checkpoint), "--out", str(tmp_path), "--only", "imagenet_knn")
    assert refused.returncode == 2 and "imagenet_knn needs --imagenet ROOT" in refused.stderr
    proc = _suite(
        "--weights",
        str(checkpoint),
        "--out",
        str(tmp_path),
        "--only",
        "imagenet_knn,report",
        "--imagenet",
        str(synthetic_root / "imagenet"),
        "--profile",
        "smoke",
        "--num-gpus",
        "1",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    top1 = json.loads((tmp_path / "imagenet_knn" / "results.json").read_text())["metrics"]["top1_k20"]
    extended = json.loads((tmp_path / "report.json").read_text())["ours"][tmp_path.name]["extended"]
    assert extended["ImageNet kNN top-1 (k=20)"]["mean"] == pytest.approx(top1)


@pytest.mark.parametrize("schedule, max_iter", [("1x", 90000), ("2x", 180000)])
def test_stage_args_reach_a_detection_stage_as_flags_and_overrides_after_the_profiles(tmp_path, schedule, max_iter):
    """detectron2 parses the stage's command as train_net would: --seeds before the overrides, and the
    stage's overrides after the smoke profile's, so that they win."""
    from argparse import Namespace

    from tools import run_suite, train_net

    args = Namespace(
        stage_args={"coco_det": ["--seeds", "2", "SOLVER.MAX_ITER", "7"]},
        profile="smoke",
        num_gpus=1,
        seeds=5,
        coco_schedule=schedule,
        out=tmp_path,
    )
    command = run_suite.stage_command("coco_det", args, tmp_path / "w.pth", tmp_path / "w.pkl", tmp_path / "coco")
    parsed = train_net.parse_args(command[2:])
    assert parsed.seeds == 2 and parsed.config_file.endswith(run_suite.COCO_CONFIGS[schedule])
    assert train_net.load_cfg(parsed).SOLVER.MAX_ITER == 7
    args.stage_args = {}
    command = run_suite.stage_command("coco_det", args, tmp_path / "w.pth", tmp_path / "w.pkl", tmp_path / "coco")
    assert train_net.load_cfg(train_net.parse_args(command[2:] + ["SOLVER.MAX_ITER", str(max_iter)])).SOLVER.STEPS
    args.profile = "full"
    command = run_suite.stage_command("coco_det", args, tmp_path / "w.pth", tmp_path / "w.pkl", tmp_path / "coco")
    assert train_net.load_cfg(train_net.parse_args(command[2:])).SOLVER.MAX_ITER == max_iter


def test_status_tells_each_state_from_the_stage_folders_and_the_recorded_jobs(tmp_path, capsys):
    """A local executor's job id is its controller's pid: a live process named so stands for a running job."""
    from common.errors import UserError
    from tools import run_suite

    out = tmp_path / "suite"
    for stage, files in {
        "convert": {"stage.json": "{}"},
        "voc07_svm": {"log.txt": "cmd\nerror: bad flag\nTraceback of the launcher\n", "FAILED": "exit code 2"},
        "voc07_linear": {"log.txt": "cmd\nepoch 3\n"},
        "voc_det": {"stage.json": "{}", "FAILED": "exit code 1: x"},
    }.items():
        (out / stage).mkdir(parents=True)
        for name, text in files.items():
            (out / stage / name).write_text(text)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit"])
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    try:
        jobs = {"voc_det": str(running.pid), "report": ended.stdout.strip()}
        (out / "slurm").mkdir()
        (out / "slurm" / "jobs.json").write_text(
            json.dumps({stage: {"job_id": job, "cluster": "local"} for stage, job in jobs.items()})
        )
        run_suite.main(["--status", str(out)])
    finally:
        running.kill()
        running.wait()
    assert capsys.readouterr().out.splitlines() == [
        "convert          done",
        "voc07_svm        failed: error: bad flag",
        "voc07_linear     started, no result yet: epoch 3",
        f"voc_det          running (job {running.pid})",
        f"report           not started (job {jobs['report']} ended)",
    ]
    with pytest.raises(UserError, match="holds no stage of run_suite; pass a run_suite --out folder"):
        run_suite.main(["--status", str(tmp_path)])


@pytest.mark.parametrize(
    "value, message",
    [
        ("nope=--x", "'nope=--x' is not STAGE=\"ARGS\" with STAGE one of convert,"),
        ("voc07_svm", "'voc07_svm' is not STAGE=\"ARGS\""),
        ("voc07_svm=--layer 'res5", '"voc07_svm=--layer \'res5": No closing quotation'),
    ],
)
def test_malformed_stage_args_are_one_error_line(value, message, capsys):
    from tools import run_suite

    with pytest.raises(SystemExit) as exit_code:
        run_suite.main(["--weights", "w.pth", "--out", "o", "--stage-args", value])
    err = capsys.readouterr().err
    assert exit_code.value.code == 2 and err.startswith(f"error: argument --stage-args: {message}"), err
    assert len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def converted_suite(checkpoint, tmp_path_factory):
    """A suite folder whose convert stage finished."""
    out = tmp_path_factory.mktemp("converted") / "suite"
    proc = _suite("--weights", str(checkpoint), "--out", str(out), "--only", "convert")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_a_suite_moved_and_resumed_from_another_checkout_skips_what_is_done(
    checkpoint, converted_suite, other_checkout, tmp_path
):
    """The stamps name scripts relative to the checkout, the checkpoint by its sha256 and outputs
    relative to OUT: another path for each of them is the same run."""
    import shutil

    checkout = other_checkout
    moved = shutil.copytree(converted_suite, tmp_path / "moved" / "suite")
    weights = shutil.copy(checkpoint, tmp_path / "copy.pth")

    def resume(*extra):
        return subprocess.run(
            [sys.executable, str(checkout / "tools/run_suite.py"), "--weights", str(weights), "--out", str(moved)]
            + ["--only", "convert", *extra],
            capture_output=True,
            text=True,
        )

    resumed = resume()
    assert resumed.returncode == 0 and "convert: already done" in resumed.stdout, resumed.stdout + resumed.stderr
    changed = resume("--stage-args", "convert=--overwrite")
    assert changed.returncode == 2 and changed.stderr == (
        f"error: {moved / 'convert' / 'stage.json'}: written by another run (command [..., "
        "'$OUT/convert/model_d2.pkl'] -> [..., '$OUT/convert/model_d2.pkl', '--overwrite']); use another --output-dir, "
        "or move that folder away; it is not overwritten\n"
    )


def test_a_stamp_with_the_absolute_paths_of_older_versions_is_still_taken_as_done(
    checkpoint, converted_suite, tmp_path
):
    import shutil

    out = shutil.copytree(converted_suite, tmp_path / "suite")
    stamp = json.loads((out / "convert" / "stage.json").read_text())
    stamp["command"] = [str(REPO / "converters/to_d2.py"), str(checkpoint), str(out / "convert" / "model_d2.pkl")]
    (out / "convert" / "stage.json").write_text(json.dumps(stamp))
    proc = _suite("--weights", str(checkpoint), "--out", str(out), "--only", "convert")
    assert proc.returncode == 0 and "convert: already done" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow  # three stage jobs, twice, with submitit's local executor: ~1-2 min on a busy 2-core machine
def test_slurm_fans_the_stages_out_after_the_conversion_and_reruns_only_what_failed(
    checkpoint, tmp_path, synthetic_root
):
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from tools import run_suite

    out = tmp_path / "suite"
    suite = ["--slurm", "--slurm-cluster", "local", "--gpus-per-node", "0", "--time", "30", "--profile", "smoke"]
    suite += ["--weights", str(checkpoint), "--out", str(out), "--only", "convert,imagenet_knn,report"]
    suite += ["--imagenet", str(synthetic_root / "imagenet")]

    def finish(jobs):
        for job in jobs.values():
            try:
                job.result()
            except (FailedJobError, UncompletedJobError):
                pass

    def status():
        return subprocess.run(
            [sys.executable, str(REPO / "tools/run_suite.py"), "--status", str(out)], capture_output=True, text=True
        ).stdout.splitlines()

    def span(stage):
        end = (out / stage / "stage.json").stat().st_mtime
        return end - json.loads((out / stage / "stage.json").read_text())["seconds"] - 0.1, end

    first = run_suite.main([*suite, "--stage-args", "imagenet_knn=--batch-size 0"])
    assert sorted(first) == ["convert", "imagenet_knn", "report"]
    finish(first)
    assert status() == [
        "convert          done",
        "imagenet_knn     failed: error: argument --batch-size: must be at least 1, got 0 (see knn.py --help)",
        f"report           not started (job {first['report'].job_id} ended)",
    ]
    converted = (out / "convert" / "stage.json").read_bytes()
    assert (out / "imagenet_knn" / "log.txt").stat().st_mtime >= (out / "convert" / "stage.json").stat().st_mtime

    second = run_suite.main(suite)
    assert sorted(second) == ["imagenet_knn", "report"], "the conversion is done"
    assert status()[1:] == [f"{stage:<16} running (job {second[stage].job_id})" for stage in ("imagenet_knn", "report")]
    assert run_suite.main(suite) == {}, "jobs still queued or running are not submitted again"
    finish(second)
    assert status() == ["convert          done", "imagenet_knn     done", "report           done"]
    assert (out / "convert" / "stage.json").read_bytes() == converted
    assert span("convert")[1] <= span("imagenet_knn")[0] and span("imagenet_knn")[1] <= span("report")[0]
    assert run_suite.main(suite) == {}
