#!/bin/bash
# Installs the Debian packages that building, testing and the demo need,
# skipping those already present.  Needs root (or sudo) only when something
# is missing.
set -euo pipefail

PACKAGES=(
	build-essential
	postgresql-15
	postgresql-server-dev-15
	libopenblas-dev
	liblbfgs-dev
	libutf8proc-dev
	libcurl4-openssl-dev
	libpq-dev
	libipc-run-perl
	fasttext
	python3
	chromium		# test/t/024_report_browser.pl renders triage.report() headless
)

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then
	SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
