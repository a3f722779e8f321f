from vc.hookspecs import hookimpl


@hookimpl
def register_stt(register):
    register("not a provider class")
