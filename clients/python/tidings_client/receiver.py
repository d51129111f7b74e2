"""Receiving the hub's webhooks safely: verify the signature over the raw body, drop repeats,
answer fast.

    from tidings_client import Receiver
    receiver = Receiver(os.environ["SIGNING_KEY"], handle_event)   # whsec_... or the app's secret

    # Flask
    @app.post("/hooks/users")
    def hook():
        status, body = receiver.handle(request.headers, request.get_data())
        return body, status

Verify the bytes as they arrived: parsing the JSON and serialising it again changes them
(key order, spacing, numbers) and the signature no longer matches, or worse, a check written to
tolerate that accepts a body that was changed.
"""

import base64
import binascii
import collections
import hashlib
import hmac
import json
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

# Standard Webhooks: a timestamp further than this from now is refused (replays, stale retries).
TOLERANCE_SECONDS = 5 * 60


class InvalidSignature(Exception):
    """The delivery is not signed with the key given, was changed, or is stale."""


def _lower(headers: Mapping[str, str]) -> Dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _signing_key(key: str) -> bytes:
    try:
        return base64.b64decode(key[len("whsec_"):], validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("a signing key is whsec_ followed by base64") from e


def verify(headers: Mapping[str, str], raw_body: bytes, secret: str,
           tolerance: float = TOLERANCE_SECONDS, now: Optional[float] = None) -> Dict[str, Any]:
    """Checks a delivery's signature and returns its body, parsed.

    `secret` is the subscription's signing key (`whsec_...`, checked against the Standard
    Webhooks headers `webhook-id`, `webhook-timestamp`, `webhook-signature`, with the timestamp
    within `tolerance` seconds of now) or the subscriber application's secret (checked against
    `x-amebo-signature`, or `x-amebo-signature-previous` during a rotation; Amebo's header
    carries no time, so only the Standard Webhooks path refuses stale deliveries).
    Raises `InvalidSignature`."""
    if isinstance(raw_body, str):
        raise TypeError("verify the raw bytes received, not a decoded or re-serialised body")
    h = _lower(headers)
    if secret.startswith("whsec_"):
        _verify_standard(h, raw_body, _signing_key(secret), tolerance, time.time() if now is None else now)
    else:
        _verify_amebo(h, raw_body, secret)
    try:
        body = json.loads(raw_body)
    except ValueError as e:
        raise InvalidSignature("the body is not JSON") from e
    if not isinstance(body, dict):
        raise InvalidSignature("the body is not a JSON object")
    return body


def _verify_standard(h: Dict[str, str], raw_body: bytes, key: bytes, tolerance: float, now: float) -> None:
    msg_id, stamp, given = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and stamp and given):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent_at = int(stamp)
    except ValueError as e:
        raise InvalidSignature("webhook-timestamp is not Unix seconds") from e
    if abs(now - sent_at) > tolerance:
        raise InvalidSignature(f"webhook-timestamp is {now - sent_at:.0f} s from now (stale or replayed)")
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + raw_body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in given.split():
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return
    raise InvalidSignature("no webhook-signature matches the signing key")


def _verify_amebo(h: Dict[str, str], raw_body: bytes, secret: str) -> None:
    expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    for header in ("x-amebo-signature", "x-amebo-signature-previous"):
        given = h.get(header, "").strip().lower()
        if given and hmac.compare_digest(given, expected):
            return
    raise InvalidSignature("x-amebo-signature does not match the secret")


class MemoryStore:
    """Event ids handled lately, in memory: the most recent `size`, each for `ttl` seconds.
    One process only; give `Receiver` a shared store (Redis `SET NX EX`, a database table with a
    unique key) when several processes receive."""

    def __init__(self, size: int = 100_000, ttl: float = 24 * 3600):
        self.size = size
        self.ttl = ttl
        self._seen: "collections.OrderedDict[str, float]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def claim(self, key: str) -> bool:
        """Takes `key` if nobody has lately: True once, then False until it is released or expires."""
        now = time.monotonic()
        with self._lock:
            while self._seen and (len(self._seen) >= self.size or next(iter(self._seen.values())) < now):
                self._seen.popitem(last=False)
            if key in self._seen:
                return False
            self._seen[key] = now + self.ttl
            return True

    def release(self, key: str) -> None:
        """Gives `key` back (its handling failed, so a retry may handle it)."""
        with self._lock:
            self._seen.pop(key, None)


class Receiver:
    """Verifies each delivery, hands each event to `handler` once, and says what to answer.

    `handle(headers, raw_body)` returns `(status, body)`: 401 for a delivery that fails
    verification, 200 without calling the handler for an event already handled (the hub retries
    until it gets a 2xx, and a replay sends an event again), 200 after the handler returns, and
    500 if it raises (the hub then retries; the event is released for that retry). The handler
    gets the body: `event`, `action`, `payload`, `metadata`, `timestamped`."""

    def __init__(self, secret: str, handler: Callable[[Dict[str, Any]], Any],
                 store: Optional[Any] = None, tolerance: float = TOLERANCE_SECONDS):
        self.secret = secret
        self.handler = handler
        self.store = store if store is not None else MemoryStore()
        self.tolerance = tolerance

    def handle(self, headers: Mapping[str, str], raw_body: bytes) -> Tuple[int, str]:
        try:
            event = verify(headers, raw_body, self.secret, self.tolerance)
        except InvalidSignature as e:
            return 401, json.dumps({"error": str(e)})
        key = str(event.get("event") or _lower(headers).get("x-amebo-event-id") or "")
        if key and not self.store.claim(key):
            return 200, json.dumps({"duplicate": True})
        try:
            self.handler(event)
        except Exception as e:  # the handler's failure, whatever it is: the hub retries
            if key:
                self.store.release(key)
            return 500, json.dumps({"error": type(e).__name__})
        return 200, json.dumps({"ok": True})
