"""D1: the dashboard on a 5,000-trial search in moto's S3 (its own process, over HTTP), in Debian's headless
Chromium. What an open page costs the store (requests per second, counted at the Store interface the server reads
through), with no page, one page and three pages open, while 4 running trials report an epoch every second; and how
quickly the page opens and answers (first render, a sort and a filter of the 5,000-row table, measured in the
page with performance.now()).

    .venv/bin/python benchmarks/d1_dashboard.py
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import MotoServer, machine, random_history

from controller.dashboard.server import serve
from controller.ledger.trials import Ledger, proposal_record
from controller.store.base import dumps
from controller.store.s3 import S3Store

N, OPEN, EPOCHS = 5000, 4, 20
WINDOW_S = 20.0


class Counting:
    """A Store that counts what passes to the real one, by operation; its children count into the same Counter."""

    def __init__(self, store: Any, counts: Counter[str] | None = None):
        self.store, self.uri = store, store.uri
        self.counts: Counter[str] = counts if counts is not None else Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name in ("get", "put", "create", "exists", "list", "delete"):
            def counted(*a: Any, **kw: Any) -> Any:
                self.counts[name] += 1
                return attr(*a, **kw)
            return counted
        return attr

    def child(self, name: str) -> Counting:
        return Counting(self.store.child(name), self.counts)


def seed(store: S3Store) -> None:
    space, obs, props = random_history(N)
    store.put("search.json", dumps({"schema_version": 1, "name": "big", "space": space.spec, "seed": 0,
                                    "settings": {"search": {"maxTrials": N + 100, "parallelism": OPEN}}}))

    def write(i: int) -> None:
        p = props[i]
        store.put(f"trials/{p.tid:06d}/proposal.json", dumps(proposal_record(p.tid, p.params, p.vals, p.seed, "tpe")))
        if i < N - OPEN:
            final = -obs[i].loss
            curve = [final * (1 - 0.7 ** (e + 1)) for e in range(EPOCHS)]
            store.put(f"trials/{p.tid:06d}/result.json", dumps({
                "schema_version": 1, "tid": p.tid, "status": "ok", "objective": max(curve),
                "history": {"objective": curve}, "epochs_run": EPOCHS,
                "startup": {"imports_s": 1.9, "data_s": 0.5, "build_s": 0.1, "first_step_s": 2.2}}))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(write, range(N)))
    ledger = Ledger(store)
    ledger.write_checkpoint(ledger.load_full().values(), N)
    store.put("status.json", dumps({"schema_version": 1, "state": "running", "budget": N + 100,
                                    "updated_at": time.time()}))


def live_trials(store: S3Store, stop: threading.Event) -> None:
    """The running trials: one epoch each per second."""
    epoch = 0
    while not stop.wait(1.0):
        epoch += 1
        for tid in range(N - OPEN, N):
            store.put(f"trials/{tid:06d}/progress.json", dumps({"tid": tid, "epoch": epoch, "history": {
                "objective": [0.5 * (1 - 0.7 ** (e + 1)) for e in range(epoch)]}}))


def rate(counts: Counter[str], seconds: float) -> tuple[float, dict[str, int]]:
    before = Counter(counts)
    time.sleep(seconds)
    delta = {k: counts[k] - before[k] for k in counts if counts[k] - before[k]}
    return sum(delta.values()) / seconds, delta


def main() -> None:
    from support.browser import chromium

    print(f"D1 dashboard on a {N}-trial search in moto S3 — {machine()}")
    with MotoServer() as url:
        raw = S3Store("d1-bench", "searches", endpoint_url=url)
        raw.client.create_bucket(Bucket="d1-bench")
        t = time.perf_counter()
        seed(raw.child("big"))
        print(f"seeded {N} trials ({N - OPEN} finished with {EPOCHS}-epoch curves, {OPEN} running) in "
              f"{time.perf_counter() - t:.0f} s")
        counts: Counter[str] = Counter()
        server = serve(Counting(raw, counts), port=0)
        base = "http://{}:{}/".format(*server.server_address[:2])
        stop = threading.Event()
        writer = threading.Thread(target=live_trials, args=(raw.child("big"), stop), daemon=True)
        writer.start()
        t = time.perf_counter()
        with urllib.request.urlopen(base + "api/search/big") as r:
            body = r.read()
        print(f"first document: {time.perf_counter() - t:.2f} s to read and build, {len(body) / 1e6:.1f} MB of JSON, "
              f"{len(json.loads(body)['trials'])} trials; store requests so far {dict(counts)}")
        time.sleep(16)  # the API call above watched the search for 15 s: let that lapse
        idle, _ = rate(counts, WINDOW_S / 2)
        print(f"no page open: {idle:.2f} store requests/s")
        pages = [chromium(1400, 1800)]
        pages[0].get(base + "#big")
        wait = time.monotonic() + 300
        while not pages[0].execute_script("return document.body.dataset.firstRenderAt") and time.monotonic() < wait:
            time.sleep(0.2)
        d = pages[0]
        first = float(d.execute_script("return document.body.dataset.firstRenderAt"))
        render_ms = float(d.execute_script("return document.body.dataset.renderMs"))
        one, ops = rate(counts, WINDOW_S)
        print(f"1 page open: {one:.2f} store requests/s {ops}; page opened in {first / 1000:.2f} s "
              f"(navigation to first render), a full redraw {render_ms:.0f} ms")
        timing = d.execute_script("""
            const th = (k) => [...document.querySelectorAll('#trials thead th')].find((t) => t.dataset.key === k);
            let t = performance.now(); th('objective').click(); const sort = performance.now() - t;
            const box = document.getElementById('filter');
            box.value = 'state:ok'; t = performance.now(); box.dispatchEvent(new Event('input'));
            const filter = performance.now() - t;
            return [sort, filter, document.querySelectorAll('#trials tbody tr').length,
                    document.getElementById('plot-trials').dataset.points];""")
        print(f"sort by objective: {timing[0]:.0f} ms; filter state:ok: {timing[1]:.0f} ms ({timing[2]} rows drawn, "
              f"the first 500); trials plot points: {timing[3]}")
        for _ in range(2):
            p = chromium(1400, 1800)
            p.get(base + "#big")
            pages.append(p)
        time.sleep(5)
        three, ops = rate(counts, WINDOW_S)
        print(f"3 pages open: {three:.2f} store requests/s {ops}")
        print(f"ratio 3 pages / 1 page: {three / one:.2f}")
        stop.set()
        for p in pages:
            p.quit()
        server.shutdown()


if __name__ == "__main__":
    main()
