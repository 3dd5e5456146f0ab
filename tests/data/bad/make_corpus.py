"""Regenerate the committed bad-input corpus in this folder (deterministic; < 200 KB in all).

    /work/venv/bin/python tests/data/bad/make_corpus.py

Uploads (``upload_*``), training configs (``params_*``, ``cnn_*``) and data files (``data_*``).
What each file is and what lambdanet must do with it is the table in ``tests/bad/test_corpus.py``.
Cases that need folders or many variants are generated there, in ``tmp_path``.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def zero_by_zero_png() -> bytes:
    """A PNG whose IHDR says 0x0 pixels (valid CRCs, so only the size is wrong)."""
    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def header_bomb_png() -> bytes:
    """A PNG whose IHDR claims 100000x100000 pixels with a tiny IDAT (the header alone is the bomb)."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def files() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    # ---- uploads ------------------------------------------------------------------------------
    out["upload_not_image.png"] = b"this is a text file, not a PNG\n"
    out["upload_empty.jpg"] = b""
    out["upload_header_only.jpg"] = b"\xff\xd8\xff"
    out["upload_svg.svg"] = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>\n'
    png = _png(Image.fromarray(_noise(32, 32, 1)))
    out["upload_truncated.png"] = png[: len(png) // 2]
    jbuf = io.BytesIO()
    Image.fromarray(_noise(64, 64, 2)).save(jbuf, format="JPEG", quality=90)
    out["upload_truncated.jpg"] = jbuf.getvalue()[: len(jbuf.getvalue()) * 3 // 5]
    out["upload_zero_by_zero.png"] = zero_by_zero_png()
    out["upload_header_bomb.png"] = header_bomb_png()
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000), 0).save(bomb, format="PNG", optimize=True)  # 1e8 px, ~12 KB
    out["upload_bomb.png"] = bomb.getvalue()
    # hostile but valid: must be handled (a prediction), never a 5xx
    cbuf = io.BytesIO()
    Image.fromarray(_noise(16, 16, 3)).convert("CMYK").save(cbuf, format="JPEG")
    out["upload_cmyk.jpg"] = cbuf.getvalue()
    sixteen = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257).astype(np.uint16)
    out["upload_16bit.png"] = _png(Image.fromarray(sixteen))  # mode I;16
    gbuf = io.BytesIO()
    frames = [Image.fromarray(_noise(16, 16, s)).convert("P") for s in range(3)]
    frames[0].save(gbuf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out["upload_animated.gif"] = gbuf.getvalue()
    # ---- MLP parameters.json --------------------------------------------------------------------
    good = {"epochs": 2, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
            "neurons": {"layer1": 4, "layer2": 1}, "learning_rate": 0.01, "batch_size": 16}

    def variant(**changes: object) -> bytes:
        doc = {**good, **changes}
        return (json.dumps({k: v for k, v in doc.items() if v is not None}, allow_nan=True) + "\n").encode()

    out["params_not_json.json"] = b'{"epochs": 5000, "layers": 4,,}\n'
    out["params_array.json"] = b"[1, 2, 3]\n"
    out["params_empty.json"] = b""
    out["params_not_utf8.json"] = b'{"epochs": 5, "layers": "\xff\xfe"}\n'
    out["params_unknown_key.json"] = variant(lerning_rate=0.1)
    out["params_layers_mismatch.json"] = variant(layers=3)
    out["params_negative_lr.json"] = variant(learning_rate=-0.5)
    out["params_nan_lr.json"] = variant(learning_rate=float("nan"))
    out["params_inf_lr.json"] = variant(learning_rate=float("inf"))
    out["params_epochs_string.json"] = variant(epochs="many")
    out["params_zero_epochs.json"] = variant(epochs=0)
    out["params_sigmoid_two.json"] = variant(neurons={"layer1": 4, "layer2": 2})
    out["params_softmax_hidden.json"] = variant(activations={"layer1": "softmax", "layer2": "sigmoid"})
    out["params_unknown_activation.json"] = variant(activations={"layer1": "swish", "layer2": "sigmoid"})
    out["params_zero_neurons.json"] = variant(neurons={"layer1": 0, "layer2": 1})
    out["params_missing_epochs.json"] = variant(epochs=None)
    out["params_bad_optimizer.json"] = variant(optimizer="rmsprop")
    # ---- CNN configs --------------------------------------------------------------------------
    cnn = {"model": "lenet", "epochs": 1, "batch_size": 8, "learning_rate": 0.001}
    out["cnn_unknown_model.json"] = json.dumps({**cnn, "model": "resnet152"}).encode()
    out["cnn_zero_batch.json"] = json.dumps({**cnn, "batch_size": 0}).encode()
    out["cnn_unknown_key.json"] = json.dumps({**cnn, "dropout": 0.5}).encode()
    out["cnn_bad_bool.json"] = json.dumps({**cnn, "augment": "sometimes"}).encode()
    out["cnn_momentum_one.json"] = json.dumps({**cnn, "optimizer": "sgd", "momentum": 1.0}).encode()
    # ---- data files ----------------------------------------------------------------------------
    out["data_not_hdf5.h5"] = b"CSV,not,hdf5\n1,2,3\n"
    out["data_not_zip.npz"] = b"x,y\n1,0\n"
    out["data_unsupported.csv"] = b"x,y\n1,0\n"
    return out


def main() -> None:
    total = 0
    for name, data in sorted(files().items()):
        (HERE / name).write_bytes(data)
        total += len(data)
    print(f"wrote {len(files())} files, {total} bytes, to {HERE}")


if __name__ == "__main__":
    main()
