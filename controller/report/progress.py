"""A search's progress as a person watching `run` sees it."""

from __future__ import annotations

import logging
import sys

from controller.report.publish import SearchStatus
from controller.trial.contract import TrialState

log = logging.getLogger(__name__)


class TerminalProgress:
    """One updating line on a terminal; a log line per change otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, status: SearchStatus) -> None:
        done, budget = status.finished, status.budget
        best = status.best
        best_txt = f"best {best['objective']:.4f} (trial {best['tid']})" if best else "best -"
        running, failed = status.counts[TrialState.RUNNING], status.counts[TrialState.FAILED]
        if self.tty:
            width = 24
            filled = int(width * done / budget) if budget else width
            sys.stderr.write(f"\r[{'#' * filled}{'-' * (width - filled)}] {done}/{budget} trials  {best_txt}  "
                             f"running {running}  failed {failed}   ")
            sys.stderr.flush()
        else:
            log.info("progress: %d/%d trials, %s, running %d, failed %d", done, budget, best_txt, running, failed)

    def end(self) -> None:
        """Ends the updating line, so that what follows starts on a line of its own."""
        if self.tty:
            sys.stderr.write("\n")
