# Helpers shared by the launch scripts; sourced, never run. The sourcing
# script sets SCRIPT to its own path first (for its usage text).

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Prints the script's header comment (its usage text).
usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' \
    "$SCRIPT"
}
die_usage() {
  echo "error: $*" >&2
  echo >&2
  usage >&2
  exit 2
}

# Prints its arguments as one shell command line (quoted only where needed).
quote() {
  local a out=()
  for a in "$@"; do
    if [[ -n $a && $a =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      out+=("$a")
    else
      out+=("'${a//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

# The first two arguments that are not flags are CONFIG and WORKDIR; all
# others are passed on to experiments/main.py. Callers declare the arrays
# `positional` and `passthrough`.
collect_arg() {
  if ((${#positional[@]} < 2)) && [[ $1 != -* ]]; then
    positional+=("$1")
  else
    passthrough+=("$1")
  fi
}

# $PYTHON if set, else python, else python3.
pick_python() {
  if [[ -n ${PYTHON:-} ]]; then
    echo "$PYTHON"
  elif command -v python > /dev/null 2>&1; then
    echo python
  else
    echo python3
  fi
}
