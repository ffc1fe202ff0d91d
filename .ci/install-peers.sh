#!/bin/bash
# Installs the real peers used by the integration tests (test/peers/, test/helpers/peers.ts):
# Postfix (+ smtp-source/smtp-sink), Dovecot IMAP, swaks, openssl, curl.
# Idempotent: re-running only re-checks. Debian/Ubuntu, run as root (or through sudo).
#
# The tests start private, throw-away instances on 127.0.0.1 with their own config directories,
# so the *system* Postfix/Dovecot must not run: apt is kept from starting them (policy-rc.d for the
# duration of the install), Postfix gets "No configuration" (no /etc/postfix/main.cf), and any system
# daemon that was started anyway is stopped afterwards with its own stop command.
set -euo pipefail

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

PKGS="postfix dovecot-imapd swaks python3-dkim libnet-ssleay-perl libio-socket-ssl-perl openssl curl ca-certificates dnsmasq-base iproute2"

missing=
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done

if [ -n "$missing" ]; then
  echo "install-peers: installing$missing"
  # policy-rc.d exit 101 = "do not start/stop services" for invoke-rc.d during the install
  MADE=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    MADE=1
  fi
  trap '[ -n "$MADE" ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  echo "postfix postfix/mailname string madmail.test" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PKGS
fi

# A system daemon may still run (machine set up without policy-rc.d, or systemd started it).
# Stop only the system instances, with their own commands; never by process name.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now dovecot.service dovecot.socket postfix.service >/dev/null 2>&1 || true
fi
if [ -s /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
  echo "install-peers: stopping the system Dovecot"; $SUDO doveadm stop || true
fi
if [ -f /etc/postfix/main.cf ] && $SUDO postfix status >/dev/null 2>&1; then
  echo "install-peers: stopping the system Postfix"; $SUDO postfix stop || true
fi

echo "postfix  $(postconf -d -h mail_version 2>/dev/null)"
echo "dovecot  $(dovecot --version 2>/dev/null)"
echo "swaks    $(swaks --version 2>/dev/null | head -n1)"
echo "openssl  $(openssl version)"
echo "curl     $(curl --version | head -n1)"
for b in smtp-source smtp-sink; do
  p=$(command -v $b || ls /usr/sbin/$b 2>/dev/null || true)
  echo "$b $p"
done
