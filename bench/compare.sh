#!/usr/bin/env bash
# Compare luahttpd with lighttpd and nginx serving the same static files, the
# same PHP script through php-cgi over FastCGI, and the same static file behind
# a small Lua routing function (luahttpd route(), lighttpd mod_magnet, nginx
# lua module): requests/s and requests per CPU-second of each server's process
# tree; and the RSS an idle keep-alive connection costs (idle_conns).
# The tls_* scenarios do the same over HTTPS against luahttpd and nginx only,
# with one ECDSA P-256 certificate made here by openssl and TLS_VERSION for
# both servers (lighttpd is left out of them).
#
# Every server is started by this script, in the foreground, as the current
# user, on a loopback port, with config files rendered from the templates in
# bench/conf/ into a temporary directory. Nothing else is touched; everything
# started is killed on exit. Missing packages: bench/install.sh.
#
# Environment (all optional):
#   ROUNDS=3          rounds; the median of the rounds is reported
#   DURATION=5s       length of one wrk run (5, 5s or 1m)
#   CONNECTIONS=50    wrk connections (-c)
#   THREADS=1         wrk threads (-t)
#   SERVERS="luahttpd lighttpd nginx"   servers to run (any subset)
#   SCENARIOS="1k_keepalive route_1k route10_1k 1k_close 1m_keepalive js_gzip php_hello proxy_1k proxy_1m idle_conns
#              tls_1k_keepalive tls_1k_close tls_1m_keepalive"   scenarios to run
#   GZIP_LEVEL=6      gzip level of every server in js_gzip (luahttpd compress.level,
#                     nginx gzip_comp_level, lighttpd deflate.compression-level)
#                     (also: shared_incr, one shared-dict incr per request, not in the default set)
#   TLS_VERSION=1.3   the only TLS version both servers offer in tls_* (1.3;
#                     1.2 makes nginx offer 1.2 only and luahttpd 1.2 and 1.3,
#                     which wrk then negotiates as 1.3: see bench/README.md)
#   IDLE_N=10000      idle keep-alive connections held in idle_conns
#   IDLE_KEEPALIVE=120   keep-alive idle seconds of the idle_conns instances
#   PHP_PROCS=4       php-cgi processes per server (php_hello)
#   PHP_CONNECTIONS=16   wrk connections (-c) for php_hello
#   PHP_MAX_REQUESTS=100000   PHP_FCGI_MAX_REQUESTS of every php-cgi process
#   PHP_CGI=...       php-cgi binary (default: php-cgi found in PATH)
#   LUAHTTPD_PHP_KEEPALIVE=1  luahttpd keeps FastCGI connections (keepalive = true)
#   NGINX_PHP_KEEPALIVE=0     1: nginx upstream keepalive + fastcgi_keep_conn
#                             (stalls with one-request-at-a-time php-cgi; see README)
#   BASE_PORT=18080   first port tried; the next free ones are used
#   WARMUP=1          seconds of warm-up per server before measuring (0: none)
#   START_TIMEOUT=20  seconds to wait for a server to answer
#   LUAHTTPD_BIN=...  use this binary instead of running cargo build --release
#   KEEP_TMP=1        keep the temporary directory (configs, logs, wrk output)
#   PIN=1             servers (and every process they start) on CPU 0, wrk on CPU 1
#                     (taskset), each server with one worker: a one-core comparison
#                     with the split of the two cores fixed (it did not remove the
#                     run-to-run spread on the 2-core VM it was written on)
#   WORKERS=2         workers of every server (default 2; 1 with PIN=1)
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
SCENARIOS=${SCENARIOS:-"1k_keepalive route_1k route10_1k 1k_close 1m_keepalive js_gzip php_hello proxy_1k proxy_1m idle_conns tls_1k_keepalive tls_1k_close tls_1m_keepalive"}
GZIP_LEVEL=${GZIP_LEVEL:-6}
TLS_VERSION=${TLS_VERSION:-1.3}
PHP_PROCS=${PHP_PROCS:-4}
PHP_CONNECTIONS=${PHP_CONNECTIONS:-16}
PHP_MAX_REQUESTS=${PHP_MAX_REQUESTS:-100000}
PHP_CGI=${PHP_CGI:-}
LUAHTTPD_PHP_KEEPALIVE=${LUAHTTPD_PHP_KEEPALIVE:-1}
NGINX_PHP_KEEPALIVE=${NGINX_PHP_KEEPALIVE:-0}
BASE_PORT=${BASE_PORT:-18080}
WARMUP=${WARMUP:-1}
START_TIMEOUT=${START_TIMEOUT:-20}
IDLE_N=${IDLE_N:-10000}
IDLE_KEEPALIVE=${IDLE_KEEPALIVE:-120}
IDLE_OPEN_TIMEOUT=60   # seconds the holder may take to open IDLE_N connections
IDLE_SETTLE=1          # seconds between the last connection and the RSS reading
KEEP_TMP=${KEEP_TMP:-0}

PIN=${PIN:-0}
# wrk, pinned to the other CPU than the servers with PIN=1.
WRK=(wrk)
[[ $PIN == 1 ]] && WRK=(taskset -c 1 wrk)

