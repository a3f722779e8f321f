"""vc, the voice connector: phone calls answered by an AI voice agent."""

from vc.cpu import single_threaded_blas

__version__ = "0.12.1"

single_threaded_blas()
