#!/usr/bin/env bash
# Compare luahttpd with lighttpd and nginx serving the same static files.
#
# Every server is started by this script, in the foreground, as the current
# user, on a loopback port, with config files written into a temporary
# directory. Nothing else is touched; everything started is killed on exit.
#
# Environment (all optional):
#   ROUNDS=3          rounds; the median of the rounds is reported
#   DURATION=5s       length of one wrk run (5, 5s or 1m)
#   CONNECTIONS=50    wrk connections (-c)
#   THREADS=1         wrk threads (-t)
#   SERVERS="luahttpd lighttpd nginx"   servers to run (any subset)
#   SCENARIOS="1k_keepalive 1k_close 1m_keepalive"   scenarios to run
#   BASE_PORT=18080   first port tried; the next free ones are used
#   WARMUP=1          seconds of warm-up per server before measuring (0: none)
#   START_TIMEOUT=20  seconds to wait for a server to answer
#   LUAHTTPD_BIN=...  use this binary instead of running cargo build --release
#   KEEP_TMP=1        keep the temporary directory (configs, logs, wrk output)
#
# See bench/README.md.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
SERVERS=${SERVERS:-"luahttpd lighttpd nginx"}
SCENARIOS=${SCENARIOS:-"1k_keepalive 1k_close 1m_keepalive"}
BASE_PORT=${BASE_PORT:-18080}
WARMUP=${WARMUP:-1}
START_TIMEOUT=${START_TIMEOUT:-20}
KEEP_TMP=${KEEP_TMP:-0}

# Settings shared by all servers.
WORKERS=2
KEEPALIVE_REQUESTS=1000
MAX_CONNECTIONS=10000
IDLE_TIMEOUT=5   # keep-alive idle seconds: luahttpd's default, lighttpd's default

log() { printf '%s\n' "$*" >&2; }
die() { log "compare.sh: error: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Argument checks

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number of seconds"
case $DURATION in
  *[0-9]s) DURATION_S=${DURATION%s} ;;
  *[0-9]m) DURATION_S=$(( ${DURATION%m} * 60 )) ;;
  *) DURATION_S=$DURATION ;;
esac
[[ $DURATION_S =~ ^[1-9][0-9]*$ ]] || die "DURATION must look like 5, 5s or 1m (got '$DURATION')"
(( CONNECTIONS >= THREADS )) || die "CONNECTIONS must be >= THREADS"

