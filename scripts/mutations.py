"""Runs each mutation of the product code (or of the figures) that a claim of RELIABILITY.md names, against the test
that backs the claim, and records whether that test caught it (reliability/mutations.json, rendered in the page's
appendix by scripts/reliability_md.py).

    .venv/bin/python scripts/mutations.py                 # all (the cluster ones need CIFAR_HPO_KUBE_DIR)
    .venv/bin/python scripts/mutations.py --only loop      # those whose id contains 'loop'

Each mutation is applied to a scratch copy of the committed tree (HEAD; never to the checkout), the test is run there,
and the copy is removed. A mutation whose text is no longer in its file fails the run: the list must follow the code.
Caught means the test failed (pytest exit status 1); anything else is recorded as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "reliability" / "mutations.json"


@dataclass(frozen=True)
class Mutation:
    id: str
    claim: str
    file: str
    mutation: str
    """What the change does, in words."""
    edits: tuple[tuple[str, str], ...]
    """(old, new): each old text must occur exactly once in the file."""
    test: str


M = Mutation
MUTATIONS = [
    M("loop-adopt", "a controller crash loses nothing and launches nothing twice (in-process loop)",
      "controller/loop.py", "a restarted loop adopts nothing: it launches every open trial again",
      (("        alive = self.launcher.adopt(open_tids)",
        "        alive = set()\n        self.launcher.adopt(open_tids)"),),
      "tests/loop/test_loop.py::test_a_crash_anywhere_loses_nothing_and_runs_nothing_twice"),
    M("process-relaunch", "a restarted local controller never starts a running or unreleased trial again",
      "controller/launch/local.py", "a fresh ProcessLauncher starts what still runs or ended unreleased",
      (("        if self._locked(tid) or self._unreleased_end(tid):", "        if False:"),),
      "tests/loop/test_launcher_contract.py::TestProcessLauncher::"
      "test_a_new_launcher_that_launches_instead_of_adopting_still_runs_nothing_twice"),
    M("local-kills", "controller SIGKILL, local mode: nothing lost, nothing run twice",
      "controller/launch/supervise.py",
      "the supervisor does not take the trial's lock, so a restarted controller cannot tell a live trial from a dead "
      "one (the ledger, the launcher's guard and the supervisor's own check all rest on that lock)",
      (("        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)\n", "        pass\n"),),
      "tests/reliability/test_reliability.py::test_controller_sigkilled_20_times_in_local_mode"),
    M("s3-503", "S3 faults: 500/503 bursts, slowness, hangs and a restart are waited out", "controller/store/s3.py",
      "the store gives up at its first error: botocore's retries off, and every error taken as permanent",
      (("        from botocore.exceptions import ClientError\n\n        if isinstance(e, ClientError):",
        "        return PermanentError(f\"{what} in {self.uri}: {e}\")\n        if isinstance(e, ClientError):"),
       ("                retries={\"mode\": \"standard\", \"max_attempts\": max_attempts},",
        "                retries={\"mode\": \"standard\", \"max_attempts\": 1},")),
      "tests/reliability/test_reliability.py::test_s3_bursts_slowness_timeouts_and_a_restart"),
    M("bad-seed", "bad input is refused naming the field, and nothing stored changes", "controller/loop.py",
      "another seed for an existing search is accepted",
      (("    if existing.get(\"seed\") != settings.search.seed:", "    if False:"),),
      "tests/reliability/test_reliability.py::test_bad_input_is_refused_naming_the_field_and_nothing_stored_is_lost"
      "[another seed for an existing search]"),
    M("corrupt-proposal", "corrupted records are reported, never dropped", "controller/ledger/trials.py",
      "a trial whose proposal.json is torn is dropped from the history",
      (("                if rec is not None:\n                    out[tid] = rec",
        "                if rec is not None and not (rec.reason or \"\").startswith(\"corrupt proposal\"):\n"
        "                    out[tid] = rec"),),
      "tests/reliability/test_reliability.py::test_corrupted_records_are_reported_and_skipped_never_resetting_history"),
    M("named-points", "controller killed at each named point, real cluster: the budget exact", "controller/loop.py",
      "a trial proposed before a crash but never launched is not launched by the restarted controller",
      (("                log.info(\"trial %d: proposed but not running; launching it\", tid)\n"
        "                self._launch(tid)",
        "                log.info(\"trial %d: proposed but not running; launching it\", tid)"),),
      "tests/kube/test_cluster_faults.py::test_the_controller_killed_at_each_named_point_on_the_real_cluster"),
    M("already-exists", "API faults: a Job whose create answer was lost is adopted, not created twice",
      "controller/kube/launcher.py", "a create answered AlreadyExists is created again under another name",
      (("            log.info(\"trial %d: Job %s already exists; adopting it\", trial.tid, name)",
        "            body[\"metadata\"][\"name\"] = name + \"-again\"\n            self.kube.create_job(body)"),),
      "tests/kube/test_cluster_faults.py::test_api_faults_through_a_proxy_are_counted_where_they_land"),
    M("lease-early", "the standby takes the Lease only after the leader's has expired, and adopts its Jobs",
      "controller/kube/lease.py", "a Lease is judged expired after a fifth of its duration",
      (("        return now - self._observed[1] > spec.get(\"leaseDurationSeconds\", 15)",
        "        return now - self._observed[1] > spec.get(\"leaseDurationSeconds\", 15) / 5"),),
      "tests/kube/test_cluster_faults.py::test_lease_holder_dies_and_the_standby_takes_over_the_running_jobs"),
    M("watch-relist", "watch-driven: a search costs a few Job lists, not one per poll", "controller/kube/launcher.py",
      "the Job watch ends and re-lists every second instead of every resyncSeconds",
      (("                             lambda kind, job: self._events.put((kind, job)), settings.resync_seconds)",
        "                             lambda kind, job: self._events.put((kind, job)), 1)"),),
      "tests/kube/test_cluster.py::test_a_search_runs_as_jobs_watch_driven_with_bodies_the_api_server_accepts"),
    M("secret-logged", "credentials never reach ConfigMaps, logs, records or Events", "controller/kube/launcher.py",
      "the controller logs the store's secret key with each Job it creates",
      (("            log.info(\"trial %d: created Job %s\", trial.tid, name)",
        "            log.info(\"trial %d: created Job %s %s\", trial.tid, name,\n"
        "                     os.environ.get(\"AWS_SECRET_ACCESS_KEY\"))"),
       ("import dataclasses\n", "import dataclasses\nimport os\n")),
      "tests/kube/test_cluster.py::test_credentials_never_reach_configmaps_logs_records_or_events"),
    M("policy-gpus", "Searches beyond the operator's policy are refused before any Job",
      "controller/settings/policy.py",
      "the GPUs-per-trial limit is not checked",
      (("    if kube.gpu_count > policy.max_gpus_per_trial:", "    if False:"),),
      "tests/kube/test_operator.py::test_searches_beyond_the_operators_policy_are_refused_with_no_job"),
    M("store-missing", "a missing bucket is shown on the Search, and the operator stays up",
      "controller/kube/operator.py", "a store problem is not shown on the Search (no WAITING, no condition)",
      (("            self.writer.store_problem(message)\n            raise StoreUnavailable(message) from e",
        "            raise StoreUnavailable(message) from e"),),
      "tests/kube/test_operator.py::test_a_missing_bucket_shows_on_the_search_and_the_search_starts_once_it_exists"),
    M("crd-min", "an invalid Search is refused by the API server, naming the field",
      "charts/crds/searches.cifar-hpo.io.yaml", "maxTrials loses its minimum of 1",
      (("                  maxTrials:\n                    type: integer\n                    minimum: 1\n",
        "                  maxTrials:\n                    type: integer\n"),),
      "tests/kube/test_operator.py::test_an_invalid_search_is_refused_by_the_api_server_naming_the_field"),
    M("figures-operator", "one operator, three Searches, killed -9: nothing lost (the page's verdict)",
      "scripts/reliability_md.py", "the operator section's verdict ignores program starts",
      (("    if never:\n        problems.append(f\"never started: {never}\")\n", ""),),
      "tests/reliability/test_reliability_page.py::test_doctored_figures_are_never_called_nothing_lost"),
    M("figures-planted", "controller pod kill -9, real cluster: failed only as planted (the page's verdict)",
      "scripts/reliability_md.py", "a planted failure that ended ok is not reported",
      (("    if failed != sorted(planted):", "    if not set(failed) <= set(planted):"),),
      "tests/reliability/test_reliability_page.py::test_doctored_figures_are_never_called_nothing_lost"
      "[a planted failure that ended ok]"),
    M("figures-jobs", "kube-apiserver restart and pod kills: one Job per trial (the page's verdict)",
      "scripts/reliability_md.py", "a Job count other than the budget is not reported",
      (("        if jobs[\"created\"] != budget:", "        if jobs[\"created\"] > 10 ** 6:"),),
      "tests/reliability/test_reliability_page.py::test_doctored_figures_are_never_called_nothing_lost"
      "[fewer Jobs than trials]"),
    M("figures-gate", "the page comes only from a whole run (the run gate)", "scripts/reliability_md.py",
      "a run that deselected tests is accepted",
      (("SELECTING = (\"markexpr\", \"keyword\", \"deselect\",", "SELECTING = (\"markexpr\", \"keyword\","),),
      "tests/reliability/test_reliability_page.py::test_the_page_generator_refuses_a_failed_partial_or_selected_run"),
    M("trial-proposal-schema", "a trial refuses a proposal that breaks the contract's schema, naming the field",
      "controller/trial/__init__.py", "start() does not check proposal.json against its schema",
      (("""    problem = check_record("proposal", proposal)
    if problem:
        raise ConfigError(f"{store.uri}/proposal.json: {problem}")""", "    problem = None"),),
      "tests/trial/test_trainer.py::test_a_proposal_breaking_the_contracts_schema_is_refused_before_any_work"),
    M("base-install-deps", "the base install is the trial library with no dependency", "pyproject.toml",
      "the base distribution needs a third-party package",
      (("dependencies = []", 'dependencies = ["pyyaml>=6.0"]'),),
      "tests/trial/test_trial_contract.py::test_a_trial_program_on_the_base_install_alone_runs_a_whole_local_search"),
    M("legacy-series-first", "a trial's curve is the contract's objective series", "controller/ledger/legacy.py",
      "an older record's CIFAR series is read before the contract's objective series",
      (('return history.get("objective") or history.get(V1_CIFAR_OBJECTIVE)',
        'return history.get(V1_CIFAR_OBJECTIVE) or history.get("objective")'),),
      "tests/ledger/test_ledger.py::test_the_objective_curve_is_the_contracts_series_and_an_older_records_cifar_series"),
    M("grant-create-header", "a trial's grant store writes a once-only record once", "controller/store/grant.py",
      "the grant store's CREATE is sent without If-None-Match (a plain PUT that replaces)",
      (('        headers = {"If-None-Match": "*"} if method == "CREATE" else {}',
        "        headers: dict[str, str] = {}"),),
      "tests/store/test_store.py::TestGrantStoreOnMoto::test_create_is_create_only"),
    M("final-report-first", "once a search's SearchFinished Event exists, its bucket is whole (the report included)",
      "controller/report/publish.py", "the final report is drawn behind the end's back",
      (("self.drawer.draw(self.store, self.search, records, wait=force)",
        "self.drawer.draw(self.store, self.search, records, wait=False)"),),
      "tests/report/test_report.py::test_a_searchs_final_report_is_stored_before_its_end_is_told"),
    M("cli-kube-lazy", "local mode and the store commands start without the kubernetes client",
      "controller/cli/operator.py", "the operator command's Kubernetes modules are imported with the command line",
      (("from controller.dashboard.server import serve as serve_dashboard\n",
        "from controller.dashboard.server import serve as serve_dashboard\n"
        "from controller.kube.operator import Operator\n"),),
      "tests/loop/test_local_search.py::test_the_command_line_loads_no_kubernetes_client_until_a_cluster_command_runs"),
]


def _scratch() -> Path:
    """The committed tree (HEAD, so that a result names exactly what it ran on) in a new folder; the venv and tools
    linked."""
    dest = Path(tempfile.mkdtemp(prefix="mutant-", dir=Path.home() / ".cache" / "cifar-hpo"))
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for linked in (".venv", ".tools"):
        (dest / linked).symlink_to(ROOT / linked)
    return dest


def apply(m: Mutation, tree: Path) -> None:
    path = tree / m.file
    text = path.read_text()
    for old, new in m.edits:
        if text.count(old) != 1:
            raise SystemExit(f"{m.id}: {m.file} holds the text to mutate {text.count(old)} times (not once): "
                             "update scripts/mutations.py to follow the code")
        text = text.replace(old, new)
    path.write_text(text)


def run(m: Mutation) -> dict[str, object]:
    tree = _scratch()
    try:
        apply(m, tree)
        started = time.monotonic()
        p = subprocess.run([str(tree / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-x", "-p",
                            "no:cacheprovider", m.test], cwd=tree, capture_output=True, text=True, timeout=1200,
                           env={**os.environ, "CIFAR_HPO_TEST_RUN": f"mutant-{m.id}"})
        lines = p.stdout.strip().splitlines() or ["(no output)"]
        # What failed and why (the first line of pytest's error report), so that a test failing for another
        # reason than the mutation shows.
        errors = [line[1:].strip() for line in lines if line.startswith("E ") and line[1:].strip()]
        why = next((e for e in errors if e.rstrip(":") != "AssertionError"), errors[0] if errors else lines[-1])
        return {**{k: v for k, v in asdict(m).items() if k != "edits"}, "caught": p.returncode == 1,
                "outcome": f"pytest exit {p.returncode}: {why[:200]}", "seconds": round(time.monotonic() - started)}
    finally:
        if m.file.startswith("charts/crds/") and os.environ.get("CIFAR_HPO_KUBE_DIR"):
            # The test applied the mutated CRD to the shared cluster: put the real one back.
            subprocess.run([str(ROOT / ".tools" / "bin" / "kubectl"), "--kubeconfig",
                            str(Path(os.environ["CIFAR_HPO_KUBE_DIR"]) / "kubeconfig"), "apply", "--server-side",
                            "--force-conflicts", "-f", str(ROOT / m.file)], capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="run only the mutations whose id contains this")
    args = ap.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "controller", "tests", "charts", "scripts"],
                      cwd=ROOT).returncode != 0:
        print("note: the working tree differs from HEAD; the mutations run on HEAD", file=sys.stderr)
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.id]
    previous = {r["id"]: r for r in json.loads(OUT.read_text())} if OUT.exists() else {}
    for m in chosen:
        result = {**run(m), "commit": commit}
        previous[m.id] = result
        print(f"{m.id}: {'caught' if result['caught'] else 'NOT CAUGHT'} ({result['outcome']}, {result['seconds']} s)",
              flush=True)
        OUT.write_text(json.dumps([previous[x.id] for x in MUTATIONS if x.id in previous], indent=1) + "\n")
    return 0 if all(previous[m.id]["caught"] for m in chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
