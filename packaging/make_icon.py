"""Draw the application icon: ``resources/icon.svg`` and its 256 x 256 ``resources/icon.png``.

The design: a rounded square in a blue gradient with a falling loss curve ending in a bright
dot (training that works) over a faint grid, and a small low-rank "A x B" bar pair in the
corner (the adapter). The PNG is rendered from the SVG with Qt, so both always match.

    .venv/bin/python packaging/make_icon.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">
  <defs>
    <linearGradient id="bg" x1="0" y1="0" x2="1" y2="1">
      <stop offset="0" stop-color="#1e3c72"/>
      <stop offset="1" stop-color="#2a8bd8"/>
    </linearGradient>
    <linearGradient id="line" x1="0" y1="0" x2="1" y2="0">
      <stop offset="0" stop-color="#ffffff" stop-opacity="0.75"/>
      <stop offset="1" stop-color="#ffffff"/>
    </linearGradient>
  </defs>
  <rect x="8" y="8" width="240" height="240" rx="52" fill="url(#bg)"/>
  <g stroke="#ffffff" stroke-opacity="0.13" stroke-width="3">
    <line x1="40" y1="88" x2="216" y2="88"/>
    <line x1="40" y1="136" x2="216" y2="136"/>
    <line x1="40" y1="184" x2="216" y2="184"/>
  </g>
  <path d="M 42 58 C 70 60, 78 150, 110 160 S 160 176, 206 180" fill="none" stroke="url(#line)"
        stroke-width="15" stroke-linecap="round"/>
  <circle cx="206" cy="180" r="17" fill="#ffd166"/>
  <circle cx="206" cy="180" r="7" fill="#ffffff"/>
  <rect x="150" y="44" width="14" height="52" rx="5" fill="#ffd166"/>
  <rect x="172" y="62" width="52" height="14" rx="5" fill="#ffd166" fill-opacity="0.85"/>
</svg>
"""


def main() -> int:
    """Write both files; returns 0."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QByteArray
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    svg_path = ROOT / "resources" / "icon.svg"
    svg_path.write_text(SVG, encoding="utf-8")
    renderer = QSvgRenderer(QByteArray(SVG.encode()))
    image = QImage(256, 256, QImage.Format.Format_ARGB32)
    image.fill(0)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    png_path = ROOT / "resources" / "icon.png"
    if not image.save(str(png_path), "PNG"):
        raise OSError(f"could not write {png_path}")
    del app
    print(f"wrote {svg_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
