#!/usr/bin/env bash
# Chromium (Debian's package) for the playground's browser test, which Playwright drives through
# `executable_path`: Playwright's own browser download is not used. Idempotent.
exec bash "$(dirname "$0")/install_debian.sh" chromium chromium
