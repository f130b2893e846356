#!/usr/bin/env bash
# Starts the local PostgreSQL and RabbitMQ that `cargo test --workspace` needs, when they are
# installed but not running, and waits until both answer. Safe to run any number of times:
# a server that already answers is left alone.
#
#   bash deploy/dev-services.sh
#
# Environment (optional): PG_HOST, PG_PORT (127.0.0.1, 5432), AMQP_HOST, AMQP_PORT
# (127.0.0.1, 5672), DEV_SERVICES_TIMEOUT (seconds to wait for each server, 60).
set -euo pipefail

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
AMQP_HOST=${AMQP_HOST:-127.0.0.1}
AMQP_PORT=${AMQP_PORT:-5672}
TIMEOUT=${DEV_SERVICES_TIMEOUT:-60}

say() { printf 'dev-services: %s\n' "$*"; }
die() {
    printf 'dev-services: ERROR: %s\n' "$*" >&2
    exit 1
}
install_hint() {
    die "$1 is not installed. Install it with: apt-get install postgresql rabbitmq-server"
}

pg_up() {
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1
}

# The AMQP listener is what the tests connect to; `rabbitmq-diagnostics ping` can succeed
# before it is open, so readiness is a TCP connect to the port.
amqp_up() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$AMQP_HOST/$AMQP_PORT" >/dev/null 2>&1
}

# wait_for NAME CHECK: polls CHECK every half second until it succeeds or TIMEOUT passes.
wait_for() {
    local name=$1 check=$2
    local started=$SECONDS
    until "$check"; do
        if ((SECONDS - started >= TIMEOUT)); then
            return 1
        fi
        sleep 0.5
    done
    say "$name answers (after $((SECONDS - started))s)"
}

start_postgres() {
    if pg_up; then
        say "PostgreSQL already answers at $PG_HOST:$PG_PORT"
        return
    fi
    command -v pg_isready >/dev/null 2>&1 || install_hint "PostgreSQL (pg_isready)"
    command -v pg_ctlcluster >/dev/null 2>&1 || install_hint "PostgreSQL (pg_ctlcluster)"
    local version
    # Several installed versions: start the newest one's cluster.
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $version ]] || install_hint "a PostgreSQL cluster (/etc/postgresql is empty)"
    say "PostgreSQL does not answer at $PG_HOST:$PG_PORT; starting cluster $version/main"
    # A cluster that is already running but listening elsewhere makes this fail; the wait
    # below then reports the real problem.
    pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
        say "pg_ctlcluster exited with $? (see above)"
    wait_for PostgreSQL pg_up ||
        die "PostgreSQL did not answer at $PG_HOST:$PG_PORT within ${TIMEOUT}s (log: /var/log/postgresql/)"
}

start_rabbitmq() {
    if amqp_up; then
        say "RabbitMQ already answers at $AMQP_HOST:$AMQP_PORT"
        return
    fi
    command -v rabbitmq-server >/dev/null 2>&1 || install_hint "RabbitMQ (rabbitmq-server)"
    say "RabbitMQ does not answer at $AMQP_HOST:$AMQP_PORT; starting it (rabbitmq-server -detached)"
    rabbitmq-server -detached || say "rabbitmq-server exited with $? (see above)"
    wait_for RabbitMQ amqp_up ||
        die "RabbitMQ did not answer at $AMQP_HOST:$AMQP_PORT within ${TIMEOUT}s (log: /var/log/rabbitmq/)"
}

# The tests log in as `postgres` without a password; warn early if that is refused.
check_postgres_login() {
    command -v psql >/dev/null 2>&1 || return 0
    if ! psql -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
        say "WARNING: PostgreSQL answers but refuses 'psql -h $PG_HOST -U postgres' without a password;"
        say "         the tests need trust authentication for host connections (pg_hba.conf)."
    fi
}

start_postgres
check_postgres_login
start_rabbitmq
say "PostgreSQL at $PG_HOST:$PG_PORT and RabbitMQ at $AMQP_HOST:$AMQP_PORT are up"
