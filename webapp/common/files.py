from __future__ import annotations

import logging
from contextlib import contextmanager

logger = logging.getLogger(__name__)


@contextmanager
def undone_on_failure():
    """A list for the files written within the block (``(storage, name)``), deleted again where the block
    fails: put it outside the transaction that saves the rows naming them, so that a failed commit also
    takes them (a file is written before its row, and no row is left to find it by)."""
    written: list[tuple] = []
    try:
        yield written
    except BaseException:
        for storage, name in written:
            try:
                storage.delete(name)
            except Exception:  # noqa: BLE001 - the block's own error is the one to raise
                logger.exception("could not delete %s after a failed change; it is left in storage", name)
        raise
