"""The dataset is fetched from its origin once per store, checked by SHA-256, staged as arrays, and read by every
trial from there (controller/data/staging.py, trainer/data.py). The origin here is a local HTTP server that counts what
it serves."""

import hashlib
import http.server
import json
import os
import subprocess
import threading

import numpy as np
import pytest
from support.cli import run_cli

from controller.data import cifar
from trainer import data

pytestmark = pytest.mark.e2e


class Origin:
    """Serves one archive; `plan` says what each request gets: good, truncated or corrupt (then good)."""

    def __init__(self, payload: bytes, plan=()):
        self.payload, self.plan, self.requests = payload, list(plan), 0
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def do_GET(self):
                origin.requests += 1
                how = origin.plan.pop(0) if origin.plan else "good"
                body = {"good": origin.payload, "truncated": origin.payload[: len(origin.payload) // 2],
                        "corrupt": origin.payload[:-10] + b"x" * 10}[how]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-100-python.tar.gz"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    ds = data.synthetic(300, seed=3)
    path = tmp_path_factory.mktemp("origin") / "cifar-100-python.tar.gz"
    cifar.write_archive(path, ds.train, ds.test)
    payload = path.read_bytes()
    return payload, hashlib.sha256(payload).hexdigest(), ds


def test_a_6_trial_search_reads_the_origin_once_and_every_trial_reads_the_staged_copy(tmp_path, archive,
                                                                                       fake_trial_config):
    payload, sha, ds = archive
    datalog, store = tmp_path / "datalog", tmp_path / "runs"
    with Origin(payload) as origin:
        for search in ("first", "second"):  # a second search in the same store shares the staged copy
            run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", str(store), "--search", search,
                    "--max-trials", "6", "--parallelism", "3", "--data", origin.url, "--data-sha256", sha,
                    env={"FAKE_TRIAL_DATALOG": str(datalog)})
        assert origin.requests == 1
    staged = store / "datasets" / f"{sha}.npz"
    assert datalog.read_text().split() == [str(staged)] * 12
    got = data.load(str(staged))
    assert np.array_equal(got.train.x, ds.train.x) and np.array_equal(got.test.coarse, ds.test.coarse)


def test_a_truncated_or_corrupted_download_is_refused_by_checksum_and_retried(tmp_path, archive, fake_trial_config):
    payload, sha, _ = archive
    with Origin(payload, plan=["truncated", "corrupt"]) as origin:
        p = run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", str(tmp_path / "runs"),
                    "--max-trials", "1", "--data", origin.url, "--data-sha256", sha)
        assert origin.requests == 3
    assert p.stderr.count("differs from the expected") == 2
    assert (tmp_path / "runs" / "datasets" / f"{sha}.npz").exists()


@pytest.mark.parametrize("case", ["unreachable", "always corrupt"])
def test_a_source_that_cannot_be_had_ends_the_run_before_any_trial(tmp_path, archive, fake_trial_config, case):
    payload, sha, _ = archive
    with Origin(payload, plan=["corrupt"] * 3) as origin:
        url = origin.url
        if case == "unreachable":
            origin.httpd.shutdown()
            origin.httpd.server_close()
        p = run_cli("run", "--config", str(fake_trial_config()), "--local", "--store", str(tmp_path / "runs"),
                    "--max-trials", "4", "--data", url, "--data-sha256", sha, check=False)
    assert p.returncode == 2 and url in p.stderr and "trial.data (--data)" in p.stderr, p.stderr[-2000:]
    assert ("cannot be read" if case == "unreachable" else "differs from the expected") in p.stderr
    assert not list((tmp_path / "runs").rglob("proposal.json"))  # no trial was started with it


