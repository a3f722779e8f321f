from vc.hookspecs import hookimpl


@hookimpl
def register_stt(registrar):  # the hook passes `register`
    pass
