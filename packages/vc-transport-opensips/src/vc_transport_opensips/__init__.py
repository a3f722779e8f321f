"""OpenSIPS transport: B2B (event_datagram + MI) and proxy (SIP UAS) modes with RTP media."""

__version__ = "0.1.0"
