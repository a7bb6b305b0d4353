"""The engine: base model, mixed batches of many prompt tasks, the forward loop."""
