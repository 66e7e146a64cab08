"""Draws resources/icons/app.png (256 px): an abdominal slice with three organ overlays.

Run once with the project's Python when the icon should change; the PNG is committed.
"""

from pathlib import Path

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QGuiApplication, QImage, QLinearGradient, QPainter, QPen


def draw(size: int = 256) -> QImage:
    image = QImage(size, size, QImage.Format_ARGB32)
    image.fill(Qt.transparent)
    p = QPainter(image)
    p.setRenderHint(QPainter.Antialiasing)
    s = size / 256
    background = QLinearGradient(0, 0, 0, size)
    background.setColorAt(0, QColor("#243b55"))
    background.setColorAt(1, QColor("#141e30"))
    p.setPen(Qt.NoPen)
    p.setBrush(QBrush(background))
    p.drawRoundedRect(QRectF(8 * s, 8 * s, 240 * s, 240 * s), 44 * s, 44 * s)
    p.setBrush(QColor(190, 190, 196))  # the body outline
    p.drawEllipse(QRectF(34 * s, 58 * s, 188 * s, 148 * s))
    p.setBrush(QColor(120, 120, 128))  # the spine
    p.drawEllipse(QRectF(110 * s, 160 * s, 36 * s, 32 * s))
    organs = [  # large bowel (red), small bowel (green), stomach (blue), semi-transparent like masks
        (QColor(230, 60, 60, 210), QRectF(52 * s, 80 * s, 62 * s, 70 * s)),
        (QColor(60, 200, 90, 210), QRectF(96 * s, 112 * s, 72 * s, 52 * s)),
        (QColor(70, 130, 240, 210), QRectF(140 * s, 72 * s, 64 * s, 58 * s)),
    ]
    for color, rect in organs:
        p.setBrush(color)
        p.setPen(QPen(color.lighter(140), 4 * s))
        p.drawEllipse(rect)
    p.end()
    return image


if __name__ == "__main__":
    app = QGuiApplication([])
    out = Path(__file__).with_name("app.png")
    draw().save(str(out))
    print(out)
