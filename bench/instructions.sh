#!/usr/bin/env bash
# What the route of route_1k costs each server, in instructions a request,
# counted by valgrind's callgrind: the same three-test Lua route as in
# compare.sh (bench/conf/luahttpd-route.lua, lighttpd-route.lua for mod_magnet,
# nginx-route.conf for the lua module), against the same server without it.
#
# compare.sh's route_1k ratio is taken from req/s on a machine where wrk shares
# the cores, and a route of a few thousand instructions moves req/s by less
# than two runs of the same config differ; a count of instructions does not
# move between runs (within about 50 a request here). It leaves out the
# kernel's time (the same system calls with and without the route: the route
# makes none) and cache effects, so its plain/route ratio is lower than the
# req/s one; what it shows is which route is cheaper, and by how much.
#
# Each server runs from compare.sh's config templates (bench/conf/, through
# bench/lib/render.sh) with one worker, under --trace-children, the access log
# off, one client sending `GET /1k.bin` N times on one kept connection
# (bench/lib/keepalive_client.py, which checks every response is the file).
# A request's count is (Ir(N2) - Ir(N1)) / (N2 - N1) of the worker, the
# process with the most instructions, so start-up and shut-down cancel out.
#
# Environment (all optional):
#   SERVERS="luahttpd lighttpd nginx"   servers to count (any subset)
#   N1=200 N2=1200    the two request counts
#   INCR=1            also count the shared dict's incr (0: not)
#   LUAHTTPD_BIN=...  this binary instead of cargo build --release
#   KEEP_TMP=1        keep the temporary directory (configs, callgrind files)
#
# Needs valgrind, python3 and a C compiler (an LD_PRELOAD shim, because
# valgrind does not know openat2: bench/lib/openat2_shim.c), and for the
# route rows the two Lua modules of compare.sh (bench/install.sh).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SERVERS=${SERVERS:-"luahttpd lighttpd nginx"}
N1=${N1:-200}
N2=${N2:-1200}
INCR=${INCR:-1}
KEEP_TMP=${KEEP_TMP:-0}
NGINX_MODULES=/usr/lib/nginx/modules
CONF_DIR=$SCRIPT_DIR/conf
# shellcheck source=lib/render.sh
source "$SCRIPT_DIR/lib/render.sh"

die() { echo "instructions.sh: $*" >&2; exit 1; }
(( N2 > N1 && N1 > 0 )) || die "want 0 < N1 < N2 (got N1=$N1 N2=$N2)"
for t in valgrind python3 cc; do command -v "$t" >/dev/null || die "$t not found (bench/install.sh installs valgrind)"; done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/luahttpd-instr.XXXXXX")
cleanup() {
  local p
  for p in $(jobs -p); do kill -TERM "$p" 2>/dev/null || true; done
  if (( KEEP_TMP )); then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
mkdir -p "$TMP/www"
head -c 1024 /dev/urandom >"$TMP/www/1k.bin"
cc -shared -fPIC -O2 -o "$TMP/openat2_shim.so" "$SCRIPT_DIR/lib/openat2_shim.c" -ldl \
  || die "could not build bench/lib/openat2_shim.c"

if [[ " $SERVERS " == *" luahttpd "* && -z ${LUAHTTPD_BIN:-} ]]; then
  (cd "$REPO_ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
  LUAHTTPD_BIN=$REPO_ROOT/target/release/luahttpd
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# conf SERVER VARIANT DIR PORT: writes DIR's config from compare.sh's templates (one worker,
# keep-alive for every request of a run), prints the command line after valgrind's
conf() {
  local s=$1 v=$2 d=$3 port=$4 route="" mods="" shared="" user="" m
  local common=(WORKERS=1 WWW="$TMP/www" DIR="$d" PORT="$port" KEEPALIVE_REQUESTS=1000000
    MAX_CONNECTIONS=1000 MAX_FDS=4096 IDLE_TIMEOUT=60 GZIP_LEVEL=6 PHP=)
  case $s in
    luahttpd)
      [[ $v == route ]] && route=$(render luahttpd-route.lua)
      render luahttpd.lua "${common[@]}" LISTEN="\"127.0.0.1:$port\"" TLS= ROUTE="$route" >"$d/site.lua"
      echo "$LUAHTTPD_BIN -c $d/site.lua"
      ;;
    lighttpd)
      if [[ $v == route ]]; then
        render lighttpd-route.lua >"$d/route.lua"
        route=$(render lighttpd-route.conf DIR="$d")
      fi
      render lighttpd.conf "${common[@]}" BACKEND='server.network-backend = "sendfile"' DEFLATE= \
        ROUTE="$route" >"$d/lighttpd.conf"
      echo "lighttpd -D -f $d/lighttpd.conf"
      ;;
    nginx)
      if [[ $v == route ]]; then
        for m in ndk_http_module ngx_http_lua_module; do
          [[ -e $NGINX_MODULES/$m.so ]] && mods+="load_module $NGINX_MODULES/$m.so;"$'\n'
        done
        route=$(render nginx-route.conf)
        shared="lua_shared_dict bench 8m;"
      fi
      (( EUID == 0 )) && user="user $(id -un) $(id -gn);"
      mkdir -p "$d/tmp"
      render nginx.conf "${common[@]}" MODULES="$mods" USER="$user" SHARED="$shared" UPSTREAM= \
        LISTEN_OPTS= TLS= ROUTE="$route" >"$d/nginx.conf"
      echo "nginx -p $d -c $d/nginx.conf"
      ;;
  esac
}

