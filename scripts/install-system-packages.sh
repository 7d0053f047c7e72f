#!/usr/bin/env bash
# Installs the Debian packages the project runs on, only those that are missing:
# PostgreSQL server + client, PgBouncer, Redis, ACL tools, wrk, python3-venv, and Chromium
# (the browser tests drive Debian's chromium through Playwright; Playwright's own browser
# download is never used).
# Package installs must not start their own system services (a default PostgreSQL on 5432,
# Redis on 6379, PgBouncer on 6432): the project runs its own servers on its own ports.
set -euo pipefail

need=()
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql postgresql-contrib)
command -v psql >/dev/null || need+=(postgresql-client)
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
command -v redis-server >/dev/null || need+=(redis-server)
command -v setfacl >/dev/null || need+=(acl)
command -v wrk >/dev/null || need+=(wrk)
command -v ss >/dev/null || need+=(iproute2)
python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
command -v chromium >/dev/null || need+=(chromium)
compgen -G "/usr/share/fonts/truetype/*" >/dev/null || need+=(fonts-dejavu-core)  # text in screenshots

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "missing packages: ${need[*]} - install them as root (apt-get install ${need[*]})" >&2
    exit 1
fi

echo "installing Debian packages: ${need[*]}"
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    # Exit code 101 tells invoke-rc.d "do not start services" during this install.
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod +x "$policy"
    made_policy=1
fi
trap '[ $made_policy -eq 1 ] && "${sudo[@]}" rm -f "$policy"' EXIT
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    "${sudo[@]}" mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | "${sudo[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
