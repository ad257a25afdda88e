"""Run under torchrun by test_distributed.py: `nassearch ARGS` with each rank given its own
output_dir, so that any file a rank other than 0 writes shows up in a folder of its own."""

from __future__ import annotations

import os
import sys

from nassearch.cli import main

if __name__ == "__main__":
    out, *argv = sys.argv[1:]
    sys.exit(main([*argv, "--set", f"output_dir={out}/rank{os.environ['RANK']}"]))
