#!/usr/bin/env bash
# promtool (from Debian's prometheus package): lints /metrics in the tests, checks and unit-tests
# the chart's alert rules and parses the dashboard's queries (make check-deploy). Idempotent.
exec bash "$(dirname "$0")/install_debian.sh" promtool prometheus