# Settings shared by all servers.
if [[ $PIN == 1 ]]; then WORKERS=${WORKERS:-1}; else WORKERS=${WORKERS:-2}; fi
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
[[ $PHP_PROCS =~ ^[1-9][0-9]*$ ]] || die "PHP_PROCS must be a positive integer"
[[ $PHP_CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "PHP_CONNECTIONS must be a positive integer"
[[ $PHP_MAX_REQUESTS =~ ^[1-9][0-9]*$ ]] || die "PHP_MAX_REQUESTS must be a positive integer"
(( PHP_CONNECTIONS >= THREADS )) || die "PHP_CONNECTIONS must be >= THREADS"
[[ $LUAHTTPD_PHP_KEEPALIVE =~ ^[01]$ ]] || die "LUAHTTPD_PHP_KEEPALIVE must be 0 or 1"
[[ $NGINX_PHP_KEEPALIVE =~ ^[01]$ ]] || die "NGINX_PHP_KEEPALIVE must be 0 or 1"
[[ $IDLE_N =~ ^[1-9][0-9]*$ ]] || die "IDLE_N must be a positive integer"
[[ $GZIP_LEVEL =~ ^[1-9]$ ]] || die "GZIP_LEVEL must be 1 to 9"
[[ $IDLE_KEEPALIVE =~ ^[1-9][0-9]*$ ]] || die "IDLE_KEEPALIVE must be a positive integer"
[[ $TLS_VERSION == 1.2 || $TLS_VERSION == 1.3 ]] || die "TLS_VERSION must be 1.2 or 1.3"

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
#   SC_CONNS    wrk connections (-c) for this scenario
#
# To add a scenario:
#   1. add a scenario_NAME function here;
#   2. extend the config writers below (write_conf_luahttpd / _lighttpd /
#      _nginx) so that every server answers SC_PATH the same way; if the
#      scenario needs each server configured differently for all requests,
#      give it its own instances as route_1k does (instance_of, a config
#      variant, the start-up loop in Main);
#   3. if the scenario needs a helper process (a php-cgi FastCGI pool, say),
#      start it from a start_helpers function with start_bg so the exit trap
#      kills it, and wait for it like the servers;
#   4. add NAME to the default SCENARIOS list above.

scenario_1k_keepalive() { SC_TITLE="1 KiB keep-alive";   SC_PATH=/1k.bin; SC_HEADERS=(); SC_CONNS=$CONNECTIONS; }
scenario_1k_close()     { SC_TITLE="1 KiB conn-close";   SC_PATH=/1k.bin; SC_HEADERS=(-H "Connection: close"); SC_CONNS=$CONNECTIONS; }
scenario_1m_keepalive() { SC_TITLE="1 MiB keep-alive";   SC_PATH=/1m.bin; SC_HEADERS=(); SC_CONNS=$CONNECTIONS; }
# A 20 KiB JavaScript file asked for with Accept-Encoding: gzip: every server
# compresses it at GZIP_LEVEL (luahttpd keeps the compressed variant in each
# worker's cache; nginx gzip and lighttpd mod_deflate without a cache-dir
# compress per request). check_content verifies each one really sends gzip.
scenario_js_gzip()      { SC_TITLE="20 KiB JS gzip";     SC_PATH=/app.js; SC_HEADERS=(-H "Accept-Encoding: gzip"); SC_CONNS=$CONNECTIONS; }
# Not a wrk run: IDLE_N idle keep-alive connections after one request each,
# held by bench/lib/idle_hold.py against a third instance of each server
# ("NAME-idle": static files, room for IDLE_N connections in one worker and
# IDLE_KEEPALIVE seconds of keep-alive idle time). Reports the growth of the
# RSS of the server's process tree per connection; run once, before the
# rounds (see run_idle).
scenario_idle_conns()   { SC_TITLE="idle keep-alive";    SC_PATH=/1k.bin; SC_HEADERS=(); SC_CONNS=$IDLE_N; }
# PHP hello world through FastCGI to PHP_PROCS php-cgi processes per server,
# each serving one request at a time (PHP_FCGI_CHILDREN=0).
scenario_php_hello()    { SC_TITLE="PHP hello FastCGI";  SC_PATH=/hello.php; SC_HEADERS=(); SC_CONNS=$PHP_CONNECTIONS; }
# 1k_keepalive again, but every request first goes through a Lua function that
# makes three string tests that all miss (path prefix /api/, path /health,
# host old.example) and then falls through to the static file. It is served by
# a second instance of each server (port and config of its own, "NAME-route"),
# since a luahttpd route() applies to every request of its config; see
# write_route_* below.
scenario_route_1k()     { SC_TITLE="1 KiB Lua route";    SC_PATH=/1k.bin; SC_HEADERS=(); SC_CONNS=$CONNECTIONS; }
# shared_incr runs on the route instances too: GET /api/incr takes the route's
# first branch, which for this one path adds one incr of a shared dict
# (luahttpd shared.bench:incr, nginx ngx.shared.bench:incr; lighttpd's
# mod_magnet has none, so lighttpd is n/a) before answering "api". Its cost is
# reported against api_route, the same branch without the incr.
# route10_1k: 1k_keepalive again behind a route of ten tests over req.path,
# req.host, req.headers[...] and req:arg that all miss (bench/conf/luahttpd-route10.lua),
# served by a luahttpd instance of its own ("luahttpd-route10"). luahttpd only: its
# ratio to 1k_keepalive is the figure (the issue's ten-test route target is >= 0.90).
scenario_route10_1k()   { SC_TITLE="1 KiB, 10-test route"; SC_PATH=/1k.bin; SC_HEADERS=(); SC_CONNS=$CONNECTIONS; }
scenario_shared_incr()  { SC_TITLE="Lua shared incr";    SC_PATH=/api/incr; SC_HEADERS=(); SC_CONNS=$CONNECTIONS; }
scenario_api_route()    { SC_TITLE="Lua route, in-memory"; SC_PATH=/api/x; SC_HEADERS=(); SC_CONNS=$CONNECTIONS; }
# The same files through each server's reverse proxy (luahttpd upstream with
# keepalive, nginx proxy_pass with upstream keepalive 32, lighttpd mod_proxy), all
# to one origin: a luahttpd static instance started as a helper ("origin"). Served
# by a fourth instance of each server ("NAME-proxy").
scenario_proxy_1k()     { SC_TITLE="1 KiB via proxy";    SC_PATH=/1k.bin; SC_HEADERS=(); SC_CONNS=$CONNECTIONS; }
scenario_proxy_1m()     { SC_TITLE="1 MiB via proxy";    SC_PATH=/1m.bin; SC_HEADERS=(); SC_CONNS=$CONNECTIONS; }
# HTTPS against a fourth instance of luahttpd and nginx ("NAME-tls", listening
# with TLS only): 1 KiB over kept TLS connections; a new TLS connection with a
# full handshake per request (wrk keeps no session, so nothing resumes); 1 MiB
# over kept TLS connections (luahttpd reads and encrypts in 16 KiB records:
# no kTLS here). Not run for lighttpd (tls_supported).
scenario_tls_1k_keepalive() { SC_TITLE="TLS 1 KiB keep-alive"; SC_PATH=/1k.bin; SC_HEADERS=(); SC_CONNS=$CONNECTIONS; }
scenario_tls_1k_close()     { SC_TITLE="TLS 1 KiB handshake";  SC_PATH=/1k.bin; SC_HEADERS=(-H "Connection: close"); SC_CONNS=$CONNECTIONS; }
scenario_tls_1m_keepalive() { SC_TITLE="TLS 1 MiB keep-alive"; SC_PATH=/1m.bin; SC_HEADERS=(); SC_CONNS=$CONNECTIONS; }
tls_supported() { [[ $1 == luahttpd || $1 == nginx ]]; }

for sc in "${SCENARIO_LIST[@]}"; do
  declare -F "scenario_$sc" >/dev/null || die "unknown scenario '$sc'"
done
has_scenario() { local sc; for sc in "${SCENARIO_LIST[@]}"; do [[ $sc == "$1" ]] && return 0; done; return 1; }
# The PHP set-up (php-cgi processes, FastCGI config) only when php_hello runs.
WITH_PHP=0
has_scenario php_hello && WITH_PHP=1
# The route instances only when route_1k runs.
WITH_ROUTE=0
has_scenario route_1k && WITH_ROUTE=1
has_scenario shared_incr && WITH_ROUTE=1
has_scenario api_route && WITH_ROUTE=1
# The ten-test route instance (luahttpd only) when route10_1k runs.
WITH_ROUTE10=0
has_scenario route10_1k && WITH_ROUTE10=1
# The idle instances only when idle_conns runs. WRK_SCENARIOS: the others,
# measured in rounds with wrk.
WITH_IDLE=0
has_scenario idle_conns && WITH_IDLE=1
# The origin and the proxy instances only when a proxy scenario runs.
WITH_PROXY=0
if has_scenario proxy_1k || has_scenario proxy_1m; then WITH_PROXY=1; fi
# The TLS instances only when a tls_* scenario runs.
WITH_TLS=0
for sc in "${SCENARIO_LIST[@]}"; do [[ $sc == tls_* ]] && WITH_TLS=1; done
WRK_SCENARIOS=()
for sc in "${SCENARIO_LIST[@]}"; do [[ $sc == idle_conns ]] || WRK_SCENARIOS+=("$sc"); done

# instance_of NAME SCENARIO: the server instance a scenario runs against.
instance_of() {
  case $2 in
    route_1k | shared_incr | api_route) INST=$1-route ;;
    route10_1k) INST=$1-route10 ;;
    idle_conns) INST=$1-idle ;;
    proxy_1k|proxy_1m) INST=$1-proxy ;;
    tls_*) INST=$1-tls ;;
    *) INST=$1 ;;
  esac
}

# ---------------------------------------------------------------------------
# Packages

