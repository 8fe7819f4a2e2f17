#!/usr/bin/env bash
# Install the inspection station on an NVIDIA Jetson with JetPack 6 (Orin). See --help.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../common/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common/lib.sh"

usage() {
    cat <<EOF
Usage: sudo installers/jetson/install.sh [options]

Installs the inspection station on a Jetson with JetPack 6:
  - TensorRT and CUDA from JetPack (apt python3-libnvinfer), pycuda built against them,
  - a virtual environment in PREFIX/venv created with --system-site-packages so it sees them,
  - PyTorch for Jetson (NVIDIA's CUDA build, never the PyPI wheel), then the station,
  - USB3 Vision udev rules and the '$CAMERA_GROUP' group, the GenTL producer path,
  - the station as a systemd user unit in the kiosk user's graphical session, started at boot
    through GDM autologin and restarted on failure, plus XDG autostart for the touchscreen.
Running it again changes nothing unless something differs.

Options:
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
  PYTHON            interpreter for the venv (default: python3, JetPack 6's 3.10; must be
                    3.10+ and match the TensorRT Python bindings)
  TORCH_WHEEL_URL   PyTorch wheel for this JetPack (default: NVIDIA's JetPack 6.1/6.2 build,
                    $DEFAULT_TORCH_WHEEL_URL)
  TORCH_INDEX_URL   used instead when TORCH_WHEEL_URL is empty, e.g. the Jetson AI Lab index
                    https://pypi.jetson-ai-lab.io/jp6/cu126
  TRT_WHEEL         TensorRT Python wheel to pip install into the venv instead of using the
                    system bindings (for a PYTHON other than JetPack's)
  GENTL_PATH        GenTL producer directories (GENICAM_GENTL64_PATH), ':'-separated
  CUDA_ROOT         CUDA toolkit for building pycuda (default: /usr/local/cuda)
EOF
}

# NVIDIA's documented PyTorch for JetPack 6.1/6.2 (CUDA 12.6, Python 3.10):
# https://docs.nvidia.com/deeplearning/frameworks/install-pytorch-jetson-platform/
DEFAULT_TORCH_WHEEL_URL="https://developer.download.nvidia.com/compute/redist/jp/v61/pytorch/torch-2.5.0a0+872d972e41.nv24.08.17622132-cp310-cp310-linux_aarch64.whl"

# A dedicated unprivileged user: the touchscreen is logged in without a password.
STATION_USER=station
PREFIX=/opt/station
DATA_DIR=/var/lib/station
KIOSK=1
AUTOLOGIN=1
UNINSTALL=0
PYTHON="${PYTHON:-python3}"
TORCH_WHEEL_URL="${TORCH_WHEEL_URL-$DEFAULT_TORCH_WHEEL_URL}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
TRT_WHEEL="${TRT_WHEEL:-}"
GENTL_PATH="${GENTL_PATH:-}"
CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"

while (($#)); do
    case $1 in
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
    # Under --root the target is an image tree, not this machine: nothing here to check.
    system_steps || return 0
    local is_jetson=1 jetpack6=1 py=0
    [[ -f /etc/nv_tegra_release ]] && is_jetson=0
    require "$is_jetson" "not a Jetson: /etc/nv_tegra_release is missing (use installers/linux/install.sh on a PC)"
    # JetPack 6 is L4T R36.
    grep -q '^# R36' /etc/nv_tegra_release 2>/dev/null && jetpack6=0
    require "$jetpack6" "JetPack 6 (L4T R36) expected; found: $(head -c 40 /etc/nv_tegra_release 2>/dev/null || echo none)"
    python_ok "$PYTHON" || py=1
    require "$py" "$PYTHON is not Python 3.10+ (JetPack 6 ships 3.10): set PYTHON to JetPack's python3"
}

install_python_stack() {
    ensure_venv "$PYTHON" "$VENV" 1
    if ! system_steps; then
        log "skipped (--root): torch, TensorRT, pycuda and the station in $VENV"
        return 0
    fi

    # PyTorch first: the station's torch pin must find a CUDA build already there.
    if venv_check "$VENV" 'import torch, sys; sys.exit(not torch.version.cuda)'; then
        log "unchanged: PyTorch (CUDA build) in $VENV"
    elif [[ -n $TORCH_WHEEL_URL ]]; then
        run "$VENV/bin/pip" install "$TORCH_WHEEL_URL"
    elif [[ -n $TORCH_INDEX_URL ]]; then
        run "$VENV/bin/pip" install torch --index-url "$TORCH_INDEX_URL"
    else
        die "set TORCH_WHEEL_URL or TORCH_INDEX_URL to a PyTorch build for this JetPack"
    fi

    # TensorRT: JetPack's bindings through --system-site-packages, or a wheel for this Python.
    if venv_check "$VENV" 'import tensorrt'; then
        log "unchanged: TensorRT visible in $VENV"
    elif [[ -n $TRT_WHEEL ]]; then
        run "$VENV/bin/pip" install "$TRT_WHEEL"
    elif ((DRY_RUN)); then
        log "check: TensorRT importable in $VENV (from python3-libnvinfer)"
    else
        die "TensorRT is not importable from $VENV: python3-libnvinfer is for the system Python; set TRT_WHEEL to a TensorRT wheel for $PYTHON"
    fi

    # pycuda compiles against the JetPack CUDA toolkit (the Ubuntu python3-pycuda package
    # would pull Ubuntu's CUDA and clash with JetPack's).
    if venv_check "$VENV" 'import pycuda.driver'; then
        log "unchanged: pycuda in $VENV"
    else
        run env "CUDA_ROOT=$CUDA_ROOT" "PATH=$CUDA_ROOT/bin:$PATH" \
            "$VENV/bin/pip" install --no-binary pycuda "pycuda>=2022.2"
    fi

    # The station with its dependencies except torch (kept: NVIDIA's build).
    ensure_station "$VENV" "" 1
}

do_install() {
    preflight
    log "== packages"
    # python3-libnvinfer: TensorRT's Python bindings from JetPack; QT_XCB_PACKAGES (lib.sh):
    # what Qt on X11 needs beside the PySide6 wheels; poppler-utils: pdftoppm, the History
    # page's preview of a shift report.
    ensure_packages python3-venv python3-dev build-essential python3-libnvinfer udev poppler-utils \
        "${QT_XCB_PACKAGES[@]}"
    install_station
}

main_dispatch
