"""A step-load shape: find the knee where latency bends, one plateau at a time.

Opt-in (`FACELLM_LOAD_STEP_USERS`): it reads locust's own --users and --run-time as the ceiling
and the end (`use_common_options`), so a step run is configured like any other run.
"""

from __future__ import annotations

from locust import LoadTestShape

from loadtests.locust.settings import StepLoad


def make_step_shape(step: StepLoad) -> type[LoadTestShape]:
    class StepLoadShape(LoadTestShape):
        use_common_options = True

        def tick(self) -> tuple[int, float] | None:
            options = self.runner.environment.parsed_options if self.runner else None
            max_users = (options.num_users if options else None) or step.users
            run_time = options.run_time if options else None
            elapsed = self.get_run_time()
            if run_time and elapsed >= run_time:
                return None
            return step.users_at(elapsed, max_users), float(step.users)

    return StepLoadShape
