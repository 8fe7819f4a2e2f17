"""Page pictures of a report PDF for an on-screen preview, drawn by poppler's `pdftoppm` (the
same renderer QA's PDF viewer is likely to use); without it the preview shows the summary only.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from station.core.errors import StationError

RENDER_TIMEOUT_S = 60.0


def can_render() -> bool:
    """Whether `pdftoppm` is installed (Debian/Ubuntu/JetPack: poppler-utils)."""
    return shutil.which("pdftoppm") is not None


def render_pages(pdf: Path, out_dir: Path, *, dpi: int = 60, last: int = 0) -> list[Path]:
    """PNG pictures of the pages (up to `last`, 0 = all), in page order."""
    exe = shutil.which("pdftoppm")
    if exe is None:
        raise StationError("no page preview: pdftoppm is not installed (package poppler-utils)")
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "-png", "-r", str(int(dpi))]
    if last > 0:
        cmd += ["-l", str(int(last))]
    try:
        subprocess.run(
            [*cmd, str(pdf), str(out_dir / "page")],
            check=True,
            capture_output=True,
            timeout=RENDER_TIMEOUT_S,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        raise StationError(f"{pdf}: page preview failed: {exc}") from exc
    return sorted(out_dir.glob("page-*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
