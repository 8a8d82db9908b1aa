"""The collector: ``ox-telemetry serve``, the HTTP endpoint clients and daemons post to.

It needs the ``server`` extra (``pip install 'ox-telemetry[server]'``). Nothing
outside this package imports it, so the client library never loads the web stack.
"""