# bench/install.sh installs everything (idempotent); it is run here only when
# something this run needs is missing.
ensure_packages() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  [[ $PIN == 1 ]] && { command -v taskset >/dev/null || missing+=(taskset); }
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  has_server nginx && ! command -v nginx >/dev/null && missing+=(nginx)
  has_server lighttpd && ! command -v lighttpd >/dev/null && missing+=(lighttpd)
  (( WITH_TLS )) && ! command -v openssl >/dev/null && missing+=(openssl)
  if (( WITH_PHP )) && [[ -z $PHP_CGI ]]; then
    command -v php-cgi >/dev/null || missing+=(php-cgi)
  fi
  if (( WITH_ROUTE )); then
    has_server lighttpd && [[ ! -e $LIGHTTPD_MODDIR/mod_magnet.so ]] && missing+=(lighttpd-modules-lua)
    has_server nginx && command -v nginx >/dev/null && [[ ! -e $(nginx_moddir)/ngx_http_lua_module.so ]] \
      && missing+=(libnginx-mod-http-lua)
  fi
  (( ${#missing[@]} > 0 )) || return 0
  log "missing: ${missing[*]}; running bench/install.sh"
  # The Lua modules are best effort there: without one, that server's
  # route_1k runs its plain config (see route_support_*).
  "$SCRIPT_DIR/install.sh" >&2 || die "bench/install.sh failed; install by hand: ${missing[*]}"
}

# Where route_1k's Lua modules live: lighttpd's mod_magnet (Debian:
# lighttpd-modules-lua) and nginx's lua module (libnginx-mod-http-lua).
LIGHTTPD_MODDIR=${LIGHTTPD_MODDIR:-/usr/lib/lighttpd}
nginx_moddir() {
  local d
  d=$(nginx -V 2>&1 | tr ' ' '\n' | sed -n 's/^--modules-path=//p' | head -n 1)
  echo "${d:-/usr/lib/nginx/modules}"
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
# tree can be killed by group id; luahttpd's spawned FastCGI processes have
# their own groups and die with their watcher), output to LOGFILE; sets LAST_PID.
start_bg() {
  local logfile=$1; shift
  if [[ $PIN == 1 ]]; then
    setsid taskset -c 0 "$@" >"$logfile" 2>&1 </dev/null &
  else
    setsid "$@" >"$logfile" 2>&1 </dev/null &
  fi
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
# Lua routing (route_1k). The same function for the three servers: three
# string tests on the request that all miss for GET /1k.bin, then nothing is
# decided and the request goes on to the static file.
#   1. the path starts with /api/  -> 200 "api"
#   2. the path is /health         -> 200 "ok\n"
#   3. the host is old.example     -> 301 to https://new.example<uri>
# check_route makes sure each branch answers, so the function really runs.

# route_support_NAME: can NAME run a Lua route here? Sets ROUTE_OK[NAME]=1, or
# 0 and ROUTE_WHY[NAME] (then its route instance runs the plain config).
declare -A ROUTE_OK ROUTE_WHY
route_support_luahttpd() { ROUTE_OK[luahttpd]=1; }
route_support_lighttpd() {
  if [[ -e $LIGHTTPD_MODDIR/mod_magnet.so ]]; then
    ROUTE_OK[lighttpd]=1
  else
    ROUTE_OK[lighttpd]=0
    ROUTE_WHY[lighttpd]="no mod_magnet ($LIGHTTPD_MODDIR/mod_magnet.so; Debian: lighttpd-modules-lua)"
  fi
}
NGINX_LUA_MODULES=()
route_support_nginx() {
  local d
  d=$(nginx_moddir)
  if [[ -e $d/ngx_http_lua_module.so ]]; then
    ROUTE_OK[nginx]=1
    # the lua module needs the NDK module loaded first (Debian builds both
    # as dynamic modules)
    NGINX_LUA_MODULES=()
    [[ -e $d/ndk_http_module.so ]] && NGINX_LUA_MODULES+=("$d/ndk_http_module.so")
    NGINX_LUA_MODULES+=("$d/ngx_http_lua_module.so")
  else
    ROUTE_OK[nginx]=0
    ROUTE_WHY[nginx]="no lua module ($d/ngx_http_lua_module.so; Debian: libnginx-mod-http-lua)"
  fi
}

route_how() {
  case $1 in
    luahttpd) echo "route(function(req) ... end)" ;;
    lighttpd) echo "mod_magnet, magnet.attract-raw-url-to" ;;
    nginx) echo "lua module, rewrite_by_lua_block" ;;
  esac
}

# ---------------------------------------------------------------------------
# Config writers: write_conf_NAME INSTANCE PORT VARIANT [...] renders the
# templates under bench/conf/ into $TMP/<instance>/. VARIANT is "plain" (every
# scenario but route_1k and idle_conns; with the PHP set-up when php_hello
# runs), "route" (static files behind the Lua route function, no PHP) or
# "idle" (static files only, with room and time for IDLE_N idle connections).

CONF_DIR=$SCRIPT_DIR/conf
# render TEMPLATE KEY=VALUE...: bench/lib/render.sh
# shellcheck source=lib/render.sh
source "$SCRIPT_DIR/lib/render.sh"

# variant_limits VARIANT: sets V_IDLE_TIMEOUT, V_MAX_CONNECTIONS, V_MAX_FDS.
# The idle instances hold IDLE_N connections for longer than the default
# keep-alive idle time, all possibly in one worker.
variant_limits() {
  if [[ $1 == idle ]]; then
    V_IDLE_TIMEOUT=$IDLE_KEEPALIVE
    V_MAX_CONNECTIONS=$((IDLE_N + 1000))
  else
    V_IDLE_TIMEOUT=$IDLE_TIMEOUT
    V_MAX_CONNECTIONS=$MAX_CONNECTIONS
  fi
  V_MAX_FDS=$((V_MAX_CONNECTIONS * 2))
  # not above the hard limit: raising it needs CAP_SYS_RESOURCE, which a
  # container may not have (nginx logs an alert, lighttpd refuses to start)
  if [[ $NOFILE_HARD =~ ^[0-9]+$ ]] && (( V_MAX_FDS > NOFILE_HARD )); then V_MAX_FDS=$NOFILE_HARD; fi
}
NOFILE_HARD=$(ulimit -Hn)

write_conf_luahttpd() {
  local inst=$1 port=$2 variant=$3 php="" keep=false route="" tls=""
  local listen="\"127.0.0.1:$port\""
  local dir=$TMP/$inst
  (( LUAHTTPD_PHP_KEEPALIVE )) && keep=true
  mkdir -p "$dir"
  variant_limits "$variant"
  [[ $variant == route ]] && route=$(render luahttpd-route.lua)
  [[ $variant == route10 ]] && route=$(render luahttpd-route10.lua)
  [[ $variant == proxy ]] && route=$(render luahttpd-proxy.lua ORIGIN_PORT="$ORIGIN_PORT")
  if [[ $variant == tls ]]; then
    listen="{ { \"127.0.0.1:$port\", tls = true } }"
    tls="tls = { certificates = { { cert = \"$TMP/tls/cert.pem\", key = \"$TMP/tls/key.pem\" } }, min_version = \"$TLS_VERSION\" },"
  fi
  if (( WITH_PHP )) && [[ $variant == plain ]]; then
    php=$(render luahttpd-php.lua PHP_CGI="$PHP_CGI" PHP_PROCS="$PHP_PROCS" DIR="$dir" \
      PHP_MAX_REQUESTS="$PHP_MAX_REQUESTS" PHP_KEEPALIVE="$keep")
  fi
  render luahttpd.lua LISTEN="$listen" TLS="$tls" WORKERS="$WORKERS" WWW="$WWW" DIR="$dir" \
    KEEPALIVE_REQUESTS="$KEEPALIVE_REQUESTS" MAX_CONNECTIONS="$V_MAX_CONNECTIONS" \
    IDLE_TIMEOUT="$V_IDLE_TIMEOUT" PHP="$php" ROUTE="$route" GZIP_LEVEL="$GZIP_LEVEL" >"$dir/site.lua"
}

write_conf_nginx() {
  local inst=$1 port=$2 variant=$3 user_line="" upstream="" php_location="" keep_conn="off" i
  local dir=$TMP/$inst modules="" route="" servers="" keepalive="" shared=""
  local listen_opts="" tls=""
  mkdir -p "$dir/logs" "$dir/tmp"
  variant_limits "$variant"
  if [[ $variant == route ]] && (( ${ROUTE_OK[nginx]:-0} )); then
    for i in "${NGINX_LUA_MODULES[@]}"; do modules+="load_module $i;"$'\n'; done
    route=$(render nginx-route.conf)
    shared="lua_shared_dict bench 8m;"
  fi
  if [[ $variant == proxy ]]; then
    upstream=$(render nginx-proxy-upstream.conf ORIGIN_PORT="$ORIGIN_PORT")
    route=$(render nginx-proxy.conf)
  fi
  if (( WITH_PHP )) && [[ $variant == plain ]]; then
    # start_helpers starts PHP_PROCS php-cgi processes on $TMP/php-nginx/php.sock-i.
    for ((i = 0; i < PHP_PROCS; i++)); do
      servers+="    server unix:$TMP/php-nginx/php.sock-$i;"$'\n'
    done
    if (( NGINX_PHP_KEEPALIVE )); then keepalive="keepalive 8;"; keep_conn=on; fi
    upstream=$(render nginx-php-upstream.conf SERVERS="${servers%$'\n'}" KEEPALIVE="$keepalive")
    php_location=$(render nginx-php.conf KEEP_CONN="$keep_conn")
  fi
  if [[ $variant == tls ]]; then
    listen_opts="ssl"
    tls=$(render nginx-tls.conf DIR="$TMP/tls" PROTOCOLS="TLSv$TLS_VERSION")
  fi
  if (( EUID == 0 )); then user_line="user $(id -un) $(id -gn);"; fi
  render nginx.conf LISTEN_OPTS="$listen_opts" TLS="$tls" MODULES="$modules" USER="$user_line" WORKERS="$WORKERS" DIR="$dir" \
    MAX_FDS="$V_MAX_FDS" MAX_CONNECTIONS="$V_MAX_CONNECTIONS" \
    KEEPALIVE_REQUESTS="$KEEPALIVE_REQUESTS" IDLE_TIMEOUT="$V_IDLE_TIMEOUT" \
    UPSTREAM="$upstream" PORT="$port" WWW="$WWW" ROUTE="$route" PHP="$php_location" SHARED="$shared" \
    GZIP_LEVEL="$GZIP_LEVEL" >"$dir/nginx.conf"
}

write_conf_lighttpd() {
  local inst=$1 port=$2 variant=$3 backend=$4 php="" route="" deflate=""
  local dir=$TMP/$inst
  mkdir -p "$dir"
  variant_limits "$variant"
  if [[ $variant == route ]] && (( ${ROUTE_OK[lighttpd]:-0} )); then
    render lighttpd-route.lua >"$dir/route.lua"
    route=$(render lighttpd-route.conf DIR="$dir")
  fi
  [[ $variant == proxy ]] && route=$(render lighttpd-proxy.conf ORIGIN_PORT="$ORIGIN_PORT")
  if (( WITH_PHP )) && [[ $variant == plain ]]; then
    php=$(render lighttpd-php.conf PHP_CGI="$PHP_CGI" DIR="$dir" PHP_PROCS="$PHP_PROCS" \
      PHP_MAX_REQUESTS="$PHP_MAX_REQUESTS")
  fi
  # mod_deflate is a package of its own in Debian (lighttpd-mod-deflate).
  if [[ -e /usr/lib/lighttpd/mod_deflate.so ]]; then
    deflate=$(render lighttpd-deflate.conf GZIP_LEVEL="$GZIP_LEVEL")
  fi
  # server.max-connections may count for the whole server rather than per
  # worker (server.max-worker): multiplied by the workers, so that any one
  # worker can hold all of them, as with the other two servers.
  render lighttpd.conf WWW="$WWW" PORT="$port" DIR="$dir" WORKERS="$WORKERS" \
    BACKEND="$backend" KEEPALIVE_REQUESTS="$KEEPALIVE_REQUESTS" \
    IDLE_TIMEOUT="$V_IDLE_TIMEOUT" MAX_FDS="$V_MAX_FDS" \
    MAX_CONNECTIONS="$((V_MAX_CONNECTIONS * WORKERS))" ROUTE="$route" PHP="$php" \
    DEFLATE="$deflate" >"$dir/lighttpd.conf"
}
# ---------------------------------------------------------------------------
# Starting servers

declare -A PORT PID ERRLOG OUTLOG
# url INSTANCE: the base URL of an instance (https for the -tls ones; curl -k
# since the certificate is self-signed).
url() { if [[ $1 == *-tls ]]; then echo "https://127.0.0.1:${PORT[$1]}"; else echo "http://127.0.0.1:${PORT[$1]}"; fi; }

# wait_ready NAME: wait until NAME serves /1k.bin, or fail with its logs.
wait_ready() {
  local name=$1 deadline=$((SECONDS + START_TIMEOUT))
  while (( SECONDS < deadline )); do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      server_failed "$name" "exited during start-up"
    fi
    if curl -skf -o /dev/null --max-time 2 "$(url "$name")/1k.bin"; then
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
    curl -skf --max-time 10 -o "$TMP/check.$name.$f" "$(url "$name")/$f" \
      || server_failed "$name" "failed to serve /$f"
    cmp -s "$TMP/check.$name.$f" "$WWW/$f" || server_failed "$name" "served wrong content for /$f"
    curl -skf --max-time 10 -o /dev/null -H "Connection: close" "$(url "$name")/$f" \
      || server_failed "$name" "failed to serve /$f with Connection: close"
    rm -f "$TMP/check.$name.$f"
  done
  if has_scenario js_gzip && [[ $name != *-* ]]; then
    check_gzip "$name"
  fi
}

# check_gzip NAME: NAME answers /app.js with Accept-Encoding: gzip in gzip
# that decodes to the file; else its js_gzip figure is marked (GZIP_OK=0).
declare -A GZIP_OK=()
check_gzip() {
  local name=$1 h=$TMP/check.$name.h b=$TMP/check.$name.b
  GZIP_OK[$name]=0
  if curl -sf --max-time 10 -D "$h" -o "$b" -H "Accept-Encoding: gzip" \
      "http://127.0.0.1:${PORT[$name]}/app.js" \
    && grep -qi '^content-encoding: *gzip' "$h" \
    && gzip -dc <"$b" | cmp -s - "$WWW/app.js"; then
    GZIP_OK[$name]=1
  else
    log "compare.sh: warning: $name does not answer /app.js in gzip; its js_gzip figure is marked"
  fi
  rm -f "$h" "$b"
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

# start_NAME INSTANCE VARIANT: start one instance of NAME (INSTANCE is NAME
# for the plain config, NAME-route for the route one; see write_conf_*).
start_luahttpd() {
  local inst=$1 variant=$2
  alloc_port; PORT[$inst]=$ALLOCATED_PORT
  write_conf_luahttpd "$inst" "${PORT[$inst]}" "$variant"
  ERRLOG[$inst]=$TMP/$inst/error.log
  OUTLOG[$inst]=$TMP/$inst/stdout.log
  start_bg "${OUTLOG[$inst]}" "$LUAHTTPD_BIN" -c "$TMP/$inst/site.lua"
  PID[$inst]=$LAST_PID
}

start_nginx() {
  local inst=$1 variant=$2
  alloc_port; PORT[$inst]=$ALLOCATED_PORT
  write_conf_nginx "$inst" "${PORT[$inst]}" "$variant"
  ERRLOG[$inst]=$TMP/$inst/error.log
  OUTLOG[$inst]=$TMP/$inst/stdout.log
  # -e: early error log before the config is read (instead of /var/log/nginx)
  nginx -t -q -p "$TMP/$inst" -e "$TMP/$inst/error.log" -c "$TMP/$inst/nginx.conf" \
    >"${OUTLOG[$inst]}" 2>&1 || server_failed "$inst" "rejected its config"
  start_bg "${OUTLOG[$inst]}" nginx -p "$TMP/$inst" -e "$TMP/$inst/error.log" -c "$TMP/$inst/nginx.conf"
  PID[$inst]=$LAST_PID
}

start_lighttpd() {
  local inst=$1 variant=$2
  alloc_port; PORT[$inst]=$ALLOCATED_PORT
  ERRLOG[$inst]=$TMP/$inst/error.log
  OUTLOG[$inst]=$TMP/$inst/stdout.log
  if [[ $LIGHTTPD_BACKEND == sendfile ]]; then
    write_conf_lighttpd "$inst" "${PORT[$inst]}" "$variant" 'server.network-backend = "sendfile"'
    if ! lighttpd -tt -f "$TMP/$inst/lighttpd.conf" >"${OUTLOG[$inst]}" 2>&1; then
      log "lighttpd does not accept server.network-backend = \"sendfile\"; using its default backend"
      LIGHTTPD_BACKEND="default"
    fi
  fi
  if [[ $LIGHTTPD_BACKEND != sendfile ]]; then
    write_conf_lighttpd "$inst" "${PORT[$inst]}" "$variant" ''
    lighttpd -tt -f "$TMP/$inst/lighttpd.conf" >"${OUTLOG[$inst]}" 2>&1 \
      || server_failed "$inst" "rejected its config"
  fi
  start_bg "${OUTLOG[$inst]}" lighttpd -D -f "$TMP/$inst/lighttpd.conf"
  PID[$inst]=$LAST_PID
}
LIGHTTPD_BACKEND="sendfile"

# Helper processes, started before the servers. php_hello: nginx cannot spawn
# FastCGI processes, so PHP_PROCS php-cgi processes are started here for it
# (one session each, so the exit trap kills them), with the same environment
# luahttpd and lighttpd give the processes they spawn.
start_helpers() {
  local i dir deadline
  if (( WITH_PROXY )); then
    # The origin every proxy instance forwards to: luahttpd serving the same files.
    alloc_port; ORIGIN_PORT=$ALLOCATED_PORT; PORT[origin]=$ORIGIN_PORT
    mkdir -p "$TMP/origin"
    render luahttpd.lua LISTEN="\"127.0.0.1:$ORIGIN_PORT\"" TLS="" WORKERS="$WORKERS" WWW="$WWW" \
      DIR="$TMP/origin" KEEPALIVE_REQUESTS="$KEEPALIVE_REQUESTS" MAX_CONNECTIONS="$MAX_CONNECTIONS" \
      IDLE_TIMEOUT="$IDLE_TIMEOUT" PHP="" ROUTE="" GZIP_LEVEL="$GZIP_LEVEL" >"$TMP/origin/site.lua"
    ERRLOG[origin]=$TMP/origin/error.log
    OUTLOG[origin]=$TMP/origin/stdout.log
    start_bg "${OUTLOG[origin]}" "$LUAHTTPD_BIN" -c "$TMP/origin/site.lua"
    PID[origin]=$LAST_PID
    wait_ready origin
  fi
  if (( WITH_PHP )) && has_server nginx; then
    dir=$TMP/php-nginx
    mkdir -p "$dir"
    for ((i = 0; i < PHP_PROCS; i++)); do
      start_bg "$dir/php-cgi-$i.log" env -i PATH="$PATH" \
        PHP_FCGI_CHILDREN=0 PHP_FCGI_MAX_REQUESTS="$PHP_MAX_REQUESTS" \
        "$PHP_CGI" -b "$dir/php.sock-$i"
      PHP_HELPER_PIDS+=("$LAST_PID")
    done
    deadline=$((SECONDS + START_TIMEOUT))
    for ((i = 0; i < PHP_PROCS; i++)); do
      until [[ -S $dir/php.sock-$i ]]; do
        if ! kill -0 "${PHP_HELPER_PIDS[$i]}" 2>/dev/null || (( SECONDS >= deadline )); then
          log "compare.sh: php-cgi for nginx did not listen on $dir/php.sock-$i"
          tail -n 20 "$dir/php-cgi-$i.log" >&2 || true
          exit 1
        fi
        sleep 0.1
      done
    done
  fi
}
PHP_HELPER_PIDS=()

# check_php NAME: the server must answer /hello.php with exactly "Hello, world!\n".
# Retried until START_TIMEOUT: the php-cgi processes may still be starting.
check_php() {
  local name=$1 deadline=$((SECONDS + START_TIMEOUT)) f
  f=$TMP/check.$name.php
  while :; do
    if curl -sf --max-time 10 -o "$f" "http://127.0.0.1:${PORT[$name]}/hello.php" \
      && cmp -s "$f" "$TMP/hello.expected"; then
      rm -f "$f"
      return 0
    fi
    if (( SECONDS >= deadline )); then
      if [[ -f $f ]]; then
        log "got: $(od -An -c "$f" | head -n 3)"
      fi
      server_failed "$name" "did not answer /hello.php with exactly 'Hello, world!\\n'"
    fi
    sleep 0.2
  done
}

# check_route NAME: NAME's route instance must take each branch of the route
# function (so the Lua code really runs on every request), and fall through
# to the static file otherwise (check_content).
check_route() {
  local name=$1 inst=$1-route got url
  url="http://127.0.0.1:${PORT[$inst]}"
  got=$(curl -s --max-time 10 "$url/api/x") || true
  [[ $got == api ]] || server_failed "$inst" "did not answer /api/x with 'api' from the route (got '${got:0:60}')"
  got=$(curl -s --max-time 10 "$url/health") || true
  [[ $got == ok ]] || server_failed "$inst" "did not answer /health with 'ok' from the route (got '${got:0:60}')"
  got=$(curl -s --max-time 10 "$url/api/incr") || true
  [[ $got == api ]] || server_failed "$inst" "did not answer /api/incr with 'api' from the route (got '${got:0:60}')"
  got=$(curl -s --max-time 10 -o /dev/null -w '%{http_code} %{redirect_url}' -H "Host: old.example" "$url/a?b=1") || true
  [[ $got == "301 https://new.example/a?b=1" ]] \
    || server_failed "$inst" "did not redirect Host: old.example from the route (got '$got')"
}

# ---------------------------------------------------------------------------
# Measuring

declare -A RESULTS CPURESULTS USERUS SYSUS WRKUS NON2XX SOCKERR STUCK PAIR_RPS PAIR_CPU
WRK_RUN=0

# php_queued NAME: connections waiting in the listen queues of NAME's php-cgi
# processes (0 if ss is missing). Checked after a php_hello run, when wrk has
# closed its connections: anything still queued there is a request the server
# sent to a php-cgi process that will not accept it (it waits on another,
# kept-alive connection). wrk never sees such requests -- they just hang --
# so this is the only trace of them.
php_queued() {
  local prefix
  case $1 in
    nginx) prefix=$TMP/php-nginx/php.sock- ;;
    *) prefix=$TMP/$1/php.sock- ;;
  esac
  command -v ss >/dev/null || { echo 0; return; }
  ss -xlH 2>/dev/null | awk -v p="$prefix" 'index($5, p) == 1 {q += $3} END {print q + 0}'
}

