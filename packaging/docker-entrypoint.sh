#!/bin/sh
# Entrypoint of the Palim image: takes docker-jitsi-meet's `jvb` service environment unchanged
# (colibri.md §1.5) and runs palim. Palim reads most variables itself (XMPP_SERVER, XMPP_PORT,
# XMPP_DOMAIN, XMPP_AUTH_DOMAIN, XMPP_INTERNAL_MUC_DOMAIN, JVB_AUTH_USER, JVB_AUTH_PASSWORD,
# JVB_BREWERY_MUC, JVB_MUC_NICKNAME, JVB_DISABLE_XMPP, JVB_PORT, JVB_ADVERTISE_IPS,
# JVB_STUN_SERVERS, JVB_DISABLE_STUN, JVB_REQUIRE_VALID_ADDRESS, COLIBRI_REST_ENABLED,
# SHUTDOWN_REST_ENABLED); this script applies the image's defaults and the variables that
# only the image's templates knew:
#   - ENABLE_JVB_XMPP_SERVER=1: JVB_XMPP_SERVER, JVB_XMPP_PORT, JVB_XMPP_AUTH_DOMAIN,
#     JVB_XMPP_INTERNAL_MUC_DOMAIN replace the XMPP_* ones (a dedicated bridge XMPP server);
#   - the default STUN server unless JVB_DISABLE_STUN, the defaults of XMPP_SERVER and
#     COLIBRI_REST_ENABLED, DOCKER_HOST_ADDRESS as a legacy JVB_ADVERTISE_IPS;
#   - the private HTTP server on 0.0.0.0:8080 inside the container (docker publishes it as
#     127.0.0.1:${JVB_COLIBRI_PORT:-8080}).
# Arguments are passed to palim (e.g. --check-config for a dry run). PALIM_BIN overrides the
# binary (tests).
set -eu

PALIM_BIN=${PALIM_BIN:-/usr/local/bin/palim}

is_true() {
    case "${1:-}" in
        1|true|TRUE|True|yes|YES) return 0 ;;
        *) return 1 ;;
    esac
}

if is_true "${ENABLE_JVB_XMPP_SERVER:-0}"; then
    export XMPP_SERVER="${JVB_XMPP_SERVER:-xmpp.jvb.meet.jitsi}"
    export XMPP_PORT="${JVB_XMPP_PORT:-6222}"
    export XMPP_AUTH_DOMAIN="${JVB_XMPP_AUTH_DOMAIN:-auth.jvb.meet.jitsi}"
    export XMPP_INTERNAL_MUC_DOMAIN="${JVB_XMPP_INTERNAL_MUC_DOMAIN:-muc.jvb.meet.jitsi}"
fi

if is_true "${JVB_DISABLE_XMPP:-0}"; then
    unset XMPP_SERVER
else
    export XMPP_SERVER="${XMPP_SERVER:-xmpp.meet.jitsi}"
    if [ -z "${JVB_AUTH_PASSWORD:-}" ]; then
        echo "docker-entrypoint: JVB_AUTH_PASSWORD must be set (or JVB_DISABLE_XMPP=1)" >&2
        exit 1
    fi
fi

if is_true "${JVB_DISABLE_STUN:-0}"; then
    unset JVB_STUN_SERVERS
else
    export JVB_STUN_SERVERS="${JVB_STUN_SERVERS:-meet-jit-si-turnrelay.jitsi.net:443}"
fi

if [ -z "${JVB_ADVERTISE_IPS:-}" ] && [ -n "${DOCKER_HOST_ADDRESS:-}" ]; then
    export JVB_ADVERTISE_IPS="$DOCKER_HOST_ADDRESS"
fi

# As docker's JVB: the COLIBRI REST API (and /colibri/stats) only when asked for.
export COLIBRI_REST_ENABLED="${COLIBRI_REST_ENABLED:-false}"
export SHUTDOWN_REST_ENABLED="${SHUTDOWN_REST_ENABLED:-false}"

exec "$PALIM_BIN" --rest-bind 0.0.0.0:8080 "$@"
