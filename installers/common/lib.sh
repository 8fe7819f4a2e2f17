# shellcheck shell=bash
# Shared by installers/jetson/install.sh and installers/linux/install.sh; sourced, not run.
#
# Rules every step follows:
# - every side effect goes through `run`, which prints instead of acting under --dry-run;
# - every step checks the current state first and acts only on a difference, so a second run
#   changes nothing (and says "0 changes");
# - with --root DIR, files are written under DIR and package/user/service steps are skipped
#   (to prepare an image tree, and to test the file steps without touching the system).

COMMON_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$COMMON_DIR/../.." && pwd)"

DRY_RUN=0
ROOT=""
CHANGES=0
CAMERA_GROUP="station-camera"  # must match installers/common/99-usb3vision.rules

log() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Print a command (shell-quoted, "+ " first) and execute it, or under --dry-run only print it.
# Multi-line arguments (file contents) are summarised so each action stays on one line.
run() {
    local arg out="+"
    CHANGES=$((CHANGES + 1))
    for arg in "$@"; do
        if [[ $arg == *$'\n'* ]]; then
            out+=" <$(printf '%s\n' "$arg" | wc -l) lines>"
        else
            out+=" $(printf '%q' "$arg")"
        fi
    done
    printf '%s\n' "$out"
    if ((DRY_RUN)); then
        return 0
    fi
    "$@"
}

# True when package, user and service steps apply (not under --root).
system_steps() { [[ -z $ROOT ]]; }

# The preflight rule: refuse, except under --dry-run where a preview must work anywhere.
require() {
    local ok=$1 message=$2
    if [[ $ok != 0 ]]; then
        if ((DRY_RUN)); then
            warn "$message (continuing: dry run)"
        else
            die "$message"
        fi
    fi
}

require_root() {
    if system_steps && ((EUID != 0)) && ((!DRY_RUN)); then
        die "run as root (sudo $0 ...), or preview with --dry-run"
    fi
}

# -- templates and files ----------------------------------------------------------------------

# render TEMPLATE KEY=VALUE...: the template with every @KEY@ replaced (pure bash, no escaping).
render() {
    local text pair
    text="$(<"$1")"
    shift
    for pair in "$@"; do
        text="${text//@${pair%%=*}@/${pair#*=}}"
    done
    printf '%s\n' "$text"
}

# write_file DEST MODE OWNER CONTENT: atomic write (temp file + rename in the same directory).
write_file() {
    local dest=$1 mode=$2 owner=$3 content=$4 tmp
    mkdir -p "$(dirname "$dest")"
    tmp="$(mktemp "$dest.XXXXXX")"
    printf '%s\n' "$content" >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -n $owner ]]; then
        chown "$owner" "$tmp"
    fi
    mv -f "$tmp" "$dest"
}

# ensure_file DEST MODE OWNER CONTENT: write only if content, mode or owner differ.
# Sets FILE_CHANGED=1 when it wrote. DEST is a system path; --root is prepended here.
ensure_file() {
    local dest="$ROOT$1" mode=$2 owner=$3 content=$4
    FILE_CHANGED=0
    system_steps || owner=""  # users named for the target system may not exist here
    if [[ -f $dest ]] && cmp -s "$dest" <(printf '%s\n' "$content") &&
        [[ $(stat -c %a "$dest") == "${mode#0}" ]] &&
        { [[ -z $owner ]] || [[ $(stat -c %U:%G "$dest") == "$owner" ]]; }; then
        log "unchanged: $dest"
        return 0
    fi
    FILE_CHANGED=1
    run write_file "$dest" "$mode" "$owner" "$content"
}

# ensure_dir DIR MODE OWNER
ensure_dir() {
    local dir="$ROOT$1" mode=$2 owner=$3
    system_steps || owner=""
    if [[ -d $dir ]] && [[ $(stat -c %a "$dir") == "${mode#0}" ]] &&
        { [[ -z $owner ]] || [[ $(stat -c %U:%G "$dir") == "$owner" ]]; }; then
        log "unchanged: $dir/"
        return 0
    fi
    if [[ -n $owner ]]; then
        run install -d -m "$mode" -o "${owner%%:*}" -g "${owner#*:}" "$dir"
    else
        run install -d -m "$mode" "$dir"
    fi
}

