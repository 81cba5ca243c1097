#!/usr/bin/env bash
# Set up a machine for razar, in one of two sizes:
#
#   scripts/setup.sh demo   what `make demo` uses: systemd, dbus, dbus-user-session
#                           and a .venv with razar and its runtime dependencies
#   scripts/setup.sh test   (the default) what `make test` uses: the above, plus the
#                           packages the tests drive (a real Prometheus, Alertmanager,
#                           node_exporter, journal-remote, a debootstrap'd systemd-nspawn
#                           container, ...), the dev/bench tools and the opencode CLI
#
# Safe to run again: it only does what is missing, and nothing when all is there.
# Debian starts a service when its package is installed; the test-only packages are
# installed with a policy-rc.d that says no (unless the host already has one), so
# their services are not started on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-test}
case "$what" in
demo | test) ;;
*)
  echo "usage: scripts/setup.sh [demo|test]  (got '$what')" >&2
  exit 2
  ;;
esac

apt_install() { # apt_install <keep services stopped: yes|no> PACKAGE...
  local quiet=$1
  shift
  [ $# -gt 0 ] || return 0
  echo "==> installing Debian packages: $*"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to apt-get install $*" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ "$quiet" = yes ] && [ ! -e "$policy" ]; then
    # invoke-rc.d / deb-systemd-invoke: 101 = "action forbidden", so no service starts
    printf '#!/bin/sh\n# razar scripts/setup.sh: no service starts during its install\nexit 101\n' \
      > "$policy"
    chmod 755 "$policy"
    made_policy=$policy
    # shellcheck disable=SC2064  # the path now: the local is gone when the trap runs
    trap "rm -f '$policy'" EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@"
  if [ -n "$made_policy" ]; then
    rm -f "$made_policy"
    trap - EXIT
  fi
}

# ---- what the demo uses (also the runtime of razard itself)
need=()
[ -x /usr/lib/systemd/systemd ] || need+=(systemd)
[ -x /lib/systemd/systemd-journald ] || need+=(systemd)
command -v dbus-daemon >/dev/null || need+=(dbus)
# the user manager's own bus (dbus.socket for `systemd --user`)
[ -e /usr/lib/systemd/user/dbus.socket ] || need+=(dbus-user-session)
PY=${PYTHON:-python3}
# the venv (Debian splits ensurepip out of python3)
"$PY" -c 'import ensurepip' 2>/dev/null || [ -x .venv/bin/python ] || need+=(python3-venv)
# shellcheck disable=SC2046  # the list has no spaces
apt_install no $(printf '%s\n' "${need[@]}" | sort -u)

# ---- what only the tests use
if [ "$what" = test ]; then
  extra=()
  command -v ip >/dev/null || extra+=(iproute2)
  # the root healer pings its target; the monitoring check is tested against a real node_exporter
  command -v ping >/dev/null || extra+=(iputils-ping)
  [ -x /usr/bin/prometheus-node-exporter ] || extra+=(prometheus-node-exporter)
  # alert rules are checked with promtool and run by a real Prometheus; alerts go to a real Alertmanager
  command -v promtool >/dev/null || extra+=(prometheus)
  command -v prometheus-alertmanager >/dev/null || extra+=(prometheus-alertmanager)
  # the notifier benchmark (and its smoke test) builds a journal of its own with it
  [ -x /lib/systemd/systemd-journal-remote ] || extra+=(systemd-journal-remote)
  # the system-manager test bed: a debootstrap'd Debian booted with systemd-nspawn
  command -v debootstrap >/dev/null || extra+=(debootstrap)
  command -v systemd-nspawn >/dev/null || extra+=(systemd-container)
  # the fleet tests start their own etcd members on loopback (never the packaged service)
  command -v etcd >/dev/null || extra+=(etcd-server)
  command -v etcdctl >/dev/null || extra+=(etcd-client)
  apt_install yes "${extra[@]}"
fi

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: razar needs Python >= 3.11 ($PY is $($PY --version 2>&1))" >&2
  exit 1
fi

# .venv: razar (editable) with its runtime dependencies; for the tests also [dev,bench].
# The stamp holds the hash of pyproject.toml and what was installed ("demo" or "test");
# a test venv serves the demo too.
stamp=.venv/.razar-installed
hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$have" != "$hash test" ] && { [ "$what" = test ] || [ "$have" != "$hash demo" ]; }; then
  if [ "$what" = test ]; then
    spec='.[dev,bench]' said="razar with its dev and bench tools"
  else
    spec='.' said="razar and its runtime dependencies"
  fi
  echo "==> creating .venv and installing $said"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # pip's chatter goes to a log; shown only when the install fails
  if ! .venv/bin/python -m pip install -q -e "$spec" > .venv/setup.log 2>&1; then
    cat .venv/setup.log >&2
    echo "setup: pip install failed (log above, also in .venv/setup.log)" >&2
    exit 1
  fi
  echo "$hash $what" > "$stamp"
fi

[ "$what" = test ] || exit 0

# The opencode repair rung's tests drive the real CLI (npm package, pinned, project-local).
if command -v npm >/dev/null; then
  scripts/install_opencode.sh >/dev/null
else
  echo "==> npm not found: the opencode rung's tests will be skipped (apt-get install npm)"
fi
