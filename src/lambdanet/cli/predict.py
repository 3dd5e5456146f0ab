"""``lambdanet predict IMAGE… --model REF``: classify photos with a registered model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from lambdanet.cli.common import print_json_lines
from lambdanet.cli.runs import open_read_only
from lambdanet.errors import ImageError


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read it ({exc.strerror})") from None


def _decode(path: Path, decode: Callable[[bytes], Any]) -> Any:
    """The image in ``path``; an error names the file."""
    try:
        return decode(_read(path))
    except ImageError as exc:
        if str(path) in str(exc):
            raise
        raise ImageError(f"{path}: {exc}") from None


def register(app: typer.Typer) -> None:
    @app.command()
    def predict(
        images: list[Path] = typer.Argument(..., help="Image files (JPEG, PNG, …)."),
        model: str = typer.Option(..., "--model", "-m", help="NAME[:VERSION|@ALIAS]"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image, one per line."),
    ) -> None:
        """Resize each image to the model's input (EXIF orientation respected) and classify it."""
        import numpy as np

        from lambdanet.data.images import decode_image, prepare_image
        from lambdanet.predictor import load_predictor

        services = open_read_only()
        try:
            mv = services.registry.load(model)
        finally:
            services.close()
        predictor = load_predictor(mv)
        batch = np.stack([prepare_image(_decode(p, decode_image), predictor.input_shape) for p in images])
        # batch: uint8 (N, H, W, C)
        probs = predictor.predict_proba(batch)  # (N, n_classes)
        results = []
        for path, row in zip(images, probs, strict=True):
            k = int(row.argmax())
            results.append({"image": str(path), "label": predictor.classes[k], "probability": float(row[k]),
                            "probabilities": {c: float(p) for c, p in zip(predictor.classes, row, strict=True)},
                            "model": f"{mv.name}:{mv.version}"})
        if as_json:
            print_json_lines(results)
            return
        for r in results:
            typer.echo(f"{r['image']}: {r['label']} ({r['probability']:.3f})  [{r['model']}]")
