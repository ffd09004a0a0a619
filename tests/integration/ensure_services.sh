#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are up for the integration tests.
# Idempotent: a service that already answers is left alone. Exits non-zero if one cannot be started.
set -euo pipefail

PG_HOST=127.0.0.1 PG_PORT=5432 REDIS_HOST=127.0.0.1 REDIS_PORT=6379

pg_up() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
    else
        (exec 3<>"/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null
    fi
}

redis_up() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
    else
        (exec 3<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT") 2>/dev/null
    fi
}

wait_for() {  # wait_for NAME CHECK: up to ~30 s
    local name=$1 check=$2
    for _ in $(seq 1 60); do
        if "$check"; then echo "ensure_services: $name is up"; return 0; fi
        sleep 0.5
    done
    echo "ensure_services: $name did not come up" >&2
    return 1
}

if pg_up; then
    echo "ensure_services: PostgreSQL already up"
else
    echo "ensure_services: starting PostgreSQL"
    for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    wait_for PostgreSQL pg_up
fi

if redis_up; then
    echo "ensure_services: Redis already up"
else
    echo "ensure_services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis redis_up
fi
