#!/bin/sh
# The example project's "test suite".
set -e
out=$(./hello.sh)
case "$out" in
  *"Hello from the example project"*) echo "ok 1 - greeting"; ;;
  *) echo "not ok 1 - greeting: $out"; exit 1 ;;
esac
