from vc.hookspecs import hookimpl


@hookimpl
def register_sst(register):  # misspelt: there is no such hook
    pass
