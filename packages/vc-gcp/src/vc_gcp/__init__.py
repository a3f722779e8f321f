"""Google Cloud integration: Cloud Logging JSON logs, Secret Manager references, deployment helpers."""

__version__ = "0.1.0"
