"""Uploads of photo folders through the upload trigger against moto_server (real boto3 clients
over HTTP on 127.0.0.1): a ``.zip`` of class folders becomes a model end to end (``lambdanet
watch s3://… --once``), as do a ``.tar.gz`` and an ``.npz``; archives that escape, link, explode
or hold no image are failed runs with one reason each, and nothing is written."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdanet.data.readers import load_dataset, save_dataset
from tests.e2e.photos_support import CLASSES, ODD, expected_input, find_row, make_photo_folder
from tests.e2e.test_cloud_trigger import _keys, _services, _watch

pytestmark = pytest.mark.aws

PARAMS = {"epochs": 30, "layers": 2, "activations": {"layer1": "relu", "layer2": "softmax"},
          "neurons": {"layer1": 8, "layer2": 3}, "learning_rate": 0.01, "optimizer": "adam", "batch_size": 32,
          "image_size": [24, 24], "report_every": 10}


def zip_folder(folder: Path, arcroot: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{arcroot}/{f.relative_to(folder).as_posix()}")
    return buf.getvalue()


def tar_folder(folder: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(folder, arcname=".")
        for info, data in extra or []:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def watch_once(bucket: str, code: int) -> list[dict[str, Any]]:
    proc = _watch(f"s3://{bucket}", "--once", "--json")
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos") / "photos")


@pytest.mark.slow
def test_a_zip_of_photos_becomes_a_model_and_so_do_a_tar_gz_and_an_npz(
        cloud: dict[str, Any], photos: Path, tmp_path: Path) -> None:
    s3, bucket = cloud["s3"], cloud["bucket"]
    s3.put_object(Bucket=bucket, Key="training_input/parameters.json", Body=json.dumps(PARAMS).encode())
    s3.put_object(Bucket=bucket, Key="training_input/photos.zip", Body=zip_folder(photos, "my photos"))
    (result,) = watch_once(bucket, 0)
    assert (result["key"], result["status"]) == ("training_input/photos.zip", "completed"), result
    assert _keys(s3, bucket, "predict_input/") == ["predict_input/params.h5"]
    results_json = json.loads(s3.get_object(Bucket=bucket, Key="training_results/results.json")["Body"].read())
    assert results_json["run_id"] == result["run_id"] and len(results_json["costs"]) == 30

    from lambdanet.engine.checkpoints import read_data

    services = _services()
    try:
        run = services.ledger.get_run(result["run_id"])
        mv = services.registry.load(str(run.model))
        ds = read_data(services.objects, run.run_id)
    finally:
        services.close()
    assert run.status == "completed" and run.data == f"s3://{bucket}/training_input/photos.zip"
    # the config's image_size reached the data path: 24 x 24, recorded with the version
    assert mv.metadata["input_shape"] == [24, 24, 3] and mv.metadata["classes"] == CLASSES
    assert mv.metadata["preprocessing"]["fit"] == "center_crop"
    x = np.concatenate([ds.x_train, ds.x_test])
    assert len(x) == 26 and np.bincount(ds.y_test).tolist() == [2, 2, 2]  # the seeded, stratified split
    assert len(find_row(x, expected_input(photos / ODD[0] / ODD[1], 24))) == 1

    # a .tar.gz of the class folders (no top folder) and an .npz of the same arrays: two more runs
    s3.put_object(Bucket=bucket, Key="training_input/more/photos.tar.gz", Body=tar_folder(photos))
    arrays = load_dataset(photos)
    s3.put_object(Bucket=bucket, Key="training_input/arrays.npz",
                  Body=save_dataset(arrays, tmp_path / "arrays.npz").read_bytes())
    more = watch_once(bucket, 0)
    assert sorted((r["key"], r["status"]) for r in more) == [
        ("training_input/arrays.npz", "completed"), ("training_input/more/photos.tar.gz", "completed")]
    services = _services()
    try:
        shapes = {r["key"]: services.registry.load(f"{r['model']}").metadata["input_shape"] for r in more}
    finally:
        services.close()
    assert shapes == {"training_input/arrays.npz": [24, 24, 3], "training_input/more/photos.tar.gz": [24, 24, 3]}


def test_hostile_and_empty_archives_are_failed_runs_and_nothing_is_written(
        cloud: dict[str, Any], photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3, bucket = cloud["s3"], cloud["bucket"]
    s3.put_object(Bucket=bucket, Key="training_input/parameters.json", Body=json.dumps(PARAMS).encode())
    escape = f"lambdanet-escape-{uuid.uuid4().hex}.png"
    good = zip_folder(photos, "photos")

    def with_member(name: str, data: bytes) -> bytes:
        buf = io.BytesIO(good)
        with zipfile.ZipFile(buf, "a") as zf:
            zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
        return buf.getvalue()

    link = tarfile.TarInfo("./cat/z_link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("./cat/z_hard.png")
    hard.type, hard.linkname = tarfile.LNKTYPE, "./cat/a_rgb.png"
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("photos/readme.txt", b"the photos are on my phone")
    uploads = {
        "training_input/a_traversal.zip": with_member(f"../{escape}", b"\x89PNG"),
        "training_input/b_absolute.zip": with_member(f"/tmp/{escape}", b"\x89PNG"),
        "training_input/c_symlink.tar.gz": tar_folder(photos, [(link, None)]),
        "training_input/d_hardlink.tar.gz": tar_folder(photos, [(hard, None)]),
        "training_input/e_bomb.zip": with_member("photos/cat/zeros.png", b"\0" * (6 << 20)),
        "training_input/f_empty.zip": empty.getvalue(),
    }
    for key, body in uploads.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    monkeypatch.setenv("LAMBDANET_MAX_ARCHIVE_BYTES", str(4 << 20))  # the bomb: 6 MiB of zeros in 6 KiB
    assert len(uploads["training_input/e_bomb.zip"]) - len(good) < 64 << 10
    results = watch_once(bucket, 1)
    errors = {r["key"]: r["error"] for r in results}
    assert [r["status"] for r in results] == ["failed"] * 6, results
    assert errors == {
        "training_input/a_traversal.zip": f"a_traversal.zip: member '../{escape}' escapes the archive (a '..' in "
                                          f"its path); nothing was extracted (archive the class folders with "
                                          f"relative paths)",
        "training_input/b_absolute.zip": f"b_absolute.zip: member '/tmp/{escape}' has an absolute path, which "
                                         f"would land outside the archive; nothing was extracted (archive the "
                                         f"class folders with relative paths)",
        "training_input/c_symlink.tar.gz": "c_symlink.tar.gz: member './cat/z_link.png' is a symbolic link; an "
                                           "archive of photos holds plain files and folders only, nothing was "
                                           "extracted",
        "training_input/d_hardlink.tar.gz": "d_hardlink.tar.gz: member './cat/z_hard.png' is a hard link; an "
                                            "archive of photos holds plain files and folders only, nothing was "
                                            "extracted",
        "training_input/e_bomb.zip": errors["training_input/e_bomb.zip"],
        "training_input/f_empty.zip": "f_empty.zip: holds no images (1 file(s), none named .jpg, .jpeg, .jfif, "
                                      ".png, .gif, .bmp, .webp, .tif, .tiff, .ppm, .pgm); archive one folder per "
                                      "class of photos",
    }
    assert errors["training_input/e_bomb.zip"].startswith("e_bomb.zip: holds at least ")
    assert "above the limit of 4.0 MiB (LAMBDANET_MAX_ARCHIVE_BYTES); nothing was extracted" in errors[
        "training_input/e_bomb.zip"]

    # nothing written: no outputs beside the uploads, no model, no escaped file; one failed run each
    assert _keys(s3, bucket, "predict_input/") == [] and _keys(s3, bucket, "training_results/") == []
    assert not (Path(tempfile.gettempdir()) / escape).exists() and not Path("/", escape).exists()
    services = _services()
    try:
        runs = services.ledger.list_runs()
        assert services.registry.models() == []
    finally:
        services.close()
    assert sorted(r.run_id for r in runs) == sorted(r["run_id"] for r in results)
    assert all(r.status == "failed" and r.stop_reason == "error" for r in runs)
    assert {r.error for r in runs} == set(errors.values())
    failures = [e["Message"] for e in cloud["envelopes"]() if e["Message"].startswith("Training Failed!")]
    assert len(failures) == 6


@pytest.mark.slow
def test_the_s3_lambda_takes_a_zip_event(cloud: dict[str, Any], photos: Path) -> None:
    from tests.e2e.durable_support import durable_runner
    from tests.e2e.test_cloud_trigger import _s3_event

    s3, bucket = cloud["s3"], cloud["bucket"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="training_input/parameters.json", Body=json.dumps(PARAMS).encode())
    body = zip_folder(photos, "photos")
    key = "training_input/my photos.zip"
    put = s3.put_object(Bucket=bucket, Key=key, Body=body)
    event = _s3_event(bucket, key, len(body), put["ETag"].strip('"'), put["VersionId"])
    with durable_runner() as runner:  # the durable handler under AWS's local runner
        out = json.loads(runner.run(input=json.dumps(event), execution_name="zip").result or "{}")
    assert [(r["key"], r["status"]) for r in out["results"]] == [(key, "completed")], out
    assert _keys(s3, bucket, "training_results/") == ["training_results/results.json"]
    services = _services()
    try:
        (run,) = services.ledger.list_runs()
        mv = services.registry.load(str(run.model))
    finally:
        services.close()
    assert run.data == f"s3://{bucket}/{key}" and mv.metadata["input_shape"] == [24, 24, 3]
