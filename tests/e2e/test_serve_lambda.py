"""The Lambda adapter (Mangum) with API Gateway event JSON as AWS sends it: REST API (payload
format 1.0) and HTTP API (payload format 2.0), shaped as the examples in the AWS docs."""

from __future__ import annotations

import base64
import copy
import json
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from lambdanet.functions import serving_function
from lambdanet.objects.folder import FolderStore
from lambdanet.registry import ModelRegistry
from tests.conftest import CATVNONCAT, CIFAR10, IMAGES
from tests.e2e.serve_support import numpy_forward
from tests.support.serving import load_cifar_subset, register_catvnoncat_mlp, register_cifar_mlp

GRUMPY = (IMAGES / "grumpy_cat.jpeg").read_bytes()
CONTEXT = SimpleNamespace(function_name="lambdanet-serve", aws_request_id="c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
                          invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:lambdanet-serve",
                          memory_limit_in_mb=1024, get_remaining_time_in_millis=lambda: 29_000)

REST_EVENT: dict[str, Any] = {  # API Gateway REST API, Lambda proxy integration, payload 1.0
    "resource": "/{proxy+}",
    "path": "/predict",
    "httpMethod": "POST",
    "headers": {"Accept": "*/*", "Content-Type": "application/json",
                "Host": "1234567890.execute-api.us-east-1.amazonaws.com", "User-Agent": "okhttp/4.12.0",
                "X-Amzn-Trace-Id": "Root=1-5e66d96f-7491f09xmpl79d18acf3d050", "X-Forwarded-For": "192.0.2.10",
                "X-Forwarded-Port": "443", "X-Forwarded-Proto": "https"},
    "multiValueHeaders": {"Accept": ["*/*"], "Content-Type": ["application/json"],
                          "Host": ["1234567890.execute-api.us-east-1.amazonaws.com"],
                          "User-Agent": ["okhttp/4.12.0"], "X-Forwarded-For": ["192.0.2.10"],
                          "X-Forwarded-Port": ["443"], "X-Forwarded-Proto": ["https"]},
    "queryStringParameters": None,
    "multiValueQueryStringParameters": None,
    "pathParameters": {"proxy": "predict"},
    "stageVariables": None,
    "requestContext": {
        "resourceId": "2gxmpl", "resourcePath": "/{proxy+}", "httpMethod": "POST",
        "extendedRequestId": "JJbxmplHYosFVYQ=", "requestTime": "10/Mar/2020:00:03:59 +0000",
        "path": "/prod/predict", "accountId": "123456789012", "protocol": "HTTP/1.1", "stage": "prod",
        "domainPrefix": "1234567890", "requestTimeEpoch": 1583798639428,
        "requestId": "77375676-xmpl-4b79-853a-f982474efe18",
        "identity": {"cognitoIdentityPoolId": None, "accountId": None, "cognitoIdentityId": None, "caller": None,
                     "sourceIp": "192.0.2.10", "principalOrgId": None, "accessKey": None,
                     "cognitoAuthenticationType": None, "cognitoAuthenticationProvider": None, "userArn": None,
                     "userAgent": "okhttp/4.12.0", "user": None},
        "domainName": "1234567890.execute-api.us-east-1.amazonaws.com", "apiId": "1234567890"},
    "body": None,
    "isBase64Encoded": False,
}

HTTP_EVENT: dict[str, Any] = {  # API Gateway HTTP API, payload 2.0
    "version": "2.0",
    "routeKey": "$default",
    "rawPath": "/predict",
    "rawQueryString": "",
    "cookies": [],
    "headers": {"accept": "*/*", "content-type": "image/jpeg", "content-length": "0",
                "host": "r3pmxmplak.execute-api.us-east-2.amazonaws.com", "user-agent": "curl/8.5.0",
                "x-amzn-trace-id": "Root=1-5e6722a7-cc56xmpl46db7ae02d4da47e", "x-forwarded-for": "192.0.2.20",
                "x-forwarded-port": "443", "x-forwarded-proto": "https"},
    "requestContext": {
        "accountId": "123456789012", "apiId": "r3pmxmplak",
        "domainName": "r3pmxmplak.execute-api.us-east-2.amazonaws.com", "domainPrefix": "r3pmxmplak",
        "http": {"method": "POST", "path": "/predict", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.20",
                 "userAgent": "curl/8.5.0"},
        "requestId": "JKJaXmPLvHcESHA=", "routeKey": "$default", "stage": "$default",
        "time": "10/Mar/2020:05:16:23 +0000", "timeEpoch": 1583817383220},
    "body": "",
    "isBase64Encoded": True,
}


def rest_event(method: str, path: str, body: str | None = None, query: dict[str, str] | None = None,
               headers: dict[str, str] | None = None, b64: bool = False) -> dict[str, Any]:
    event = copy.deepcopy(REST_EVENT)
    event.update(httpMethod=method, path=path, body=body, isBase64Encoded=b64,
                 pathParameters={"proxy": path.lstrip("/")})
    event["requestContext"].update(httpMethod=method, path=f"/prod{path}")
    if query:
        event["queryStringParameters"] = dict(query)
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    for k, v in (headers or {}).items():
        event["headers"][k] = v
        event["multiValueHeaders"][k] = [v]
    return event


