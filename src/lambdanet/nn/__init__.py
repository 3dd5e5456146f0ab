"""The numpy network: activations, losses, the MLP forward/backward, optimizers, mini-batches,
the single-process reference trainer and the MLP predictor."""
