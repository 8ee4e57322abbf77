# Sourced by compare.sh and instructions.sh, so that both run the servers from the same
# templates under $CONF_DIR. Needs the caller's `die`.

# bash 5.2 would expand & in ${var//pattern/replacement}; the configs are literal.
shopt -u patsub_replacement 2>/dev/null || true

# render TEMPLATE KEY=VALUE...: the template (a file under bench/conf/) with
# every @KEY@ replaced by VALUE, on stdout. A placeholder left unreplaced is a
# bug in the calling script, so it stops there.
render() {
  local name=$1 tmpl=$CONF_DIR/$1 text kv; shift
  [[ -f $tmpl ]] || die "template $tmpl is missing"
  text=$(<"$tmpl")
  for kv in "$@"; do
    text=${text//"@${kv%%=*}@"/"${kv#*=}"}
  done
  if [[ $text =~ @[A-Z_]+@ ]]; then
    die "template $name: ${BASH_REMATCH[0]} was not given a value"
  fi
  printf '%s\n' "$text"
}
