"""A folder of photos as people have them, made with Pillow for the photo tests, and an
independent reference of the resize policy (torchvision's evaluation transform, written out
here with plain Pillow calls — never lambdanet's own code).

Three classes (``cat``, ``dog``, ``owl``) told apart by brightness and tint, eight files each, in
every size, shape, mode and format: RGB / grey / grey+alpha / RGBA PNGs, a palette GIF, a CMYK
JPEG, a JPEG stored on its side with an EXIF orientation tag, a BMP and a WebP.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

CLASSES = ["cat", "dog", "owl"]
LEVEL = {"cat": 50, "dog": 130, "owl": 210}  # mean brightness of each class
TINT = {"cat": (40, 0, -30), "dog": (-30, 30, 0), "owl": (0, -20, 30)}
ODD = ("owl", "odd.png", (77, 50))  # the raw file given to predict later: not 32x32, not square
ROTATED = ("dog", "rotated.jpg")  # stored on its side, EXIF orientation 6


def _pixels(cls: str, w: int, h: int, seed: int) -> np.ndarray:
    """uint8 (h, w, 3): the class level and tint, noise, and a bright bar on the left edge (so a
    rotation shows)."""
    rng = np.random.default_rng(seed)
    base = np.array([LEVEL[cls] + t for t in TINT[cls]], dtype=np.int64)
    a = base + rng.integers(-25, 26, size=(h, w, 3))
    a[:, : max(1, w // 6)] = 255  # the left edge
    return np.clip(a, 0, 255).astype(np.uint8)


def make_photo_folder(root: Path) -> Path:
    """``root/<class>/*`` for the three classes (24 images + the odd one); returns ``root``."""
    for k, cls in enumerate(CLASSES):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        seed = 100 * k

        def rgb(w: int, h: int, i: int, cls: str = cls, seed: int = seed) -> Image.Image:
            return Image.fromarray(_pixels(cls, w, h, seed + i))

        rgb(40, 30, 0).save(d / "a_rgb.png")
        rgb(25, 60, 1).convert("L").save(d / "b_grey.png")
        la = rgb(50, 50, 2).convert("LA")
        la.putpixel((0, 0), (0, 0))  # one transparent corner: composited on white
        la.save(d / "c_grey_alpha.png")
        rgba = rgb(33, 47, 3).convert("RGBA")
        rgba.putalpha(Image.new("L", rgba.size, 200))
        rgba.save(d / "d_rgba.png")
        rgb(45, 28, 4).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(d / "e_palette.gif")
        rgb(36, 52, 5).convert("CMYK").save(d / "f_cmyk.jpg", quality=95)
        rgb(31, 31, 6).save(d / "g.bmp")
        rgb(60, 41, 7).save(d / "h.webp", lossless=True)
    # dog: one JPEG stored on its side (48 x 30 stored, 30 x 48 shown) with the EXIF tag
    upright = Image.fromarray(_pixels("dog", 30, 48, 999))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    upright.transpose(Image.Transpose.ROTATE_90).save(root / ROTATED[0] / ROTATED[1], quality=95, exif=exif)
    cls, name, (w, h) = ODD
    Image.fromarray(_pixels(cls, w, h, 4242)).save(root / cls / name)
    return root


def image_files(root: Path) -> list[tuple[Path, int]]:
    """Every image of the folder with its label, in class then file-name order."""
    return [(f, k) for k, cls in enumerate(CLASSES) for f in sorted((root / cls).iterdir())]


def expected_input(path: Path | bytes, size: int) -> np.ndarray:
    """What the model should see of one file, uint8 (size, size, 3): torchvision's
    ``Resize(size)`` + ``CenterCrop(size)`` on the upright RGB image, written out with Pillow:
    EXIF orientation applied, alpha composited on white, short side -> ``size`` (long side
    ``int(size * long / short)``), bilinear, then the centre crop at ``round((n - size) / 2)``."""
    img = Image.open(io.BytesIO(path) if isinstance(path, bytes) else path)
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    img = img.convert("RGB")
    w, h = img.size
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    img = img.resize(new, Image.Resampling.BILINEAR)
    top, left = round((new[1] - size) / 2.0), round((new[0] - size) / 2.0)  # as torchvision's CenterCrop
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def find_row(x: np.ndarray, want: np.ndarray) -> list[int]:
    """Indices of the rows of ``x`` (m, H, W, C) equal to ``want`` (H, W, C)."""
    return [int(i) for i in np.flatnonzero((x == want[None]).all(axis=(1, 2, 3)))]
