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
PAGE_GATE = ("tests/reliability/test_reliability_page.py::"
             "test_the_page_generator_refuses_a_failed_partial_or_selected_run")
PAGE_DOCTORED = "tests/reliability/test_reliability_page.py::test_doctored_figures_are_never_called_nothing_lost"
MUTATIONS = [
    M("loop-adopt", "a controller crash loses nothing and launches nothing twice (in-process loop)",
      "controller/loop.py", "a restarted loop adopts nothing: it launches every open trial again",
      (("        alive = self.launcher.adopt(open_tids)",
        "        alive = set()\n        self.launcher.adopt(open_tids)"),),
      "tests/loop/test_loop.py::test_a_crash_anywhere_loses_nothing_and_runs_nothing_twice"),
    M("process-relaunch", "a restarted local controller never starts a running or unreleased trial again",
      "controller/launch/local.py", "a fresh ProcessLauncher starts what still runs or ended unreleased",
      (("        if self._locked(tid) or (self._unreleased_end(tid) and self._attempt(tid) >= trial.attempt):",
        "        if False:"),),
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
      "scripts/reliability_checks.py", "the operator section's verdict ignores program starts",
      (("    if never:\n        problems.append(f\"never started: {never}\")\n", ""),),
      "tests/reliability/test_reliability_page.py::test_doctored_figures_are_never_called_nothing_lost"),
    M("figures-planted", "controller pod kill -9, real cluster: failed only as planted (the page's verdict)",
      "scripts/reliability_checks.py", "a planted failure that ended ok is not reported",
      (("    if failed != sorted(planted):", "    if not set(failed) <= set(planted):"),),
      "tests/reliability/test_reliability_page.py::test_doctored_figures_are_never_called_nothing_lost"
      "[a planted failure that ended ok]"),
    M("figures-jobs", "kube-apiserver restart and pod kills: one Job per trial (the page's verdict)",
      "scripts/reliability_checks.py", "a Job count other than the budget is not reported",
      (("    if jobs[\"created\"] != budget:", "    if jobs[\"created\"] > 10 ** 6:"),),
      "tests/reliability/test_reliability_page.py::test_doctored_figures_are_never_called_nothing_lost"
      "[fewer Jobs than trials]"),
    M("figures-gate", "the page comes only from a whole run (the run gate)", "scripts/reliability_checks.py",
      "a run that deselected tests is accepted",
      (("SELECTING = (\"markexpr\", \"keyword\", \"deselect\",", "SELECTING = (\"markexpr\", \"keyword\","),),
      "tests/reliability/test_reliability_page.py::test_the_page_generator_refuses_a_failed_partial_or_selected_run"),
    M("figures-ignore", "the page comes only from a whole run: --ignore chose tests too",
      "scripts/reliability_checks.py",
      "a run made with --ignore is accepted as the whole suite",
      (("\"deselect\", \"ignore\", \"ignore_glob\",", "\"deselect\","),),
      PAGE_GATE + "[--ignore]"),
    M("figures-skipped", "the page counts only tests that ran and passed", "scripts/reliability_checks.py",
      "skipped tests are counted as passed",
      (("    if not_run or outcomes.get(\"passed\") != meta.get(\"collected\") - meta[\"replaces_a_stale_page\"]:",
        "    if False:"),),
      PAGE_GATE + "[a skipped test]"),
    M("figures-stale", "the appendix's mutations ran on the page's product code", "scripts/reliability_checks.py",
      "mutation results from other product code are accepted",
      (("        if changed:\n", "        if False:\n"),),
      PAGE_GATE + "[mutations run on other product code]"),
    M("figures-stale-page-only", "a failed run backs no page, but for the one check of the page it replaces",
      "scripts/reliability_checks.py", "any run with one failure is taken",
      (("    meta[\"replaces_a_stale_page\"] = meta.get(\"failed\") == 1 and meta.get(\"failed_tests\") == [PAGE_TEST]",
        "    meta[\"replaces_a_stale_page\"] = meta.get(\"failed\") == 1"),),
      PAGE_GATE + "[another test failed]"),
    M("figures-no-kill", "a kill test that killed nothing is not 'nothing lost'", "scripts/reliability_checks.py",
      "a kill figure with no kill is called nothing lost",
      (("    return search_problems(fig) + ([] if kills else [\"no kill happened\"])",
        "    return search_problems(fig)"),),
      PAGE_DOCTORED + "[a local search never killed]"),
    M("figures-no-s3-fault", "S3 faults: a phase whose fault was never served is flagged",
      "scripts/reliability_checks.py", "an S3 figure with no fault served is called nothing lost",
      (("    never = [kind for kind in (\"error\", \"hang\", \"down\") if not injected.get(kind)]", "    never = []"),),
      PAGE_DOCTORED + "[no hung request]"),
    M("figures-no-restart", "kube-apiserver restart: a figure with no restart is flagged",
      "scripts/reliability_checks.py", "a restart figure with no restart is called nothing lost",
      (("([] if downs else [\"the API server was never restarted\"])", "[]"),),
      PAGE_DOCTORED + "[no API server restart]"),
    M("figures-operator-jobs", "three Searches, operator killed: one Job per trial of all Searches together",
      "scripts/reliability_checks.py", "the operator figure's Jobs (twice, too many) are not checked",
      (("    return problems + _job_problems(jobs, sum(need(s, \"budget\")[0] for s in searches.values()))",
        "    return problems"),),
      PAGE_DOCTORED + "[one Job too many among the three Searches]"),
    M("figures-bad-exit", "bad input: an input that was not refused is flagged", "scripts/reliability_checks.py",
      "a bad input that exited 0 is shown as a refusal",
      (("    return str(code) if code == BAD_INPUT_EXIT else f\"**{code}: NOT REFUSED**\"", "    return str(code)"),),
      "tests/reliability/test_reliability_page.py::"
      "test_a_bad_input_that_changed_records_or_was_not_refused_is_flagged"),
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
    # -- issue 34: no Search author, trial or bucket writer can stop, starve or mislead the operator --
    M("hostile-pickle-keys", "a self-sharing dict key cannot freeze the reader", "controller/data/safepickle.py",
      "keys and set members are hashed unchecked",
      (("        for item in items(self):\n            _hashable(item)\n", "        pass\n"),),
      "tests/data/test_safepickle.py::test_a_self_sharing_dict_key_is_refused_before_it_is_hashed"),
    M("hostile-pickle-codec", "a self-sharing codec argument cannot freeze the reader", "controller/data/safepickle.py",
      "the codec call converts its argument with str() before checking it",
      (("    if not (isinstance(text, str) and isinstance(encoding, str)) \\\n"
        "            or encoding.replace(\"_\", \"-\").lower() not in (\"latin1\", \"latin-1\"):",
        "    if not isinstance(text, str) or str(encoding).replace(\"_\", \"-\").lower() not in "
        "(\"latin1\", \"latin-1\"):"),),
      "tests/data/test_safepickle.py::test_the_codec_call_refuses_a_self_sharing_argument_without_converting_it"),
    M("hostile-pickle-memo", "a pickle cannot memoize without end", "controller/data/safepickle.py",
      "the memo is not capped",
      (("        if len(self) >= MAX_MEMO and key not in self:", "        if False:"),),
      "tests/data/test_safepickle.py::test_a_pickle_that_memoizes_without_end_is_refused"),
    M("hostile-tar-header", "a tar header is read only when small", "controller/data/cifar.py",
      "a GNU long name or pax record of any size is read whole",
      (("        if self.size > MAX_HEADER_BYTES:", "        if False:"),),
      "tests/data/test_safepickle.py::test_a_long_tar_header_is_refused_before_it_is_read"),
    M("hostile-tar-expanded", "an archive is read only up to its expanded cap", "controller/data/cifar.py",
      "the decompressed bytes are not counted",
      (("        if self.total > MAX_EXPANDED_BYTES:", "        if False:"),),
      "tests/data/test_safepickle.py::test_an_archive_is_read_only_up_to_its_expanded_cap"),
    M("hostile-child-cpu", "the archive's reader is stopped at its CPU limit", "controller/data/sandbox.py",
      "the child sets no CPU-time limit",
      (("    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 5))\n", ""),),
      "tests/data/test_safepickle.py::test_the_child_that_reads_an_archive_is_stopped_at_its_cpu_limit"),
    M("hostile-child-memory", "the archive's reader is stopped at its memory limit", "controller/data/sandbox.py",
      "the child sets no address-space limit",
      (("    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))\n", ""),),
      "tests/data/test_safepickle.py::test_the_child_that_reads_an_archive_is_stopped_at_its_memory_limit"),
    M("hostile-space-options", "a space cannot make one proposal cost without bound", "controller/search/nodes.py",
      "a choice may have any number of options",
      (("            if len(options) > MAX_OPTIONS:", "            if False:"),),
      "tests/search/test_space.py::test_a_space_whose_proposals_would_cost_without_bound_is_refused"),
    M("hostile-tpe-work", "distributions x candidates is bounded", "controller/settings/config.py",
      "nEICandidates is bounded alone, not times the space's distributions",
      (("        if work > MAX_TPE_WORK:", "        if False:"),),
      "tests/settings/test_config.py::test_a_proposals_work_is_bounded_by_distributions_times_candidates"),
    M("hostile-spec-size", "a Search's spec is bounded in size", "controller/settings/resource.py",
      "a spec of any size is read", (("    if size > MAX_SPEC_BYTES:", "    if False:"),),
      "tests/settings/test_config.py::test_a_search_spec_over_its_size_bound_is_refused_naming_it"),
    M("hostile-merge", "a Search cannot remove the operator's placement or limits", "controller/settings/policy.py",
      "a Search's nodeSelector and limits replace the operator's",
      (("        wanted, node_selector={**wanted.node_selector, **base.node_selector},",
        "        wanted, node_selector=wanted.node_selector,"),
       ("        limits={**base.limits, **wanted.limits})", "        limits=wanted.limits)")),
      "tests/settings/test_policy.py::test_a_search_cannot_remove_the_operators_placement_or_limits"),
    M("hostile-extra-args", "extraArgs cannot override what the operator passes", "controller/settings/policy.py",
      "extraArgs are not checked",
      (("        if len(name) > 2 and any(option.startswith(name) for option in RESERVED_OPTIONS):",
        "        if False:"),),
      "tests/settings/test_policy.py::test_extra_args_cannot_override_what_the_operator_passes"),
    M("hostile-metadata-forms", "metadata addresses are refused in every form", "controller/settings/policy.py",
      "only an address's own form is checked, not the IPv4 address it embeds",
      (("        forms += [e for e in embedded if e is not None]\n", ""),),
      "tests/settings/test_policy.py::test_metadata_addresses_are_refused_in_every_form_under_every_policy"),
    M("hostile-resources", "requests and limits are bounded", "controller/settings/policy.py",
      "quantities are not compared with policy.maxResources",
      (("        if most is not None and quantity(value, f\"{field_name}.{name}\") > "
        "quantity(most, \"policy.maxResources\"):",
        "        if False:"),),
      "tests/settings/test_policy.py::test_requests_limits_and_grace_are_bounded"),
    M("hostile-check-seconds", "a Search cannot check progress more often than the policy allows",
      "controller/settings/policy.py", "checkSeconds is not compared with policy.minCheckSeconds",
      (("    if wanted.early_stopping.rule != \"none\" and check_seconds < policy.min_check_seconds:",
        "    if False:"),),
      "tests/settings/test_policy.py::test_a_search_cannot_check_progress_more_often_than_the_policy_allows"),
    M("hostile-s3-prefix", "s3:// data only under policy.dataS3Prefix", "controller/settings/policy.py",
      "any key of the store's bucket is a data source",
      (("        if bucket != store_bucket or not key.startswith(policy.data_s3_prefix) or \"/../\" in f\"/{key}/\":",
        "        if bucket != store_bucket:"),),
      "tests/settings/test_policy.py::test_data_sources_outside_the_default_policy_are_refused"),
    M("hostile-record-size", "a record over its bound is refused unread", "controller/store/base.py",
      "a record of any size is parsed",
      (("    if data is not None and len(data) > limit:", "    if False:"),),
      "tests/store/test_store.py::TestMemoryStore::"
      "test_a_record_over_its_bound_is_refused_unread_and_so_is_one_nested_too_deep"),
    M("hostile-record-depth", "a trial's unreadable progress shows for that trial only", "controller/store/base.py",
      "a record nested past the parser's recursion limit escapes as RecursionError",
      (("    except RecursionError as e:\n        raise RecordError(f\"{key}: nested deeper than {MAX_RECORD_DEPTH} "
        "levels\") from e\n", ""),),
      "tests/report/test_dashboard.py::test_a_trials_unreadable_progress_shows_for_that_trial_only"),
    M("hostile-dashboard-host", "the dashboard refuses a Host it was not given (DNS rebinding)",
      "controller/dashboard/server.py", "any Host header is served",
      (("        if not host_allowed(self.headers.get(\"Host\"), self.dashboard.hosts):", "        if False:"),),
      "tests/report/test_dashboard.py::test_a_request_naming_a_host_the_dashboard_was_not_given_is_refused"),
    M("hostile-dashboard-idle", "idle dashboard connections time out", "controller/dashboard/server.py",
      "a connection may stay idle for ever",
      (("        self.connection.settimeout(IDLE_SECONDS)  # a connection", "        pass  # a connection"),),
      "tests/report/test_dashboard.py::test_idle_connections_time_out_and_connections_beyond_the_cap_are_closed"),
    M("hostile-dashboard-stream", "trial files are streamed, not held whole", "controller/dashboard/server.py",
      "a trial's file is read whole into memory",
      (("        found = view.store.stream(trial_key(tid, name))",
        "        whole = view.store.get(trial_key(tid, name))\n"
        "        found = None if whole is None else (len(whole), iter([whole]))"),),
      "tests/report/test_dashboard.py::test_files_are_streamed_from_the_store_not_held_whole"),
    M("hostile-drawer-survives", "no search's records stop the drawer every search shares",
      "controller/report/drawer.py", "a renderer error of an unexpected type ends the drawer's thread",
      (("            except Exception:  # records are trials' writing", "            except ZeroDivisionError:  #"),),
      "tests/report/test_report.py::test_no_search_s_records_stop_the_drawer_that_every_search_shares"),
    M("hostile-log-escape", "a trial's text cannot forge a line of the controller's log", "controller/cli/logs.py",
      "messages are logged as they are", (("        record.message = escape(record.message)\n", ""),),
      "tests/report/test_metrics.py::test_a_trials_text_cannot_forge_a_line_of_the_controllers_log"),
    M("hostile-grant-env", "a trial's grant is in a Secret, not the Job's env (view reads Jobs)",
      "controller/kube/launcher.py", "the grant goes into the Job's environment again",
      (("            self.kube.put_secret(secret)\n",
        "            self.kube.put_secret(secret)\n            env.update(self.grants(trial.tid))\n"),
       ("                         secret[\"metadata\"][\"name\"] if secret else None)",
        "                         None)")),
      "tests/kube/test_cluster.py::test_a_search_runs_as_jobs_watch_driven_with_bodies_the_api_server_accepts"),
    M("hostile-owner-uid", "a Search cannot take another's folder at an operator restart",
      "controller/kube/operator.py", "the folder's recorded owner is taken as gone",
      (("        return found is not None and (found.get(\"metadata\") or {}).get(\"uid\") == uid",
        "        return False"),),
      "tests/kube/test_operator.py::test_a_search_cannot_take_another_searchs_folder_at_an_operator_restart"),
    M("hostile-late-result", "a result created after a stopped trial's end is not taken for its own",
      "controller/ledger/trials.py", "a stopped trial's result is used whenever it arrived",
      (("TrialState.FAILED and outcome.get(\"result_arrived\", True):", "TrialState.FAILED:"),),
      "tests/loop/test_loop.py::test_a_result_created_after_a_stopped_trials_end_is_not_taken_for_its_own"),
    M("hostile-staging-in-process", "hostile archives fail alone beside a Search that finishes",
      "controller/data/staging.py", "the operator reads archives in its own process again",
      (("from controller.data.sandbox import SandboxLimits, archive_to_npz_isolated\n",
        "from controller.data.cifar import archive_to_npz\nfrom controller.data.sandbox import SandboxLimits\n\n\n"
        "def archive_to_npz_isolated(archive, where, limits):\n    return archive_to_npz(archive, where)\n"),),
      "tests/kube/test_operator.py::test_hostile_searches_fail_alone_beside_a_search_that_finishes"),
    # -- issue 35: the third audit's classes --
    M("audit-static-name", "the dashboard serves only its own static files", "controller/dashboard/server.py",
      "the static file-name check is gone",
      (("        if not re.fullmatch(r\"[a-z0-9_-]+\\.(html|js|css|svg)\", name):", "        if False:"),),
      "tests/report/test_dashboard.py::test_the_server_only_reads_and_never_serves_a_secret"),
    M("audit-csp", "the dashboard's Content-Security-Policy allows nothing from elsewhere",
      "controller/dashboard/server.py", "the policy allows inline scripts",
      (("HEADERS = {\"Content-Security-Policy\": \"default-src 'self'; ",
        "HEADERS = {\"Content-Security-Policy\": \"default-src 'self' 'unsafe-inline'; "),),
      "tests/report/test_dashboard.py::test_the_server_only_reads_and_never_serves_a_secret"),
    M("audit-stop-diverged", "a diverged peer ranks last whatever the objective's sign",
      "controller/search/stopping.py", "a diverged peer counts as 0",
      (("values, finite.min()), q))", "values, 0.0), q))"),),
      "tests/search/test_stopping.py::test_a_diverged_peer_ranks_last_whatever_the_sign_of_the_objective"),
    M("audit-stop-epoch", "peers are compared at this very epoch", "controller/search/stopping.py",
      "the median rule compares peers one epoch behind",
      (("best_so_far(c)[k - 1]) for c in ended if len(c) >= k]",
        "best_so_far(c)[k - 2]) for c in ended if len(c) >= k]"),),
      "tests/search/test_stopping.py::test_peers_are_compared_at_this_very_epoch_and_those_that_ended_there_count"),
    M("audit-stop-ended-at", "peers that ended at this epoch count", "controller/search/stopping.py",
      "the median rule drops peers that ended exactly at this epoch",
      (("for c in ended if len(c) >= k]", "for c in ended if len(c) > k]"),),
      "tests/search/test_stopping.py::test_peers_are_compared_at_this_very_epoch_and_those_that_ended_there_count"),
    M("audit-drawer-replaced", "a drawing process that died is replaced", "controller/report/drawer.py",
      "a dead pool is kept",
      (("            self._pool = None  # the child died", "            pass  # the child died"),),
      "tests/report/test_report.py::test_a_drawing_process_that_died_is_replaced"),
    M("audit-drawer-snapshot", "a request draws the records as they were when it was made",
      "controller/report/drawer.py", "the request keeps the caller's list, which the loop goes on changing",
      (("        snapshot = [copy.copy(r) for r in records]", "        snapshot = records  # type: ignore"),),
      "tests/report/test_report.py::test_a_request_draws_the_records_as_they_were_when_it_was_made"),
    M("audit-grant-if-none-match", "a trial's result URL cannot replace its result", "controller/store/s3.py",
      "the CREATE URL's signature does not cover If-None-Match",
      (("            params[\"IfNoneMatch\"] = \"*\"", "            pass"),),
      "tests/store/test_grant.py::test_a_trial_program_cannot_read_or_overwrite_another_searchs_records"),
    M("audit-grant-expiry", "a trial's grant expires with its deadline", "controller/kube/grant.py",
      "grants last the longest a signature may (7 days)",
      (("    expires = min(MAX_DEADLINE_SECONDS, settings.kube.active_deadline_seconds + SLACK_SECONDS)",
        "    expires = MAX_DEADLINE_SECONDS"),),
      "tests/store/test_grant.py::test_a_trial_program_cannot_read_or_overwrite_another_searchs_records"),
    M("audit-fetch-pinned", "the dataset's connection goes to the address that was checked",
      "controller/data/fetch.py", "the connection resolves the host again",
      (("    def connect(self) -> None:\n        self.sock = socket.create_connection((self.address, self.port), "
        "self.timeout)\n",
        "    def connect(self) -> None:\n        self.sock = socket.create_connection((self.host, self.port), "
        "self.timeout)\n"),),
      "tests/settings/test_policy.py::"
      "test_a_redirect_is_checked_for_scheme_and_host_too_and_the_connection_goes_to_the_checked_address"),
    M("audit-policy-image-prefix", "an image is allowed by its exact reference", "controller/settings/policy.py",
      "an image is allowed when it starts like an allowed one",
      (("    if kube.image != base.kube.image and kube.image not in policy.images:",
        "    if kube.image != base.kube.image and not any(kube.image.startswith(i[:-1]) for i in policy.images):"),),
      "tests/settings/test_policy.py::"
      "test_a_value_differing_from_an_allowed_one_anywhere_but_its_first_character_is_refused"),
    M("audit-policy-toleration-key", "a toleration is allowed only as listed, whole", "controller/settings/policy.py",
      "a toleration is allowed by its key alone",
      (("        if toleration not in base.tolerations and toleration not in policy.tolerations:",
        "        if toleration not in base.tolerations and toleration.get(\"key\") not in "
        "[t.get(\"key\") for t in policy.tolerations]:"),),
      "tests/settings/test_policy.py::"
      "test_a_value_differing_from_an_allowed_one_anywhere_but_its_first_character_is_refused"),
    M("audit-policy-host-suffix", "a data host is allowed by its exact name", "controller/settings/policy.py",
      "a data host is allowed when it ends like an allowed one",
      (("        if host not in policy.data_hosts:",
        "        if not any(host.endswith(h) for h in policy.data_hosts):"),),
      "tests/settings/test_policy.py::test_a_data_source_near_an_allowed_one_is_refused"),
    M("audit-c-unpickler", "every input that ever crashed a reader is refused with a message, whatever the memory",
      "controller/data/safepickle.py", "the C unpickler is back (its memo sized by the largest index a pickle names)",
      (("class _Restricted(pickle._Unpickler):", "class _Restricted(pickle.Unpickler):  # type: ignore[misc]"),),
      "tests/data/test_safepickle.py::test_every_input_that_ever_crashed_a_reader_exits_2_with_a_message"),
    M("audit-store-uri-segments", "a store URI cannot hide records behind '//', '.' or '..'",
      "controller/store/uri.py", "odd prefix segments are accepted",
      (("        if odd is not None:", "        if False:"),),
      "tests/store/test_store.py::test_a_store_uri_with_an_empty_dot_or_dotdot_segment_is_refused_naming_it"),
    M("audit-log-cap", "a trial that prints without end costs its store 16 MiB", "controller/launch/local.py",
      "a trial's whole output is read and stored",
      (("        data = read_log(self._dir(tid) / \"trial.log\")", "        data = read_log(self._dir(tid) / "
        "\"trial.log\", 2**40)"),),
      "tests/loop/test_local_search.py::test_a_trial_that_prints_without_end_costs_its_store_16_mib_once"),
    M("audit-log-once", "a trial's output is stored once", "controller/launch/local.py",
      "the working folder keeps its copy of a stored log",
      (("        (self._dir(tid) / \"trial.log\").unlink(missing_ok=True)\n", ""),),
      "tests/loop/test_local_search.py::test_a_trial_that_prints_without_end_costs_its_store_16_mib_once"),
    M("model-file-name", "a search's model file is a plain name in the trial's folder, never a record or a path",
      "controller/settings/config.py", "trial.modelFile is not checked",
      (("        problem = model_file_problem(self.model_file)\n        if problem:\n", "        problem = None\n"
        "        if problem:\n"),),
      "tests/settings/test_config.py::test_bad_settings_name_the_key"),
    M("model-file-download", "the dashboard downloads a trial's model under the name its result gives, inside its "
      "folder", "controller/dashboard/data.py", "a result's model_file is used as it is, a path included",
      (("        return name if isinstance(name, str) and not model_file_problem(name) else MODEL_FILE",
        "        return name if isinstance(name, str) else MODEL_FILE"),),
      "tests/report/test_dashboard.py::test_a_model_downloads_under_the_name_its_trial_saved_it_as"),
    M("local-grace", "local mode kills a trial still running its grace after SIGTERM, as a pod's grace period",
      "controller/launch/supervise.py", "the supervisor passes SIGTERM on and never kills",
      (("            timer.start()\n", "            pass\n"),),
      "tests/loop/test_local_search.py::test_a_trial_that_ignores_sigterm_is_killed_after_its_grace"),
    M("search-end-stopped", "a trial the search's end asked to stop is stopped, not failed, when it leaves no result",
      "controller/loop.py", "such a trial is recorded as failed",
      (("        if not rec.finished and tid in self._asked_to_stop and self.stop_reason is not None:",
        "        if False:"),),
      "tests/loop/test_local_search.py::test_a_trial_that_ignores_sigterm_is_killed_after_its_grace"),
    M("checkpoint-hash", "a torn checkpoint is never resumed from", "controller/trial/checkpoint.py",
      "a state is resumed from without checking its size and hash against its pointer",
      (("    if data is None or len(data) != size or hashlib.sha256(data).hexdigest() != digest:",
        "    if data is None:"),),
      "tests/trial/test_checkpoint.py::test_a_torn_checkpoint_is_never_resumed_from"),
    M("checkpoint-slots", "a checkpoint never overwrites the one its pointer names", "controller/trial/checkpoint.py",
      "every checkpoint is written into the same slot",
      (("    slot = SLOTS[1] if current is not None and current[0] == SLOTS[0] else SLOTS[0]",
        "    slot = SLOTS[0]"),),
      "tests/trial/test_checkpoint.py::test_commits_alternate_slots_so_the_older_state_is_removed"),
    M("resume-interrupted", "a trial killed from outside resumes from its checkpoint, and is not a failure",
      "controller/loop.py", "an interrupted trial is failed, as before",
      (("        if not (self.launcher.relaunches and ended.interrupted) or tid in self._asked_to_stop:",
        "        if True:"),),
      "tests/loop/test_local_search.py::"
      "test_a_trial_killed_from_outside_resumes_from_its_checkpoint_and_is_not_a_failure"),
    M("attempt-once", "a controller killed between two attempts starts exactly one next attempt",
      "controller/loop.py", "the ended attempt's number is counted by the controller, not told by the launcher",
      (("        tid, k = ended.tid, ended.attempt\n",
        "        tid, k = ended.tid, self.interruptions.get(ended.tid, 0) + 1\n"),),
      "tests/loop/test_local_search.py::"
      "test_a_controller_killed_between_an_interrupted_attempt_and_the_next_starts_exactly_one_next"),
    M("attempt-bound", "search.maxAttempts bounds a trial's interruptions", "controller/loop.py",
      "one attempt more than the bound",
      (("        if k >= self.settings.search.max_attempts:", "        if k > self.settings.search.max_attempts:"),),
      "tests/loop/test_local_search.py::test_a_trial_interrupted_more_than_its_bound_fails_saying_so"),
    M("digits-restore", "the digits trainer resumes after its last checkpoint, as if never stopped",
      "examples/digits/trainer.py", "it starts over instead",
      (("    restored = t.restore()", "    restored = None"),),
      "tests/trial/test_resume.py::test_a_trial_killed_after_a_checkpoint_resumes_as_if_never_stopped"),
    M("trainer-resume", "the CIFAR trainer resumes after its last checkpoint", "trainer/__main__.py",
      "it starts over instead",
      (("                resume=restored.state if restored is not None else None)", "                resume=None)"),),
      "tests/trial/test_trainer.py::"
      "test_a_trial_killed_after_a_checkpoint_resumes_at_the_next_epoch_with_each_epoch_once"),
    M("audit-ignored-stop", "a trial that ignores its stop request is flagged", "controller/ledger/trials.py",
      "a stopped trial that ran to its end is not told apart",
      (("        if isinstance(result, Mapping) and result.get(\"status\") == ResultStatus.OK:",
        "        if False:"),),
      "tests/loop/test_loop.py::test_a_trial_that_ignores_its_stop_request_is_flagged_where_users_look"),
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
                           # The checkout's history, for tests that compare commits (the scratch copy has none).
                           env={**os.environ, "CIFAR_HPO_TEST_RUN": f"mutant-{m.id}", "GIT_DIR": str(ROOT / ".git")})
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
