"""One module per DVC stage; each runs as ``python -m mnist_pipeline.stages.<name>``."""
