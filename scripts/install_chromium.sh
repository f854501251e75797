#!/usr/bin/env bash
# Chromium (Debian's package) for the playground's browser test, which Playwright drives through
# `executable_path`: Playwright's own browser download is not used. Idempotent.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium
