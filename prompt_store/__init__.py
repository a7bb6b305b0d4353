"""Prompt registry: artifact records, validation and storage backends. Never imports torch."""
