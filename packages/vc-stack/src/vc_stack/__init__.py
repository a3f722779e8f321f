"""The index of vc's first-party plugins and the default stack: data, contributed as a plugin."""

__version__ = "0.1.0"
