#!/usr/bin/env bash
# Install edge-agent as a systemd service on Raspberry Pi OS / Debian.
#
#   sudo deploy/install.sh                 # install or upgrade, enable and (re)start
#   sudo deploy/install.sh --no-enable     # install only
#   sudo deploy/install.sh --uninstall [--purge]
#   deploy/install.sh --root /tmp/r --no-enable   # stage into a directory (tests)
#
# Layout: /opt/edge-agent/{venv,models,docs}, /etc/edge-agent/agent.yaml (never
# overwritten; the shipped version is put beside it as agent.yaml.dist),
# /etc/edge-agent/credentials/ (0700), /etc/systemd/system/edge-agent.service.
# pip honours its usual PIP_* variables (PIP_INDEX_URL, PIP_NO_INDEX, ...).
# Safe to run again: every step converges to the same result.
set -euo pipefail

readonly UNIT_NAME=edge-agent.service
readonly CREDENTIALS=(mqtt_password mqtt_client_key cloud_token)

usage() {
    cat <<'EOF'
Usage: install.sh [options]
  --root DIR      install below DIR instead of / (staging, tests); never touches systemd
  --source DIR    the edge-agent source tree to install (default: this script's repo)
  --python PY     interpreter for the venv, >= 3.10 (default: python3)
  --no-enable     do not enable/start the service
  --uninstall     remove the service, venv and models; keep /etc/edge-agent
  --purge         with --uninstall: also remove /etc/edge-agent and the state directory
  -h, --help      this help
EOF
}

log() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

ROOT=/
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=python3
ENABLE=1
UNINSTALL=0
PURGE=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --source) SOURCE="${2:?--source needs a directory}"; shift 2 ;;
        --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
        --no-enable) ENABLE=0; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
[[ $PURGE -eq 0 || $UNINSTALL -eq 1 ]] || die "--purge only goes with --uninstall"
[[ -d "$SOURCE" ]] || die "--source $SOURCE is not a directory"
SOURCE="$(cd "$SOURCE" && pwd)" # pip takes a bare relative name for a package name

mkdir -p "$ROOT"
ROOT="$(cd "$ROOT" && pwd)"
ROOT="${ROOT%/}" # "" for /, so "$ROOT/opt" is /opt
if [[ -z "$ROOT" && $EUID -ne 0 ]]; then
    die "installing into / needs root (sudo), or use --root DIR"
fi

readonly PREFIX="$ROOT/opt/edge-agent"
readonly VENV="$PREFIX/venv"
readonly MODELS="$PREFIX/models"
readonly ETC="$ROOT/etc/edge-agent"
readonly UNIT="$ROOT/etc/systemd/system/$UNIT_NAME"
# Where the service sees the models (no $ROOT: this goes into the config).
readonly INSTALLED_MODELS=/opt/edge-agent/models

# systemd is managing this machine, and we install into it.
live_systemd() { [[ -z "$ROOT" && -d /run/systemd/system ]]; }

systemctl_or_say() {
    if live_systemd; then
        log "systemctl $*"
        systemctl "$@"
    else
        log "would run: systemctl $*"
    fi
}

uninstall() {
    if live_systemd; then
        systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
    else
        log "would run: systemctl disable --now $UNIT_NAME"
    fi
    rm -f "$UNIT"
    systemctl_or_say daemon-reload
    rm -rf "$PREFIX"
    if [[ $PURGE -eq 1 ]]; then
        rm -rf "$ETC" "$ROOT/var/lib/edge-agent" "$ROOT/var/lib/private/edge-agent"
        log "removed $PREFIX, $ETC and the state directory"
    else
        log "removed $PREFIX and the unit; kept $ETC (--purge removes it)"
    fi
}

check_source() {
    [[ -f "$SOURCE/pyproject.toml" ]] || die "no pyproject.toml in --source $SOURCE"
    [[ -f "$SOURCE/deploy/$UNIT_NAME" ]] || die "no deploy/$UNIT_NAME in $SOURCE"
    command -v "$PYTHON" >/dev/null || die "python not found: $PYTHON"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        die "$PYTHON is older than 3.10"
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
        die "$PYTHON cannot create venvs: apt-get install python3-venv"
}

install_venv() {
    # Recreate a venv whose interpreter went away (e.g. after a Python upgrade).
    if [[ -e "$VENV" ]] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
        log "venv at $VENV is broken, recreating it"
        rm -rf "$VENV"
    fi
    if [[ ! -e "$VENV" ]]; then
        log "creating venv $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    log "installing $SOURCE into the venv"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --upgrade "$SOURCE"
    [[ -x "$VENV/bin/edge-agent" ]] || die "the package did not install an edge-agent command"
}

install_models() {
    if [[ ! -d "$SOURCE/models" ]]; then
        log "no models/ in $SOURCE, skipping models"
        return
    fi
    # Runtime artifacts only: the training code under models/ stays in the repo.
    # Replaced whole on every run: /opt belongs to the package, not to the user.
    local staging="$MODELS.new"
    rm -rf "$staging"
    cp -R "$SOURCE/models" "$staging"
    find "$staging" \( -name '__pycache__' -o -name '.*' \) -prune -exec rm -rf {} +
    find "$staging" -type f \( -name '*.py' -o -name '*.pyc' \) -delete
    find "$staging" -mindepth 1 -type d -empty -delete
    chmod -R u=rwX,go=rX "$staging"
    rm -rf "$MODELS"
    mv "$staging" "$MODELS"
    log "models copied to $MODELS"
}

