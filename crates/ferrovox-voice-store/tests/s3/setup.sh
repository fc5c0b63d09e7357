#!/usr/bin/env bash
# Installs moto's S3 server, which the voice store's S3 tests start on 127.0.0.1, into a venv
# outside the repository: ${FERROVOX_MOTO_VENV:-../.venv-moto}, a relative path being taken from
# the repository root. The tests read the same variable with the same default, so running this
# once is all they need.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
venv="${FERROVOX_MOTO_VENV:-../.venv-moto}"
# Pinned: moto's S3 emulation (conditional PUT with If-None-Match in particular) changes between
# releases, and the tests rely on what this one answers.
moto_version=5.2.6
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
installed="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true)"
if [ "$installed" != "$moto_version" ] || [ ! -x "$venv/bin/moto_server" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$moto_version"
fi
"$venv/bin/moto_server" --help >/dev/null
echo "moto server ready: $venv/bin/moto_server"