# run_wrk NAME SCENARIO: one wrk run; prints requests/s and records errors.
run_wrk() {
  local name=$1 sc=$2 out rps non2xx sock stuck=0 rc=0 INST split0 split1 reqs wrk_cpu
  instance_of "$name" "$sc"
  "scenario_$sc"
  WRK_RUN=$((WRK_RUN + 1))
  out=$TMP/wrk/$WRK_RUN.$name.$sc.txt
  split0=$(tree_split "$INST")
  # In a subshell of its own, `times` says the CPU wrk itself used (its second line:
  # children's user and sys): on a 2-core machine wrk's cost per request bounds req/s.
  wrk_cpu=$( (timeout $((DURATION_S + 30)) \
    "${WRK[@]}" -t"$THREADS" -c"$SC_CONNS" -d"${DURATION_S}s" "${SC_HEADERS[@]}" \
    "$(url "$INST")$SC_PATH" >"$out" 2>&1 || echo "rc=$?" >"$out.rc"; times) | tail -n 1)
  [[ -f $out.rc ]] && rc=$(sed 's/rc=//' "$out.rc")
  split1=$(tree_split "$INST")
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  reqs=$(awk '/ requests in / {print $1; exit}' "$out")
  # requests per CPU-second of the server's whole process tree during the run, and the
  # microseconds of CPU per request: the server's user and sys, and wrk's user + sys
  read -r RUN_RPCPU RUN_USER_US RUN_SYS_US RUN_WRK_US < <(awk -v n="${reqs:-0}" -v hz="$CLK_TCK" \
    -v a="$split0" -v b="$split1" -v w="$wrk_cpu" 'function secs(t,  m) {
      # times prints 0m1.234s
      m = t; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", t); sub(/s$/, "", t); return m * 60 + t }
    BEGIN { split(a, x, " "); split(b, y, " "); split(w, z, " ")
      u = (y[1] - x[1]) / hz; s = (y[2] - x[2]) / hz; wc = secs(z[1]) + secs(z[2])
      if (n > 0 && u + s > 0) printf "%.0f %.2f %.2f %.2f\n", n / (u + s), u * 1e6 / n, s * 1e6 / n, wc * 1e6 / n
      else print "0 0 0 0" }')
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
  sock=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")
  non2xx=${non2xx:-0}; sock=${sock:-0}
  if (( rc != 0 )) || [[ -z $rps ]]; then
    log "wrk failed against $name ($sc), exit $rc:"; cat "$out" >&2
    rps=0; sock=$((sock + 1))
  fi
  if [[ $sc == php_hello ]]; then
    sleep 0.5
    stuck=$(php_queued "$name")
  fi
  NON2XX[$name]=$(( ${NON2XX[$name]:-0} + non2xx ))
  SOCKERR[$name]=$(( ${SOCKERR[$name]:-0} + sock ))
  STUCK[$name]=$(( ${STUCK[$name]:-0} + stuck ))
  RUN_RPS=$rps
  RUN_NOTE=""
  grep -q '^ *0 requests in' "$out" && RUN_NOTE+="  NO REQUEST COMPLETED"
  (( non2xx > 0 )) && RUN_NOTE+="  non-2xx/3xx: $non2xx"
  (( sock > 0 )) && RUN_NOTE+="  socket errors: $(grep 'Socket errors' "$out" | sed 's/^ *Socket errors: //')"
  (( stuck > 0 )) && RUN_NOTE+="  connections left in php-cgi listen queues: $stuck"
  kill -0 "${PID[$INST]}" 2>/dev/null || server_failed "$INST" "died during the $sc run"
  return 0
}

# Process trees (bench/lib/proctree.py). An instance's tree is its master
# and every descendant (workers, and the php-cgi processes luahttpd and
# lighttpd spawn); for nginx's plain instance also the php-cgi processes this
# script started for it, so every server's php_hello CPU includes PHP's.
PROCTREE=$SCRIPT_DIR/lib/proctree.py
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
tree_roots() {
  local roots=("${PID[$1]}")
  [[ $1 == nginx ]] && roots+=("${PHP_HELPER_PIDS[@]}")
  echo "${roots[@]}"
}
# shellcheck disable=SC2046  # the roots are numbers, split on purpose
tree_ticks() { python3 "$PROCTREE" cpu $(tree_roots "$1"); }
# shellcheck disable=SC2046
tree_split() { python3 "$PROCTREE" cpu-split $(tree_roots "$1"); }
# shellcheck disable=SC2046
tree_rss() { python3 "$PROCTREE" rss $(tree_roots "$1"); }

bad_idle=0
declare -A IDLE_OPEN IDLE_FAILED IDLE_ALIVE IDLE_RSS0 IDLE_RSS1 IDLE_PER
# run_idle NAME: IDLE_N idle keep-alive connections to NAME-idle after one
# request each; records the RSS of its process tree before and after, and
# how many of the connections were still open when the second figure was
# taken (a server that closed some would look cheaper than it is).
run_idle() {
  local name=$1 inst=$1-idle line open failed alive rss0 rss1 holder_in holder_out
  rss0=$(tree_rss "$inst")
  coproc HOLDER { exec python3 "$SCRIPT_DIR/lib/idle_hold.py" 127.0.0.1 "${PORT[$inst]}" \
    "$IDLE_N" /1k.bin "$IDLE_OPEN_TIMEOUT" 2>"$TMP/$inst/holder.log"; }
  PIDS+=("$HOLDER_PID")
  holder_in=${HOLDER[1]}; holder_out=${HOLDER[0]}
  line=""
  read -r -t $((IDLE_OPEN_TIMEOUT + 30)) line <&"$holder_out" || true
  if [[ $line != ready\ * ]]; then
    log "idle_conns: the connection holder did not report (got '$line'):"
    cat "$TMP/$inst/holder.log" >&2 || true
    server_failed "$inst" "idle_conns failed"
  fi
  read -r _ open failed <<<"$line"
  sleep "$IDLE_SETTLE"
  rss1=$(tree_rss "$inst")
  printf 'check\n' >&"$holder_in"
  read -r -t 30 line <&"$holder_out" || line="alive 0"
  alive=${line#alive }
  exec {holder_in}>&-
  wait "$HOLDER_PID" 2>/dev/null || true
  IDLE_OPEN[$name]=$open; IDLE_FAILED[$name]=$failed; IDLE_ALIVE[$name]=$alive
  IDLE_RSS0[$name]=$rss0; IDLE_RSS1[$name]=$rss1
  IDLE_PER[$name]=$(awk -v a="$rss0" -v b="$rss1" -v n="$alive" \
    'BEGIN { if (n > 0) printf "%.0f", (b - a) / n; else print "-" }')
  kill -0 "${PID[$inst]}" 2>/dev/null || server_failed "$inst" "died during idle_conns"
  # let the server close them before the next one starts
  sleep 1
}

median() { tr ' ' '\n' | awk 'NF {v[n++] = $1} END {
  if (n == 0) { print "0"; exit }
  for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  if (n % 2) printf "%.0f\n", v[int(n / 2)]; else printf "%.0f\n", (v[n / 2 - 1] + v[n / 2]) / 2 }'; }

# median_f: as median, with two decimals (microsecond figures).
median_f() { tr ' ' '\n' | awk 'NF {v[n++] = $1} END {
  if (n == 0) { print "0"; exit }
  for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  if (n % 2) printf "%.2f\n", v[int(n / 2)]; else printf "%.2f\n", (v[n / 2 - 1] + v[n / 2]) / 2 }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
# ratio4 A B: A / B to four places (a round's ratio, before the median); 0 when B is 0
ratio4() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print "0" }'; }
# pair_base SCENARIO: the scenario this one's reported ratio is taken against, or nothing
pair_base() {
  case $1 in
    route_1k | route10_1k) echo 1k_keepalive ;;
    shared_incr) echo api_route ;;
  esac
}

