#!/bin/sh
# The example project's "program": prints a greeting.
echo "Hello from the example project, built by ${CI_RUNNER_VERSION:+runwright }job ${CI_JOB_NAME:-?}"
