#!/usr/bin/env bash
# Start the local services the tests need (PostgreSQL, Redis, NATS) when they are installed but not running.
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

# Redis and NATS, for the notifier suites: start them when installed but stopped.
tcp_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! tcp_up 6379 && command -v redis-server >/dev/null 2>&1; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 1 20); do tcp_up 6379 && break; sleep 0.5; done
fi
if tcp_up 6379; then echo "services: Redis is up"; else echo "services: Redis is NOT reachable at 127.0.0.1:6379"; failed=1; fi

if ! tcp_up 4222 && [ -x /usr/sbin/nats-server ]; then
  echo "services: starting NATS"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
  for _ in $(seq 1 20); do tcp_up 4222 && break; sleep 0.5; done
fi
if tcp_up 4222; then echo "services: NATS is up"; else echo "services: NATS is NOT reachable at 127.0.0.1:4222"; failed=1; fi

if [ "${CI:-}" = "true" ] && [ $failed = 1 ]; then
  echo "services: CI=true and a required service is missing" >&2
  exit 1
fi
exit 0
