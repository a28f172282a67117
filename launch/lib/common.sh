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
