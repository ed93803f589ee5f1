# Shared by the stand-in image scripts (postgres.sh, redis.sh, nginx.sh): one image from Debian
# bookworm's packages with mmdebstrap, imported into podman under the Docker Hub name the compose
# file uses. Sourced, not run.
#
# standin_image TAG FILES_DIR PACKAGES [mmdebstrap options...] -- [podman import --change ...]
#   FILES_DIR's files are the image's own scripts (docker/standin/<name>/); their hash is kept in a
#   label, so the image is made again when they change and reused otherwise (--force: always).
standin_image() {
    local tag=$1 files=$2 packages=$3
    shift 3
    local options=()
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
        options+=("$1")
        shift
    done
    [ "${1:-}" = "--" ] && shift
    local changes=("$@")
    local here digest
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    # The stand-in's own files, this library and its caller decide whether it is up to date.
    digest=$(cd "$here" && cat lib.sh "$(basename "$0")" "$files"/* | sha256sum | cut -c1-16)
    if [ "${FORCE:-}" != "1" ] \
        && [ "$(podman image inspect --format '{{index .Labels "chat.standin"}}' "$tag" 2>/dev/null)" = "$digest" ]; then
        echo "$tag is up to date"
        return 0
    fi
    local sources=/etc/apt/sources.list.d/debian.sources
    [ -e "$sources" ] || sources=/etc/apt/sources.list
    local work
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    mmdebstrap --quiet --variant=minbase --include="ca-certificates,netbase,tzdata,$packages" \
        --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true' \
        --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
        "${options[@]}" \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "$work/image.tar" "$sources"
    local change_args=(--change "LABEL chat.standin=$digest")
    for change in "${changes[@]}"; do
        change_args+=(--change "$change")
    done
    local old
    old=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    podman import --quiet "${change_args[@]}" "$work/image.tar" "$tag" >/dev/null
    # The stand-in it replaces, unless a container still uses it.
    [ -z "$old" ] || podman rmi "$old" >/dev/null 2>&1 || true
    echo "built $tag"
}
