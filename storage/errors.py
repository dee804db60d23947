"""Errors a user can act on; each message is one line."""


class StoreError(RuntimeError):
    pass


class StoreLocked(StoreError):
    pass


class StoreMissing(StoreError):
    pass


class SchemaTooNew(StoreError):
    pass
