"""What the test modules share: the server's URL (from $TIDINGS_URL), unique names, waiting."""

import os
import time
import uuid

URL = os.environ.get("TIDINGS_URL", "http://127.0.0.1:3310")
PATIENCE = 10.0


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def until(what, check):
    deadline = time.monotonic() + PATIENCE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.01)
