#!/usr/bin/env bash
# Run the CPython 3.13 regression-test oracle under a given Python command.
#
# Usage:
#   tests/oracle/run.sh PYTHON_CMD [ARGS...]
# Examples:
#   tests/oracle/run.sh python3.13
#   tests/oracle/run.sh target/release/pyhost --engine stock
#
# Runs:  PYTHON_CMD... -m test -j2 --timeout 300 --python 'PYTHON_CMD...' \
#            [--ignore PAT ...] <modules from modules.txt>
# from a fresh temporary directory, prints regrtest's summary and exits 0 only
# if regrtest exited 0 AND reported "Result: SUCCESS".
#
# Environment knobs (all optional):
#   ORACLE_JOBS=N          worker processes (default 2)
#   ORACLE_TIMEOUT=S       per-test-file timeout in seconds (default 300)
#   ORACLE_MODULES=FILE    module list (default: modules.txt next to this script)
#   ORACLE_KNOWN=FILE      known-failures file; its "ignore PATTERN" lines are
#                          passed as --ignore PATTERN (default: known-failures.txt)
#   ORACLE_LOG=FILE        also write the full regrtest output here
#                          (default: <tmpdir>/regrtest.log; the temp dir is
#                          removed on success and kept on failure)
#   ORACLE_NO_PYTHON_OPT=1 do NOT pass --python; workers are then started with
#                          the main process's sys.executable (see note below)
#   ORACLE_KEEP_ENV=1      do not unset the PYTHON* behaviour variables listed below
#   ORACLE_EXTRA_ARGS="…"  extra regrtest arguments (word-split), e.g. "-w" or "-o"
#
# Why --python by default: regrtest -jN starts each worker as
#   [sys.executable, *interpreter_flags, -u, -m, test.libregrtest.worker, JSON]
# so with a multi-word command such as "pyhost --engine stock" the "--engine
# stock" part would be lost (or, if the host reports a different
# sys.executable, the workers would silently run a different interpreter).
# --python makes every worker run under exactly PYTHON_CMD.  Note that the
# tests themselves still spawn sys.executable for their own subprocesses.
set -euo pipefail

die() { echo "oracle: error: $*" >&2; exit 2; }

