#!/bin/sh
# Run by the stand-in nginx's /docker-entrypoint.sh (our own re-implementation of the official
# image's script of this name): every /etc/nginx/templates/**/*.template is written to
# /etc/nginx/conf.d/ without the suffix, with envsubst replacing only the variables set in the
# environment (so nginx's own $variables stay). NGINX_ENVSUBST_TEMPLATE_DIR, _TEMPLATE_SUFFIX,
# _OUTPUT_DIR and NGINX_ENVSUBST_FILTER (a regular expression on the names) as in the official one.
set -e

ME=$(basename "$0")

entrypoint_log() {
    if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
        echo "$@"
    fi
}

template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
filter="${NGINX_ENVSUBST_FILTER:-}"

[ -d "$template_dir" ] || exit 0
if [ ! -w "$output_dir" ]; then
    entrypoint_log "$ME: ERROR: $template_dir exists, but $output_dir is not writable"
    exit 0
fi

# ${NAME} for every variable in the environment (matching the filter): envsubst's list.
# shellcheck disable=SC2016
defined_envs=$(printf '${%s} ' $(awk "END { for (name in ENVIRON) { print ( name ~ /${filter}/ ) ? name : \"\" } }" </dev/null))

find "$template_dir" -follow -type f -name "*$suffix" -print | while read -r template; do
    relative_path="${template#"$template_dir/"}"
    output_path="$output_dir/${relative_path%"$suffix"}"
    mkdir -p "$output_dir/$(dirname "$relative_path")"
    entrypoint_log "$ME: Running envsubst on $template to $output_path"
    envsubst "$defined_envs" <"$template" >"$output_path"
done

exit 0
