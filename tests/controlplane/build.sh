#!/usr/bin/env bash
# Build the test kube-apiserver (upstream command + embedded etcd) once and cache it outside the
# git tree; prints its path. See ../gobuild.sh (the cache key, exit codes, environment).
exec bash "$(dirname "${BASH_SOURCE[0]}")/../gobuild.sh" "$(dirname "${BASH_SOURCE[0]}")" kube-apiserver
