"""The controller serves Prometheus metrics while a search runs."""

import json
import re
import subprocess
import time
import urllib.request

import pytest
from localkube.cluster import free_port
from support.paths import PY, ROOT

pytestmark = pytest.mark.e2e


def _scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def test_metrics_during_a_local_run(tmp_path, fake_trial_config):
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "controller", "run", "--config", str(fake_trial_config()), "--local",
                             "--store", str(tmp_path / "runs"), "--max-trials", "6", "--parallelism", "2",
                             "--epochs", "4", "--metrics-port", str(port)], cwd=ROOT,
                            env={**__import__("os").environ, "FAKE_TRIAL_SLEEP": "0.3"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            text = _scrape(port)
        except OSError:
            time.sleep(0.1)
            continue
        ok = re.search(r'cifar_hpo_trials\{search="cifar100",state="ok"\} (\d+)', text)
        if ok and 1 <= int(ok.group(1)) < 6:  # mid-run: some trials done, budget not spent
            seen, done = text, int(ok.group(1))
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out)["finished"] == 6
    assert seen, "no scrape showed 2 finished trials while the search ran"
    assert 'cifar_hpo_trials_running{search="cifar100"}' in seen
    assert f'cifar_hpo_budget_left{{search="cifar100"}} {6 - done}.0' in seen
    assert "cifar_hpo_best_objective" in seen and "cifar_hpo_proposal_seconds_count" in seen
    assert "cifar_hpo_launch_seconds_count" in seen and "cifar_hpo_temporary_errors_total" in seen


def test_json_logs_carry_search_and_trial_ids(tmp_path, fake_trial_config):
    cfg = fake_trial_config("controller: {logFormat: json}\nsearch: {name: logs-demo}\n")
    proc = subprocess.run([PY, "-m", "controller", "run", "--config", str(cfg), "--local", "--store",
                           str(tmp_path / "runs"), "--max-trials", "2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert lines and all(line["search"] == "logs-demo" for line in lines)
    trial_lines = [line for line in lines if line["msg"].startswith("trial ")]
    assert {line["tid"] for line in trial_lines} == {0, 1}


def test_a_trials_text_cannot_forge_a_line_of_the_controllers_log(tmp_path, fake_trial_config):
    """A trial's error (its own text) with a line break and a terminal escape: the controller's text log shows it
    escaped, on the controller's own line."""
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"0": "forge_log"}))
    cfg = fake_trial_config("search: {name: forge}\n")
    proc = subprocess.run([PY, "-m", "controller", "run", "--config", str(cfg), "--local", "--store",
                           str(tmp_path / "runs"), "--max-trials", "2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "FAKE_TRIAL_FAULTS": str(faults)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "boom\\n2026-01-01 00:00:00,000 INFO search=forged" in proc.stderr, proc.stderr[-3000:]
    assert not any(line.startswith("2026-01-01 00:00:00,000") for line in proc.stderr.splitlines())
    assert "\x1b" not in proc.stderr
