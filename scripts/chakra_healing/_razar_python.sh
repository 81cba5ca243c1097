# Sourced by the shell healers: sets $repo and $py (RAZAR_PYTHON, else the
# checkout's .venv, else python3) and puts the checkout on PYTHONPATH.
repo=$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd) || exit 1
if [ -n "${RAZAR_PYTHON:-}" ]; then
    py=$RAZAR_PYTHON
elif [ -x "$repo/.venv/bin/python" ]; then
    py=$repo/.venv/bin/python
else
    py=python3
fi
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
