#!/usr/bin/env bash
# Install what bench/compare.sh and bench/soak.sh need, from Debian, with
# apt-get. Idempotent: packages already installed are left alone, and nothing
# is run at all when everything is present.
#
#   bench/install.sh            # everything both scripts can use
#   bench/install.sh --check    # only say what is missing (exit 1 if anything is)
#
# Packages:
#   wrk, curl, iproute2 (ss), procps (ps)    load generator and probes
#   nginx, lighttpd                          the servers compared with luahttpd
#   php-cgi                                  php_hello, and PHP in the soak
#   lighttpd-modules-lua                     mod_magnet, for route_1k
#   lighttpd-mod-deflate                     mod_deflate, for js_gzip
#   libnginx-mod-http-lua                    nginx's lua module, for route_1k
#   python3                                  the idle-connection holder and the soak harness
#   valgrind                                 bench/instructions.sh (callgrind counts)
#
# On a host with an init system, Debian's maintainer scripts may start the
# nginx/lighttpd system services on install; the bench scripts never use or
# touch them (they start their own instances from their own configs).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

CHECK_ONLY=0
case ${1:-} in
  --check) CHECK_ONLY=1 ;;
  "") ;;
  *) echo "usage: bench/install.sh [--check]" >&2; exit 2 ;;
esac

# package -> how to tell it is there
declare -A PROBE=(
  [wrk]="cmd:wrk"
  [curl]="cmd:curl"
  [iproute2]="cmd:ss"
  [procps]="cmd:ps"
  [nginx]="cmd:nginx"
  [lighttpd]="cmd:lighttpd"
  [php-cgi]="cmd:php-cgi"
  [lighttpd-modules-lua]="file:/usr/lib/lighttpd/mod_magnet.so"
  [lighttpd-mod-deflate]="file:/usr/lib/lighttpd/mod_deflate.so"
  [libnginx-mod-http-lua]="file:/usr/lib/nginx/modules/ngx_http_lua_module.so"
  [python3]="cmd:python3"
  [valgrind]="cmd:valgrind"
)
ORDER=(wrk curl iproute2 procps nginx lighttpd php-cgi lighttpd-modules-lua lighttpd-mod-deflate libnginx-mod-http-lua python3 valgrind)

present() {
  local probe=${PROBE[$1]}
  case $probe in
    cmd:*) command -v "${probe#cmd:}" >/dev/null 2>&1 ;;
    file:*) [[ -e ${probe#file:} ]] ;;
  esac
}

missing=()
for p in "${ORDER[@]}"; do present "$p" || missing+=("$p"); done

if (( ${#missing[@]} == 0 )); then
  echo "bench/install.sh: everything is installed"
  exit 0
fi
if (( CHECK_ONLY )); then
  echo "bench/install.sh: missing: ${missing[*]}"
  exit 1
fi

command -v apt-get >/dev/null || { echo "bench/install.sh: no apt-get; install by hand: ${missing[*]}" >&2; exit 1; }
sudo=()
if (( EUID != 0 )); then
  command -v sudo >/dev/null || { echo "bench/install.sh: not root and no sudo; run as root: apt-get install -y ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi

echo "bench/install.sh: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
# Install the essential ones together; the two Lua modules one by one, since a
# distribution may lack one of them (compare.sh then runs that server's
# route_1k on its plain config and says so).
essential=() optional=()
for p in "${missing[@]}"; do
  case $p in
    lighttpd-modules-lua|lighttpd-mod-deflate|libnginx-mod-http-lua|valgrind) optional+=("$p") ;;
    *) essential+=("$p") ;;
  esac
done
if (( ${#essential[@]} > 0 )); then
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${essential[@]}"
fi
rc=0
for p in "${optional[@]}"; do
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" \
    || { echo "bench/install.sh: could not install $p (a Lua module: route_1k runs that server's plain config; valgrind: no bench/instructions.sh)" >&2; }
done

still=()
for p in "${ORDER[@]}"; do present "$p" || still+=("$p"); done
if (( ${#still[@]} > 0 )); then
  echo "bench/install.sh: still missing after install: ${still[*]}" >&2
  for p in "${still[@]}"; do
    case $p in lighttpd-modules-lua|libnginx-mod-http-lua|valgrind) ;; *) rc=1 ;; esac
  done
fi
(( rc == 0 )) && echo "bench/install.sh: done"
exit "$rc"
