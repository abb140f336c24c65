#!/usr/bin/env bash
# Installs the Debian packages the test suites need, idempotently: packages
# already present are not fetched again, and apt-get update runs only when
# something is missing. Needs root (CI and the dev machines run as root).
set -euo pipefail
PACKAGES=(
  build-essential python3   # better-sqlite3 builds its native addon with node-gyp
  # test/e2e: a real Postfix + Dovecot on loopback (test/e2e/stack.ts)
  postfix dovecot-core dovecot-imapd dovecot-pop3d
  openssl                   # test/e2e: throw-away TLS cert for STARTTLS
  hydra                     # test/e2e: a real brute-force tool against IMAP and SMTP
  chromium                  # test/admin/dashboard.test.ts: the dashboard in a real browser (playwright-core)
  fonts-ipafont-gothic      # the Japanese dashboard's screenshots (Chromium has no CJK font otherwise)
  redis-server redis-tools  # cluster mode: a real Redis (and a three-node Redis Cluster) started by the tests
  systemd adduser           # test/package/deb.test.ts: systemd-analyze verify on the unit; the .deb's postinst uses adduser
  prometheus                # test/admin/monitoring.test.ts: promtool checks the alert rules and a live /metrics
  rbldnsd                   # test/dns, bench phase dnsbl: a real DNSBL server on loopback, with zones the tests write
  nftables iproute2         # test/actions/firewall.test.ts, bench phase firewall: nft in a network namespace made by the test
  systemd-journal-remote    # test/logs/journal.test.ts: writes a real journal file from export format for journalctl --file
  fail2ban                  # bench phase logs: fail2ban-regex with the stock postfix and dovecot filters, the baseline
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present (${PACKAGES[*]})"
  exit 0
fi
echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if [[ " ${missing[*]} " == *" postfix "* ]]; then
  # Non-interactive and unconfigured: the e2e stack brings its own config dir
  # (postfix -c), so no /etc/postfix/main.cf is needed.
  debconf-set-selections <<'EOF'
postfix postfix/main_mailer_type select No configuration
EOF
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
