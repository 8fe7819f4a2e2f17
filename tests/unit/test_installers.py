"""Installers: shellcheck, systemd-analyze on the unit they write, dry-runs, --root reruns.

Nothing here touches the machine: dry-runs only print, and real runs use --root (files under a
temporary directory, package/user/service steps skipped).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALLERS = REPO / "installers"
JETSON = INSTALLERS / "jetson" / "install.sh"
LINUX = INSTALLERS / "linux" / "install.sh"
SCRIPTS = [
    JETSON,
    LINUX,
    INSTALLERS / "common" / "lib.sh",
    INSTALLERS / "common" / "station-kiosk-session",
    INSTALLERS / "common" / "station-profile.sh",
]
# Every line an installer prints on stdout is one of these: an action ("+ ..."), a state it
# found, or a heading. Anything else would be a side effect bypassing `run`.
KNOWN_LINE = re.compile(
    r"^(\+ |== |unchanged: |skipped|check: |absent: |kept: |dry run: |done: |reboot )"
)

USER = "station-dry-run-user"  # a kiosk user that does not exist: dry runs plan to create it
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")


def run_installer(
    script: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an installer with bash; stdout and stderr captured."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under root with its mode, size and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


# -- static checks ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean() -> None:
    res = subprocess.run(
        ["shellcheck", "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_scripts_are_strict_and_executable() -> None:
    for script in (JETSON, LINUX, INSTALLERS / "common" / "station-kiosk-session"):
        assert os.access(script, os.X_OK), f"{script} is not executable"
    for script in (JETSON, LINUX):
        assert "set -euo pipefail" in script.read_text()


def test_udev_rule_matches_usb3vision_and_the_installer_group() -> None:
    rules = (INSTALLERS / "common" / "99-usb3vision.rules").read_text()
    for needle in (
        'ATTR{bDeviceClass}!="ef"',
        'ATTR{bDeviceSubClass}!="02"',
        'ATTR{bDeviceProtocol}!="01"',
        'ENV{ID_USB_INTERFACES}!="*:ef05*"',
        'MODE="0660"',
    ):
        assert needle in rules
    group = re.search(
        r'^CAMERA_GROUP="([^"]+)"', (INSTALLERS / "common" / "lib.sh").read_text(), re.M
    )
    assert group and f'GROUP="{group.group(1)}"' in rules
    # Every GOTO lands on the label, and the label exists once.
    assert set(re.findall(r'GOTO="([^"]+)"', rules)) == {"station_u3v_end"}
    assert rules.count('LABEL="station_u3v_end"') == 1


@needs_bash
@pytest.mark.parametrize("script", [JETSON, LINUX], ids=["jetson", "linux"])
def test_help_and_unknown_option(script: Path) -> None:
    res = run_installer(script, "--help")
    assert res.returncode == 0
    for option in ("--dry-run", "--uninstall", "--user", "--prefix", "--root"):
        assert option in res.stdout
    bad = run_installer(script, "--frobnicate")
    assert bad.returncode != 0 and "unknown option: --frobnicate" in bad.stderr


# -- the unit as the installer writes it ----------------------------------------------------------


def install_into_root(tmp_path: Path, script: Path, *extra: str) -> tuple[Path, Path]:
    """A --root install with a prefix whose station binary exists (systemd checks ExecStart)."""
    root, prefix = tmp_path / "root", tmp_path / "prefix"
    station = prefix / "venv" / "bin" / "station"
    station.parent.mkdir(parents=True)
    station.write_text("#!/bin/sh\nexit 0\n")
    station.chmod(0o755)
    res = run_installer(
        script, "--root", str(root), "--prefix", str(prefix), "--user", "kiosk", *extra
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return root, prefix


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@needs_bash
@pytest.mark.parametrize("mode", ["system", "user"])
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, mode: str) -> None:
    root, prefix = install_into_root(tmp_path, LINUX)
    unit = root / "etc" / "systemd" / "user" / "station.service"
    text = unit.read_text()
    assert f"ExecStart={prefix}/venv/bin/station run --kiosk" in text
    assert "Restart=on-failure" in text and "RestartSec=5" in text
    cmd = ["systemd-analyze", "verify", str(unit)]
    env = dict(os.environ)
    if mode == "user":
        # The user manager's checks need a runtime directory, which a CI container lacks.
        runtime = tmp_path / "xdg"
        runtime.mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        cmd.insert(1, "--user")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    # verify only warns (exit 0) on unknown keys: any output is a finding.
    assert res.returncode == 0 and not res.stderr.strip() and not res.stdout.strip(), res.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_verify_would_notice_a_broken_unit(tmp_path: Path) -> None:
    # The check above is only worth something if verify reports mistakes in this environment.
    unit = tmp_path / "broken.service"
    unit.write_text("[Service]\nExecStart=/nonexistent/station run\nRestartSecs=5\n")
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert "RestartSecs" in res.stderr and "/nonexistent/station" in res.stderr


@pytest.mark.skipif(
    shutil.which("desktop-file-validate") is None, reason="desktop-file-utils not installed"
)
@needs_bash
def test_autostart_entry_is_valid(tmp_path: Path) -> None:
    root, _ = install_into_root(tmp_path, LINUX)
    entry = root / "home" / "kiosk" / ".config" / "autostart" / "station-kiosk.desktop"
    res = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout


# -- dry runs ---------------------------------------------------------------------------------


def dry_run(script: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    """Run script --dry-run with a temporary HOME/prefix/data dir; assert nothing was created."""
    home, prefix, data = tmp_path / "home", tmp_path / "opt" / "station", tmp_path / "data"
    home.mkdir()
    system_paths = [
        Path("/etc/systemd/user/station.service"),
        Path("/etc/udev/rules.d/99-usb3vision.rules"),
        Path("/etc/default/station"),
        Path("/etc/profile.d/station.sh"),
        Path(f"/home/{USER}"),
    ]
    before = {p: p.exists() for p in system_paths}
    res = run_installer(
        script,
        "--dry-run",
        "--user",
        USER,
        "--prefix",
        str(prefix),
        "--data-dir",
        str(data),
        *extra,
        env={"HOME": str(home), **(env or {})},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert snapshot(tmp_path) == {"home": snapshot(tmp_path)["home"]}, "dry run created files"
    assert list(home.iterdir()) == []
    assert {p: p.exists() for p in system_paths} == before, "dry run touched the system"
    odd = [line for line in res.stdout.splitlines() if not KNOWN_LINE.match(line)]
    assert not odd, f"output not going through run/log: {odd}"
    assert re.search(r"^dry run: \d+ action\(s\) would run; nothing was changed$", res.stdout, re.M)
    return res.stdout


def position(out: str, needle: str) -> int:
    """Index of the first output line containing needle (fails when absent)."""
    for i, line in enumerate(out.splitlines()):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in output:\n{out}")


@needs_bash
def test_linux_dry_run(tmp_path: Path) -> None:
    out = dry_run(LINUX, tmp_path, "--with-tensorrt", env={"GENTL_PATH": "/opt/vendor/gentl"})
    venv = tmp_path / "opt" / "station" / "venv"
    torch = position(
        out,
        f"+ {venv}/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu",
    )
    station = position(out, f"+ {venv}/bin/pip install {REPO}\\[tensorrt\\]")
    assert torch < station, "the CPU torch wheel must come first"
    assert position(out, "pycuda") < station
    assert f"+ python3 -m venv {venv}" in out  # no system site packages on a PC
    for needle in (
        "useradd --create-home --shell /bin/bash --groups video\\,station-camera " + USER,
        "+ write_file /etc/systemd/user/station.service 0644 root:root",
        "+ write_file /etc/udev/rules.d/99-usb3vision.rules 0644 root:root",
        "+ write_file /etc/default/station 0644 root:root",
        "+ write_file /etc/profile.d/station.sh 0644 root:root",
        f"/home/{USER}/.config/autostart/station-kiosk.desktop",
        "+ ln -sfn /etc/systemd/user/station.service "
        f"/home/{USER}/.config/systemd/user/graphical-session.target.wants/station.service",
        "+ udevadm control --reload-rules",
    ):
        assert needle in out, needle


@needs_bash
def test_jetson_dry_run(tmp_path: Path) -> None:
    out = dry_run(JETSON, tmp_path)
    venv = tmp_path / "opt" / "station" / "venv"
    assert f"--system-site-packages {venv}" in out  # sees JetPack's TensorRT
    torch = position(
        out, "https://developer.download.nvidia.com/compute/redist/jp/v61/pytorch/torch-"
    )
    no_deps = position(out, f"+ {venv}/bin/pip install --no-deps {REPO}")
    assert torch < no_deps
    assert "pycuda\\>=2022.2" in out and "CUDA_ROOT=/usr/local/cuda" in out
    assert "python3-libnvinfer" in out or "unchanged: packages" in out
    assert "+ write_file /etc/systemd/user/station.service" in out


@needs_bash
def test_jetson_torch_index_variable(tmp_path: Path) -> None:
    out = dry_run(
        JETSON,
        tmp_path,
        env={"TORCH_WHEEL_URL": "", "TORCH_INDEX_URL": "https://pypi.jetson-ai-lab.io/jp6/cu126"},
    )
    assert "install torch --index-url https://pypi.jetson-ai-lab.io/jp6/cu126" in out


@needs_bash
def test_no_kiosk_installs_the_unit_only(tmp_path: Path) -> None:
    out = dry_run(LINUX, tmp_path, "--no-kiosk")
    assert "+ write_file /etc/systemd/user/station.service" in out
    assert "autostart" not in out and "graphical-session.target.wants" not in out


@needs_bash
@pytest.mark.parametrize("script", [JETSON, LINUX], ids=["jetson", "linux"])
def test_uninstall_dry_run(tmp_path: Path, script: Path) -> None:
    root, _ = install_into_root(tmp_path, script)
    res = run_installer(script, "--root", str(root), "--user", "kiosk", "--uninstall", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "+ rm -rf -- " + str(root / "etc" / "systemd" / "user" / "station.service") in res.stdout
    assert (root / "etc" / "systemd" / "user" / "station.service").exists()


# -- idempotency: real runs under --root --------------------------------------------------------

GDM_ORIGINAL = "[daemon]\n#  AutomaticLoginEnable = true\nAutomaticLogin=someone\n\n[security]\n"


@needs_bash
@pytest.mark.parametrize("script", [JETSON, LINUX], ids=["jetson", "linux"])
def test_second_run_changes_nothing_and_uninstall_restores(tmp_path: Path, script: Path) -> None:
    gdm = tmp_path / "root" / "etc" / "gdm3" / "custom.conf"
    gdm.parent.mkdir(parents=True)
    gdm.write_text(GDM_ORIGINAL)
    env = {"GENTL_PATH": "/opt/vendor/gentl"}
    root, prefix = install_into_root(tmp_path, script)
    first = snapshot(root)
    files = {
        "etc/systemd/user/station.service": 0o644,
        "etc/udev/rules.d/99-usb3vision.rules": 0o644,
        "etc/default/station": 0o644,
        "etc/profile.d/station.sh": 0o644,
        "home/kiosk/.config/autostart/station-kiosk.desktop": 0o644,
        str(prefix.relative_to("/") / "bin" / "station-kiosk-session"): 0o755,
        str(prefix.relative_to("/") / "README.md"): 0o644,
    }
    for rel, mode in files.items():
        assert stat.S_IMODE(first[rel][0]) == mode, rel
    link = root / "home/kiosk/.config/systemd/user/graphical-session.target.wants/station.service"
    assert os.readlink(link) == "/etc/systemd/user/station.service"
    conf = gdm.read_text()
    assert "AutomaticLoginEnable=true\nAutomaticLogin=kiosk\n" in conf
    assert "#station-saved: AutomaticLogin=someone" in conf

    args = ["--root", str(root), "--prefix", str(prefix), "--user", "kiosk"]
    second = run_installer(script, *args)
    assert second.returncode == 0, second.stderr
    assert "done: 0 change(s)" in second.stdout, second.stdout
    assert "+ " not in second.stdout
    assert snapshot(root) == first

    # A changed setting is the one thing a later run changes.
    third = run_installer(script, *args, env=env)
    assert re.findall(r"^\+ .*", third.stdout, re.M) == [
        f"+ write_file {root}/etc/default/station 0644 '' <3 lines>"
    ]
    assert "GENICAM_GENTL64_PATH=/opt/vendor/gentl" in (root / "etc/default/station").read_text()

    gone = run_installer(script, *args, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    for rel in files:
        assert not (root / rel).exists(), rel
    assert not link.exists()
    assert gdm.read_text() == GDM_ORIGINAL
    again = run_installer(script, *args, "--uninstall")
    assert "done: 0 change(s)" in again.stdout


@needs_bash
def test_existing_user_dirs_keep_their_mode(tmp_path: Path) -> None:
    config = tmp_path / "root" / "home" / "kiosk" / ".config"
    config.mkdir(parents=True, mode=0o700)
    config.chmod(0o700)
    install_into_root(tmp_path, LINUX)
    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    assert (config / "autostart" / "station-kiosk.desktop").is_file()


@needs_bash
@pytest.mark.parametrize("prefix", ["/", "/opt", "/usr/local/"])
def test_uninstall_refuses_a_system_prefix(tmp_path: Path, prefix: str) -> None:
    res = run_installer(LINUX, "--root", str(tmp_path), "--prefix", prefix, "--uninstall")
    assert res.returncode != 0 and "refusing to remove --prefix" in res.stderr
