#!/bin/sh
# HTTPS when certificate files are mounted (README, "TLS"). Run by the nginx image's entrypoint
# (mounted as /docker-entrypoint.d/40-chat-tls.sh, after it has written deploy/nginx.conf out):
# with /etc/nginx/tls/fullchain.pem and privkey.pem present, nginx also serves HTTPS
# (deploy/nginx-tls.conf, port 8443 in the container) and the plain-HTTP server answers every
# request but /healthz with a redirect to https on HTTPS_PORT. Without them, plain HTTP only, as before.
set -eu
root="${CHAT_NGINX_ROOT:-/etc/nginx}"  # another root only in tests/test_nginx.py
cert="$root/tls/fullchain.pem"
key="$root/tls/privkey.pem"
redirect_dir="$root/chat-redirect"
mkdir -p "$redirect_dir"
rm -f "$root/conf.d/chat-tls.conf" "$redirect_dir/https.conf"
if [ ! -s "$cert" ] || [ ! -s "$key" ]; then
    echo "$0: no certificate in $root/tls: plain HTTP only"
    exit 0
fi
port="${HTTPS_PORT:-443}"
case "$port" in
    443) target='https://$host$request_uri' ;;
    *[!0-9]*|'') echo "$0: HTTPS_PORT must be a port number, not '$port'" >&2; exit 1 ;;
    *) target="https://\$host:$port\$request_uri" ;;
esac
cp "$root/chat/tls.conf" "$root/conf.d/chat-tls.conf"
# Health probes from inside the network (a load balancer's, Docker's) keep plain HTTP.
echo "if (\$uri != /healthz) { return 301 $target; }" >"$redirect_dir/https.conf"
echo "$0: HTTPS on (container port 8443, published as $port); plain HTTP redirects there"
