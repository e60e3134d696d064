#!/usr/bin/env bash
# Build kubelet + kube-controller-manager + kube-scheduler (one binary, README.md) once and cache
# it outside the git tree; prints its path. See ../gobuild.sh (the cache key, exit codes, environment).
exec bash "$(dirname "${BASH_SOURCE[0]}")/../gobuild.sh" "$(dirname "${BASH_SOURCE[0]}")" kubeparts
