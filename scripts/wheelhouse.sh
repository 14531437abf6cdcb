#!/usr/bin/env bash
# Build, on a machine with network, the wheels an air-gapped node needs to run this project from a checkout.
#   bash scripts/wheelhouse.sh TARGET_PYTHON PLATFORM [--have FILE] [--out DIR]
#   bash scripts/wheelhouse.sh 3.12 manylinux_2_28_x86_64 --have node-pip-list.txt --out .whl
# TARGET_PYTHON: the node's Python (3.12); PLATFORM: its wheel platform tag (older manylinux tags are tried too).
# --have FILE: the node's `python3 -m pip list` (or `pip freeze`); a package it already holds is skipped.
# The packages and versions come from scripts/gpu_node/wheels.txt. On the node:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site:.
#   python3 -m aigrobust --help
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: bash scripts/wheelhouse.sh TARGET_PYTHON PLATFORM [--have FILE] [--out DIR]" >&2; exit 2; }
[ $# -ge 2 ] || usage
python_version=$1; platform=$2; shift 2
have=""; out=".whl"
while [ $# -gt 0 ]; do
  case $1 in
    --have) [ $# -ge 2 ] || usage; have=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    *) usage ;;
  esac
done
[[ $python_version =~ ^3\.[0-9]+$ ]] || { echo "TARGET_PYTHON must look like 3.12, got '$python_version'" >&2; exit 2; }
[ -z "$have" ] || [ -f "$have" ] || { echo "--have $have: no such file" >&2; exit 2; }
# pip matches a manylinux tag exactly: offer the asked one and the older ones a newer glibc also runs
platforms=(--platform "$platform")
# (a regex, not a glob: the glob's '*' after each digit reached into the machine, giving 'manylinux_2_17_64')
if [[ $platform =~ ^manylinux_[0-9]+_[0-9]+_(.+)$ ]]; then
  machine=${BASH_REMATCH[1]}
  for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    [ "${tag}_${machine}" = "$platform" ] || platforms+=(--platform "${tag}_${machine}")
  done
fi
if [ -n "${WHEELHOUSE_PRINT_PLATFORMS:-}" ]; then echo "${platforms[*]}"; exit 0; fi  # for the test
normalise() { tr 'A-Z_.' 'a-z--'; }
mkdir -p "$out"
missing=()
while read -r requirement; do
  name=${requirement%%==*}
  if [ -n "$have" ] && awk '{print $1}' "$have" | sed 's/==.*//' | normalise | grep -qx "$(echo "$name" | normalise)"; then
    echo "skip $name (the node has it)"
    continue
  fi
  if python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
      --implementation cp "${platforms[@]}" -d "$out" "$requirement" 2>/dev/null; then
    echo "got $requirement"
  else
    echo "MISSING $requirement: no wheel for Python $python_version on $platform in the reachable registries" >&2
    missing+=("$requirement")
  fi
done < <(grep -v '^\s*#' scripts/gpu_node/wheels.txt | grep -v '^\s*$')
echo "wheels in $out: $(ls "$out" | wc -l)"
if [ ${#missing[@]} -gt 0 ]; then
  echo "not found: ${missing[*]}" >&2
  exit 1
fi
