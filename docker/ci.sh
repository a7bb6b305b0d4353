#!/usr/bin/env bash
# Build promptswap's CPU image and run its compose stacks for real. .ci/run calls it last; by hand,
# as root, once .venv exists (.ci/run makes it):  docker/ci.sh
#
#  1. a Docker engine: docker.io, docker-compose and debootstrap are installed when absent, and
#     dockerd is started when nothing answers;
#  2. base images: the official ones when a registry answers, else stand-ins built from Debian
#     packages (docker/standins/), which later runs reuse;
#  3. promptswap:cpu, built with this machine's CA bundle as the `ca_bundle` secret, and torch from
#     docker/wheelhouse/ when torch's index does not answer; build time and size are printed;
#  4. the same image built air-gapped, and docker/Dockerfile on plain Debian with CPU torch;
#  5. tests/deploy/test_stack_*.py against compose.cpu.yaml and compose.scale.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."

STANDIN=promptswap-standin
TORCH_VERSION=2.13.0
TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DOCKERD_LOG=/var/log/promptswap-dockerd.log
CI_CACHE=${PROMPTSWAP_CI_CACHE:-/var/cache/promptswap-ci}  # wheels and logs kept between runs

say() { printf '== docker: %s\n' "$*"; }

install_engine() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

start_engine() {
    if docker info >/dev/null 2>&1; then
        return
    fi
    say "starting dockerd (log: $DOCKERD_LOG)"
    setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local waited=0
    until docker info >/dev/null 2>&1; do
        if [ $waited -ge 120 ]; then
            tail -20 "$DOCKERD_LOG" >&2
            say "dockerd did not answer in 120 s"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

debian_mirror() {
    # The mirror apt itself reads bookworm from, else Debian's own.
    local mirror
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null |
        awk '$2 == "bookworm" { print $1; exit }')
    echo "${mirror:-http://deb.debian.org/debian/}"
}

build_standins() {
    local debian=$STANDIN/debian:bookworm
    if ! docker image inspect "$debian" >/dev/null 2>&1; then
        local root start=$SECONDS
        root=$(mktemp -d)
        debootstrap --variant=minbase bookworm "$root" "$(debian_mirror)" >/dev/null
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -c . | docker import - "$debian" >/dev/null
        rm -rf "$root"
        say "$debian from debootstrap: $((SECONDS - start)) s"
    fi
    local target start
    for target in python redis nginx; do
        start=$SECONDS
        docker build --quiet --network host --build-arg "DEBIAN_IMAGE=$debian" --target "$target" \
            --tag "$STANDIN/$target:bookworm" docker/standins >/dev/null
        say "$STANDIN/$target:bookworm: $((SECONDS - start)) s"
    done
}

choose_base_images() {
    # Sets the compose variables and build arguments that name the base images.
    if docker pull --quiet python:3.11-slim >/dev/null 2>&1; then
        say "a registry answers: official base images"
        return
    fi
    say "no registry answers: stand-in base images built from Debian packages"
    build_standins
    export PROMPTSWAP_DEBIAN_IMAGE=$STANDIN/debian:bookworm
    export PROMPTSWAP_PYTHON_IMAGE=$STANDIN/python:bookworm
    export PROMPTSWAP_REDIS_IMAGE=$STANDIN/redis:bookworm
    export PROMPTSWAP_NGINX_IMAGE=$STANDIN/nginx:bookworm
}

torch_source() {
    # Prints the TORCH_INDEX_URL build argument: torch's CPU index when it answers, else empty,
    # after putting the wheel this machine's pip finds into docker/wheelhouse/.
    if curl -sf --max-time 20 -o /dev/null "$TORCH_INDEX_URL/torch/"; then
        echo "$TORCH_INDEX_URL"
        return
    fi
    python -m pip download --quiet --no-deps --dest docker/wheelhouse "torch==$TORCH_VERSION" \
        >"$CI_CACHE/torch-download.log" 2>&1 || { cat "$CI_CACHE/torch-download.log" >&2; return 1; }
    echo ""
}

build_image() {
    local index=$1 start=$SECONDS
    say "building promptswap:cpu (torch from ${index:-docker/wheelhouse/})"
    docker build --progress plain --network host "${ca_secret[@]}" \
        --build-arg "PYTHON_IMAGE=${PROMPTSWAP_PYTHON_IMAGE:-python:3.11-slim}" \
        --build-arg "TORCH_INDEX_URL=$index" \
        --file docker/Dockerfile.cpu --tag promptswap:cpu . >"$CI_CACHE/build.log" 2>&1 ||
        { tail -40 "$CI_CACHE/build.log" >&2; return 1; }
    local size torch
    size=$(docker image inspect --format '{{.Size}}' promptswap:cpu)
    torch=$(docker run --rm --entrypoint python promptswap:cpu -c 'import torch; print(torch.__version__)')
    say "promptswap:cpu built in $((SECONDS - start)) s ($(grep -c ' CACHED$' "$CI_CACHE/build.log") steps cached):" \
        "$((size / 1000000)) MB, torch $torch"
}

