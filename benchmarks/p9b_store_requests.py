"""P9b: S3 requests over a search's life at 5,000 trials (P2's store: 5,000 proposals, 4,992 results, a current
checkpoint), counted by the S3 server (moto's recorder), by operation: a resume, a status refresh
(`controller status`), the dashboard's first and steady refreshes, and the search loop per trial (20 more trials on
that store, with trials that end at once: their own writes, made with another client, are counted apart; per trial is
the difference between a run of 40 more trials and one of 20, which resume and finish alike)."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

from common import MotoServer, RecordCursor, machine, random_history, s3_operation
from p2_resume import N, seed_store

from controller.dashboard.data import SearchView
from controller.launch.protocol import TrialExit, TrialLaunch
from controller.ledger.trials import Ledger
from controller.loop import SearchLoop, open_search
from controller.report.drawer import InlineDrawer
from controller.report.publish import Publisher
from controller.report.summary import status_json
from controller.settings.config import settings_from_mapping
from controller.store.base import create_json
from controller.store.s3 import S3Store

BUCKET = "p9b-bench"
MORE = 20


class InstantTrials:
    """A Launcher whose trials write their result.json at launch (with the trials' own client) and end at the next
    wait(): the loop's own requests are what is left."""

    def __init__(self, url: str):
        import boto3
        from botocore.config import Config

        self.client = boto3.client("s3", endpoint_url=url, config=Config(user_agent_extra="p9b-trial"))
        self.ended: list[TrialExit] = []

    def launch(self, trial: TrialLaunch) -> None:
        uri = urlparse(trial.argv[trial.argv.index("--trial") + 1])
        store = S3Store(uri.netloc, uri.path, client=self.client)
        objective = (trial.tid * 7919 % 1000) / 1000
        create_json(store, "result.json", {"schema_version": 1, "tid": trial.tid, "status": "ok",
                                           "objective": objective, "finished_at": time.time()})
        self.ended.append(TrialExit(trial.tid, 0, None, "", b"log\n"))

    def adopt(self, tids):
        return set()

    def release(self, tid: int) -> None:
        pass

    def cancel(self, tid: int) -> None:
        pass

    def running(self) -> set[int]:
        return {e.tid for e in self.ended}

    def waiting(self) -> dict[int, str]:
        return {}

    def wait(self, timeout: float) -> list[TrialExit]:
        ended, self.ended = self.ended, []
        return ended

    def close(self) -> None:
        pass


def counted(cursor: RecordCursor, what: str, per: int = 1) -> Counter:
    served = cursor.read()
    loop = Counter(s3_operation(e) for e in served if "p9b-trial" not in e["headers"].get("User-Agent", ""))
    trials = len(served) - sum(loop.values())
    per_s = f" per trial ({per})" if per > 1 else ""
    print(f"{what + per_s:<58} {sum(loop.values()) / per:>8.1f}   " + ", ".join(
        f"{op} {c / per:.1f}" for op, c in sorted(loop.items(), key=lambda kv: -kv[1]))
        + (f"   (trials' own: {trials / per:.1f})" if trials else ""))
    return loop


def run_loop(root: S3Store, url: str, max_trials: int) -> None:
    settings = settings_from_mapping({"search": {"name": "search", "maxTrials": max_trials, "parallelism": 2},
                                      "controller": {"reportSeconds": 3600}}).validate()
    store = root.child("search")
    publisher = Publisher(store, "search", drawer=InlineDrawer(lambda records, search: {}))
    SearchLoop(settings, store, InstantTrials(url), publisher=publisher, wait_seconds=0.0).run()


def main() -> None:
    print(f"P9b S3 requests at {N} trials, counted by moto's server — {machine()}")
    space, obs, props = random_history(N)
    with tempfile.TemporaryDirectory() as tmp, MotoServer(record=Path(tmp) / "requests.jsonl") as url:
        root = S3Store(BUCKET, "", endpoint_url=url)
        root.client.create_bucket(Bucket=BUCKET)
        store = root.child("search")
        seed_store(store, props, [-o.loss for o in obs])
        settings = settings_from_mapping({"search": {"name": "search"}}).validate()
        open_search(store, settings, settings.space())
        ledger = Ledger(store)
        ledger.write_checkpoint(ledger.load_full().values(), N)
        cursor = RecordCursor(Path(tmp) / "requests.jsonl")
        cursor.read()
        print(f"{'':<58} {'requests':>8}   by operation")
        ledger.load()
        counted(cursor, "resume: the ledger (checkpoint + what is newer)")
        status_json(store, "search")
        counted(cursor, "a status refresh (`controller status`)")
        view = SearchView(store, "search")
        view.refresh(force=True)
        counted(cursor, "the dashboard's first refresh")
        view.refresh(force=True)
        counted(cursor, "a steady dashboard refresh (nothing changed)")
        run_loop(root, url, N)
        counted(cursor, "the loop: resume, end the 8 open trials, finish")
        run_loop(root, url, N + MORE)
        few = counted(cursor, f"the loop: resume, {MORE} more trials, finish")
        run_loop(root, url, N + 3 * MORE)
        more = counted(cursor, f"the loop: resume, {2 * MORE} more trials, finish")
        # Both runs resume from no open trial and finish alike: the difference is MORE trials' worth.
        per = Counter({op: more[op] - few.get(op, 0) for op in more})
        print(f"{f'so the loop per trial at {N} trials':<58} {sum(per.values()) / MORE:>8.1f}   " + ", ".join(
            f"{op} {c / MORE:.2f}" for op, c in sorted(per.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
