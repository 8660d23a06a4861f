"""The replica processes: the model's three steps (image encoder, reasoner, segmenter), their batching,
routing and settings, the Ray Serve deployments and application builders, and ``LocalPipeline``, which
runs the same steps in one process without Ray.
"""
