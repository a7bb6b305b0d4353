#!/bin/sh
# As in the official redis image: a server started from arguments alone runs without protected
# mode, so the other containers on the stack's network may connect (the port is not published).
set -e
if [ "${1:-}" = redis-server ]; then
    exec "$@" --protected-mode no
fi
exec "$@"
