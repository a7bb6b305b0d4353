"""One module per measurement; each exposes `run(ctx) -> SuiteResult`."""
