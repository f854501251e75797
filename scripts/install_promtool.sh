#!/usr/bin/env bash
# promtool (from Debian's prometheus package): lints /metrics in the tests, checks and unit-tests
# the chart's alert rules and parses the dashboard's queries (make check-deploy). Idempotent.
set -euo pipefail
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool
