#!/bin/sh
# Renders this directory's configuration into a state directory and starts
# Asterisk on it. Both paths run this same script: the container's entry point
# (compose.yaml) and the chroot (scripts/asterisk), so their configuration
# cannot drift.
#
#   start.sh [--foreground]
#
# Environment (all optional):
#   ASTERISK_STATE      state directory (config, keys, logs, spool, run) [/var/lib/microsip-interop/default]
#   ASTERISK_SIP_PORT   SIP over UDP and TCP on 127.0.0.1 [5060]
#   ASTERISK_TLS_PORT   SIP over TLS on 127.0.0.1 [5061]
#   ASTERISK_RTP_START, ASTERISK_RTP_END   RTP port range [10000, 10999]
set -eu

conf_dir=$(cd "$(dirname "$0")" && pwd)
state=${ASTERISK_STATE:-/var/lib/microsip-interop/default}
sip_port=${ASTERISK_SIP_PORT:-5060}
tls_port=${ASTERISK_TLS_PORT:-5061}
rtp_start=${ASTERISK_RTP_START:-10000}
rtp_end=${ASTERISK_RTP_END:-10999}

for value in "$sip_port" "$tls_port" "$rtp_start" "$rtp_end"; do
    case $value in
        '' | *[!0-9]*) echo "start.sh: port '$value' is not a number" >&2; exit 2 ;;
    esac
done

mkdir -p "$state/etc" "$state/keys" "$state/lib" "$state/cache" "$state/log" \
    "$state/run" "$state/spool/dtmf"

# Debian's stock files first (for everything not configured here), ours on top.
if [ -d /etc/asterisk ] && [ "$state/etc" != /etc/asterisk ]; then
    cp -p /etc/asterisk/*.conf "$state/etc/"
fi
for file in asterisk.conf pjsip.conf extensions.conf rtp.conf; do
    sed -e "s|@STATE@|$state|g" -e "s|@SIP_PORT@|$sip_port|g" -e "s|@TLS_PORT@|$tls_port|g" \
        -e "s|@KEYS@|$state/keys|g" -e "s|@RTP_START@|$rtp_start|g" -e "s|@RTP_END@|$rtp_end|g" \
        "$conf_dir/$file" > "$state/etc/$file"
done
for file in modules.conf logger.conf voicemail.conf; do
    cp "$conf_dir/$file" "$state/etc/$file"
done

# A test CA and a server certificate for 127.0.0.1, made once per state
# directory (a restart keeps them, so clients keep trusting the same CA).
# Never committed: they exist only here.
keys=$state/keys
if [ ! -s "$keys/server.crt" ] || [ ! -s "$keys/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=microsip-interop test CA" \
        -keyout "$keys/ca.key" -out "$keys/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$keys/server.key" -out "$keys/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$keys/ext.cnf"
    openssl x509 -req -in "$keys/server.csr" -CA "$keys/ca.crt" -CAkey "$keys/ca.key" \
        -CAcreateserial -days 30 -extfile "$keys/ext.cnf" -out "$keys/server.crt" 2>/dev/null
    rm -f "$keys/server.csr" "$keys/ext.cnf"
fi
chmod 0644 "$keys/ca.crt" "$keys/server.crt"

if [ "${1:-}" = "--foreground" ]; then
    exec asterisk -C "$state/etc/asterisk.conf" -f -vvv
fi
exec asterisk -C "$state/etc/asterisk.conf"