# The request each run sends over and over, and the body size every response must have.
REQ_PATH=/1k.bin
REQ_EXPECT=1024

# count SERVER VARIANT N: the worker's instructions for a run with N requests
count() {
  local s=$1 v=$2 n=$3 d port cmd vp i best=0 f t
  d=$TMP/$s-$v-$n-${REQ_PATH//\//_}; mkdir -p "$d"
  port=$(free_port)
  cmd=$(conf "$s" "$v" "$d" "$port")
  # shellcheck disable=SC2086 # cmd is a command line made above, without spaces in its words
  LD_PRELOAD=$TMP/openat2_shim.so valgrind --tool=callgrind --trace-children=yes \
    --callgrind-out-file="$d/cg.%p" $cmd >"$d/out.log" 2>&1 &
  vp=$!
  for ((i = 0; i < 300; i++)); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=1).close()" 2>/dev/null && break
    kill -0 "$vp" 2>/dev/null || { tail -n 5 "$d/out.log" >&2; die "$s ($v) exited at start (see $d/out.log, KEEP_TMP=1)"; }
    sleep 0.2
  done
  (( i < 300 )) || { kill -TERM "$vp"; die "$s ($v) did not answer in 60 s"; }
  python3 "$SCRIPT_DIR/lib/keepalive_client.py" "$port" "$REQ_PATH" "$n" "$REQ_EXPECT" \
    || { kill -TERM "$vp"; die "$s ($v): a response was not the file"; }
  # the graceful stop of each: nginx SIGQUIT, luahttpd and lighttpd SIGTERM
  if [[ $s == nginx ]]; then kill -QUIT "$vp" 2>/dev/null || true; else kill -TERM "$vp" 2>/dev/null || true; fi
  for ((i = 0; i < 100; i++)); do kill -0 "$vp" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$vp" 2>/dev/null || true
  wait "$vp" 2>/dev/null || true
  for f in "$d"/cg.*; do
    t=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
    [[ -n $t ]] && (( t > best )) && best=$t
  done
  (( best > 0 )) || die "$s ($v): no callgrind output"
  echo "$best"
}

per_request() { echo $(( ($(count "$1" "$2" "$N2") - $(count "$1" "$2" "$N1")) / (N2 - N1) )); }

has_route() {
  case $1 in
    luahttpd) return 0 ;;
    lighttpd) [[ -e /usr/lib/lighttpd/mod_magnet.so ]] ;;
    nginx) [[ -e $NGINX_MODULES/ngx_http_lua_module.so ]] ;;
  esac
}

echo "callgrind instructions a request, one worker, GET /1k.bin on one kept connection, (Ir($N2) - Ir($N1)) / $((N2 - N1))"
printf '%-9s %9s %9s %12s %12s   %s\n' server plain route "route cost" "plain/route" "route"
for s in $SERVERS; do
  case $s in luahttpd | lighttpd | nginx) ;; *) die "unknown server '$s'" ;; esac
  [[ $s == luahttpd ]] || command -v "$s" >/dev/null || die "$s not found (bench/install.sh)"
  plain=$(per_request "$s" plain)
  if has_route "$s"; then
    route=$(per_request "$s" route)
    printf '%-9s %9s %9s %12s %12s   %s\n' "$s" "$plain" "$route" "$((route - plain))" \
      "$(awk -v a="$plain" -v b="$route" 'BEGIN { printf "%.3f", a / b }')" \
      "$(case $s in luahttpd) echo "route(function(req) ... end)" ;; lighttpd) echo "mod_magnet" ;; nginx) echo "lua module, rewrite_by_lua_block" ;; esac)"
  else
    printf '%-9s %9s %9s %12s %12s   %s\n' "$s" "$plain" "n/a" "n/a" "n/a" "no Lua module (bench/install.sh)"
  fi
done

# The shared dict's incr (compare.sh's shared_incr against api_route): the route's /api/
# branch answering "api" with and without one incr of the shared dict before it, in the
# servers that have one (luahttpd's shared.bench:incr, nginx's ngx.shared.bench:incr).
if (( INCR )); then
  echo
  echo "the route's /api/ branch: GET /api/x (answers \"api\"), GET /api/incr (one shared dict incr first)"
  printf '%-9s %9s %9s %12s\n' server "api/x" "api/incr" "incr cost"
  REQ_EXPECT=3
  for s in $SERVERS; do
    [[ $s == lighttpd ]] && { printf '%-9s %9s %9s %12s   %s\n' "$s" n/a n/a n/a "mod_magnet has no shared dictionary"; continue; }
    has_route "$s" || continue
    REQ_PATH=/api/x; api=$(per_request "$s" route)
    REQ_PATH=/api/incr; incr=$(per_request "$s" route)
    printf '%-9s %9s %9s %12s\n' "$s" "$api" "$incr" "$((incr - api))"
  done
fi
