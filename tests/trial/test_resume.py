"""A trial killed mid-training and started again resumes after its last checkpoint, as if never stopped (issue 36):
the digits trainer run to its end in one go, and the same point killed -9 after a checkpoint and run again, end with
the same history, step for step, the same objective and the same best epoch; the work lost is the epoch in flight."""

import json
import os
import signal
import subprocess

import pytest
from support.paths import PY, ROOT
from support.realkube import wait_for

from controller.ledger.trials import proposal_record

pytestmark = pytest.mark.e2e
TRAINER = str(ROOT / "examples" / "digits" / "trainer.py")
POINT = {"hidden": 32, "alpha": 1e-4, "lr": 3e-3, "batch": 32}
EPOCHS = 60


def _folder(path):
    path.mkdir()
    (path / "proposal.json").write_text(json.dumps(proposal_record(0, POINT, {}, 7, "tpe", model_file="model.npz")))
    return path


def _run(folder, attempt=1, **popen):
    env = {**os.environ, "CIFAR_HPO_ATTEMPT": str(attempt)}
    return subprocess.Popen([PY, TRAINER, "--trial", str(folder), "--epochs", str(EPOCHS)], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True, **popen)


def _pointer_step(folder):
    try:
        return json.loads((folder / "checkpoint" / "latest.json").read_text())["step"]
    except (OSError, ValueError):
        return 0


def test_a_trial_killed_after_a_checkpoint_resumes_as_if_never_stopped(tmp_path):
    whole = _folder(tmp_path / "whole")
    assert _run(whole).wait(300) == 0
    expected = json.loads((whole / "result.json").read_text())
    assert expected["epochs_run"] == EPOCHS

    killed = _folder(tmp_path / "killed")
    first = _run(killed)
    wait_for("a checkpoint after epoch 5", lambda: _pointer_step(killed) >= 5, proc=first)
    first.send_signal(signal.SIGKILL)  # a preemption that gives no time: whatever ran after the checkpoint is lost
    assert first.wait(60) == -signal.SIGKILL
    assert not (killed / "result.json").exists()
    at_kill = _pointer_step(killed)
    assert at_kill < EPOCHS, "the trial ended before the kill: raise EPOCHS"

    second = _run(killed, attempt=2)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    assert f"attempt 2 resumes after step {at_kill}" in err
    got = json.loads((killed / "result.json").read_text())
    assert got["history"]["objective"] == expected["history"]["objective"]  # each epoch once, the same values
    assert len(got["history"]["objective"]) == got["epochs_run"] == EPOCHS
    assert (got["objective"], got["best_epoch"]) == (expected["objective"], expected["best_epoch"])
    assert (killed / "model.npz").read_bytes() == (whole / "model.npz").read_bytes()  # the best over both attempts
