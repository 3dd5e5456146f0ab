"""The cloud entry points: what starts training when data is uploaded, and the two AWS Lambda
functions (``deploy/template.yaml`` names their handlers).

- :mod:`lambdanet.functions.upload_trigger` — :class:`UploadTrigger`: one training run per new
  ``training_input/*.h5`` in a folder or bucket; ``lambdanet watch`` polls with it, and the
  training function runs its steps.
- :mod:`lambdanet.functions.training_function` — the *training* Lambda (handler
  ``lambdanet.functions.training_function.handler``): an S3 ``ObjectCreated`` event becomes one
  durable execution that trains the run round by round across invocations.
- :mod:`lambdanet.functions.serving_function` — the *serving* Lambda (handler
  ``lambdanet.functions.serving_function.handler``): the prediction app behind API Gateway
  through Mangum.

Nothing is imported here, so that each function loads only its own dependencies.
"""
