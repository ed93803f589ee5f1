#!/usr/bin/env bash
# A stand-in for Docker Hub's `nginx:1.27`, made from Debian bookworm's nginx (1.22) and
# gettext-base (envsubst), for running docker-compose.yml where no registry but Debian's can be
# reached (tests/test_compose.py). It has what the compose file uses of the real image: its
# /etc/nginx/nginx.conf (conf.d/*.conf inside `http`, workers as `nginx`) and its entrypoint's
# behaviour: /docker-entrypoint.sh runs /docker-entrypoint.d/*.sh and sources *.envsh in order,
# 15-local-resolvers.envsh (NGINX_ENTRYPOINT_LOCAL_RESOLVERS=1: NGINX_LOCAL_RESOLVERS from
# /etc/resolv.conf) and 20-envsubst-on-templates.sh (/etc/nginx/templates/*.template to
# /etc/nginx/conf.d/, only variables set in the environment replaced), then `nginx -g 'daemon off;'`.
# Those scripts (nginx/) are our own minimal re-implementation, not the official ones; the
# official image's IPv6-listen and worker-tuning scripts are left out. Needs mmdebstrap and podman.
# Usage: docker/standin/nginx.sh   (FORCE=1 makes it again even when up to date)
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
standin_image docker.io/library/nginx:1.27 nginx nginx,gettext-base \
    --customize-hook='chroot "$1" useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nginx' \
    --customize-hook='rm -f "$1"/etc/nginx/sites-enabled/* && mkdir -p "$1"/docker-entrypoint.d "$1"/etc/nginx/conf.d "$1"/usr/share/nginx/html' \
    --customize-hook='copy-in nginx/docker-entrypoint.sh /' \
    --customize-hook='copy-in nginx/15-local-resolvers.envsh nginx/20-envsubst-on-templates.sh /docker-entrypoint.d' \
    --customize-hook='copy-in nginx/nginx.conf /etc/nginx' \
    --customize-hook='copy-in nginx/default.conf /etc/nginx/conf.d' \
    --customize-hook='ln -sf /dev/stdout "$1"/var/log/nginx/access.log && ln -sf /dev/stderr "$1"/var/log/nginx/error.log' \
    -- \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENTRYPOINT ["/docker-entrypoint.sh"]' \
    'EXPOSE 80' \
    'STOPSIGNAL SIGQUIT' \
    'CMD ["nginx", "-g", "daemon off;"]'
