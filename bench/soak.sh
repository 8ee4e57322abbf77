#!/usr/bin/env bash
# The fault-injection soak: mixed load against one server while its workers
# and php-cgi processes are killed, its config reloaded, its logs rotated and
# its admin side polled; every response checked, every failure counted by
# cause, fds and RSS compared with the start. See bench/README.md.
#
# Environment (all optional):
#   SOAK_SERVER=luahttpd   luahttpd, nginx or lighttpd
#   SOAK_S=120             seconds of load with faults
#   SOAK_CLIENTS=12        load threads
#   SOAK_FAULT_EVERY=3     seconds between faults
#   SOAK_WARMUP=5          seconds of load without faults before the first fds/RSS reading
#   SOAK_SEED=...          seed of the request mix and of the victims (printed)
#   SOAK_ADV_BOUND_MS=1000 an adversarial route must get its 500 within this
#   SOAK_FIND_N=300        subject length of the backtracking string.find
#   LUAHTTPD_BIN=...       use this luahttpd (and FCGI_TEST_BIN=... the test backend)
#                          instead of cargo build --release
#   PHP_CGI=...            php-cgi binary (default: php-cgi in PATH)
#   KEEP_TMP=1             keep configs and logs
# Exit status: 0 when the soak met its goals, 1 when it did not (the report
# says which), 2 when it could not run.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SOAK_SERVER=${SOAK_SERVER:-luahttpd}
export SOAK_SERVER

die() { printf 'soak.sh: error: %s\n' "$*" >&2; exit 2; }

case $SOAK_SERVER in luahttpd|nginx|lighttpd) ;; *) die "SOAK_SERVER must be luahttpd, nginx or lighttpd" ;; esac

need=(python3 php-cgi)
[[ $SOAK_SERVER == luahttpd ]] || need+=("$SOAK_SERVER")
for c in "${need[@]}"; do
  if ! command -v "$c" >/dev/null; then
    echo "soak.sh: $c is missing; running bench/install.sh" >&2
    "$SCRIPT_DIR/install.sh" >&2 || die "bench/install.sh failed"
    break
  fi
done

# The test FastCGI backend is needed for every server (the stalling backend).
if [[ -z ${LUAHTTPD_BIN:-} || -z ${FCGI_TEST_BIN:-} ]]; then
  command -v cargo >/dev/null || die "cargo not found (or set LUAHTTPD_BIN and FCGI_TEST_BIN)"
  echo "soak.sh: cargo build --release --bins in $REPO_ROOT" >&2
  (cd "$REPO_ROOT" && cargo build --release --bins) >&2 || die "cargo build --release failed"
  target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release
  LUAHTTPD_BIN=${LUAHTTPD_BIN:-$target/luahttpd}
  FCGI_TEST_BIN=${FCGI_TEST_BIN:-$target/luahttpd-fcgi-test}
fi
[[ -x $LUAHTTPD_BIN ]] || die "LUAHTTPD_BIN=$LUAHTTPD_BIN is not executable"
[[ -x $FCGI_TEST_BIN ]] || die "FCGI_TEST_BIN=$FCGI_TEST_BIN is not executable"
export LUAHTTPD_BIN FCGI_TEST_BIN

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 "$SCRIPT_DIR/lib/soak.py"
