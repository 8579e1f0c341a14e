"""The Ray transport: actors, the Serve feedback app, wiring, metrics, the Ray Data labelling job."""
