# ruff: noqa
"""System stand-ins and adapters: "dummy" and "fake" names that do not invent answers."""

import os


class _DummyThread:
    """Stands for a thread that the threading module did not start."""


def current_thread(active, ident):
    try:
        return active[ident]
    except KeyError:
        return _DummyThread()


class FileSystemCache:
    def stat(self, path):
        st = None
        try:
            st = os.stat(path)
        except OSError:
            if self.under_package_root(path):
                st = self._fake_init(path)
        return st

    def _fake_init(self, path):
        return os.stat_result((0o100644, 0, 0, 0, 0, 0, 0, 0, 0, 0))


def as_stream(client, request):
    try:
        return client.stream(request)
    except NotImplementedError:
        return wrap_in_fake_stream(client.complete(request))


def wrap_in_fake_stream(response):
    yield response
