#!/usr/bin/env bash
# Set up a fresh machine for razar: the Debian packages razard drives and a
# virtualenv with razar installed (editable) plus its test tools.
# Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/lib/systemd/systemd ] || need_apt+=(systemd)
[ -x /lib/systemd/systemd-journald ] || need_apt+=(systemd)
command -v dbus-daemon >/dev/null || need_apt+=(dbus)
# the user manager's own bus (dbus.socket for `systemd --user`)
[ -e /usr/lib/systemd/user/dbus.socket ] || need_apt+=(dbus-user-session)
command -v ip >/dev/null || need_apt+=(iproute2)
# the root healer pings its target; the monitoring check is tested against a real node_exporter
command -v ping >/dev/null || need_apt+=(iputils-ping)
[ -x /usr/bin/prometheus-node-exporter ] || need_apt+=(prometheus-node-exporter)
# alert rules are checked with promtool and run by a real Prometheus; alerts go to a real Alertmanager
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
# the notifier benchmark (and its smoke test) builds a journal of its own with it
[ -x /lib/systemd/systemd-journal-remote ] || need_apt+=(systemd-journal-remote)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: razar needs Python >= 3.11 ($PY is $($PY --version 2>&1))" >&2
  exit 1
fi
stamp=.venv/.razar-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> creating .venv and installing razar with its dev and bench tools"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # pip's chatter goes to a log; shown only when the install fails
  if ! .venv/bin/python -m pip install -q -e '.[dev,bench]' > .venv/setup.log 2>&1; then
    cat .venv/setup.log >&2
    echo "setup: pip install failed (log above, also in .venv/setup.log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

# The opencode repair rung's tests drive the real CLI (npm package, pinned, project-local).
if command -v npm >/dev/null; then
  scripts/install_opencode.sh >/dev/null
else
  echo "==> npm not found: the opencode rung's tests will be skipped (apt-get install npm)"
fi
