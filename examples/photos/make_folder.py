"""Make a folder of "photos" from the CIFAR-10 copy, to try `lambdanet train FOLDER` on images as
people have them: every image enlarged to its own size and shape (a border of the image's own
edge pixels makes the wider or taller frame, as a photo has more background), one in ten
turned grey, one in ten stored on its side with an EXIF orientation tag, JPEG and PNG files.

    python examples/photos/make_folder.py ../shared/datasets/cifar10 /tmp/cifar-photos --per-class 500
    lambdanet train /tmp/cifar-photos --params examples/photos/parameters.json --model photos

Class folders are named after the CIFAR-10 classes; the split into training and test images is
lambdanet's (20 % of each class, seeded), so no train/ and test/ folders are made.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ASPECTS = (1.0, 4 / 3, 3 / 4, 16 / 9)  # width / height of the "photo"


def photo(img: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 32x32 image as a photo: framed to an aspect ratio, then enlarged 2 to 5 times."""
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    h = w = 32
    if aspect > 1:
        w = round(32 * aspect)
    elif aspect < 1:
        h = round(32 / aspect)
    top, left = (h - 32) // 2, (w - 32) // 2
    framed = np.pad(img, ((top, h - 32 - top), (left, w - 32 - left), (0, 0)), mode="edge")
    scale = rng.uniform(2.0, 5.0)
    return Image.fromarray(framed).resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cifar10", type=Path, help="the folder holding cifar10_train.npz")
    parser.add_argument("out", type=Path, help="the photo folder to make")
    parser.add_argument("--per-class", type=int, default=500, help="images per class (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with np.load(args.cifar10 / "cifar10_train.npz", allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    rng = np.random.default_rng(args.seed)
    for k, name in enumerate(CLASSES):
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(np.flatnonzero(y == k)[: args.per_class]):
            img = photo(x[i], rng)
            kind = rng.random()
            if kind < 0.1:
                img.convert("L").save(folder / f"{n:05d}.png")
            elif kind < 0.2:
                exif = Image.Exif()
                exif[0x0112] = 6  # stored on its side: "rotate 90 degrees clockwise to display"
                img.transpose(Image.Transpose.ROTATE_90).save(folder / f"{n:05d}.jpg", quality=90, exif=exif)
            else:
                img.save(folder / f"{n:05d}.jpg", quality=90)
    print(f"{args.out}: {len(CLASSES)} classes x {args.per_class} photos")


if __name__ == "__main__":
    main()
