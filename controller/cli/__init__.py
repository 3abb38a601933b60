"""The controller's command line: parses, then hands each command to its module.

  python -m controller run [--config FILE] [--local] [--store URI] [--search NAME] [--max-trials N]
                           [--parallelism P] [--max-failed N] [--seed S] [--data SPEC] [--epochs E]
  python -m controller status --store URI [--search NAME] [--json]
  python -m controller best --store URI [--search NAME] [--download DIR]
  python -m controller import --store URI [--search NAME] PATH
  python -m controller report --store URI [--search NAME] [--out DIR]
  python -m controller trial [--config FILE] --params JSON|@FILE [--store URI] [--seed S] [--epochs E]
"""

from __future__ import annotations

import argparse
import sys

from controller.cli import operator, results, run, trial
from controller.errors import ConfigError, PermanentError, TemporaryError


def build_parser() -> argparse.ArgumentParser:
    """Every command and flag of `python -m controller`."""
    p = argparse.ArgumentParser(prog="python -m controller", description="cifar-hpo search controller")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    run.add_parser(sub)
    operator.add_parser(sub)
    results.add_parsers(sub)
    trial.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs one command; exit 2 for a bad input (named in the message), 1 for a store or cluster failure."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except (PermanentError, TemporaryError) as e:
        sys.stderr.write(f"error: {type(e).__name__}: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; run the same command again to resume\n")
        return 130