# order_for_round R: SERVER_LIST rotated by R-1, so each server takes its turn first.
order_for_round() {
  local r=$1 n=${#SERVER_LIST[@]} i
  ORDER=()
  for ((i = 0; i < n; i++)); do ORDER+=("${SERVER_LIST[$(( (i + r - 1) % n ))]}"); done
}

# ---------------------------------------------------------------------------
# Main

ensure_packages
if (( WITH_PHP )); then
  PHP_CGI=${PHP_CGI:-$(command -v php-cgi || true)}
  [[ -n $PHP_CGI && -x $PHP_CGI ]] || die "php-cgi not found (set PHP_CGI or install php-cgi)"
  PHP_CGI=$(readlink -f "$PHP_CGI")
fi
# The proxy scenarios' origin is a luahttpd instance whatever SERVERS says.
if has_server luahttpd || (( WITH_PROXY )); then build_luahttpd; fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( WITH_IDLE )); then
  # the holder needs a descriptor per connection, and so does the server
  # (its configs raise their own limits where they can)
  (( $(ulimit -n) >= IDLE_N + 100 )) \
    || die "idle_conns needs ulimit -n >= IDLE_N + 100 = $((IDLE_N + 100)) (it is $(ulimit -n), hard $(ulimit -Hn)); lower IDLE_N or raise the limit"