read -r -a SERVER_LIST <<<"$SERVERS"
read -r -a SCENARIO_LIST <<<"$SCENARIOS"
(( ${#SERVER_LIST[@]} > 0 )) || die "SERVERS is empty"
for s in "${SERVER_LIST[@]}"; do
  case $s in luahttpd|lighttpd|nginx) ;; *) die "unknown server '$s'" ;; esac
done
has_server() { local s; for s in "${SERVER_LIST[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

# ---------------------------------------------------------------------------
# Scenarios. Each scenario_NAME function sets:
#   SC_TITLE    label for the table
#   SC_PATH     URL path to request
#   SC_HEADERS  array of extra wrk arguments (e.g. -H 'Connection: close')
#
# To add a scenario (e.g. php-cgi over FastCGI, or a Lua route function):
#   1. add a scenario_NAME function here;
#   2. extend the config writers below (write_conf_luahttpd / _lighttpd /
#      _nginx -- see the "more scenarios" comments in each) so that every
#      server answers SC_PATH the same way;
#   3. if the scenario needs a helper process (a php-cgi FastCGI pool, say),
#      start it from a start_helpers function with start_bg so the exit trap
#      kills it, and wait for it like the servers;
#   4. add NAME to the default SCENARIOS list above.

scenario_1k_keepalive() { SC_TITLE="1 KiB keep-alive";   SC_PATH=/1k.bin; SC_HEADERS=(); }
scenario_1k_close()     { SC_TITLE="1 KiB conn-close";   SC_PATH=/1k.bin; SC_HEADERS=(-H "Connection: close"); }
scenario_1m_keepalive() { SC_TITLE="1 MiB keep-alive";   SC_PATH=/1m.bin; SC_HEADERS=(); }

for sc in "${SCENARIO_LIST[@]}"; do
  declare -F "scenario_$sc" >/dev/null || die "unknown scenario '$sc'"
done

# ---------------------------------------------------------------------------
# Packages

ensure_packages() {
  local missing=() sudo=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v nginx >/dev/null || missing+=(nginx)
  command -v lighttpd >/dev/null || missing+=(lighttpd)
  command -v curl >/dev/null || missing+=(curl)
  (( ${#missing[@]} == 0 )) && return 0
  if (( EUID != 0 )); then
    command -v sudo >/dev/null || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
    sudo=(sudo)
  fi
  log "installing ${missing[*]} from Debian"
  # Note: on a host with an init system, Debian's maintainer scripts may start
  # the packages' system services; this script never uses or touches them.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# ---------------------------------------------------------------------------
# Process bookkeeping: everything started goes through start_bg and is killed
# on exit, by its own process id / process group.

PIDS=()
TMP=""

# group_alive SID: any live (non-zombie) process left in that session?
group_alive() { ps -o stat= -s "$1" 2>/dev/null | grep -qv '^Z'; }

cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # wait up to 5 s for the whole process group to go, then force it
    for ((i = 0; i < 50; i++)); do
      group_alive "$pid" || break
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [[ -n $TMP && -d $TMP ]]; then
    if [[ $KEEP_TMP == 1 ]]; then
      echo "temporary files kept in $TMP" >&9
    else
      rm -rf "$TMP"
    fi
  fi
  exit "$rc"
}
# cleanup runs with stderr silenced (bash 5.2 sometimes prints a spurious
# "wait_for: No record of process" there); fd 9 keeps the real stderr.
exec 9>&2
trap 'cleanup 2>/dev/null' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg LOGFILE CMD...: run CMD in its own session (so the whole process
# tree can be killed by group id), output to LOGFILE; sets LAST_PID.
start_bg() {
  local logfile=$1; shift
  setsid "$@" >"$logfile" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

NEXT_PORT=$BASE_PORT
alloc_port() {
  while port_in_use "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
  ALLOCATED_PORT=$NEXT_PORT
  NEXT_PORT=$((NEXT_PORT + 1))
}

# ---------------------------------------------------------------------------
# Config writers. Each writes its files under $TMP/<server>/.

write_conf_luahttpd() {
  local dir=$TMP/luahttpd port=$1
  mkdir -p "$dir"
  cat >"$dir/site.lua" <<EOF
server {
  listen = "127.0.0.1:$port",
  workers = $WORKERS,
  root = "$WWW",
  index = { "index.html" },
  access_log = false,
  error_log = "$dir/error.log",
  limits = { keepalive_requests = $KEEPALIVE_REQUESTS, connections = $MAX_CONNECTIONS },
  -- more scenarios: routes (FastCGI, Lua functions) go here
}
EOF
}

write_conf_nginx() {
  local dir=$TMP/nginx port=$1 user_line=""
  mkdir -p "$dir/logs" "$dir/tmp"
  # As root, nginx would switch its workers to 'nobody', who cannot read the
  # temporary directory; keep them running as the current user.
  if (( EUID == 0 )); then user_line="user $(id -un) $(id -gn);"; fi
  cat >"$dir/nginx.conf" <<EOF
$user_line
daemon off;
master_process on;
worker_processes $WORKERS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile $((MAX_CONNECTIONS * 2));

events {
  worker_connections $MAX_CONNECTIONS;
}

http {
  access_log off;
  sendfile on;
  # luahttpd keeps open files for a second and lighttpd has its stat cache;
  # give nginx the same kind of cache.
  open_file_cache max=1000 inactive=20s;
  open_file_cache_valid 1s;
  keepalive_requests $KEEPALIVE_REQUESTS;
  keepalive_timeout ${IDLE_TIMEOUT}s;
  client_body_temp_path $dir/tmp/client_body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  types {
    text/html html;
    application/octet-stream bin;
  }
  default_type application/octet-stream;

  server {
    listen 127.0.0.1:$port;
    root $WWW;
    index index.html;
    # more scenarios: location blocks (fastcgi_pass, ...) go here
  }
}
EOF
}

write_conf_lighttpd() {
  local dir=$TMP/lighttpd port=$1 backend=$2
  mkdir -p "$dir"
  cat >"$dir/lighttpd.conf" <<EOF
server.document-root = "$WWW"
server.bind = "127.0.0.1"
server.port = $port
server.pid-file = "$dir/lighttpd.pid"
server.errorlog = "$dir/error.log"
server.max-worker = $WORKERS
server.event-handler = "linux-sysepoll"
$backend
server.max-keep-alive-requests = $KEEPALIVE_REQUESTS
server.max-keep-alive-idle = $IDLE_TIMEOUT
server.max-fds = $((MAX_CONNECTIONS * 2))
server.max-connections = $MAX_CONNECTIONS
index-file.names = ( "index.html" )
mimetype.assign = ( ".html" => "text/html", ".bin" => "application/octet-stream" )
# no mod_accesslog: access logging is off
# more scenarios: server.modules += ( "mod_fastcgi" ) and fastcgi.server go here
EOF
}

# ---------------------------------------------------------------------------
# Starting servers

declare -A PORT PID ERRLOG OUTLOG

# wait_ready NAME: wait until NAME serves /1k.bin, or fail with its logs.
wait_ready() {
  local name=$1 deadline=$((SECONDS + START_TIMEOUT))
  while (( SECONDS < deadline )); do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      server_failed "$name" "exited during start-up"
    fi
    if curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:${PORT[$name]}/1k.bin"; then
      return 0
    fi
    sleep 0.2
  done
  server_failed "$name" "did not answer on 127.0.0.1:${PORT[$name]} within ${START_TIMEOUT}s"
}

server_failed() {
  local name=$1 why=$2 f
  log ""
  log "compare.sh: $name $why"
  for f in "${ERRLOG[$name]:-}" "${OUTLOG[$name]:-}"; do
    [[ -n $f ]] || continue
    log "---- $f ----"
    if [[ -s $f ]]; then tail -n 50 "$f" >&2; else log "(empty or missing)"; fi
  done
  exit 1
}

# check_content NAME: the server must return exactly our files.
check_content() {
  local name=$1 f
  for f in 1k.bin 1m.bin; do
    curl -sf --max-time 10 -o "$TMP/check.$name.$f" "http://127.0.0.1:${PORT[$name]}/$f" \
      || server_failed "$name" "failed to serve /$f"
    cmp -s "$TMP/check.$name.$f" "$WWW/$f" || server_failed "$name" "served wrong content for /$f"
    curl -sf --max-time 10 -o /dev/null -H "Connection: close" "http://127.0.0.1:${PORT[$name]}/$f" \
      || server_failed "$name" "failed to serve /$f with Connection: close"
    rm -f "$TMP/check.$name.$f"
  done
}

build_luahttpd() {
  if [[ -n ${LUAHTTPD_BIN:-} ]]; then
    [[ -x $LUAHTTPD_BIN ]] || die "LUAHTTPD_BIN=$LUAHTTPD_BIN is not executable"
    return 0
  fi
  command -v cargo >/dev/null || die "cargo not found (needed to build luahttpd)"
  log "building luahttpd (cargo build --release) in $REPO_ROOT"
  (cd "$REPO_ROOT" && cargo build --release) || die "cargo build --release failed"
  LUAHTTPD_BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/luahttpd
  [[ -x $LUAHTTPD_BIN ]] || die "built binary not found at $LUAHTTPD_BIN"
}

start_luahttpd() {
  alloc_port; PORT[luahttpd]=$ALLOCATED_PORT
  write_conf_luahttpd "${PORT[luahttpd]}"
  ERRLOG[luahttpd]=$TMP/luahttpd/error.log
  OUTLOG[luahttpd]=$TMP/luahttpd/stdout.log
  start_bg "${OUTLOG[luahttpd]}" "$LUAHTTPD_BIN" -c "$TMP/luahttpd/site.lua"
  PID[luahttpd]=$LAST_PID
}

start_nginx() {
  alloc_port; PORT[nginx]=$ALLOCATED_PORT
  write_conf_nginx "${PORT[nginx]}"
  ERRLOG[nginx]=$TMP/nginx/error.log
  OUTLOG[nginx]=$TMP/nginx/stdout.log
  # -e: early error log before the config is read (instead of /var/log/nginx)
  nginx -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" \
    >"${OUTLOG[nginx]}" 2>&1 || server_failed nginx "rejected its config"
  start_bg "${OUTLOG[nginx]}" nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
  PID[nginx]=$LAST_PID
}

start_lighttpd() {
  alloc_port; PORT[lighttpd]=$ALLOCATED_PORT
  ERRLOG[lighttpd]=$TMP/lighttpd/error.log
  OUTLOG[lighttpd]=$TMP/lighttpd/stdout.log
  write_conf_lighttpd "${PORT[lighttpd]}" 'server.network-backend = "sendfile"'
  if ! lighttpd -tt -f "$TMP/lighttpd/lighttpd.conf" >"${OUTLOG[lighttpd]}" 2>&1; then
    log "lighttpd does not accept server.network-backend = \"sendfile\"; using its default backend"
    LIGHTTPD_BACKEND="default"
    write_conf_lighttpd "${PORT[lighttpd]}" ''
    lighttpd -tt -f "$TMP/lighttpd/lighttpd.conf" >"${OUTLOG[lighttpd]}" 2>&1 \
      || server_failed lighttpd "rejected its config"
  fi
  start_bg "${OUTLOG[lighttpd]}" lighttpd -D -f "$TMP/lighttpd/lighttpd.conf"
  PID[lighttpd]=$LAST_PID
}
LIGHTTPD_BACKEND="sendfile"

# To add helper processes for later scenarios (php-cgi, ...), start them here.
start_helpers() { :; }

# ---------------------------------------------------------------------------
# Measuring

declare -A RESULTS NON2XX SOCKERR
WRK_RUN=0

# run_wrk NAME SCENARIO: one wrk run; prints requests/s and records errors.
run_wrk() {
  local name=$1 sc=$2 out rps non2xx sock rc=0
  "scenario_$sc"
  WRK_RUN=$((WRK_RUN + 1))
  out=$TMP/wrk/$WRK_RUN.$name.$sc.txt
  timeout $((DURATION_S + 30)) \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION_S}s" "${SC_HEADERS[@]}" \
    "http://127.0.0.1:${PORT[$name]}$SC_PATH" >"$out" 2>&1 || rc=$?
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
  sock=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")
  non2xx=${non2xx:-0}; sock=${sock:-0}
  if (( rc != 0 )) || [[ -z $rps ]]; then
    log "wrk failed against $name ($sc), exit $rc:"; cat "$out" >&2
    rps=0; sock=$((sock + 1))
  fi
  NON2XX[$name]=$(( ${NON2XX[$name]:-0} + non2xx ))
  SOCKERR[$name]=$(( ${SOCKERR[$name]:-0} + sock ))
  RUN_RPS=$rps
  RUN_NOTE=""
  (( non2xx > 0 )) && RUN_NOTE+="  non-2xx/3xx: $non2xx"
  (( sock > 0 )) && RUN_NOTE+="  socket errors: $(grep 'Socket errors' "$out" | sed 's/^ *Socket errors: //')"
  kill -0 "${PID[$name]}" 2>/dev/null || server_failed "$name" "died during the $sc run"
  return 0
}

median() { tr ' ' '\n' | awk 'NF {v[n++] = $1} END {
  if (n == 0) { print "0"; exit }
  for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  if (n % 2) printf "%.0f\n", v[int(n / 2)]; else printf "%.0f\n", (v[n / 2 - 1] + v[n / 2]) / 2 }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# order_for_round R: SERVER_LIST rotated by R-1, so each server takes its turn first.
order_for_round() {
  local r=$1 n=${#SERVER_LIST[@]} i
  ORDER=()
  for ((i = 0; i < n; i++)); do ORDER+=("${SERVER_LIST[$(( (i + r - 1) % n ))]}"); done
}

# ---------------------------------------------------------------------------
# Main

ensure_packages
has_server luahttpd && build_luahttpd

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/luahttpd-bench.XXXXXX")
WWW=$TMP/www
mkdir -p "$WWW" "$TMP/wrk"
head -c 1024 /dev/urandom >"$WWW/1k.bin"
head -c $((1024 * 1024)) /dev/urandom >"$WWW/1m.bin"
printf '<!doctype html><title>bench</title>\n' >"$WWW/index.html"

start_helpers
for s in "${SERVER_LIST[@]}"; do "start_$s"; done
for s in "${SERVER_LIST[@]}"; do wait_ready "$s"; check_content "$s"; done

echo "servers: $(for s in "${SERVER_LIST[@]}"; do printf '%s=127.0.0.1:%s ' "$s" "${PORT[$s]}"; done)"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION_S}s, $ROUNDS round(s), scenarios: ${SCENARIO_LIST[*]}"

if (( WARMUP > 0 )); then
  for s in "${SERVER_LIST[@]}"; do
    timeout $((WARMUP + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" \
      "http://127.0.0.1:${PORT[$s]}/1k.bin" >/dev/null 2>&1 || true
  done
fi

for ((r = 1; r <= ROUNDS; r++)); do
  order_for_round "$r"
  for sc in "${SCENARIO_LIST[@]}"; do
    for s in "${ORDER[@]}"; do
      run_wrk "$s" "$sc"
      RESULTS[$sc|$s]="${RESULTS[$sc|$s]:-} $RUN_RPS"
      printf 'round %d/%d  %-14s %-9s %10.0f req/s%s\n' "$r" "$ROUNDS" "$sc" "$s" "$RUN_RPS" "$RUN_NOTE"
    done
  done
done

# ---------------------------------------------------------------------------
# Report

echo
echo "== versions"
if has_server luahttpd; then
  echo "luahttpd  $(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown) ($LUAHTTPD_BIN)"
fi
has_server lighttpd && echo "lighttpd  $(lighttpd -v 2>&1 | head -n 1) (network backend: $LIGHTTPD_BACKEND)"
has_server nginx && echo "nginx     $(nginx -v 2>&1 | head -n 1)"
echo "wrk       $( (wrk -v 2>&1 || true) | head -n 1)"
echo "cpus      $(nproc), load average before the runs: $LOAD_AT_START (anything else running skews the figures)"

echo
echo "== median requests/s over $ROUNDS round(s) (wrk -t$THREADS -c$CONNECTIONS -d${DURATION_S}s); ratios > 1 mean luahttpd is faster"
header=$(printf '%-18s' "scenario")
for s in "${SERVER_LIST[@]}"; do header+=$(printf ' %10s' "$s"); done
if has_server luahttpd; then
  has_server lighttpd && header+=$(printf ' %17s' "luahttpd/lighttpd")
  has_server nginx && header+=$(printf ' %14s' "luahttpd/nginx")
fi
echo "$header"
for sc in "${SCENARIO_LIST[@]}"; do
  "scenario_$sc"
  declare -A MED=()
  line=$(printf '%-18s' "$SC_TITLE")
  for s in "${SERVER_LIST[@]}"; do
    MED[$s]=$(median <<<"${RESULTS[$sc|$s]}")
    line+=$(printf ' %10s' "${MED[$s]}")
  done
  if has_server luahttpd; then
    has_server lighttpd && line+=$(printf ' %17s' "$(ratio "${MED[luahttpd]}" "${MED[lighttpd]}")")
    has_server nginx && line+=$(printf ' %14s' "$(ratio "${MED[luahttpd]}" "${MED[nginx]}")")
  fi
  echo "$line"
  unset MED
done

echo
echo "== errors (all runs)"
bad=0
for s in "${SERVER_LIST[@]}"; do
  printf '%-9s non-2xx/3xx responses: %s, socket errors: %s\n' "$s" "${NON2XX[$s]:-0}" "${SOCKERR[$s]:-0}"
  if (( ${NON2XX[$s]:-0} > 0 || ${SOCKERR[$s]:-0} > 0 )); then bad=1; fi
done
if (( bad )); then
  echo
  echo "WARNING: some server returned non-2xx/3xx responses or had socket errors;"
  echo "WARNING: its figures are not comparable. Rerun with KEEP_TMP=1 and look at"
  echo "WARNING: the wrk output and server logs in the temporary directory."
fi
