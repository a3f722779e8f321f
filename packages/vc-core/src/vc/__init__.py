"""vc, the voice connector: phone calls answered by an AI voice agent."""

__version__ = "0.11.0"