def test_two_trials_filling_the_node_cache_at_once_both_get_a_correct_copy(tmp_path, archive):
    payload, _, ds = archive
    staged = tmp_path / "staged.npz"
    staged.write_bytes(cifar.archive_to_npz(payload, "test"))
    cache, both_reading = tmp_path / "node-cache", threading.Barrier(2)
    results, reads = [], []

    def read():
        reads.append(1)
        both_reading.wait(timeout=30)  # both trials are inside the fill at the same time
        return staged.read_bytes()

    def trial():
        results.append(data.load_npz(data.cached(str(staged), read, str(cache)), "t"))

    threads = [threading.Thread(target=trial) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(reads) == 2 and len(results) == 2
    assert all(np.array_equal(r.train.x, ds.train.x) for r in results)
    copy = cache / "staged.npz"
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == (cache / "staged.npz.sha256").read_text()
    assert data.cached(str(staged), lambda: pytest.fail("a good copy is read from the cache"), str(cache))
    copy.write_bytes(copy.read_bytes()[:100])  # a damaged copy is fetched again
    assert data.cached(str(staged), staged.read_bytes, str(cache)) == staged.read_bytes()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_the_trainer_trains_on_the_staged_arrays(tmp_path, archive):
    import subprocess

    from support.paths import PY, ROOT, SEED_RESULTS

    payload, _, _ = archive
    staged = tmp_path / "staged.npz"
    staged.write_bytes(cifar.archive_to_npz(payload, "test"))
    best = max((json.loads(f.read_text()) for f in SEED_RESULTS.glob("*.json")), key=lambda d: d["fine_best_accuracy"])
    trial = tmp_path / "trial"
    trial.mkdir()
    (trial / "proposal.json").write_text(json.dumps({"schema_version": 1, "tid": 0, "params": best["space"]}))
    p = subprocess.run([PY, "-m", "trainer", "--trial", str(trial), "--data", str(staged), "--epochs", "1",
                        "--width-scale", "0.1", "--val-size", "50"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**__import__("os").environ, "CIFAR_HPO_DATA_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads((trial / "result.json").read_text())
    assert result["status"] == "ok" and result["data"] == str(staged)
    assert (tmp_path / "cache" / "staged.npz").exists()


def test_a_trial_loads_the_staged_arrays_only_with_the_checksum_the_controller_staged(tmp_path, archive):
    """Staging records the arrays' own SHA-256 beside them; trials get it as --data-sha256 and refuse a copy that
    differs (changed in the bucket, or in a node cache), fetching a cache copy again when it is the one that differs."""
    from controller.data.staging import stage
    from controller.errors import ConfigError
    from controller.settings.config import Settings
    from controller.store.uri import open_store

    payload, sha, ds = archive
    origin = tmp_path / "cifar-100-python.tar.gz"
    origin.write_bytes(payload)
    root = open_store(str(tmp_path / "runs"))
    staged = stage(str(origin), sha, root)
    arrays = root.get(f"datasets/{sha}.npz")
    assert staged.arrays_sha256 == hashlib.sha256(arrays).hexdigest()
    assert stage(str(origin), sha, root).arrays_sha256 == staged.arrays_sha256  # read back, not recomputed
    settings = staged.settings(Settings())
    assert settings.trial.argv("t")[-2:] == ["--data-sha256", staged.arrays_sha256]
    path = str(tmp_path / "runs" / "datasets" / f"{sha}.npz")
    assert np.array_equal(data.load(path, sha256=staged.arrays_sha256).train.x, ds.train.x)
    (tmp_path / "runs" / "datasets" / f"{sha}.npz").write_bytes(arrays[:-10] + b"tampered!!")
    with pytest.raises(ConfigError, match="differs from --data-sha256"):
        data.load(path, sha256=staged.arrays_sha256)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{sha}.npz").write_bytes(b"other")  # a cache copy consistent with itself, not with the stage
    (cache / f"{sha}.npz.sha256").write_text(hashlib.sha256(b"other").hexdigest())
    assert data.cached(path, lambda: arrays, str(cache), staged.arrays_sha256) == arrays


def test_an_s3_archive_is_staged_through_the_stores_endpoint_with_none_exported(tmp_path, archive, bucket,
                                                                                  s3_endpoint):
    """MinIO, Ceph, versitygw: the store's endpoint is in the settings only (store.endpointUrl), exported to no
    process; the archive pinned in that same store is fetched through it, not from AWS."""
    import boto3
    from support.paths import PY, ROOT

    payload, sha, _ = archive
    boto3.client("s3").put_object(Bucket=bucket, Key="data/cifar-100-python.tar.gz", Body=payload)
    cfg = tmp_path / "search.yaml"
    cfg.write_text(
        f"store: {{uri: 's3://{bucket}/runs', endpointUrl: '{s3_endpoint}', region: us-east-1}}\n"
        f"trial: {{command: [{PY}, {ROOT / 'tests' / 'objective.py'}], data: 's3://{bucket}/data/cifar-100-python.tar.gz',"
        f" dataSha256: '{sha}'}}\nlocal: {{pollSeconds: 0.05}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    p = subprocess.run([PY, "-m", "controller", "run", "--local", "--config", str(cfg), "--max-trials", "1"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="runs/datasets/")["Contents"]]
    assert f"runs/datasets/{sha}.npz" in keys


def test_a_cache_folder_the_trial_cannot_write_costs_the_cache_not_the_trial(tmp_path, archive, caplog):
    """A root-owned hostPath or NFS claim (fsGroup does not apply there): the trial reads the store and says how to
    fix the folder, instead of failing with EACCES. (Tests run as root, which no mode bits stop: a file where the
    folder should be makes the same OSError.)"""
    payload, _, _ = archive
    blocked = tmp_path / "cache"
    blocked.write_bytes(b"not a folder")
    got = data.cached("s3://b/datasets/x.npz", lambda: payload, str(blocked))
    assert got == payload
    assert "not writable by uid" in caplog.text and "chmod 1777" in caplog.text


def test_searches_stage_their_datasets_one_at_a_time(tmp_path, archive):
    """Several Searches starting together (an operator restart) stage one after the other: at most one archive and
    its arrays in memory at once."""
    from controller.data.staging import stage
    from controller.store.local import MemoryStore

    payload, sha, _ = archive
    inside, most = [0], [0]
    lock = threading.Lock()

    def fetcher(source):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        threading.Event().wait(0.2)  # long enough for the other thread to try to enter; the count is what's checked
        with lock:
            inside[0] -= 1
        return payload

    roots = [MemoryStore(f"memory://r{i}") for i in range(3)]
    threads = [threading.Thread(target=stage, args=(f"/data/{i}.tar.gz", sha, roots[i]), kwargs={"fetcher": fetcher})
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert most[0] == 1 and all(r.exists(f"datasets/{sha}.npz") for r in roots)


def test_a_program_other_than_the_cifar_trainer_gets_no_data_unless_it_names_some(tmp_path):
    """Third audit: a config without `trial.data: none` staged CIFAR-100 for a LightGBM search. A program of one's
    own, no data named: nothing is fetched or staged, and no --data reaches the trial."""
    from support.paths import PY, ROOT

    cfg = tmp_path / "own.yaml"
    cfg.write_text(f"trial:\n  command: [{PY}, {ROOT / 'tests' / 'objective.py'}]\nlocal:\n  pollSeconds: 0.05\n")
    store = tmp_path / "runs"
    out = run_cli("run", "--config", str(cfg), "--local", "--store", str(store), "--max-trials", "2",
                  env={"FAKE_TRIAL_DATALOG": str(tmp_path / "datalog")})
    assert json.loads(out.stdout)["state"] == "succeeded"
    assert not (store / "datasets").exists() and "dataset" not in out.stderr
    assert (tmp_path / "datalog").read_text().split() == ["None", "None"]  # no --data: the program's default
