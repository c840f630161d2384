#!/bin/sh
# Replace jitsi-videobridge2 by Palim on a Debian/Ubuntu jitsi-meet install, or roll back.
#
#   sudo packaging/install.sh ./palim          # install this binary and switch over
#   sudo packaging/install.sh --rollback       # back to jitsi-videobridge2 (left installed)
#
# The JVB package stays installed and its configuration (/etc/jitsi/videobridge) untouched:
# Palim reads it with --jvb-conf. Switching stops JVB, which ends its running conferences;
# drain it first (docs/operator-guide.md) if that matters.
set -eu

UNIT_SRC="$(dirname "$0")/palim.service"
BIN_DST=/usr/local/bin/palim
UNIT_DST=/etc/systemd/system/palim.service

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root" >&2
    exit 1
fi

if [ "${1:-}" = "--rollback" ]; then
    systemctl disable --now palim.service || true
    systemctl enable --now jitsi-videobridge2.service
    echo "rolled back: jitsi-videobridge2 is running, palim is disabled (binary left in $BIN_DST)"
    exit 0
fi

BIN_SRC=${1:?usage: install.sh <path-to-palim-binary> | --rollback}

getent group jitsi >/dev/null || groupadd -r jitsi
getent passwd jvb >/dev/null || useradd -r -g jitsi -d /usr/share/jitsi-videobridge -s /usr/sbin/nologin jvb

install -m 0755 "$BIN_SRC" "$BIN_DST"
install -m 0644 "$UNIT_SRC" "$UNIT_DST"

# Refuse to switch over if Palim cannot read the existing configuration.
if [ -f /etc/jitsi/videobridge/jvb.conf ]; then
    runuser -u jvb -- "$BIN_DST" --jvb-conf /etc/jitsi/videobridge/jvb.conf --check-config >/dev/null
fi

systemctl daemon-reload
systemctl disable --now jitsi-videobridge2.service 2>/dev/null || true
systemctl enable --now palim.service
sleep 2
if curl --fail --silent http://127.0.0.1:8080/about/health >/dev/null; then
    echo "palim is running and healthy; rollback: $0 --rollback"
else
    echo "palim started but /about/health does not answer yet: journalctl -u palim" >&2
fi
