"""Writes RELIABILITY.md from .reliability/figures.json, which tests/test_reliability.py fills as it runs:
    ./scripts/test.sh tests/test_reliability.py && .venv/bin/python scripts/reliability_md.py"""

import json
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    d = json.loads((ROOT / ".reliability" / "figures.json").read_text())
    local, kube = d["controller SIGKILL, local mode"], d["controller SIGKILL, fake cluster"]
    s3, lease = d["S3 faults (500/503 bursts, slow, hung, restart)"], d["leader dies, standby takes over"]
    creds, corrupt, bad = d["credentials grep"], d["corrupted records"], d["bad input"]
    rows = "\n".join(
        f"| {case} | {v['exit']} | `{v['message'].split('error: ')[-1][:220].replace('|', '/')}` | "
        f"{'YES' if v['records_changed'] else 'no'} |" for case, v in sorted(bad.items()))
    text = (ROOT / "scripts" / "reliability_template.md").read_text().format(
        date=date.today().isoformat(), local=local, kube=kube, s3=s3, inj=s3["injected"], lease=lease,
        creds=creds, corrupt=corrupt, bad_rows=rows, kube_points=", ".join(f"`{p}`" for p in kube["named_points"]),
        corrupt_proposal=corrupt["corrupt_proposal"][1][:80], corrupt_result=corrupt["corrupt_result"][1][:70])
    (ROOT / "RELIABILITY.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