# The shipped config says `models.dir: ../models` (the repo layout; relative paths
# resolve against the config file). Installed, the models live in $INSTALLED_MODELS.
# Sets `dir:` in the top-level `models:` block (replaced, or added with the block's
# indentation), keeping every other line and comment as it is.
set_models_dir() {
    awk -v dir="$INSTALLED_MODELS" '
        function flush(    i, at, indent) {
            at = 0; indent = "  "
            for (i = 1; i <= n; i++) {
                if (!at && buf[i] ~ /^[[:space:]]+dir:/) at = i
                if (indent == "  " && match(buf[i], /^[[:space:]]+[^[:space:]#]/)) {
                    indent = substr(buf[i], 1, RLENGTH - 1)
                }
            }
            if (at) match(buf[at], /^[[:space:]]+/)
            if (at) indent = substr(buf[at], 1, RLENGTH)
            if (!at) print indent "dir: " dir
            for (i = 1; i <= n; i++) print (i == at ? indent "dir: " dir : buf[i])
            n = 0; block = 0
        }
        block && /^[^[:space:]#]/ { flush() }
        block { buf[++n] = $0; next }
        /^models:[[:space:]]*(#.*)?$/ { print; block = 1; seen = 1; next }
        { print }
        END {
            if (block) flush()
            if (!seen) print "models:\n  dir: " dir
        }
    ' "$1"
}

install_profiles() {
    # Device profiles are data the agent reads at start-up; it looks for them beside the
    # venv ($PREFIX/devices/profiles) when it is not run from a source tree.
    if [[ -d "$SOURCE/devices/profiles" ]]; then
        rm -rf "$PREFIX/devices"
        install -d -m 0755 "$PREFIX/devices"
        cp -R "$SOURCE/devices/profiles" "$PREFIX/devices/profiles"
        [[ -f "$SOURCE/devices/example.yaml" ]] && install -m 0644 "$SOURCE/devices/example.yaml" "$PREFIX/devices/example.yaml"
        chmod -R u=rwX,go=rX "$PREFIX/devices"
        log "device profiles copied to $PREFIX/devices/profiles"
    fi
}

install_config() {
    # World-readable on purpose: DynamicUser= reads it. Secrets never go in it.
    install -d -m 0755 "$ETC"
    if [[ -f "$SOURCE/deploy/agent.yaml" ]]; then
        # The repo config points at ../models; the installed one at the installed models.
        set_models_dir "$SOURCE/deploy/agent.yaml" >"$ETC/agent.yaml.dist.tmp"
        chmod 0644 "$ETC/agent.yaml.dist.tmp"
        mv "$ETC/agent.yaml.dist.tmp" "$ETC/agent.yaml.dist"
        if [[ -e "$ETC/agent.yaml" ]]; then
            log "keeping existing $ETC/agent.yaml (new default: agent.yaml.dist)"
        else
            cp -p "$ETC/agent.yaml.dist" "$ETC/agent.yaml"
            log "installed $ETC/agent.yaml (models.dir: $INSTALLED_MODELS)"
        fi
    else
        log "no deploy/agent.yaml in $SOURCE, not installing a config"
    fi

    # PID 1 copies these into $CREDENTIALS_DIRECTORY (LoadCredential=); a missing
    # file would stop the unit from starting, so unused ones exist and stay empty.
    install -d -m 0700 "$ETC/credentials"
    local name
    for name in "${CREDENTIALS[@]}"; do
        if [[ ! -e "$ETC/credentials/$name" ]]; then
            install -m 0600 /dev/null "$ETC/credentials/$name"
        fi
    done
}

install_unit() {
    install -d -m 0755 "$(dirname "$UNIT")"
    install -m 0644 "$SOURCE/deploy/$UNIT_NAME" "$UNIT"
    if [[ -f "$SOURCE/docs/service.md" ]]; then
        install -D -m 0644 "$SOURCE/docs/service.md" "$PREFIX/docs/service.md"
    fi
    log "installed $UNIT"
}

start_service() {
    systemctl_or_say daemon-reload
    if [[ $ENABLE -eq 1 ]]; then
        systemctl_or_say enable "$UNIT_NAME"
        systemctl_or_say restart "$UNIT_NAME"
    else
        # An upgrade of a running agent still takes effect.
        systemctl_or_say try-restart "$UNIT_NAME"
    fi
}

main() {
    umask 022
    if [[ $UNINSTALL -eq 1 ]]; then
        uninstall
        return
    fi
    check_source
    install -d -m 0755 "$PREFIX"
    install_venv
    install_models
    install_profiles
    install_config
    install_unit
    start_service
    log "done. Put secrets in $ETC/credentials/ and check: edge-agent check-config -c /etc/edge-agent/agent.yaml"
}

main
