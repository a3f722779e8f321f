"""Twilio Media Streams transport: signed webhooks, bidirectional streams, marks and barge-in."""

__version__ = "0.1.0"