# ensure_user_dir DIR OWNER: create a directory in a home if missing; an existing one keeps its
# mode and owner (a user's ~/.config is often 0700 on purpose).
ensure_user_dir() {
    local dir="$ROOT$1" owner=$2
    system_steps || owner=""
    if [[ -d $dir ]]; then
        log "unchanged: $dir/"
    elif [[ -n $owner ]]; then
        run install -d -m 0755 -o "${owner%%:*}" -g "${owner#*:}" "$dir"
    else
        run install -d -m 0755 "$dir"
    fi
}

# ensure_symlink TARGET LINK OWNER: LINK (a system path) points at TARGET.
ensure_symlink() {
    local target=$1 link="$ROOT$2" owner=$3
    system_steps || owner=""
    if [[ -L $link ]] && [[ $(readlink "$link") == "$target" ]]; then
        log "unchanged: $link -> $target"
        return 0
    fi
    if [[ ! -d $(dirname "$link") ]]; then
        if [[ -n $owner ]]; then
            run install -d -m 0755 -o "${owner%%:*}" -g "${owner#*:}" "$(dirname "$link")"
        else
            run install -d -m 0755 "$(dirname "$link")"
        fi
    fi
    run ln -sfn "$target" "$link"
    if [[ -n $owner ]]; then
        run chown -h "$owner" "$link"
    fi
}

# remove_path PATH...: delete what exists (files, links, directory trees); say what is absent.
remove_path() {
    local path
    for path in "$@"; do
        path="$ROOT$path"
        if [[ -e $path || -L $path ]]; then
            run rm -rf -- "$path"
        else
            log "absent: $path"
        fi
    done
}

# -- packages, users, groups ------------------------------------------------------------------

# What Qt's X11 platform plugin (xcb) loads and the PySide6 wheels do not bundle; without one of
# them the window aborts under X with "Could not load the Qt platform plugin xcb" (naming none
# of these). Read off `ldd` of the plugin on Debian 12; the README lists the same.
# shellcheck disable=SC2034  # used by the installers that source this file
QT_XCB_PACKAGES=(
    libdbus-1-3 libegl1 libfontconfig1 libgl1 libglib2.0-0 libx11-xcb1 libxcb-cursor0
    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
    libxcb-shape0 libxcb-sync1 libxcb-xfixes0 libxcb-xkb1 libxkbcommon-x11-0
)

package_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

# ensure_packages PKG...: apt-get install only the missing ones.
ensure_packages() {
    local pkg missing=()
    if ! system_steps; then
        log "skipped (--root): apt packages $*"
        return 0
    fi
    for pkg in "$@"; do
        package_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        log "unchanged: packages $*"
        return 0
    fi
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

ensure_group() {
    if ! system_steps; then
        log "skipped (--root): group $1"
    elif getent group "$1" >/dev/null; then
        log "unchanged: group $1"
    else
        run groupadd --system "$1"
    fi
}

# ensure_user NAME GROUP...: the kiosk user exists and belongs to the groups.
ensure_user() {
    local name=$1 group have
    shift
    if ! system_steps; then
        log "skipped (--root): user $name in $*"
        return 0
    fi
    if ! id "$name" >/dev/null 2>&1; then
        run useradd --create-home --shell /bin/bash --groups "$(
            IFS=,
            printf '%s' "$*"
        )" "$name"
        return 0
    fi
    have=" $(id -nG "$name") "
    for group in "$@"; do
        if [[ $have == *" $group "* ]]; then
            log "unchanged: $name in group $group"
        else
            run usermod -aG "$group" "$name"
        fi
    done
}

# The home directory of a user (of the target system: /home/NAME when it does not exist yet).
user_home() {
    local home
    home="$(getent passwd "$1" | cut -d: -f6)"
    printf '%s\n' "${home:-/home/$1}"
}

