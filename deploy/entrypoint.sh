#!/bin/sh
# Secrets arrive as files (compose secrets, mounted Kubernetes secrets), but Settings reads TIDINGS_* variables.
# For each TIDINGS_<NAME>_FILE that is set, export TIDINGS_<NAME> with that file's content (trailing newlines
# dropped), unset the _FILE variable, then exec the command, so `tidings` runs as PID 1 and gets the signals.
set -eu
for name in $(env | sed -n 's/^\(TIDINGS_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
  file=$(printenv "${name}_FILE")
  if [ ! -r "$file" ]; then
    echo "tidings-entrypoint: ${name}_FILE names $file, which cannot be read" >&2
    exit 1
  fi
  value=$(cat "$file")
  export "$name=$value"
  unset "${name}_FILE"
done
exec "$@"