fi

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/luahttpd-bench.XXXXXX")
WWW=$TMP/www
mkdir -p "$WWW" "$TMP/wrk"
head -c 1024 /dev/urandom >"$WWW/1k.bin"
head -c $((1024 * 1024)) /dev/urandom >"$WWW/1m.bin"
# 20 KiB of JavaScript-like text (compresses as real minified code roughly does).
i=0; : >"$WWW/app.js"
while (( $(stat -c %s "$WWW/app.js") < 20480 )); do
  printf 'function handler%d(event){var el=document.getElementById("item-%d");if(!el){return null}el.classList.toggle("active");return el.dataset.value*%d}\n' \
    "$i" "$((i * 7 % 101))" "$((i % 13))" >>"$WWW/app.js"
  i=$((i + 1))
done
truncate -s 20480 "$WWW/app.js"
printf '<!doctype html><title>bench</title>\n' >"$WWW/index.html"
printf '<?php echo "Hello, world!\\n";\n' >"$WWW/hello.php"
printf 'Hello, world!\n' >"$TMP/hello.expected"
if (( WITH_TLS )); then
  # One ECDSA P-256 certificate for both servers.
  mkdir -p "$TMP/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" 2>"$TMP/tls/openssl.log" \
    || { cat "$TMP/tls/openssl.log" >&2; die "openssl could not make the test certificate"; }
fi

# INSTANCES: every server instance started (NAME, and NAME-route for route_1k).
INSTANCES=()
for s in "${SERVER_LIST[@]}"; do
  INSTANCES+=("$s")
  if (( WITH_ROUTE )); then
    "route_support_$s"
    INSTANCES+=("$s-route")
  fi
  (( WITH_ROUTE10 )) && [[ $s == luahttpd ]] && INSTANCES+=("$s-route10")
  (( WITH_IDLE )) && INSTANCES+=("$s-idle")
  (( WITH_PROXY )) && INSTANCES+=("$s-proxy")
  (( WITH_TLS )) && tls_supported "$s" && INSTANCES+=("$s-tls")
done

start_helpers
for s in "${SERVER_LIST[@]}"; do
  "start_$s" "$s" plain
  if (( WITH_ROUTE )); then "start_$s" "$s-route" route; fi
  if (( WITH_ROUTE10 )) && [[ $s == luahttpd ]]; then "start_$s" "$s-route10" route10; fi
  if (( WITH_IDLE )); then "start_$s" "$s-idle" idle; fi
  if (( WITH_PROXY )); then "start_$s" "$s-proxy" proxy; fi
  if (( WITH_TLS )) && tls_supported "$s"; then "start_$s" "$s-tls" tls; fi
done
for i in "${INSTANCES[@]}"; do
  wait_ready "$i"; check_content "$i"
  if [[ $i == *-route ]]; then
    if (( ${ROUTE_OK[${i%-route}]} )); then check_route "${i%-route}"; fi
  elif (( WITH_PHP )) && [[ $i != *-idle && $i != *-proxy && $i != *-tls && $i != *-route10 ]]; then
    check_php "$i"
  fi
done

echo "servers: $(for i in "${INSTANCES[@]}"; do printf '%s=127.0.0.1:%s ' "$i" "${PORT[$i]}"; done)"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION_S}s, $ROUNDS round(s), scenarios: ${SCENARIO_LIST[*]}"
[[ $PIN == 1 ]] && echo "pinned: servers on CPU 0 with $WORKERS worker(s) each, wrk on CPU 1"
if (( WITH_TLS )); then
  echo "tls_*: luahttpd-tls and nginx-tls, TLS $TLS_VERSION, one ECDSA P-256 certificate ($TMP/tls/cert.pem); lighttpd not run"
fi
if (( WITH_PHP )); then
  echo "php_hello: wrk -c$PHP_CONNECTIONS, $PHP_PROCS php-cgi processes per server ($PHP_CGI, PHP_FCGI_CHILDREN=0, PHP_FCGI_MAX_REQUESTS=$PHP_MAX_REQUESTS)"
fi
if (( WITH_ROUTE )); then
  for s in "${SERVER_LIST[@]}"; do
    if (( ${ROUTE_OK[$s]} )); then
      echo "route_1k: $s-route runs the Lua route function ($(route_how "$s"))"
    else
      echo "route_1k: $s-route runs the PLAIN config: ${ROUTE_WHY[$s]}"
    fi
  done
fi

if (( WARMUP > 0 )); then
  for s in "${SERVER_LIST[@]}"; do
    timeout $((WARMUP + 30)) "${WRK[@]}" -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" \
      "http://127.0.0.1:${PORT[$s]}/1k.bin" >/dev/null 2>&1 || true
    if (( WITH_ROUTE )); then
      timeout $((WARMUP + 30)) "${WRK[@]}" -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" \
        "http://127.0.0.1:${PORT[$s-route]}/1k.bin" >/dev/null 2>&1 || true
    fi
    if (( WITH_ROUTE10 )) && [[ $s == luahttpd ]]; then
      timeout $((WARMUP + 30)) "${WRK[@]}" -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" \
        "http://127.0.0.1:${PORT[$s-route10]}/1k.bin" >/dev/null 2>&1 || true
    fi
    if (( WITH_PHP )); then
      timeout $((WARMUP + 30)) "${WRK[@]}" -t"$THREADS" -c"$PHP_CONNECTIONS" -d"${WARMUP}s" \
        "http://127.0.0.1:${PORT[$s]}/hello.php" >/dev/null 2>&1 || true
    fi
    if (( WITH_TLS )) && tls_supported "$s"; then
      timeout $((WARMUP + 30)) "${WRK[@]}" -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" \
        "$(url "$s-tls")/1k.bin" >/dev/null 2>&1 || true
    fi
  done
