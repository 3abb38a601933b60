"""`python -m controller`: the command line (controller/cli)."""

import sys

from controller.cli import main

sys.exit(main())
