"""lambdanet: train neural networks on serverless functions and serve them."""

__version__ = "0.1.0"