fi

if (( WITH_IDLE )); then
  order_for_round 1
  for s in "${ORDER[@]}"; do
    run_idle "$s"
    printf 'idle_conns    %-9s %6s open, %s failed, %s still open at the reading: RSS %s -> %s bytes, %s bytes/connection\n' \
      "$s" "${IDLE_OPEN[$s]}" "${IDLE_FAILED[$s]}" "${IDLE_ALIVE[$s]}" "${IDLE_RSS0[$s]}" "${IDLE_RSS1[$s]}" "${IDLE_PER[$s]}"
  done
fi

# A scenario whose ratio to another is a reported figure (route_1k / 1k_keepalive,
# ...) runs right after (or, in even rounds, right before) that base scenario on the
# same server, so that both runs of a round see the same machine; its figure is the
# median of the rounds' ratios (PAIR_RPS, PAIR_CPU), not the ratio of the medians.
# Runs of different servers for one scenario stay within one group's length.
for ((r = 1; r <= ROUNDS && ${#WRK_SCENARIOS[@]} > 0; r++)); do
  order_for_round "$r"
  for sc in "${WRK_SCENARIOS[@]}"; do
    base=$(pair_base "$sc")
    [[ -n $base ]] && has_scenario "$base" && continue
    group=("$sc")
    for p in "${WRK_SCENARIOS[@]}"; do [[ $(pair_base "$p") == "$sc" ]] && group+=("$p"); done
    if (( r % 2 == 0 && ${#group[@]} > 1 )); then
      rev=(); for ((i = ${#group[@]} - 1; i >= 0; i--)); do rev+=("${group[$i]}"); done; group=("${rev[@]}")
    fi
    for s in "${ORDER[@]}"; do
      declare -A ROUND_RPS=() ROUND_CPU=()
      for g in "${group[@]}"; do
        [[ $g == tls_* ]] && ! tls_supported "$s" && continue
        [[ $g == route10_1k && $s != luahttpd ]] && continue
        run_wrk "$s" "$g"
        RESULTS[$g|$s]="${RESULTS[$g|$s]:-} $RUN_RPS"
        CPURESULTS[$g|$s]="${CPURESULTS[$g|$s]:-} $RUN_RPCPU"
        USERUS[$g|$s]="${USERUS[$g|$s]:-} $RUN_USER_US"
        SYSUS[$g|$s]="${SYSUS[$g|$s]:-} $RUN_SYS_US"
        WRKUS[$g|$s]="${WRKUS[$g|$s]:-} $RUN_WRK_US"
        ROUND_RPS[$g]=$RUN_RPS; ROUND_CPU[$g]=$RUN_RPCPU
        printf 'round %d/%d  %-14s %-9s %10.0f req/s %10.0f req/CPU-s%s\n' "$r" "$ROUNDS" "$g" "$s" "$RUN_RPS" "$RUN_RPCPU" "$RUN_NOTE"
      done
      for g in "${group[@]}"; do
        [[ $g == "$sc" || -z ${ROUND_RPS[$g]:-} ]] && continue
        PAIR_RPS[$g|$s]="${PAIR_RPS[$g|$s]:-} $(ratio4 "${ROUND_RPS[$g]}" "${ROUND_RPS[$sc]}")"
        PAIR_CPU[$g|$s]="${PAIR_CPU[$g|$s]:-} $(ratio4 "${ROUND_CPU[$g]}" "${ROUND_CPU[$sc]}")"
      done
    done
  done
done

LOAD_AT_END=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

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
echo "cpus      $(nproc), load average before the runs: $LOAD_AT_START, after: $LOAD_AT_END (anything else running skews the figures)"

echo
php_note=""
(( WITH_PHP )) && php_note=", php_hello -c$PHP_CONNECTIONS"
echo "== median over $ROUNDS round(s) (wrk -t$THREADS -c$CONNECTIONS -d${DURATION_S}s$php_note); ratios > 1 mean luahttpd is better"
echo "   first line: requests/s; second: requests per CPU-second of the server's process tree (user + sys)"
header=$(printf '%-18s' "scenario")
for s in "${SERVER_LIST[@]}"; do header+=$(printf ' %10s' "$s"); done
if has_server luahttpd; then
  has_server lighttpd && header+=$(printf ' %17s' "luahttpd/lighttpd")
  has_server nginx && header+=$(printf ' %14s' "luahttpd/nginx")
fi
echo "$header"
declare -A MEDIAN
plain_route=0
plain_gzip=0
# table_line LABEL ARRAYNAME SCENARIO: one line of medians and ratios
table_line() {
  local label=$1 local_sc=$3 s mark line
  local -n from=$2
  declare -A MED=()
  line=$(printf '%-18s' "$label")
  for s in "${SERVER_LIST[@]}"; do
    MED[$s]=$(median <<<"${from[$local_sc|$s]:-}")
    mark=""
    if [[ $local_sc == route_1k ]] && (( ! ${ROUTE_OK[$s]:-1} )); then mark="*"; plain_route=1; fi
    if [[ $local_sc == js_gzip ]] && (( ! ${GZIP_OK[$s]:-1} )); then mark="!"; plain_gzip=1; fi
    # a server the scenario does not run (route10_1k is luahttpd's alone)
    [[ -z ${from[$local_sc|$s]:-} ]] && MED[$s]=-
    line+=$(printf ' %10s' "${MED[$s]}$mark")
  done
  if has_server luahttpd; then
    has_server lighttpd && line+=$(printf ' %17s' "$(ratio "${MED[luahttpd]}" "${MED[lighttpd]}")")
    has_server nginx && line+=$(printf ' %14s' "$(ratio "${MED[luahttpd]}" "${MED[nginx]}")")
  fi
  echo "$line"
}
for sc in "${WRK_SCENARIOS[@]}"; do
  "scenario_$sc"
  for s in "${SERVER_LIST[@]}"; do MEDIAN[$sc|$s]=$(median <<<"${RESULTS[$sc|$s]:-}"); done
  table_line "$SC_TITLE" RESULTS "$sc"
  table_line "  per CPU-second" CPURESULTS "$sc"
done
(( plain_route )) && echo "* ran its plain config: no Lua module (see below)"

# Where a request's CPU goes, per scenario and server (median of the rounds, microseconds):
# the server's user and kernel time, and wrk's own (user + sys). With wrk on the same two
# cores, req/s is bounded by server + wrk per request, so a server's lead in req/s is
# smaller than its lead in CPU.
echo
echo "== CPU per request, microseconds (median): server user + server sys; wrk (user + sys)"
for sc in "${WRK_SCENARIOS[@]}"; do
  "scenario_$sc"
  line=$(printf '%-18s' "$sc")
  for s in "${SERVER_LIST[@]}"; do
    [[ -n ${USERUS[$sc|$s]:-} ]] || continue
    line+=$(printf '  %s %s+%s; wrk %s' "$s" "$(median_f <<<"${USERUS[$sc|$s]}")" \
      "$(median_f <<<"${SYSUS[$sc|$s]}")" "$(median_f <<<"${WRKUS[$sc|$s]}")")
  done
  echo "$line"
done
(( plain_gzip )) && echo "! did not send gzip (lighttpd: is lighttpd-mod-deflate installed?): not comparable"

if (( WITH_IDLE )); then
  echo
  echo "== idle keep-alive connections: $IDLE_N after one request each (GET /1k.bin), RSS growth of the server's process tree per connection"
  printf '%-9s %8s %8s %10s %14s %14s %12s\n' server open failed "still open" "RSS before" "RSS after" "bytes/conn"
  for s in "${SERVER_LIST[@]}"; do
    printf '%-9s %8s %8s %10s %14s %14s %12s\n' "$s" "${IDLE_OPEN[$s]}" "${IDLE_FAILED[$s]}" "${IDLE_ALIVE[$s]}" \
      "${IDLE_RSS0[$s]}" "${IDLE_RSS1[$s]}" "${IDLE_PER[$s]}"
    if (( ${IDLE_FAILED[$s]:-0} > 0 || ${IDLE_ALIVE[$s]:-0} < ${IDLE_OPEN[$s]:-0} )); then bad_idle=1; fi
  done
  if has_server luahttpd; then
    for s in lighttpd nginx; do
      has_server "$s" && printf 'luahttpd/%s bytes per connection: %s (< 1 means luahttpd uses less)\n' "$s" \
        "$(ratio "${IDLE_PER[luahttpd]}" "${IDLE_PER[$s]}")"
    done
  fi
fi

# pair_line SERVER SCENARIO NOTE: a paired ratio (median of the rounds' ratios) in
# req/s and in requests per CPU-second of the server
pair_line() {
  printf '%-9s %5s %5s   %-11s %s\n' "$1" "$(median_f <<<"${PAIR_RPS[$2|$1]:-}")" \
    "$(median_f <<<"${PAIR_CPU[$2|$1]:-}")" "$(quartiles <<<"${PAIR_RPS[$2|$1]:-}")" "$3"
}
# quartiles: "Q1-Q3" of a list (the middle half of the rounds' ratios), "-" when empty
quartiles() { tr ' ' '\n' | awk 'NF {v[n++] = $1} END {
  if (n == 0) { print "-"; exit }
  for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  printf "%.2f-%.2f\n", v[int((n - 1) / 4)], v[int(3 * (n - 1) / 4 + 0.5)] }'; }
pair_note="median of the rounds' ratios, each round's two runs back to back: req/s, requests per CPU-second, middle half of the req/s ratios"

# median_ci: "MEDIAN LO HI" of a list: its median and a distribution-free 95 %
# interval for it (the sign-test interval: the k-th smallest and k-th largest
# value, k the largest with P(Binomial(n, 1/2) < k) <= 0.025); LO and HI are "-"
# below 6 values, where no such interval exists.
median_ci() { tr ' ' '\n' | awk 'NF {v[n++] = $1} END {
  if (n == 0) { print "- - -"; exit }
  for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  m = (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
  # cdf = P(X <= j) for X ~ Binomial(n, 1/2), built up term by term
  p = 0.5 ^ n; cdf = p; k = 0
  for (j = 0; cdf <= 0.025 && j < n; ) { k = j + 1; j++; p = p * (n - j + 1) / j; cdf += p }
  if (k < 1) printf "%.3f - -\n", m; else printf "%.3f %.3f %.3f\n", m, v[k - 1], v[n - k] }'; }

# diffs A B: the element-wise differences of two lists of the same rounds (A - B)
diffs() { awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); m = split(b, y, " ")
  for (i = 1; i <= n && i <= m; i++) printf "%.4f ", x[i] - y[i]; print "" }'; }

# pair_verdict SCENARIO TARGET PEERS: how sure a run is of luahttpd's paired ratio
# (median and its 95 % interval, against TARGET) and of its lead over each
# server of PEERS's paired ratio, round by round (both pairs of a round are runs of
# the same few seconds): the median of the rounds' differences, its interval,
# and in how many rounds luahttpd was ahead; in req/s, then in requests per
# CPU-second. An interval that does not hold 0 is a lead (or a loss) the run
# has shown; one that holds it is a lead within the noise of ROUNDS rounds.
pair_verdict() {
  local sc=$1 target=$2 peers=$3 s m lo hi ahead n d what
  for what in "req/s PAIR_RPS" "CPU-s PAIR_CPU"; do
    local -n pairs=${what#* }
    what=${what% *}
    [[ -n ${pairs[$sc|luahttpd]:-} ]] || continue
    read -r m lo hi <<<"$(median_ci <<<"${pairs[$sc|luahttpd]}")"
    printf '   %-5s luahttpd %s: median %.3f, 95%% interval %s-%s (%s rounds; target >= %s: %s)\n' "$what" "$sc" \
      "$m" "$lo" "$hi" "$(wc -w <<<"${pairs[$sc|luahttpd]}")" "$target" \
      "$(awk -v m="$m" -v lo="$lo" -v t="$target" 'BEGIN { if (lo != "-" && lo + 0 >= t) print "shown";
        else if (m + 0 >= t) print "median at it, interval reaches below"; else print "missed" }')"
    for s in $peers; do
      [[ -z ${pairs[$sc|$s]:-} ]] && continue
      (( ${ROUTE_OK[$s]:-1} )) || continue   # its route instance ran the plain config
      d=$(diffs "${pairs[$sc|luahttpd]}" "${pairs[$sc|$s]}")
      read -r m lo hi <<<"$(median_ci <<<"$d")"
      read -r ahead n <<<"$(awk '{ for (i = 1; i <= NF; i++) if ($i > 0) a++; print a + 0, NF }' <<<"$d")"
      printf '   %-5s luahttpd - %s: median %+.3f, 95%% interval %s to %s, ahead in %s of %s rounds (%s)\n' \
        "$what" "$s" "$m" "$lo" "$hi" "$ahead" "$n" \
        "$(awk -v m="$m" -v lo="$lo" -v hi="$hi" 'BEGIN { if (lo != "-" && lo + 0 > 0) print "ahead, shown";
          else if (hi != "-" && hi + 0 < 0) print "behind, shown"; else if (m + 0 > 0) print "ahead within the noise";
          else print "not ahead" }')"
    done
  done
}

if has_scenario shared_incr; then
  echo
  echo "== shared dict cost: shared_incr / api_route of the same server (the issue aims at >= 0.90 and at least nginx's)"
  echo "   $pair_note"
  for s in "${SERVER_LIST[@]}"; do
    if [[ $s == lighttpd ]]; then
      printf '%-9s %5s %5s   %s\n' "$s" "n/a" "n/a" "mod_magnet has no shared dictionary"
    elif ! has_scenario api_route; then
      printf '%-9s %5s %5s   %s\n' "$s" "-" "-" "api_route was not run"
    elif (( ${ROUTE_OK[$s]} )); then
      pair_line "$s" shared_incr "one incr per request"
    else
      printf '%-9s %5s %5s   %s\n' "$s" "n/a" "n/a" "${ROUTE_WHY[$s]}"
    fi
  done
  # lighttpd's runs of shared_incr take the branch without an incr: no peer
  pair_verdict shared_incr 0.90 nginx
fi

if (( WITH_ROUTE )) && has_scenario route_1k; then
  echo
  echo "== Lua routing cost: route_1k / 1k_keepalive of the same server (1.00: free; luahttpd aims at >= 0.95 and ahead of both)"
  echo "   $pair_note"
  for s in "${SERVER_LIST[@]}"; do
    if ! has_scenario 1k_keepalive; then
      printf '%-9s %5s %5s   %s\n' "$s" "-" "-" "1k_keepalive was not run"
    elif (( ${ROUTE_OK[$s]} )); then
      pair_line "$s" route_1k "$(route_how "$s")"
    else
      printf '%-9s %5s %5s   %s\n' "$s" "n/a" "n/a" "${ROUTE_WHY[$s]}: route_1k ran the plain config"
    fi
  done
  pair_verdict route_1k 0.95 "lighttpd nginx"
fi

if (( WITH_ROUTE10 )) && has_server luahttpd; then
  echo
  echo "== ten-test route cost: route10_1k / 1k_keepalive of luahttpd (luahttpd aims at >= 0.90)"
  echo "   $pair_note"
  if has_scenario 1k_keepalive; then
    pair_line luahttpd route10_1k "ten tests over req.path, req.host, req.headers[...] and req:arg"
  else
    echo "luahttpd     -     -   1k_keepalive was not run"
  fi
fi

echo
echo "== errors (all runs)"
bad=0
for s in "${SERVER_LIST[@]}"; do
  line=$(printf '%-9s non-2xx/3xx responses: %s, socket errors: %s' "$s" "${NON2XX[$s]:-0}" "${SOCKERR[$s]:-0}")
  (( WITH_PHP )) && line+=", connections left in php-cgi listen queues: ${STUCK[$s]:-0}"
  echo "$line"
  if (( ${NON2XX[$s]:-0} > 0 || ${SOCKERR[$s]:-0} > 0 || ${STUCK[$s]:-0} > 0 )); then bad=1; fi
done
(( bad_idle )) && bad=1
for k in "${!RESULTS[@]}"; do
  # a run in which no request completed at all
  [[ " ${RESULTS[$k]} " == *" 0.00 "* || " ${RESULTS[$k]} " == *" 0 "* ]] && bad=1
done

echo
echo "== warnings and errors in the servers' error logs (last 5 shown)"
for i in "${INSTANCES[@]}"; do
  f=${ERRLOG[$i]}
  n=$(grep -ciE 'warn|error|crit|alert|emerg|fail' "$f" 2>/dev/null || true)
  printf '%-14s %s line(s)\n' "$i" "${n:-0}"
  if (( ${n:-0} > 0 )); then
    grep -iE 'warn|error|crit|alert|emerg|fail' "$f" | tail -n 5 | sed 's/^/    /'
  fi
done

if (( bad )); then
  echo
  echo "WARNING: some server returned non-2xx/3xx responses, had socket errors,"
  echo "WARNING: left requests stuck or completed none in a run, or failed or"
  echo "WARNING: closed idle connections in idle_conns;"
  echo "WARNING: its figures are not comparable. Rerun with KEEP_TMP=1 and look at"
  echo "WARNING: the wrk output and server logs in the temporary directory."
fi
