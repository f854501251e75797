#!/usr/bin/env bash
# Usage: install_debian.sh COMMAND PACKAGE — installs Debian's PACKAGE unless COMMAND is already
# on the PATH (test tools that PyPI does not ship; `make tools`). Idempotent; sudo when not root.
set -euo pipefail
command=$1 package=$2
command -v "$command" >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$package" >/dev/null
command -v "$command"
