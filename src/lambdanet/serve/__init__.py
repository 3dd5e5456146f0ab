"""The prediction service: ``lambdanet serve`` (FastAPI + uvicorn) and its Lambda adapter.

- :mod:`lambdanet.serve.app` — ``create_app(registry, ServeOptions(...))``, errors as JSON
- :mod:`lambdanet.serve.v2` — Open Inference Protocol v2 (KServe / Triton REST)
- :mod:`lambdanet.serve.routes` — ``/predict``, itsacat's ``/image``, the photo page, ``/metrics``
- :mod:`lambdanet.serve.models` — references resolved per request, predictors cached per version
- :mod:`lambdanet.serve.batching` — micro-batching of concurrent requests
- :mod:`lambdanet.serve.urlguard` — the SSRF guard of ``/image?image=URL``
- :mod:`lambdanet.serve.aws_lambda` — ``handler`` for API Gateway (REST and HTTP API) via Mangum
"""
