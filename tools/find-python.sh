#!/bin/sh
# Prints the path of a Python >= 3.12 interpreter, or explains what is needed and fails.
# pyenv shims only run with PYENV_VERSION set, so real interpreters under $PYENV_ROOT are
# tried directly as well as whatever is on PATH.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
if [ -n "${PYTHON:-}" ]; then
  if ok "$PYTHON"; then echo "$PYTHON"; exit 0; fi
  echo "PYTHON=$PYTHON is not a working Python >= 3.12" >&2; exit 1
fi
root=${PYENV_ROOT:-$HOME/.pyenv}
for c in python3.12 python3.13 python3 \
         $(ls -d "$root"/versions/3.12*/bin/python3 2>/dev/null | sort -rV) $(ls -d "$root"/versions/3.13*/bin/python3 2>/dev/null | sort -rV) \
         /usr/local/bin/python3.12 /usr/local/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.13; do
  p=$(command -v "$c" 2>/dev/null) || continue
  if ok "$p"; then echo "$p"; exit 0; fi
done
cat >&2 <<'MSG'
sagewire needs Python 3.12 or newer and found none.
Install one (for example `pyenv install 3.12` or your OS package python3.12),
or point at it explicitly: make test PYTHON=/path/to/python3.12
MSG
exit 1
