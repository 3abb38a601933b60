#!/bin/sh
# Runs before the trial program, outside it, as the launcher's command: one line per start (its arguments, which
# name the trial's folder) in $FAKE_TRIAL_STARTLOG, then the program itself. A program that dies before it reads its
# proposal is still counted.
if [ -n "${FAKE_TRIAL_STARTLOG:-}" ]; then printf '%s\n' "$*" >> "$FAKE_TRIAL_STARTLOG"; fi
exec "$@"