# -- Python environment -----------------------------------------------------------------------

# python_ok PYTHON: the interpreter exists and is 3.10 or newer (pyproject's requires-python).
python_ok() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1
}

# venv_check VENV CODE: the venv's python runs CODE successfully (false when no venv yet).
venv_check() {
    [[ -x $1/bin/python ]] && "$1/bin/python" -c "$2" >/dev/null 2>&1
}

# ensure_venv PYTHON VENV SYSTEM_SITE(0|1)
ensure_venv() {
    local python=$1 venv=$2 system_site=$3 cfg want
    want=false
    ((system_site)) && want=true
    if ! system_steps; then
        log "skipped (--root): virtual environment $venv"
        return 0
    fi
    if [[ ! -x $venv/bin/python ]]; then
        if ((system_site)); then
            run "$python" -m venv --system-site-packages "$venv"
        else
            run "$python" -m venv "$venv"
        fi
        return 0
    fi
    cfg="$venv/pyvenv.cfg"
    if grep -qx "include-system-site-packages = $want" "$cfg"; then
        log "unchanged: $venv"
    else
        run sed -i "s/^include-system-site-packages = .*/include-system-site-packages = $want/" "$cfg"
    fi
}

# Hash of what `pip install REPO` would install, plus the extras: the station is reinstalled
# only when this changes (pip would otherwise rebuild and reinstall it on every run).
source_stamp() {
    local extras=$1
    {
        printf 'extras=%s\n' "$extras"
        (cd "$REPO_DIR" && find pyproject.toml station configs -type f \
            \( -name '*.py' -o -name '*.toml' -o -name '*.typed' -o -name '*.json' \) -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -d' ' -f1
}

# ensure_station VENV EXTRAS NO_TORCH(0|1): pip install the repo unless already at this source.
# NO_TORCH=1 installs the dependencies except torch, then the station with --no-deps, so a
# platform torch build (Jetson) is never replaced by a PyPI wheel through the torch== pin.
ensure_station() {
    local venv=$1 extras=$2 no_torch=$3 stamp_file stamp deps
    stamp_file="$venv/.station-source"
    stamp="$(source_stamp "$extras")"
    if ! system_steps; then
        log "skipped (--root): pip install $REPO_DIR$extras"
        return 0
    fi
    if [[ -f $stamp_file ]] && [[ $(<"$stamp_file") == "$stamp" ]] &&
        venv_check "$venv" 'import station'; then
        log "unchanged: station in $venv"
        return 0
    fi
    if ((no_torch)); then
        # Read the dependency list with the venv's own Python: tomllib on 3.11+, tomli on 3.10.
        venv_check "$venv" 'import tomllib' || venv_check "$venv" 'import tomli' ||
            run "$venv/bin/pip" install "tomli>=2"
        deps="$(python3_deps_without_torch "$venv")"
        # shellcheck disable=SC2086 # one requirement per word, none contain spaces
        run "$venv/bin/pip" install $deps
        run "$venv/bin/pip" install --no-deps "$REPO_DIR$extras"
    else
        run "$venv/bin/pip" install "$REPO_DIR$extras"
    fi
    run write_file "$stamp_file" 0644 "" "$stamp"
}

# The project's dependencies minus torch, one per word (placeholder when no venv exists yet).
python3_deps_without_torch() {
    local venv=$1
    if [[ ! -x $venv/bin/python ]]; then
        printf '%s\n' "<dependencies-of-pyproject.toml-except-torch>"
        return 0
    fi
    "$venv/bin/python" - "$REPO_DIR/pyproject.toml" <<'EOF'
import re, sys
try:
    import tomllib
except ImportError:  # Python 3.10 (JetPack 6)
    import tomli as tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print(" ".join(d.replace(" ", "") for d in deps if re.split(r"[<>=!~\[; ]", d)[0] != "torch"))
EOF
}

# -- kiosk, camera and service files (both installers) ----------------------------------------

# install_system_files PREFIX VENV USER DATA_DIR GENTL_PATH KIOSK(0|1) AUTOLOGIN(0|1)
install_system_files() {
    local prefix=$1 venv=$2 user=$3 data_dir=$4 gentl=$5 kiosk=$6 autologin=$7
    local home env_text owner udev_changed=0 unit_changed=0
    home="$(user_home "$user")"
    owner="$user:$user"

    # Environment for the service and for login shells: one file, two readers.
    env_text="# Written by the station installer; read by station.service and /etc/profile.d/station.sh."
    env_text+=$'\n'"STATION_DATA_DIR=$data_dir"
    if [[ -n $gentl ]]; then
        env_text+=$'\n'"GENICAM_GENTL64_PATH=$gentl"
    else
        env_text+=$'\n'"# GENICAM_GENTL64_PATH unset: set GENTL_PATH when installing, or list .cti files in the config"
    fi
    ensure_file /etc/default/station 0644 root:root "$env_text"
    ensure_file /etc/profile.d/station.sh 0644 root:root "$(render "$COMMON_DIR/station-profile.sh")"

    # USB3 Vision cameras: group-accessible device nodes, larger USB buffers.
    ensure_file /etc/udev/rules.d/99-usb3vision.rules 0644 root:root "$(<"$COMMON_DIR/99-usb3vision.rules")"
    udev_changed=$FILE_CHANGED

    ensure_file "$prefix/README.md" 0644 root:root "$(<"$COMMON_DIR/../README.md")"
    ensure_file /etc/systemd/user/station.service 0644 root:root \
        "$(render "$COMMON_DIR/station.service" "STATION_BIN=$venv/bin/station" "PREFIX=$prefix")"
    unit_changed=$FILE_CHANGED

    if ((kiosk)); then
        ensure_file "$prefix/bin/station-kiosk-session" 0755 root:root "$(<"$COMMON_DIR/station-kiosk-session")"
        ensure_user_dir "$home/.config" "$owner"
        ensure_user_dir "$home/.config/autostart" "$owner"
        ensure_file "$home/.config/autostart/station-kiosk.desktop" 0644 "$owner" \
            "$(render "$COMMON_DIR/station-kiosk.desktop" "PREFIX=$prefix")"
        # Enabled for the kiosk user only (systemctl --global would start it for every user).
        ensure_user_dir "$home/.config/systemd" "$owner"
        ensure_user_dir "$home/.config/systemd/user" "$owner"
        ensure_symlink /etc/systemd/user/station.service \
            "$home/.config/systemd/user/graphical-session.target.wants/station.service" "$owner"
        if ((autologin)); then
            ensure_gdm_autologin "$user"
        fi
    fi

    if system_steps && ((udev_changed)); then
        run udevadm control --reload-rules
        run udevadm trigger --subsystem-match=usb --action=change
    fi
    if system_steps && ((unit_changed)) && user_manager_running "$user"; then
        run systemctl --user -M "$user@" daemon-reload
    fi
}

user_manager_running() {
    local uid
    uid="$(id -u "$1" 2>/dev/null)" || return 1
    [[ -S /run/user/$uid/systemd/private ]]
}

GDM_CONF=/etc/gdm3/custom.conf
GDM_MARK="# station kiosk autologin (remove with install.sh --uninstall)"
GDM_SAVED="#station-saved: "

# GDM logs the kiosk user in at boot, which starts the graphical session and station.service.
ensure_gdm_autologin() {
    local user=$1 conf="$ROOT$GDM_CONF"
    if [[ ! -f $conf ]]; then
        log "skipped: no $conf (not GDM); configure autologin for $user in your display manager"
        return 0
    fi
    if grep -qxF "$GDM_MARK" "$conf" && grep -qx "AutomaticLogin=$user" "$conf" &&
        grep -qx "AutomaticLoginEnable=true" "$conf"; then
        log "unchanged: $conf autologin for $user"
        return 0
    fi
    # Drop our earlier block, park any other active autologin lines (restored by --uninstall),
    # and add ours right after [daemon].
    run sed -i \
        -e "/^$GDM_MARK\$/{N;N;d}" \
        -e "s/^\(AutomaticLogin\(Enable\)\?=.*\)\$/$GDM_SAVED\1/" \
        -e "/^\[daemon\]/a $GDM_MARK\nAutomaticLoginEnable=true\nAutomaticLogin=$user" "$conf"
}

remove_gdm_autologin() {
    local conf="$ROOT$GDM_CONF"
    if [[ -f $conf ]] && grep -qxF "$GDM_MARK" "$conf"; then
        # Our marker and the two lines after it are ours; parked lines come back.
        run sed -i -e "/^$GDM_MARK\$/{N;N;d}" -e "s/^$GDM_SAVED//" "$conf"
    else
        log "absent: station autologin in $conf"
    fi
}

# uninstall_common PREFIX USER DATA_DIR: remove everything install_system_files and the
# environment steps created; keep the user, the group and the data (inspection records).
uninstall_common() {
    local prefix=$1 user=$2 data_dir=$3 home udev_present=0
    # The prefix is deleted whole: refuse a prefix that is a system directory.
    case ${prefix%/} in
    "" | /usr | /usr/local | /opt | /home | /etc | /var | /root | /srv)
        die "refusing to remove --prefix '$prefix': not a station-only directory"
        ;;
    esac
    home="$(user_home "$user")"
    if system_steps && user_manager_running "$user"; then
        run systemctl --user -M "$user@" stop station.service
    fi
    [[ -e $ROOT/etc/udev/rules.d/99-usb3vision.rules ]] && udev_present=1
    remove_path \
        "$home/.config/systemd/user/graphical-session.target.wants/station.service" \
        "$home/.config/autostart/station-kiosk.desktop" \
        /etc/systemd/user/station.service \
        /etc/udev/rules.d/99-usb3vision.rules \
        /etc/profile.d/station.sh \
        /etc/default/station \
        "$prefix"
    remove_gdm_autologin
    if system_steps && ((udev_present)); then
        run udevadm control --reload-rules
    fi
    if system_steps && user_manager_running "$user"; then
        run systemctl --user -M "$user@" daemon-reload
    fi
    log "kept: user $user, group $CAMERA_GROUP and the data in $data_dir (delete by hand if wanted)"
}

finish() {
    if ((DRY_RUN)); then
        log "dry run: $CHANGES action(s) would run; nothing was changed"
    else
        log "done: $CHANGES change(s)"
    fi
}

# The steps after the system packages, the same on every platform. The calling installer defines
# install_python_stack and the globals (PREFIX, VENV, DATA_DIR, STATION_USER, CAMERA_GROUP, ...).
# shellcheck disable=SC2153  # the globals are set by the installer that sources this file
install_station() {
    log "== user and groups"
    ensure_group "$CAMERA_GROUP"
    # video: GPU device nodes (Jetson) and cameras; the camera group: USB3 Vision devices.
    ensure_user "$STATION_USER" video "$CAMERA_GROUP"
    log "== directories"
    ensure_dir "$PREFIX" 0755 root:root
    ensure_dir "$PREFIX/bin" 0755 root:root
    ensure_dir "$DATA_DIR" 0750 "$STATION_USER:$STATION_USER"
    log "== python environment"
    install_python_stack
    log "== service, kiosk, cameras"
    install_system_files "$PREFIX" "$VENV" "$STATION_USER" "$DATA_DIR" "$GENTL_PATH" "$KIOSK" "$AUTOLOGIN"
    finish
    if ((!DRY_RUN && CHANGES)); then
        log "reboot (or log in as $STATION_USER) to start the station"
    fi
}

do_uninstall() {
    require_root
    uninstall_common "$PREFIX" "$STATION_USER" "$DATA_DIR"
    finish
}

main_dispatch() {
    if ((UNINSTALL)); then
        do_uninstall
    else
        do_install
    fi
}
