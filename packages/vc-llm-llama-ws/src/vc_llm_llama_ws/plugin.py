"""vc plugin entry point for vc-llm-llama-ws (hook implementations)."""

from __future__ import annotations

from vc.hookspecs import hookimpl
from vc_llm_llama_ws.client import LlamaWSProvider
from vc_llm_llama_ws.embedded import LlamaCppProvider
from vc_llm_llama_ws.models import LlamaCppModels


@hookimpl
def register_llm(register):
    register(LlamaWSProvider)
    register(LlamaCppProvider)


@hookimpl
def register_models(register):
    register(LlamaCppModels())


@hookimpl
def register_checks(register):
    from vc_llm_llama_ws.checks import check_llama_build

    register(check_llama_build)