build_offline_image() {
    # The same image built air-gapped: no network in the build, every wheel from docker/wheelhouse/
    # (filled by `docker/install.sh wheelhouse`). Built from a copy of the build context, so that the
    # online build's wheelhouse, and so its cached layers, stay as they are; the wheels are kept.
    local context=$CI_CACHE/offline-context start=$SECONDS
    mkdir -p "$CI_CACHE/wheelhouse"
    rm -rf "$context" && mkdir -p "$context"
    cp -r pyproject.toml README.md server prompt_store clients docker "$context"/
    cp -r "$CI_CACHE/wheelhouse" "$context/docker/"
    docker run --rm --network host --volume "$context:/src" --workdir /src --env "TORCH_INDEX_URL=$1" \
        "${ca_mount[@]}" --entrypoint sh "${PROMPTSWAP_PYTHON_IMAGE:-python:3.11-slim}" \
        docker/install.sh wheelhouse >"$CI_CACHE/wheelhouse.log" 2>&1 || { tail -20 "$CI_CACHE/wheelhouse.log" >&2; return 1; }
    cp -r "$context/docker/wheelhouse/." "$CI_CACHE/wheelhouse/"
    docker build --progress plain --network none --build-arg OFFLINE=1 \
        --build-arg "PYTHON_IMAGE=${PROMPTSWAP_PYTHON_IMAGE:-python:3.11-slim}" \
        --file docker/Dockerfile.cpu --tag promptswap:cpu-offline "$context" >"$CI_CACHE/offline-build.log" 2>&1 ||
        { tail -40 "$CI_CACHE/offline-build.log" >&2; return 1; }
    if ! diff <(installed promptswap:cpu) <(installed promptswap:cpu-offline) >&2; then
        say "the air-gapped build installed other packages than the online one"
        return 1
    fi
    say "promptswap:cpu-offline built with --network none in $((SECONDS - start)) s, $(du -sh "$CI_CACHE/wheelhouse" | cut -f1) of wheels:" \
        "the same packages as promptswap:cpu"
}

build_gpu_dockerfile() {
    # docker/Dockerfile without its CUDA base and CUDA torch, which no machine here reaches: on plain
    # Debian with torch's CPU build, so every step but those two runs (Python from apt included).
    local start=$SECONDS
    docker build --progress plain --network host "${ca_secret[@]}" \
        --build-arg "CUDA_IMAGE=${PROMPTSWAP_DEBIAN_IMAGE:-debian:bookworm-slim}" --build-arg "TORCH_INDEX_URL=$1" \
        --file docker/Dockerfile --tag promptswap:gpu-steps . >"$CI_CACHE/gpu-build.log" 2>&1 ||
        { tail -40 "$CI_CACHE/gpu-build.log" >&2; return 1; }
    docker run --rm --entrypoint promptswap promptswap:gpu-steps serve --help >/dev/null
    say "docker/Dockerfile on ${PROMPTSWAP_DEBIAN_IMAGE:-debian:bookworm-slim} with CPU torch: built in" \
        "$((SECONDS - start)) s, $(($(docker image inspect --format '{{.Size}}' promptswap:gpu-steps) / 1000000)) MB"
}

installed() {
    docker run --rm --network none --entrypoint pip "$1" freeze --all
}

if [ ! -x .venv/bin/python ]; then
    echo "docker/ci.sh: run .ci/run first (it makes .venv with the promptswap CLI and pytest)" >&2
    exit 2
fi
export PATH="$PWD/.venv/bin:$PATH"  # the promptswap CLI, pip and pytest
mkdir -p "$CI_CACHE"
started=$SECONDS
install_engine
start_engine
# Builds use BuildKit (secrets, cache and bind mounts). Without the buildx plugin, the engine
# package's own client (Debian's 20.10) still carries BuildKit itself.
export DOCKER_BUILDKIT=1
if ! docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then
    docker() { /usr/bin/docker "$@"; }
fi
say "$(docker version --format 'engine {{.Server.Version}}'), $(docker-compose version --short 2>/dev/null | sed 's/^/compose /')"
choose_base_images
# pip in the builds trusts what this machine trusts (a TLS-intercepting proxy's CA, for one).
ca_secret=() ca_mount=()
if [ -s "$CA_BUNDLE" ]; then
    ca_secret=(--secret "id=ca_bundle,src=$CA_BUNDLE")
    ca_mount=(--volume "$CA_BUNDLE:/run/secrets/ca_bundle:ro")
fi
torch_index=$(torch_source)
build_image "$torch_index"
build_offline_image "$torch_index"
build_gpu_dockerfile "$torch_index"
say "compose stacks"
PROMPTSWAP_STACK_TESTS=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
    python -m pytest -q -s -p no:cacheprovider tests/deploy/test_stack_cpu.py tests/deploy/test_stack_scale.py
say "done in $((SECONDS - started)) s"