def http_event(method: str, path: str, body: bytes = b"", query: str = "",
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    event = copy.deepcopy(HTTP_EVENT)
    event.update(rawPath=path, rawQueryString=query, body=base64.b64encode(body).decode())
    if query:
        event["queryStringParameters"] = dict(p.split("=", 1) for p in query.split("&"))
    event["headers"]["content-length"] = str(len(body))
    event["headers"].update(headers or {})
    event["requestContext"]["http"].update(method=method, path=path)
    return event


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lambda-registry")
    reg = ModelRegistry(FolderStore(root))
    register_catvnoncat_mlp(reg, CATVNONCAT / "datasets.h5")
    register_cifar_mlp(reg, CIFAR10)
    return root


@pytest.fixture
def handler(registry_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LAMBDANET_REGISTRY", str(registry_dir))
    monkeypatch.delenv("LAMBDANET_API_KEY", raising=False)
    monkeypatch.setattr(serving_function, "_handler", None)  # a cold start
    return serving_function.handler


def _json(response: dict[str, Any]) -> Any:
    body = response["body"]
    return json.loads(base64.b64decode(body) if response.get("isBase64Encoded") else body)


def test_rest_api_health_and_raw_cifar_bytes(handler: Any, registry_dir: Path) -> None:
    ready = handler(rest_event("GET", "/v2/health/ready"), CONTEXT)
    assert ready["statusCode"] == 200 and _json(ready) == {"ready": True}
    _, _, x, _ = load_cifar_subset(CIFAR10, 2000, 3)
    expected = numpy_forward(ModelRegistry(FolderStore(registry_dir)).load("cifar"), x)  # independent
    for i in range(3):
        body = json.dumps({"data": base64.b64encode(x[i].transpose(2, 0, 1).tobytes()).decode()})
        r = handler(rest_event("POST", "/predict", body, query={"model": "cifar"}), CONTEXT)
        assert r["statusCode"] == 200, r["body"]
        out = _json(r)
        assert out["input"] == "raw" and (out["model"], out["version"]) == ("cifar", 1)
        assert list(out["probabilities"].values()) == pytest.approx(list(expected[i]), rel=1e-5, abs=1e-7)


def test_http_api_binary_image_upload(handler: Any, registry_dir: Path) -> None:
    r = handler(http_event("POST", "/predict", GRUMPY, query="model=itsacat"), CONTEXT)
    assert r["statusCode"] == 200, r["body"]
    out = _json(r)
    reg = ModelRegistry(FolderStore(registry_dir))
    from lambdanet.data.images import load_image_file

    probs = numpy_forward(reg.load("itsacat"), load_image_file(IMAGES / "grumpy_cat.jpeg", (64, 64, 3))[None])[0]
    assert out["label"] == ["non-cat", "cat"][int(probs.argmax())]
    assert out["probability"] == pytest.approx(float(probs.max()), rel=1e-5)


def test_http_api_v2_infer_with_binary_output(handler: Any) -> None:
    head = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                   "parameters": {"binary_data_size": len(GRUMPY) + 4}}],
                       "parameters": {"binary_data_output": True}}).encode()
    body = head + struct.pack("<I", len(GRUMPY)) + GRUMPY
    r = handler(http_event("POST", "/v2/models/itsacat/infer", body,
                           headers={"content-type": "application/octet-stream",
                                    "inference-header-content-length": str(len(head))}), CONTEXT)
    assert r["statusCode"] == 200 and r["isBase64Encoded"] is True  # binary goes back base64-encoded
    raw = base64.b64decode(r["body"])
    n = int(r["headers"]["inference-header-content-length"])
    probs = np.frombuffer(raw[n:n + 8], dtype="<f4")
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("make, status, needle", [
    (lambda: rest_event("GET", "/v2/models/ghost"), 404, "no model 'ghost'"),
    (lambda: http_event("POST", "/predict", b"not an image", query="model=itsacat"), 400, "not an image"),
    (lambda: rest_event("POST", "/predict", "{}", query={"model": "itsacat"}), 400, '{"data"'),
    (lambda: http_event("GET", "/nowhere"), 404, "not found"),
])
def test_errors_are_json(handler: Any, make: Any, status: int, needle: str) -> None:
    r = handler(make(), CONTEXT)
    assert r["statusCode"] == status
    assert needle in _json(r)["error"]


def test_api_key_from_the_environment(handler: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDANET_API_KEY", "k3y")
    assert handler(http_event("POST", "/predict", GRUMPY), CONTEXT)["statusCode"] == 401
    ok = handler(http_event("POST", "/predict", GRUMPY, headers={"x-api-key": "k3y"}), CONTEXT)
    assert ok["statusCode"] == 200
    assert handler(rest_event("GET", "/v2/health/live"), CONTEXT)["statusCode"] == 200


def test_missing_registry_setting_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from lambdanet.errors import ConfigError

    monkeypatch.delenv("LAMBDANET_REGISTRY", raising=False)
    monkeypatch.setattr(serving_function, "_handler", None)
    with pytest.raises(ConfigError, match="LAMBDANET_REGISTRY"):
        serving_function.handler(rest_event("GET", "/v2/health/live"), CONTEXT)


@pytest.mark.aws
def test_handler_loads_the_model_from_s3(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from lambdanet.objects.s3 import S3Store

    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket="serve-models")
    register_catvnoncat_mlp(ModelRegistry(S3Store.from_url("s3://serve-models/prod")), CATVNONCAT / "datasets.h5")
    monkeypatch.setenv("LAMBDANET_REGISTRY", "s3://serve-models/prod")
    monkeypatch.delenv("LAMBDANET_API_KEY", raising=False)
    monkeypatch.setattr(serving_function, "_handler", None)
    r = serving_function.handler(http_event("POST", "/predict", GRUMPY), CONTEXT)
    assert r["statusCode"] == 200, r["body"]
    assert (_json(r)["model"], _json(r)["version"]) == ("itsacat", 1)
    meta = serving_function.handler(rest_event("GET", "/v2/models/itsacat"), CONTEXT)
    assert _json(meta)["versions"] == ["1"]
