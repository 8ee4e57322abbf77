#!/bin/sh
# A CGI script: the head, an empty line, the body. The environment is the CGI params only
# (REQUEST_METHOD, QUERY_STRING, REMOTE_USER, ...): no PATH, so programs are named in full.
printf 'Content-Type: text/plain; charset=utf-8\r\n'
printf 'Cache-Control: no-store\r\n\r\n'
printf 'user:    %s\n' "$REMOTE_USER"
printf 'method:  %s\n' "$REQUEST_METHOD"
printf 'query:   %s\n' "$QUERY_STRING"
if [ -r /proc/uptime ]; then
  read -r up _ < /proc/uptime
  printf 'uptime:  %s s\n' "$up"
fi
if [ -n "$CONTENT_LENGTH" ]; then
  printf 'body:    '
  /bin/cat
  printf '\n'
fi
