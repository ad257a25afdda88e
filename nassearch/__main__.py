"""`python -m nassearch` (and `torchrun -m nassearch`) runs the command line."""

import sys

from nassearch.cli import main

sys.exit(main())
