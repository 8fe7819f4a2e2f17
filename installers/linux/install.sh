#!/usr/bin/env bash
# Install the inspection station on an x86-64 Linux PC (Debian 12 / Ubuntu 24.04). See --help.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../common/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/lib.sh"

TORCH_VERSION=2.13.0

usage() {
    cat <<EOF
Usage: sudo installers/linux/install.sh [options]

Installs the inspection station on an x86-64 PC:
  - a virtual environment in PREFIX/venv,
  - torch==$TORCH_VERSION as the CPU wheel first (so nothing pulls a CUDA build), then the station,
  - with --with-tensorrt: TensorRT and pycuda (the 'tensorrt' extra) for an NVIDIA GPU,
  - USB3 Vision udev rules and the '$CAMERA_GROUP' group, the GenTL producer path,
  - the station as a systemd user unit in the kiosk user's graphical session, started at boot
    through GDM autologin and restarted on failure, plus XDG autostart for the touchscreen.
Running it again changes nothing unless something differs.

Options:
  --with-tensorrt   also install TensorRT + pycuda (needs the NVIDIA driver and CUDA toolkit)
  --user NAME       kiosk user, logged in automatically (default: station; created if missing)
  --prefix DIR      install prefix (default: /opt/station)
  --data-dir DIR    records, images and models (default: /var/lib/station)
  --no-kiosk        no autostart, no autologin (the unit is still installed)
  --no-autologin    keep the display manager's login screen
  --root DIR        write the files under DIR; skip packages, users, venv and services
  --dry-run         print every action instead of doing it
  --uninstall       remove what the installer added (keeps the user and the data)
  -h, --help        this text

Environment:
  PYTHON            interpreter for the venv (default: python3, must be 3.10+)
  TORCH_INDEX_URL   where the CPU wheel comes from (default: https://download.pytorch.org/whl/cpu)
  GENTL_PATH        GenTL producer directories (GENICAM_GENTL64_PATH), ':'-separated
  CUDA_ROOT         CUDA toolkit for building pycuda with --with-tensorrt (default: /usr/local/cuda)
EOF
}

# A dedicated unprivileged user: the touchscreen is logged in without a password.
STATION_USER=station
PREFIX=/opt/station
DATA_DIR=/var/lib/station
KIOSK=1
AUTOLOGIN=1
UNINSTALL=0
WITH_TENSORRT=0
PYTHON="${PYTHON:-python3}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
GENTL_PATH="${GENTL_PATH:-}"
CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"

while (($#)); do
    case $1 in
    --with-tensorrt) WITH_TENSORRT=1 ;;
    --user) STATION_USER=${2:?--user needs a name}; shift ;;
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift ;;
    --data-dir) DATA_DIR=${2:?--data-dir needs a directory}; shift ;;
    --root) ROOT=${2:?--root needs a directory}; shift ;;
    --no-kiosk) KIOSK=0 ;;
    --no-autologin) AUTOLOGIN=0 ;;
    --dry-run) DRY_RUN=1 ;;
    --uninstall) UNINSTALL=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done
VENV="$PREFIX/venv"

preflight() {
    require_root
    local arch=0 py=0 cuda=0
    [[ $(uname -m) == x86_64 ]] || arch=1
    require "$arch" "this installer is for x86-64 PCs; on a Jetson use installers/jetson/install.sh"
    if system_steps; then
        python_ok "$PYTHON" || py=1
        require "$py" "$PYTHON is not Python 3.10+; install python3.11 and set PYTHON=python3.11"
    fi
    if ((WITH_TENSORRT)) && system_steps; then
        # pycuda has no wheels: it compiles against the CUDA toolkit.
        command -v nvcc >/dev/null || [[ -x $CUDA_ROOT/bin/nvcc ]] || cuda=1
        require "$cuda" "--with-tensorrt needs the CUDA toolkit (nvcc) to build pycuda; install it or set CUDA_ROOT"
    fi
}

install_python_stack() {
    local extras=""
    ensure_venv "$PYTHON" "$VENV" 0
    if ! system_steps; then
        log "skipped (--root): torch and the station in $VENV"
        return 0
    fi
    # The CPU wheel before the station: pip then sees torch==$TORCH_VERSION satisfied and never
    # fetches PyPI's CUDA build with its gigabytes of nvidia-* wheels.
    if venv_check "$VENV" "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')"; then
        log "unchanged: torch $TORCH_VERSION in $VENV"
    else
        run "$VENV/bin/pip" install "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
    fi
    if ((WITH_TENSORRT)); then
        extras="[tensorrt]"
        if ! venv_check "$VENV" 'import pycuda.driver'; then
            # pycuda's build finds nvcc and the headers through these.
            run env "CUDA_ROOT=$CUDA_ROOT" "PATH=$CUDA_ROOT/bin:$PATH" \
                "$VENV/bin/pip" install --no-binary pycuda "pycuda>=2022.2"
        else
            log "unchanged: pycuda in $VENV"
        fi
    fi
    ensure_station "$VENV" "$extras" 0
}

do_install() {
    preflight
    log "== packages"
    # QT_XCB_PACKAGES (lib.sh): what Qt on X11 needs beside the PySide6 wheels; poppler-utils:
    # pdftoppm, the History page's preview of a shift report.
    local packages=(python3-venv udev poppler-utils "${QT_XCB_PACKAGES[@]}")
    ((WITH_TENSORRT)) && packages+=(python3-dev build-essential)
    ensure_packages "${packages[@]}"
    install_station
}

main_dispatch
