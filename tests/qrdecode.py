"""Read a QR code back out of a PNG (served by us, or a browser's screenshot), as a phone would.

pypng (pure Python) turns the PNG into grey pixels and zxing-cpp decodes them.
"""

from __future__ import annotations

import png
import zxingcpp


def grey_pixels(png_bytes: bytes) -> tuple[int, int, bytes]:
    width, height, rows, _ = png.Reader(bytes=png_bytes).asRGBA8()
    grey = bytearray()
    for row in rows:
        for i in range(0, len(row), 4):
            r, g, b, a = row[i], row[i + 1], row[i + 2], row[i + 3]
            # Transparent counts as white, as on a white page.
            grey.append((r * 299 + g * 587 + b * 114) // 1000 * a // 255 + (255 - a))
    return width, height, bytes(grey)


def decode_png(png_bytes: bytes) -> list[str]:
    """The texts of every QR code in the picture."""
    width, height, grey = grey_pixels(png_bytes)
    image = memoryview(grey).cast("B", (height, width))
    return [r.text for r in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]
