#!/usr/bin/env bash
# Start the local services the tests need when they are installed but not running.
# Under CI=true a service that stays unreachable is an error, never a skip.
set -u
failed=0

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
fi
if pg_up; then echo "services: PostgreSQL is up"; else echo "services: PostgreSQL is NOT reachable at 127.0.0.1:5432"; failed=1; fi

# PgBouncer, for the transaction-mode pooler test: install it when it is missing.
if [ ! -x /usr/sbin/pgbouncer ] && ! command -v pgbouncer >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "services: installing pgbouncer"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q pgbouncer >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q pgbouncer >/dev/null 2>&1; } \
      || echo "services: could not install pgbouncer"
  fi
fi
if [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null 2>&1; then
  echo "services: pgbouncer is installed"
else
  echo "services: pgbouncer is NOT installed"; failed=1
fi

if [ "${CI:-}" = "true" ] && [ $failed = 1 ]; then
  echo "services: CI=true and a required service is missing" >&2
  exit 1
fi
exit 0
