#!/usr/bin/env bash
# `make images`: mlproj-train:local and mlproj-api:local from dockerfiles/, built on this machine with no Docker
# daemon and no image registry, then listed by `podman images` and started with `podman run` (docs/images.md).
#
#   - tools: buildah, podman, runc and debootstrap from Debian's packages, installed when missing (needs root, like
#     podman's storage in /var/lib/containers/storage);
#   - base: no FROM image can be pulled, so BASE_IMAGE is a Debian bookworm (Python 3.11) root filesystem made with
#     debootstrap from Debian's mirror and turned into an image with `podman import`; made once, then reused;
#   - build: `buildah bud --isolation chroot` (no OCI runtime needed) in docker format (the SHELL lines); --layers
#     keeps each step as a cache, so a rebuild redoes only what changed, and the two images share their torch layer;
#   - index: RUN steps reach pip's index with this machine's pip settings (PIP_* variables, `pip config list`)
#     as build arguments, and the local folders and certificate bundle they name mounted read-only.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=localhost/mlproj-base:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}

if [ "$(id -u)" != 0 ]; then
    echo "error: make images runs buildah and podman as root (their storage is /var/lib/containers): run it with sudo" >&2
    exit 2
fi

missing=()
for tool in buildah podman runc debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah podman runc debootstrap >/dev/null
fi

if ! podman image exists "$BASE"; then
    echo "making $BASE with debootstrap from $MIRROR"
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates bookworm "$rootfs" "$MIRROR" \
        >"$rootfs.log" || { tail -20 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"
    # What python:*-slim leaves out too: the package lists and downloaded packages.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
    tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
fi

# The host's value of pip setting $1: its PIP_ variable, else pip's config files (install section over global).
pip_setting() {
    local variable
    variable="PIP_$(tr 'a-z-' 'A-Z_' <<<"$1")"
    if [ -n "${!variable:-}" ]; then
        printf '%s\n' "${!variable}"
        return
    fi
    local config
    config=$("$PYTHON" -m pip config list 2>/dev/null || true)
    for section in install global; do
        sed -n "s/^$section\.$1='\(.*\)'$/\1/p" <<<"$config" | grep . && return
    done
    return 0
}

build_args=(--build-arg "BASE_IMAGE=$BASE")
mounts=()
system_bundle=/etc/ssl/certs/ca-certificates.crt
for setting in index-url extra-index-url find-links trusted-host cert; do
    value=$(pip_setting "$setting")
    # pip's own defaults, made explicit: api.dockerfile defaults to PyTorch's CPU index, and the two images share
    # their torch layer only when built from the same index.
    if [ "$setting" = index-url ] && [ -z "$value" ]; then
        value=https://pypi.org/simple
    elif [ "$setting" = cert ] && [ -z "$value" ] && [ -f "$system_bundle" ]; then
        value=$system_bundle
    fi
    [ -n "$value" ] || continue
    build_args+=(--build-arg "PIP_$(tr 'a-z-' 'A-Z_' <<<"$setting")=$value")
    for word in $value; do
        path=${word#file://}
        # A local index's pages (PATH/simple/NAME/) link to the files beside them (../../files/): its parent goes in.
        if [ "$word" != "$path" ] && [ "${setting%index-url}" != "$setting" ]; then
            path=$(dirname "$path")
        fi
        if [ "${path:0:1}" = / ] && [ -e "$path" ]; then
            mounts+=(--volume "$path:$path:ro")
        fi
    done
done
for image in train api; do
    started=$SECONDS
    buildah bud --quiet --layers --force-rm --isolation chroot --format docker "${build_args[@]}" "${mounts[@]}" \
        --file "dockerfiles/$image.dockerfile" --tag "mlproj-$image:local" . >/dev/null
    echo "mlproj-$image:local built in $((SECONDS - started)) s"
done
# The images these builds replaced, and the steps no image is built on any more (a changed lock leaves a layer of
# gigabytes): podman's dangling images. Each pass removes the newest of them, making their parents the next pass's.
while [ -n "$(podman image prune --force)" ]; do :; done
podman images --filter reference='localhost/mlproj-*' --format '{{.Repository}}:{{.Tag}}  {{.Size}}'
