"""``lambdanet train FOLDER`` on photos as people have them (mixed sizes, modes, formats, EXIF
rotation), an MLP and a CNN; then a raw file of another size through ``predict``, ``serve``
(/predict and the v2 route) and the serving Lambda gives exactly what the model gives the same
image through the training data path; bad ``image_size`` values are one line, exit 2."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from lambdanet.engine.checkpoints import read_data
from lambdanet.objects.folder import FolderStore
from lambdanet.predictor import load_predictor
from lambdanet.registry import ModelRegistry
from tests.conftest import REPO
from tests.e2e.photos_support import CLASSES, ODD, expected_input, find_row, make_photo_folder
from tests.e2e.serve_support import numpy_forward

MLP = {"epochs": 150, "layers": 2, "activations": {"layer1": "relu", "layer2": "softmax"},
       "neurons": {"layer1": 16, "layer2": 3}, "learning_rate": 0.01, "optimizer": "adam", "batch_size": 32,
       "seed": 3}
CNN = {"model": "lenet", "epochs": 1, "batch_size": 8, "seed": 0}


def cli(home: Path, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    for var in ("LAMBDANET_LEDGER", "LAMBDANET_OBJECTS", "LAMBDANET_NOTIFIER", "LAMBDANET_STORE"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "lambdanet", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=cwd)


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0][len("error: "):]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    make_photo_folder(root / "photos")
    (root / "mlp.json").write_text(json.dumps(MLP))
    (root / "cnn.json").write_text(json.dumps(CNN))
    return root


def train(home: Path, photos: Path, params: str, model: str) -> dict[str, Any]:
    res = cli(home, "train", str(photos / "photos"), "--params", str(photos / params), "--model", model, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed"
    return result


def training_row(home: Path, run_id: str, raw: Path, size: int) -> np.ndarray:
    """The image ``raw`` as the run trained on it: its row in the run's data snapshot, found by the
    independent reference of the resize policy (exactly one row must match)."""
    ds = read_data(FolderStore(home / "objects"), run_id)
    x = np.concatenate([ds.x_train] + ([ds.x_test] if ds.x_test is not None else []))
    want = expected_input(raw, size)
    rows = find_row(x, want)
    assert len(rows) == 1, f"{raw.name}: {len(rows)} rows of the training data match the reference"
    return x[rows[0]]


@pytest.fixture(scope="module")
def mlp_run(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    home = tmp_path_factory.mktemp("mlp-home")
    return home, train(home, photos, "mlp.json", "photos")


def test_a_corrupt_file_stops_the_run_before_anything_is_written(photos: Path, tmp_path: Path) -> None:
    bad = shutil.copytree(photos / "photos", tmp_path / "photos")
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    data = jpeg.getvalue()
    (bad / "cat" / "broken.jpg").write_bytes(data[: len(data) * 2 // 3])  # the header whole, the pixels cut
    home = tmp_path / "home"
    res = cli(home, "train", str(bad), "--params", str(photos / "mlp.json"))
    line = one_error_line(res)
    assert line.startswith("cat/broken.jpg: cannot decode the image: the file is truncated")
    assert not (home / "objects" / "runs").exists() and not (home / "objects" / "models").exists()


def test_the_mlp_trains_and_predict_gives_the_training_path_probabilities(
        mlp_run: tuple[Path, dict[str, Any]], photos: Path) -> None:
    home, result = mlp_run
    assert result["model"] == "photos:1" and result["test_accuracy"] is not None
    assert result["train_accuracy"] >= 0.9  # 20 images of 3 classes told apart by brightness
    registry = ModelRegistry(FolderStore(home / "objects"))
    mv = registry.load("photos")
    assert mv.metadata["input_shape"] == [32, 32, 3] and mv.metadata["classes"] == CLASSES
    assert mv.metadata["preprocessing"]["fit"] == "center_crop"  # the policy, recorded with the version

    raw = photos / "photos" / ODD[0] / ODD[1]  # 77 x 50: another size and shape than the model's 32 x 32
    row = training_row(home, result["run_id"], raw, 32)
    through_training = load_predictor(mv).predict_proba(row[None])[0]  # (3,)
    np.testing.assert_allclose(through_training, numpy_forward(mv, row[None])[0], rtol=1e-5, atol=1e-7)

    res = cli(home, "predict", str(raw), "--model", "photos", "--json")
    assert res.returncode == 0, res.stderr
    (pred,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert list(pred["probabilities"].values()) == [float(p) for p in through_training]  # exactly
    order = np.argsort(-through_training, kind="stable")
    assert [t["label"] for t in pred["top"]] == [CLASSES[i] for i in order]  # the top 3, best first
    assert pred["label"] == CLASSES[order[0]]
    text = cli(home, "predict", str(raw), "--model", "photos")
    shown = ", ".join(f"{CLASSES[i]} ({through_training[i]:.3f})" for i in order)
    assert text.stdout.strip() == f"{raw}: {shown}  [photos:1]"


def test_serve_and_the_serving_lambda_give_the_training_path_probabilities(
        mlp_run: tuple[Path, dict[str, Any]], photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lambdanet.functions import serving_function
    from lambdanet.serve.app import create_app
    from tests.e2e.test_serve_lambda import CONTEXT, http_event
    from tests.support.serving import UvicornThread

    home, result = mlp_run
    registry = ModelRegistry(FolderStore(home / "objects"))
    raw = photos / "photos" / ODD[0] / ODD[1]
    data = raw.read_bytes()
    row = training_row(home, result["run_id"], raw, 32)
    want = load_predictor(registry.load("photos")).predict_proba(row[None])[0]

    with UvicornThread(create_app(registry)) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/predict?preview=1&model=photos", files={"file": ("odd.png", data, "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["preview"].split(",", 1)[1]))))
        np.testing.assert_array_equal(seen, row)  # the model saw exactly the training pixels
        assert list(body["probabilities"].values()) == pytest.approx(list(want), rel=1e-6, abs=1e-9)
        v2 = c.post("/v2/models/photos/infer", json={"inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(data).decode()]}]})
        assert v2.status_code == 200, v2.text
        assert v2.json()["outputs"][0]["data"] == pytest.approx(list(want), rel=1e-6, abs=1e-9)

    monkeypatch.setenv("LAMBDANET_REGISTRY", str(home / "objects"))
    monkeypatch.delenv("LAMBDANET_API_KEY", raising=False)
    monkeypatch.setattr(serving_function, "_handler", None)  # a cold start
    out = serving_function.handler(http_event("POST", "/predict", data, query="model=photos",
                                              headers={"content-type": "image/png"}), CONTEXT)
    assert out["statusCode"] == 200, out["body"]
    body = json.loads(base64.b64decode(out["body"]) if out.get("isBase64Encoded") else out["body"])
    assert list(body["probabilities"].values()) == pytest.approx(list(want), rel=1e-6, abs=1e-9)


def test_a_cnn_trains_on_the_folder_and_predict_matches_its_training_path(photos: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = train(home, photos, "cnn.json", "photos-cnn")
    mv = ModelRegistry(FolderStore(home / "objects")).load("photos-cnn")
    assert mv.metadata["kind"] == "cnn" and mv.metadata["input_shape"] == [32, 32, 3]
    assert mv.metadata["classes"] == CLASSES and mv.metadata["preprocessing"]["fit"] == "center_crop"
    raw = photos / "photos" / ODD[0] / ODD[1]
    row = training_row(home, result["run_id"], raw, 32)
    through_training = load_predictor(mv).predict_proba(row[None])[0]
    res = cli(home, "predict", str(raw), "--model", "photos-cnn", "--json")
    assert res.returncode == 0, res.stderr
    (pred,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert list(pred["probabilities"].values()) == [float(p) for p in through_training]
    assert len(pred["top"]) == 3


@pytest.mark.parametrize(("value", "needle"), [
    (0, "image_size: each side must be 1 to 1024 pixels, got 0"),
    (-32, "image_size: each side must be 1 to 1024 pixels, got -32"),
    (1025, "image_size: each side must be 1 to 1024 pixels, got 1025"),
    ([32, 0], "image_size: each side must be 1 to 1024 pixels, got [32, 0]"),
    ([32, 32, 3], "image_size: an integer or [height, width] of integers, got [32, 32, 3]"),
    ([32], "image_size: an integer or [height, width] of integers, got [32]"),
    ("32", "image_size: an integer or [height, width] of integers, got '32'"),
    (32.5, "image_size: an integer or [height, width] of integers, got 32.5"),
])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_bad_image_size_is_one_line_and_exit_2(photos: Path, tmp_path: Path, value: Any, needle: str,
                                               kind: str) -> None:
    params = tmp_path / "bad.json"
    params.write_text(json.dumps({**(MLP if kind == "mlp" else CNN), "image_size": value}))
    home = tmp_path / "home"
    line = one_error_line(cli(home, "train", str(photos / "photos"), "--params", str(params)))
    assert line == f"bad.json: {needle}"
    assert not (home / "objects" / "runs").exists()


@pytest.mark.parametrize(("value", "needle"), [
    (-1, "cutout: Input should be greater than or equal to 0 (got -1)"),
    (1025, "cutout: Input should be less than or equal to 1024 (got 1025)"),
    ("big", "cutout: Input should be a valid integer, unable to parse string as an integer (got 'big')"),
    (32, "cutout: 32 must be smaller than the images' side 32 (airbench96 uses 12 on 32x32 images; 0 turns it off)"),
])
def test_bad_cutout_is_one_line_and_exit_2(photos: Path, tmp_path: Path, value: Any, needle: str) -> None:
    params = tmp_path / "bad.json"
    params.write_text(json.dumps({**CNN, "cutout": value}))
    home = tmp_path / "home"
    line = one_error_line(cli(home, "train", str(photos / "photos"), "--params", str(params)))
    source = str(photos / "photos") if value == 32 else "bad.json"  # the data's check, else the config's
    assert line == f"{source}: {needle}"
    assert not (home / "objects" / "runs").exists()
