from vc.hookspecs import hookimpl
from vc.providers import LLMProvider


class Half(LLMProvider):
    name = "half-registered"
    description = "registered before the hook failed"


@hookimpl
def register_llm(register):
    register(Half)
    raise ValueError("the hook failed half way")
