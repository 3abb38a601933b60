"""The trainer as a process, as local mode and Kubernetes run it, on tiny models and generated data."""

import json
import os
import signal
import subprocess
import time

import pytest
from support.paths import PY, ROOT, SEED_RESULTS

from controller.data import cifar
from trainer import data

pytestmark = pytest.mark.e2e

BEST = json.loads(sorted(SEED_RESULTS.glob("*.json"))[-1].read_text())["space"]
TINY = ["--width-scale", "0.1"]


def _trial(tmp_path, params=BEST, tid=0):
    d = tmp_path / f"trial{tid}"
    d.mkdir()
    (d / "proposal.json").write_text(json.dumps({"schema_version": 1, "tid": tid, "params": params}))
    return d


def _trainer(*args, **kw):
    return subprocess.run([PY, "-m", "trainer", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, **kw)


def test_trains_and_writes_progress_result_and_model(tmp_path):
    d = _trial(tmp_path)
    p = _trainer("--trial", str(d), "--data", "synthetic:600", "--epochs", "2", "--patience", "0", *TINY)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads((d / "result.json").read_text())
    assert result["status"] == "ok" and result["tid"] == 0 and result["epochs_run"] == 2
    # The contract's objective series, beside the seed's names for the same numbers (so old and new plot alike).
    assert result["history"]["objective"] == result["history"]["val_fine_outputs_acc"]
    assert result["objective"] == result["val_fine_accuracy"] == max(result["history"]["objective"])
    assert 0 <= result["test_fine_accuracy"] <= 1 and result["test_coarse_accuracy"] is not None
    assert set(result["history"]) == {"loss", "fine_outputs_loss", "coarse_outputs_loss", "fine_outputs_acc",
                                      "coarse_outputs_acc", "val_loss", "val_fine_outputs_loss",
                                      "val_coarse_outputs_loss", "val_fine_outputs_acc", "val_coarse_outputs_acc",
                                      "objective"}
    assert result["params"] == BEST and result["params_count"] > 0 and result["images_per_second"] > 0
    progress = json.loads((d / "progress.json").read_text())
    assert progress["epoch"] == 2 and progress["device"] == "cpu" and progress["precision"] == "float32"
    import keras

    import trainer.optimizers  # noqa: F401 (registers the original's optimizers, which the file names)

    model = keras.models.load_model(d / "model.keras")
    assert model.count_params() == result["params_count"]
    assert "epoch 2/2" in p.stderr  # one line per epoch when not on a TTY


def test_beats_chance_on_synthetic_data(tmp_path):
    small = {**BEST, "nb_conv_pool_layers": 2, "residual": None, "pooling_type": "max", "use_BN": True}
    d = _trial(tmp_path, small)
    p = _trainer("--trial", str(d), "--data", "synthetic:2000", "--epochs", "3", "--patience", "0",
                 "--width-scale", "0.25")
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((d / "result.json").read_text())["objective"] > 0.05  # chance: 0.01


def test_reads_the_standard_archive(tmp_path):
    ds = data.synthetic(400, seed=2)
    archive = tmp_path / "cifar-100-python.tar.gz"
    cifar.write_archive(archive, ds.train, ds.test)
    d = _trial(tmp_path)
    p = _trainer("--trial", str(d), "--data", str(archive), "--epochs", "1", *TINY)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads((d / "result.json").read_text())
    assert result["status"] == "ok" and str(archive) in result["data"]


@pytest.mark.parametrize("requested", [True, False], ids=["controller-stop", "eviction"])
def test_sigterm_ends_with_a_stopped_result_only_when_the_controller_asked(tmp_path, requested):
    """The controller writes stop.json before it stops a trial: then SIGTERM gives a 'stopped' result. A SIGTERM
    without it (a node drain, an eviction) exits 143 with no result, so that the Job's retry runs the trial."""
    d = _trial(tmp_path)
    proc = subprocess.Popen([PY, "-m", "trainer", "--trial", str(d), "--data", "synthetic:1500", "--epochs", "200",
                             "--patience", "0", *TINY], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (d / "progress.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(0.1)
    if requested:
        (d / "stop.json").write_text(json.dumps({"schema_version": 1, "tid": 0, "reason": "early-stopped: test"}))
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    if not requested:
        assert code == 143 and not (d / "result.json").exists()
        assert b"SIGTERM without a stop request" in proc.stderr.read()
        return
    assert code == 0
    result = json.loads((d / "result.json").read_text())
    assert result["status"] == "stopped" and result["stop_reason"] == "sigterm"
    assert result["objective"] is not None and result["epochs_run"] >= 1
    assert (d / "model.keras").exists()


def test_bad_params_fail_fast_with_exit_3_naming_them(tmp_path):
    d = _trial(tmp_path, {**BEST, "pooling_type": "fractional"})
    p = _trainer("--trial", str(d), "--data", "synthetic:300")
    assert p.returncode == 3
    result = json.loads((d / "result.json").read_text())
    assert result["status"] == "fail" and "params.pooling_type" in result["error"]


def test_a_trial_that_requested_a_gpu_and_sees_none_fails_at_once_saying_what_it_saw(tmp_path):
    """Not hours of CPU training into the deadline: exit 3 (the Job fails at once), a 'fail' result naming the GPU
    count, the device files and the CUDA/cuDNN TensorFlow was built with; no data read, no epoch run."""
    import os

    d = _trial(tmp_path)
    p = _trainer("--trial", str(d), "--data", "synthetic:60000", env={**os.environ, "CIFAR_HPO_EXPECT_GPUS": "1"})
    assert p.returncode == 3, p.stderr[-2000:]
    result = json.loads((d / "result.json").read_text())
    assert result["status"] == "fail" and "requested 1 GPU(s) and TensorFlow sees 0" in result["error"]
    assert "NVIDIA_VISIBLE_DEVICES=" in result["error"] and "CUDA" in result["error"]
    assert not (d / "progress.json").exists() and "data synthetic" not in p.stderr  # no data read, no epoch run


def test_local_search_with_the_real_trainer(tmp_path):
    """README command (1) in miniature: the controller's default trial command is the trainer."""
    store = tmp_path / "runs"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trial:\n  extraArgs: [--width-scale, '0.1', --patience, '0']\nlocal:\n  pollSeconds: 0.1\n")
    p = subprocess.run([PY, "-m", "controller", "run", "--config", str(cfg), "--local", "--store", str(store),
                        "--max-trials", "2", "--parallelism", "2", "--seed", "1", "--data", "synthetic:300",
                        "--epochs", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(subprocess.run([PY, "-m", "controller", "status", "--store", str(store), "--json"], cwd=ROOT,
                                    capture_output=True, text=True).stdout)
    assert [t["state"] for t in doc["trials"]] == ["ok", "ok"]
    assert all(t["metrics"]["test_fine_accuracy"] is not None for t in doc["trials"])


def test_a_proposal_breaking_the_contracts_schema_is_refused_before_any_work(tmp_path):
    """The trainer starts through the trial library, whose start() checks proposal.json against its schema: a
    proposal without params (or with a tid that is not an integer) exits 3 naming the field, and writes nothing."""
    d = tmp_path / "trial"
    d.mkdir()
    (d / "proposal.json").write_text(json.dumps({"schema_version": 1, "tid": 4}))
    p = _trainer("--trial", str(d), "--data", "synthetic:600", "--epochs", "1", *TINY)
    assert p.returncode == 3 and "proposal.json: params: required, missing" in p.stderr, p.stderr[-2000:]
    (d / "proposal.json").write_text(json.dumps({"schema_version": 1, "tid": True, "params": BEST}))
    p = _trainer("--trial", str(d), "--data", "synthetic:600", "--epochs", "1", *TINY)
    assert p.returncode == 3 and "proposal.json: tid:" in p.stderr, p.stderr[-2000:]
    assert sorted(f.name for f in d.iterdir()) == ["proposal.json"]


def test_the_trainers_records_never_hold_a_non_finite_number(tmp_path):
    """A diverged run: NaN/inf as numpy and Python floats, nested; every reader must still parse it."""
    import numpy as np

    from controller.store.base import get_json
    from controller.store.uri import open_store
    from controller.trial import Trial

    store = open_store(str(tmp_path / "t"))
    rep = Trial(store, {"tid": 7, "params": {}})
    hist = {"loss": [np.float32(2.5), np.float32("nan")], "val_fine_outputs_acc": [0.1, float("inf")]}
    rep.progress({"epoch": 2, "history": hist, "best": np.float64("-inf")})
    assert rep.result({"status": "ok", "objective": np.float32(0.1), "history": hist, "pair": (1, np.nan)})
    progress, result = get_json(store, "progress.json"), get_json(store, "result.json")  # strict: no NaN allowed
    assert progress["history"]["loss"] == [2.5, None] and progress["best"] is None
    assert result["non_finite_values"] == 3 and result["pair"] == [1, None]
    assert abs(result["objective"] - 0.1) < 1e-6


def test_the_default_run_never_stops_on_patience():
    """The original trained every epoch; a plateau of 60 epochs must not end a default trial early."""
    import threading

    from trainer.train import TrainSettings, _Watch

    class _Model:
        stop_training = False

        def get_weights(self):
            return []

    assert TrainSettings().patience == 0
    watch = _Watch(TrainSettings(), lambda snap: None, threading.Event(), n_train=100)
    watch.set_model(_Model())
    for epoch in range(60):
        watch.on_epoch_end(epoch, {"val_fine_outputs_accuracy": 0.5 if epoch == 0 else 0.4})
    assert not watch.model.stop_training and watch.stop_reason == "completed" and watch.best_epoch == 1
    patient = _Watch(TrainSettings(patience=10), lambda snap: None, threading.Event(), n_train=100)
    patient.set_model(_Model())
    for epoch in range(12):
        patient.on_epoch_end(epoch, {"val_fine_outputs_accuracy": 0.5 if epoch == 0 else 0.4})
    assert patient.model.stop_training and patient.stop_reason == "patience"  # still there when asked for


def test_the_result_says_where_the_start_up_went_and_status_shows_it(tmp_path):
    store = tmp_path / "runs"
    p = subprocess.run([PY, "-m", "controller", "run", "--local", "--store", str(store), "--max-trials", "1",
                        "--data", "synthetic:300", "--epochs", "1"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**__import__("os").environ})
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(next(store.rglob("result.json")).read_text())
    phases = result["startup"]
    assert set(phases) == {"interpreter_and_imports_s", "data_read_s", "model_build_s", "first_step_s"}
    assert all(v > 0 for v in phases.values()), phases
    table = subprocess.run([PY, "-m", "controller", "status", "--store", str(store)], cwd=ROOT, capture_output=True,
                           text=True).stdout
    assert "trial start-up, median of 1:" in table and "interpreter and imports" in table
    report = subprocess.run([PY, "-m", "controller", "report", "--store", str(store), "--out", str(tmp_path / "r")],
                            cwd=ROOT, capture_output=True, text=True)
    assert report.returncode == 0 and "trial start-up, median of 1:" in (tmp_path / "r" / "index.html").read_text()


def test_a_store_outage_on_progress_does_not_end_the_trial(tmp_path):
    from controller.errors import TemporaryError
    from controller.store.uri import open_store
    from controller.trial import Trial

    class Down:
        def __init__(self, inner):
            self.inner = inner

        def put(self, key, data):
            raise TemporaryError("SlowDown (HTTP 503)")

        def __getattr__(self, name):
            return getattr(self.inner, name)

    store = open_store(str(tmp_path / "t"))
    Trial(Down(store), {"tid": 3, "params": {}}).progress({"epoch": 1, "history": {}})  # logged, not raised
    assert Trial(store, {"tid": 3, "params": {}}).result({"status": "ok", "objective": 0.5})


def test_the_time_limit_ends_training_before_the_jobs_deadline(monkeypatch):
    """The controller passes when the Job's activeDeadlineSeconds will end it; the trainer stops 300 s before,
    so a trial near its deadline ends with its best epoch evaluated and saved instead of being killed."""
    from trainer.__main__ import time_limit

    monkeypatch.delenv("CIFAR_HPO_DEADLINE_AT", raising=False)
    assert time_limit(None, now=1000.0) is None and time_limit(50.0, now=1000.0) == 50.0
    monkeypatch.setenv("CIFAR_HPO_DEADLINE_AT", "4600")
    assert time_limit(None, now=1000.0) == 3300.0  # 3600 s left, 300 s kept for the test set and the model
    assert time_limit(600.0, now=1000.0) == 600.0 and time_limit(None, now=4500.0) == 0.0


def test_a_trial_killed_after_a_checkpoint_resumes_at_the_next_epoch_with_each_epoch_once(tmp_path):
    """The CIFAR trainer checkpoints every epoch (weights, the optimizer's variables, the history, the best epoch
    and its weights): killed -9 after one, and started again as attempt 2, it trains only the epochs left, and its
    result has each epoch once and the total asked."""
    import signal

    from support.realkube import wait_for

    epochs, d = 12, _trial(tmp_path)
    args = [PY, "-m", "trainer", "--trial", str(d), "--data", "synthetic:600", "--epochs", str(epochs),
            "--patience", "0", *TINY]
    pointer = d / "checkpoint" / "latest.json"

    def step():
        try:
            return json.loads(pointer.read_text())["step"]
        except (OSError, ValueError):
            return 0

    first = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.DEVNULL)
    wait_for("the checkpoint of epoch 2", lambda: step() >= 2, proc=first)
    first.send_signal(signal.SIGKILL)
    first.wait(60)
    at_kill = step()
    assert not (d / "result.json").exists() and at_kill < epochs, "it ended before the kill: raise epochs"
    second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "CIFAR_HPO_ATTEMPT": "2"})
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming after epoch {at_kill} of {epochs}" in second.stderr
    assert f"epoch {at_kill}/{epochs}" not in second.stderr and f"epoch {at_kill + 1}/{epochs}" in second.stderr
    result = json.loads((d / "result.json").read_text())
    assert result["epochs_run"] == epochs and len(result["history"]["objective"]) == epochs
    assert all(len(series) == epochs for series in result["history"].values()), result["history"]
    assert result["objective"] == max(result["history"]["objective"])
    assert result["history"]["objective"][result["best_epoch"] - 1] == result["objective"]
