#!/usr/bin/env bash
# Run every test the project has and end with a summary of what ran, passed, failed or
# does not exist yet. `make test` calls it with the venv first on PATH.
#   ONLY=lint|app|molecule|<scenario name>   run one part (e.g. ONLY=postgresql)
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
# The version the image step builds and the full-stack scenario deploys (make exports it).
export APP_VERSION=${APP_VERSION:-$(git rev-parse --short HEAD 2>/dev/null || echo dev)}
# Molecule wraps its output at the terminal width (80 in CI): wide lines keep an assertion
# message whole in the log and in the failure digest below.
export COLUMNS=${COLUMNS:-300}
ONLY=${ONLY:-}
LOGDIR=${TEST_LOGDIR:-reports/test-logs}
mkdir -p "$LOGDIR"

declare -a NAMES=() RESULTS=() TIMES=()
passed=0 failed=0 skipped=0

wanted() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ] || [ "$ONLY" = "$2" ]; }

# step GROUP NAME COMMAND...: run one part, tee its log, record the result.
step() {
  local group=$1 name=$2; shift 2
  wanted "$group" "$name" || return 0
  local start=$SECONDS log="$LOGDIR/$name.log" rc
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  NAMES+=("$name") TIMES+=($((SECONDS - start)))
  if [ "$rc" -eq 0 ]; then RESULTS+=(passed); passed=$((passed + 1))
  else RESULTS+=("FAILED (rc $rc, log $log)"); failed=$((failed + 1)); fi
}

# setup NAME COMMAND...: a step the tests need (toolchain, engine, images). It is timed like
# the others, and a failure ends the run at once: nothing after it would mean anything.
setup() {
  local name=$1; shift
  local start=$SECONDS log="$LOGDIR/$name.log" rc
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  NAMES+=("$name") TIMES+=($((SECONDS - start)))
  if [ "$rc" -eq 0 ]; then RESULTS+=("ok (setup)"); return; fi
  RESULTS+=("FAILED (rc $rc, log $log)"); failed=$((failed + 1))
  summary
  failure_digest
  echo "a setup step failed: nothing else was run" >&2
  exit 1
}

# missing GROUP NAME WHY: a part that does not exist yet says so instead of failing.
missing() {
  wanted "$1" "$2" || return 0
  NAMES+=("$2") TIMES+=(0) RESULTS+=("skipped: $3"); skipped=$((skipped + 1))
}

molecule_scenarios() {
  # roles/<role>/molecule/<scenario> first (fast, independent), then the top-level ones.
  for dir in roles/*/molecule/*/ molecule/*/; do
    [ -f "$dir/molecule.yml" ] && echo "${dir%/}"
  done
}

run_molecule() {
  local dir=$1 project=. scenario=${1##*/}
  case $dir in roles/*) project=${dir%/molecule/*} ;; esac
  (cd "$project" && molecule test -s "$scenario")
}

summary() {
  echo
  echo "=== summary (wall time per step)"
  for i in "${!NAMES[@]}"; do
    printf '  %-36s %5ss  %s\n' "${NAMES[$i]}" "${TIMES[$i]}" "${RESULTS[$i]}"
  done
  printf '  %-36s %5ss\n' total $((SECONDS - run_start))
  echo
  echo "$passed passed, $failed failed, $skipped skipped"
}

# failure_digest: a few lines of why each failed step failed, printed last, so a CI page that
# keeps only the end of the output still says what broke (the logs hold the rest).
failure_digest() {
  local i log
  for i in "${!NAMES[@]}"; do
    case ${RESULTS[$i]} in FAILED*) ;; *) continue ;; esac
    log="$LOGDIR/${NAMES[$i]}.log"
    [ -f "$log" ] || continue
    echo "--- why ${NAMES[$i]} failed (the last error lines of $log):"
    sed 's/\x1b\[[0-9;]*m//g' "$log" |
      grep -E 'fatal:|FAILED!|failed: \[|ERROR|Error:|AssertionError|^E |msg' |
      grep -v 'RETRYING' | tail -n 8 | cut -c1-400
  done
}

# --- setup: the toolchain always; the engine and base images unless only lint or the app's tests
# run (the roles' unit tests start containers of the base image) ---------------------------------
run_start=$SECONDS
setup venv scripts/venv.sh .venv requirements.txt
case $ONLY in
  lint | ruff | ruff-format | yamllint | ansible-lint | app-tests) ;;
  *)
    setup docker scripts/ensure-docker.sh
    setup base-images scripts/base-images.sh
    ;;
esac
# PostgreSQL, Chromium and HAProxy on this machine: the app tests and the roles' unit tests (the
# rollout's HAProxy module) run against them.
case $ONLY in
  lint | ruff | ruff-format | yamllint | ansible-lint) ;;
  *) setup test-machine app/scripts/test-setup.sh ;;
esac

# --- lint ---------------------------------------------------------------------------
step lint ruff ruff check app scripts molecule roles playbooks
step lint ruff-format ruff format --check app scripts molecule roles playbooks
step lint yamllint yamllint -s .
step lint ansible-lint ansible-lint --profile production

# --- the app ------------------------------------------------------------------------
if [ -x app/scripts/test.sh ]; then
  step app app-tests app/scripts/test.sh
else
  missing app app-tests "app/ has no tests yet"
fi

# --- the roles' own unit tests (programs they install, modules, filter plugins), the playbooks' ----
role_unit_tests=$(ls -d roles/*/tests playbooks/tests 2>/dev/null || true)
if [ -n "$role_unit_tests" ]; then
  # shellcheck disable=SC2086
  step app role-unit-tests python -m pytest -q -p no:cacheprovider $role_unit_tests
