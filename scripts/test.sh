#!/usr/bin/env bash
# Install what the tests need and run every test: unit, integration against real PostgreSQL
# and Redis, and the browser tests in Debian's Chromium. Fails loudly; never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '== %s\n' "$*"; }

# 1. Chromium and ChromeDriver from Debian (the test tools never download a browser).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's chromium and chromium-driver"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "Chromium is missing: run 'sudo apt-get install -y chromium chromium-driver'" >&2
    exit 1
  fi
fi

# 2. PostgreSQL and Redis must answer on 127.0.0.1 (started here if they are installed).
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
if ! pg_up && command -v pg_ctlcluster >/dev/null; then
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! redis_up && command -v redis-server >/dev/null; then
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
for _ in $(seq 1 30); do pg_up && redis_up && break; sleep 1; done
pg_up || { echo "PostgreSQL does not answer on 127.0.0.1:5432: the integration tests need it" >&2; exit 1; }
redis_up || { echo "Redis does not answer on 127.0.0.1:6379: the integration tests need it" >&2; exit 1; }

# 3. The project and its test dependencies.
say "installing cdeg with its test dependencies"
python3 -m pip install -q -e '.[test]'

# 4. Everything. pytest's exit code 5 (no tests collected) is a failure here.
say "running the tests"
set +e
python3 -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
