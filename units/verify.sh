#!/usr/bin/env bash
# Check importd's unit files with `systemd-analyze verify`, and that every service is hardened:
# `systemd-analyze security --offline=true` must score it at most $IMPORTD_MAX_EXPOSURE (2.0 unless
# set; 0 is the safest, 10 the least safe). Exits non-zero on any problem.
#
#   units/verify.sh [UNIT_FILE...]      (default: every .service/.timer/.socket beside this script)
#
# Two things make a bare `systemd-analyze verify` unfit for CI:
# - it fails when ExecStart='s binary is missing, and /usr/bin/importd exists only on a real
#   install: the units are checked from a temporary copy where importd/importctl point to stubs
#   (other binaries, /bin/kill for one, must really exist: a typo there is a real problem);
# - it reports unknown keys and unparsable values as warnings ("..., ignoring.") yet exits 0:
#   any output line naming one of our units counts as a failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if ! command -v systemd-analyze >/dev/null; then
    echo "verify.sh: systemd-analyze not found (Debian/Ubuntu: apt-get install systemd)" >&2
    exit 2
fi

if [[ $# -gt 0 ]]; then
    units=("$@")
else
    shopt -s nullglob
    units=("$here"/*.service "$here"/*.timer "$here"/*.socket)
    shopt -u nullglob
fi
if [[ ${#units[@]} -eq 0 ]]; then
    echo "verify.sh: no unit files to verify" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
for stub in importd importctl; do
    printf '#!/bin/sh\nexit 0\n' >"$work/bin/$stub"
    chmod +x "$work/bin/$stub"
done

# Siblings are copied too, so that a timer finds the service it triggers.
declare -A seen=()
for unit in "${units[@]}"; do
    if [[ ! -f $unit ]]; then
        echo "verify.sh: $unit: no such file" >&2
        exit 2
    fi
    for file in "$(dirname "$unit")"/*.service "$(dirname "$unit")"/*.timer "$(dirname "$unit")"/*.socket "$unit"; do
        [[ -f $file && -z ${seen[$(basename "$file")]:-} ]] || continue
        seen[$(basename "$file")]=1
        # Exec*=[prefixes]/any/path/importd -> $work/bin/importd (same for importctl).
        sed -E "s#^(Exec[A-Za-z]*=[-@:+!]*)/[^[:space:]]*/(importd|importctl)([[:space:]]|\$)#\\1$work/bin/\\2\\3#" \
            "$file" >"$work/$(basename "$file")"
    done
done

flags=(--man=no --generators=no)
# Problems in the distribution's own units are not ours (--recursive-errors: systemd >= 250).
if systemd-analyze --help 2>&1 | grep -q -- '--recursive-errors'; then
    flags+=(--recursive-errors=no)
fi

max_exposure=${IMPORTD_MAX_EXPOSURE:-2.0}
if ! [[ $max_exposure =~ ^[0-9]+(\.[0-9])?$ ]]; then
    echo "verify.sh: IMPORTD_MAX_EXPOSURE=$max_exposure: expected a score such as 2.0" >&2
    exit 2
fi

# The overall exposure of a service (e.g. 0.7), or nothing when systemd-analyze gave none.
exposure() {
    systemd-analyze security --offline=true --no-pager "$1" 2>&1 |
        sed -nE 's/.*Overall exposure level for [^:]*: ([0-9]+\.[0-9]+).*/\1/p' | tail -n 1
}

status=0
for unit in "${units[@]}"; do
    name=$(basename "$unit")
    rc=0
    output=$(systemd-analyze verify "${flags[@]}" "$work/$name" 2>&1) || rc=$?
    ours=$(grep -F -e "$name" -e "$work" <<<"$output" || true)
    if [[ $rc -ne 0 || -n $ours ]]; then
        echo "FAIL $name (systemd-analyze exit $rc):" >&2
        sed "s#$work/bin/#/usr/bin/#g; s#$work/#$(dirname "$unit")/#g; s#^#  #" <<<"$output" >&2
        status=1
    else
        echo "ok   $name"
        if [[ -n $output ]]; then
            echo "  (about other units, ignored:)"
            printf '%s\n' "$output" | sed 's/^/  /'
        fi
    fi
    [[ $name == *.service ]] || continue
    score=$(exposure "$work/$name")
    if [[ -z $score ]]; then
        echo "FAIL $name: systemd-analyze security gave no exposure level:" >&2
        systemd-analyze security --offline=true --no-pager "$work/$name" 2>&1 | sed 's/^/  /' >&2
        status=1
    elif awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s > m) }'; then
        echo "FAIL $name: exposure $score is above $max_exposure; what counts against it:" >&2
        systemd-analyze security --offline=true --no-pager "$work/$name" 2>&1 | grep '✗' | sed 's/^/  /' >&2
        status=1
    else
        echo "ok   $name: exposure $score (at most $max_exposure)"
    fi
done
exit $status