fi

# --- deploy wiring --------------------------------------------------------------------
# The production inventory opens with the example vault password, or, once its vault is rekeyed
# (inventories/production/README.md), with SPRINTPOINTS_VAULT_PASSWORD_FILE.
VAULT_PASSWORD_FILE=${SPRINTPOINTS_VAULT_PASSWORD_FILE:-inventories/production/example-vault-password.txt}
production_inventory() {
  local vault=(--vault-password-file "$VAULT_PASSWORD_FILE")
  ansible-inventory -i inventories/production "${vault[@]}" --list >/dev/null &&
    for playbook in playbooks/*.yml; do
      ansible-playbook -i inventories/production "${vault[@]}" --syntax-check "$playbook" || return 1
    done
}
if [ -f "$VAULT_PASSWORD_FILE" ]; then
  step deploy production-inventory production_inventory
else
  missing deploy production-inventory "its vault was rekeyed: SPRINTPOINTS_VAULT_PASSWORD_FILE=<your password file> checks it"
fi

# --- the image every full-stack scenario deploys ---------------------------------------
if [ -f Dockerfile ]; then
  step molecule image make --no-print-directory image
else
  missing molecule image "no Dockerfile yet"
fi

# --- molecule -----------------------------------------------------------------------
# Every scenario has its own hosts and network. MOLECULE_JOBS of them run side by side (default
# 2, the machine's cores; 1 runs them one by one, each log streamed): the full-stack scenario
# first, as it is the longest (about half the run), beside it the roles' scenarios one after the
# other, which spend most of their time waiting on apt, systemd and the engine; once it ends,
# the rest of them two at a time.
scenario_name() {
  case $1 in
    roles/*) local name=${1#roles/}; echo "molecule-${name/\/molecule\//-}" ;;  # roles/haproxy/molecule/default -> molecule-haproxy-default
    *) echo "molecule-stack-${1#molecule/}" ;;                                     # molecule/default -> molecule-stack-default
  esac
}

# background_step NAME COMMAND...: like step, in the background; collect_steps records them.
declare -a BG_NAMES=()
background_step() {
  local name=$1; shift
  wanted molecule "$name" || return 0
  echo "=== $name (in the background; log $LOGDIR/$name.log): $*"
  (
    start=$SECONDS
    "$@" >"$LOGDIR/$name.log" 2>&1
    echo "$? $((SECONDS - start))" >"$LOGDIR/$name.result"
  ) &
  BG_NAMES+=("$name")
}
collect_steps() {
  wait
  local name rc seconds
  for name in "${BG_NAMES[@]}"; do
    read -r rc seconds <"$LOGDIR/$name.result" || { rc=1 seconds=0; }
    rm -f "$LOGDIR/$name.result"
    NAMES+=("$name") TIMES+=("$seconds")
    if [ "$rc" -eq 0 ]; then RESULTS+=(passed); passed=$((passed + 1)); echo "=== $name passed (${seconds}s)"
    else
      RESULTS+=("FAILED (rc $rc, log $LOGDIR/$name.log)"); failed=$((failed + 1))
      echo "=== $name FAILED (rc $rc); the end of its log:"; tail -n 60 "$LOGDIR/$name.log"
    fi
  done
  BG_NAMES=()
}

scenarios=$(molecule_scenarios)
if [ -z "$scenarios" ]; then
  missing molecule molecule "no molecule scenario yet"
fi
jobs_max=${MOLECULE_JOBS:-2}
# The full-stack scenarios first (molecule/<name>), then the roles' (roles/<role>/molecule/<name>).
ordered=$(printf '%s\n' $scenarios | grep -v '^roles/'; printf '%s\n' $scenarios | grep '^roles/')
for dir in $ordered; do
  if [ "$jobs_max" -le 1 ]; then
    step molecule "$(scenario_name "$dir")" run_molecule "$dir"
    continue
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  background_step "$(scenario_name "$dir")" run_molecule "$dir"
done
collect_steps

# --- summary ------------------------------------------------------------------------
summary
failure_digest
[ "$failed" -eq 0 ]
