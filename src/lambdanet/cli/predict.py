"""``lambdanet predict IMAGE… --model REF``: classify photos with a registered model.

Each photo goes through :func:`lambdanet.data.images.photo_to_array` — the path that turns an
image folder into training arrays (EXIF orientation, any colour mode, short side resized and
centre cropped to the model's input) — so a file of any size gives the model the pixels it
would have had in training. A model of more than 2 classes shows its top 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lambdanet.cli.common import print_json_lines
from lambdanet.cli.runs import open_read_only
from lambdanet.errors import ImageError

TOP = 3  # classes shown per image when the model has more than 2


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read it ({exc.strerror})") from None


def top_classes(classes: list[str], row: Any, k: int = TOP) -> list[dict[str, Any]]:
    """The ``k`` most probable classes, most probable first (ties: the earlier class first)."""
    order = sorted(range(len(classes)), key=lambda i: (-float(row[i]), i))[:k]
    return [{"label": classes[i], "probability": float(row[i])} for i in order]


def _line(r: dict[str, Any]) -> str:
    if len(r["probabilities"]) > 2:
        shown = ", ".join(f"{t['label']} ({t['probability']:.3f})" for t in r["top"])
        return f"{r['image']}: {shown}  [{r['model']}]"
    return f"{r['image']}: {r['label']} ({r['probability']:.3f})  [{r['model']}]"


def register(app: typer.Typer) -> None:
    @app.command()
    def predict(
        images: list[Path] = typer.Argument(..., help="Image files (JPEG, PNG, …), any size."),
        model: str = typer.Option(..., "--model", "-m", help="NAME[:VERSION|@ALIAS]"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image, one per line."),
    ) -> None:
        """Fit each image to the model's input as training does (EXIF orientation respected; short
        side resized, centre cropped) and classify it; the top 3 classes of a model with more than 2."""
        import numpy as np

        from lambdanet.data.images import photo_to_array
        from lambdanet.predictor import load_predictor

        services = open_read_only()
        try:
            mv = services.registry.load(model)
        finally:
            services.close()
        predictor = load_predictor(mv)
        shape = tuple(int(d) for d in predictor.input_shape)
        arrays = []
        for p in images:
            data = _read(p)
            try:
                arrays.append(photo_to_array(data, shape))  # type: ignore[arg-type]  # uint8 (H, W, C)
            except ImageError as exc:
                raise ImageError(f"{p}: {exc}") from None
        probs = predictor.predict_proba(np.stack(arrays))  # (N, n_classes)
        results = []
        for path, row in zip(images, probs, strict=True):
            k = int(row.argmax())
            results.append({"image": str(path), "label": predictor.classes[k], "probability": float(row[k]),
                            "probabilities": {c: float(p) for c, p in zip(predictor.classes, row, strict=True)},
                            "top": top_classes(predictor.classes, row),
                            "model": f"{mv.name}:{mv.version}"})
        if as_json:
            print_json_lines(results)
            return
        for r in results:
            typer.echo(_line(r))
