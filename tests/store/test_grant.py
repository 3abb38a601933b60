"""A trial's grant (controller/kube/grant.py) on a store that checks signatures (versitygw): the trial program does its
whole job with it, and every way it could reach past its own keys is refused by the store itself, not by our
client. moto accepts any signature, so this runs on versitygw only; the cluster tests run grants on moto for the
rest (tests/kube/test_cluster.py checks trial pods carry a grant and no keys)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
from support.paths import ROOT

from controller.kube.grant import SLACK_SECONDS, trial_grants
from controller.settings.config import Settings, settings_from_mapping
from controller.store.s3 import S3Store
from controller.trial.contract import GRANT_ENV, trial_keys

pytestmark = pytest.mark.e2e

# The trial program: what any code in a trial pod could try, with nothing but its environment.
ATTACKS = r'''
import json, os, sys, urllib.request, urllib.error
from controller.trial import open_trial
from controller.errors import ConfigError

grant = json.loads(os.environ["CIFAR_HPO_TRIAL_GRANT"])
store, data_opener = open_trial(grant["trial"])
out = {}
out["own proposal"] = json.loads(store.get("proposal.json"))["tid"]
store.put("progress.json", b'{"epoch": 1}')
out["own result created"] = store.create("result.json", b'{"status": "ok"}')
out["own result replaced"] = store.create("result.json", b'{"status": "forged"}')
out["stop requested"] = store.exists("stop.json")
from controller.trial.checkpoint import commit, latest
for step in (1, 2, 3):  # through both slots and back
    commit(store, step, b"state %d" % step, {"objective": [0.1, 0.2, 0.3][:step]})
restored = latest(store)
out["checkpoint"] = [restored.step, restored.state.decode(), restored.history]
parent, _, name = grant["data"]["uri"].rpartition("/")
out["dataset bytes"] = len(data_opener(parent).get(name))

def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()[:60].decode(errors="replace")
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        code = text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in text else ""
        return e.code, code

own_trial = grant["trial"].split("://", 1)[1].split("/", 1)[1]          # prefix/search-a/trials/000001
other = own_trial.replace("search-a", "search-b")
read_url = grant["urls"]["proposal.json"]["GET"]
write_url = grant["urls"]["result.json"]["CREATE"]
out["read another search's result (own URL, other key)"] = http(
    "GET", read_url.replace(own_trial + "/proposal.json", other + "/result.json"))
out["overwrite another search's result (own URL, other key)"] = http(
    "PUT", write_url.replace(own_trial + "/result.json", other + "/result.json"), b'{"status":"forged"}',
    {"If-None-Match": "*"})
out["overwrite the staged dataset"] = http(
    "PUT", write_url.replace(own_trial + "/result.json", grant["data"]["uri"].split("/", 3)[3]), b"poison",
    {"If-None-Match": "*"})
# Its own keys, other than the grant signed them: the signature covers the method and If-None-Match.
out["replace its own result without If-None-Match"] = http("PUT", write_url, b'{"status":"forged"}')
out["read its progress with the write URL"] = http("GET", grant["urls"]["progress.json"]["PUT"])
out["read its model with the write URL"] = http("GET", grant["urls"]["model.keras"]["PUT"])
out["write its proposal with the read URL"] = http("PUT", read_url, b'{"tid": 1, "params": {}}')
base = read_url.split("?")[0].rsplit("/" + own_trial, 1)[0]          # http://host:port/bucket
out["anonymous read"] = http("GET", f"{base}/{other}/result.json")
out["anonymous write"] = http("PUT", f"{base}/{other}/result.json", b"x")
out["anonymous list"] = http("GET", f"{base}?list-type=2")
try:
    store.get("../../search-b/trials/000001/result.json")
except ConfigError as e:
    out["a key outside the grant"] = str(e)
try:
    import boto3
    boto3.client("s3", endpoint_url=base.rsplit("/", 1)[0]).list_objects_v2(Bucket=base.rsplit("/", 1)[1])
    out["the SDK"] = "listed"
except Exception as e:
    out["the SDK"] = type(e).__name__
print(json.dumps(out))
'''


def test_a_trial_program_cannot_read_or_overwrite_another_searchs_records(versitygw):
    client = versitygw.client()
    bucket = versitygw.bucket()
    root = S3Store(bucket, "prefix", client=client)
    mine, theirs = root.child("search-a"), root.child("search-b")
    mine.put("trials/000001/proposal.json", json.dumps({"tid": 1}).encode())
    theirs.put("trials/000001/result.json", b'{"status": "ok", "objective": 0.61}')
    root.put("datasets/abc.npz", b"staged arrays")
    before = {k: theirs.get(k) for k in theirs.list()}

    settings = Settings()
    settings = dataclasses.replace(settings, trial=dataclasses.replace(
        settings.trial, data=f"{root.uri}/datasets/abc.npz"))
    grants = trial_grants(settings, mine, root)
    assert grants is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # a trial pod has no keys
    env.update(grants(1), PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", ATTACKS], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)

    # Its own job: all of it works.
    assert out["own proposal"] == 1 and out["dataset bytes"] == len(b"staged arrays")
    assert out["own result created"] is True and out["own result replaced"] is False
    assert out["stop requested"] is False
    assert out["checkpoint"] == [3, "state 3", {"objective": [0.1, 0.2, 0.3]}]  # the checkpoint clause's keys
    # Everything else: refused by the store.
    for what in ("read another search's result (own URL, other key)",
                 "overwrite another search's result (own URL, other key)", "overwrite the staged dataset",
                 "replace its own result without If-None-Match", "read its progress with the write URL",
                 "read its model with the write URL", "write its proposal with the read URL"):
        assert out[what] == [403, "SignatureDoesNotMatch"], (what, out[what])
    for what in ("anonymous read", "anonymous write", "anonymous list"):
        assert out[what] == [403, "AccessDenied"], (what, out[what])
    assert "does not allow GET" in out["a key outside the grant"]
    assert out["the SDK"] == "NoCredentialsError"
    # And nothing of theirs changed, nor the dataset; its own result is the first one.
    assert {k: theirs.get(k) for k in theirs.list()} == before
    assert root.get("datasets/abc.npz") == b"staged arrays"
    assert json.loads(mine.get("trials/000001/result.json")) == {"status": "ok"}
    assert json.loads(mine.get("trials/000001/proposal.json")) == {"tid": 1}
    # Exactly the contract's requests, each expiring with the trial's deadline (plus the slack), not a day later.
    grant = json.loads(grants(1)[GRANT_ENV])
    assert {k: sorted(v) for k, v in grant["urls"].items()} == {k: list(v) for k, v in trial_keys().items()}
    expires = {int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])
               for methods in grant["urls"].values() for url in methods.values()}
    assert expires == {settings.kube.active_deadline_seconds + SLACK_SECONDS}, expires


def test_no_grant_where_trials_are_given_the_store_keys_or_the_store_is_a_folder(tmp_path, versitygw):
    from controller.store.uri import open_store

    root = S3Store(versitygw.bucket(), "p", client=versitygw.client())
    shared = dataclasses.replace(Settings(), kube=dataclasses.replace(Settings().kube, trial_access="credentials"))
    assert trial_grants(shared, root.child("s"), root) is None
    folder = open_store(str(tmp_path / "runs"))
    assert trial_grants(Settings(), folder.child("s"), folder) is None
    env = trial_grants(Settings(), root.child("s"), root)(7)
    grant = json.loads(env[GRANT_ENV])
    assert grant["trial"].endswith("/p/s/trials/000007") and "data" not in grant  # no staged data: none granted
    checkpoint = {"checkpoint/latest.json", "checkpoint/slot-a", "checkpoint/slot-b"}
    assert set(grant["urls"]) == {"proposal.json", "stop.json", "progress.json", "model.keras", "result.json",
                                  *checkpoint}
    assert all(grant["urls"][k].keys() == {"GET", "PUT"} for k in checkpoint)
    # A search that names its model file: the grant covers that name, and no model.keras.
    named = settings_from_mapping({"trial": {"modelFile": "booster.txt"}})
    grant = json.loads(trial_grants(named, root.child("s"), root)(7)[GRANT_ENV])
    assert set(grant["urls"]) == {"proposal.json", "stop.json", "progress.json", "booster.txt", "result.json",
                                  *checkpoint}
    assert grant["urls"]["booster.txt"].keys() == {"PUT"}