if [[ $# -lt 1 ]]; then
    echo "usage: $0 PYTHON_CMD [ARGS...]" >&2
    echo "  e.g. $0 python3.13" >&2
    echo "       $0 target/release/pyhost --engine stock" >&2
    exit 2
fi

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
modules_file=${ORACLE_MODULES:-$script_dir/modules.txt}
known_file=${ORACLE_KNOWN:-$script_dir/known-failures.txt}
jobs=${ORACLE_JOBS:-2}
timeout=${ORACLE_TIMEOUT:-300}

[[ -r $modules_file ]] || die "cannot read module list: $modules_file"

# Resolve a relative program path (e.g. target/release/pyhost) against the
# caller's cwd, because we cd to a temp dir before running.
cmd=("$@")
if [[ ${cmd[0]} == */* ]]; then
    [[ -e ${cmd[0]} ]] || die "program not found: ${cmd[0]}"
    cmd[0]=$(cd "$(dirname "${cmd[0]}")" && pwd)/$(basename "${cmd[0]}")
else
    command -v -- "${cmd[0]}" >/dev/null || die "program not found in PATH: ${cmd[0]}"
fi
[[ -x ${cmd[0]} || ${cmd[0]} != */* ]] || die "not executable: ${cmd[0]}"

# Module list: first word of each non-comment, non-blank line.
modules=()
while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    read -r -a words <<<"$line" || true
    [[ ${#words[@]} -gt 0 ]] && modules+=("${words[0]}")
done <"$modules_file"
[[ ${#modules[@]} -gt 0 ]] || die "no modules listed in $modules_file"

# Ignore patterns: lines "ignore PATTERN  # reason" in known-failures.txt.
ignore_args=()
if [[ -r $known_file ]]; then
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%%#*}
        read -r -a words <<<"$line" || true
        if [[ ${#words[@]} -ge 2 && ${words[0]} == ignore ]]; then
            ignore_args+=(--ignore "${words[1]}")
        fi
    done <"$known_file"
fi

# Environment variables that change interpreter behaviour and make otherwise
# passing tests fail (e.g. PYTHONUNBUFFERED=1 breaks
# test_cmd_line.test_non_interactive_output_buffering).  PYTHONHOME/PYTHONPATH
# are left alone because an embedding host may legitimately need them.
if [[ -z ${ORACLE_KEEP_ENV:-} ]]; then
    for v in PYTHONUNBUFFERED PYTHONINSPECT PYTHONOPTIMIZE PYTHONVERBOSE \
             PYTHONDEBUG PYTHONWARNINGS PYTHONDEVMODE PYTHONSTARTUP \
             PYTHONSAFEPATH PYTHONNOUSERSITE PYTHONUSERBASE PYTHONHASHSEED \
             PYTHONINTMAXSTRDIGITS PYTHONNODEBUGRANGES PYTHONTRACEMALLOC \
             PYTHONFAULTHANDLER PYTHONMALLOC PYTHONMALLOCSTATS PYTHONUTF8 \
             PYTHONIOENCODING PYTHONBREAKPOINT PYTHONPROFILEIMPORTTIME \
             PYTHONWARNDEFAULTENCODING PYTHONCOERCECLOCALE PYTHON_GIL \
             PYTHON_CPU_COUNT PYTHON_FROZEN_MODULES PYTHON_PERF_JIT_SUPPORT \
             PYTHONPERFSUPPORT PYTHON_PRESITE; do
        if [[ -n ${!v+x} ]]; then
            echo "oracle: unsetting $v=${!v}"
            unset "$v"
        fi
    done
fi
for v in PYTHONHOME PYTHONPATH PYTHONPLATLIBDIR; do
    [[ -n ${!v+x} ]] && echo "oracle: note: $v=${!v} is set and inherited by the tests"
done

python_opt=()
if [[ -z ${ORACLE_NO_PYTHON_OPT:-} ]]; then
    joined=$(printf '%q ' "${cmd[@]}")
    python_opt=(--python "${joined% }")
fi
extra=()
if [[ -n ${ORACLE_EXTRA_ARGS:-} ]]; then
    read -r -a extra <<<"$ORACLE_EXTRA_ARGS"
fi

workdir=$(mktemp -d "${TMPDIR:-/tmp}/pyhost-oracle.XXXXXX")
log=${ORACLE_LOG:-$workdir/regrtest.log}
cleanup() {
    local rc=$?
    if [[ $rc -ne 0 && -s $log ]]; then
        echo "oracle: work dir kept: $workdir (log: $log)" >&2
    else
        rm -rf "$workdir"
    fi
}
trap cleanup EXIT
cd "$workdir"

# Sanity check: the command must be able to run Python at all.
echo "oracle: interpreter: ${cmd[*]}"
if ! "${cmd[@]}" -c 'import sys; print("oracle:   version:", sys.version.replace("\n", " ")); print("oracle:   sys.executable:", sys.executable); print("oracle:   sys._base_executable:", getattr(sys, "_base_executable", None)); import test.libregrtest' ; then
    die "'${cmd[*]} -c ...' failed in $workdir (is the CPython 'test' package" \
        "installed? pyenv shims resolve the version from the cwd: pass an absolute" \
        "interpreter path or set PYENV_VERSION)"
fi
echo "oracle: ${#modules[@]} modules from $modules_file, -j$jobs, --timeout $timeout, ${#ignore_args[@]} ignore args"
echo "oracle: cwd: $workdir"

full=("${cmd[@]}" -m test -j"$jobs" --timeout "$timeout" "${python_opt[@]}"
      "${ignore_args[@]}" "${extra[@]}" "${modules[@]}")
echo "oracle: running: ${full[*]:0:$(( ${#full[@]} - ${#modules[@]} ))} <modules...>"

start=$(date +%s)
set +e
"${full[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - start ))

result=$(grep -E '^Result: ' "$log" | tail -n 1 || true)
echo
echo "oracle: ================ summary ================"
echo "oracle: regrtest exit code: $rc"
echo "oracle: ${result:-Result: <none - regrtest did not finish>}"
echo "oracle: wall time: ${elapsed}s"
if [[ $rc -eq 0 && $result == "Result: SUCCESS" ]]; then
    echo "oracle: OK"
    exit 0
fi
echo "oracle: FAILED (anything but exit 0 + 'Result: SUCCESS' counts as failure;" \
     "see known-failures.txt for expected differences)" >&2
[[ $rc -ne 0 ]] && exit "$rc"
exit 1
