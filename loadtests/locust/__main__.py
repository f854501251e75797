"""`python -m loadtests.locust`: the headless load test (loadtests/locust/runner.py)."""

import sys

from loadtests.locust.runner import main

sys.exit(main())
