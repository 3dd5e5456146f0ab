"""The prediction service: ``lambdanet serve`` (FastAPI + uvicorn).

- :mod:`lambdanet.serve.app` — ``create_app(registry, ServeOptions(...))``, errors as JSON
- :mod:`lambdanet.serve.v2` — Open Inference Protocol v2 (KServe / Triton REST)
- :mod:`lambdanet.serve.routes` — ``/predict``, itsacat's ``/image``, the photo page, ``/metrics``
- :mod:`lambdanet.serve.models` — references resolved per request, predictors cached per version
- :mod:`lambdanet.serve.batching` — micro-batching of concurrent requests (adaptive, FIFO)
- :mod:`lambdanet.serve.options` — ``ServeOptions``: every serving option, its default written once
- :mod:`lambdanet.serve.process` — the server process's own settings (BLAS threads, GC, GIL)
- :mod:`lambdanet.serve.rules` — the serving rules, each written once: API key, body limit, metrics, errors
- :mod:`lambdanet.serve.middleware` — ``ServingRules``: the one middleware applying them to every request
- :mod:`lambdanet.serve.inference` — ``InferenceRoutes``: ``/predict`` and ``…/infer`` without FastAPI's router
- :mod:`lambdanet.serve.urlguard` — the SSRF guard of ``/image?image=URL``
- the AWS Lambda handler (API Gateway via Mangum) is :mod:`lambdanet.functions.serving_function`
"""
