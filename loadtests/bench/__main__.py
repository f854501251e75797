"""`python -m loadtests.bench`: the side-by-side benchmark (loadtests/bench/cli.py)."""

import sys

from loadtests.bench.cli import main

sys.exit(main())
