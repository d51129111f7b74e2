"""Queues over HTTP, with LeanMQ's classes and method names."""

import contextlib
import http.client
import json
import os
import random
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .errors import Conflict, NotFound, TidingsError, error_for  # noqa: F401 (re-exported)

# The server's limits: one receive waits at most 30 s and returns at most 1000.
_MAX_WAIT_MS = 30_000
_MAX_PAGE = 1000


@dataclass
class Message:
    """A received message (LeanMQ's `Message`, plus `headers` and, for dead letters, `reason`)."""

    id: str
    data: Any
    timestamp: float
    delivery_count: int = 0
    headers: Dict[str, str] = field(default_factory=dict)
    reason: Optional[str] = None


@dataclass
class QueueInfo:
    """LeanMQ's `QueueInfo`."""

    name: str
    is_dlq: bool = False
    message_count: int = 0
    consumer_group: Optional[str] = None
    pending_messages: int = 0
    created_at: Optional[float] = None


@dataclass
class Retry:
    """How calls that are safe to repeat are retried: `attempts` more tries after the first,
    pausing `first` seconds, doubling up to `most`, each pause scaled by a random 0.5-1."""

    attempts: int = 4
    first: float = 0.1
    most: float = 2.0

    def pause(self, attempt: int) -> float:
        return min(self.most, self.first * 2 ** attempt) * random.uniform(0.5, 1.0)


class _Http:
    """One keep-alive connection per thread to the server."""

    def __init__(self, url: str, api_key: Optional[str], admin_key: Optional[str], timeout: float):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"the server's URL must be http(s)://host:port, not {url!r}")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.base_path = parsed.path.rstrip("/")
        self.timeout = timeout
        self.headers = {"content-type": "application/json"}
        api_key = api_key or os.environ.get("TIDINGS_API_KEY")
        admin_key = admin_key or os.environ.get("TIDINGS_ADMIN_KEY")
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        elif admin_key:
            self.headers["x-amebo-admin-key"] = admin_key
        self._local = threading.local()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=timeout)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def request(self, method: str, path: str, body: Any = None, query: Optional[Dict[str, Any]] = None,
                wait_ms: int = 0, headers: Optional[Dict[str, str]] = None,
                retry: Optional["Retry"] = None) -> Tuple[int, Any]:
        """One call. With `retry` (only for calls that are safe to repeat), connection errors
        and 503 answers are tried again after a growing pause."""
        target = self.base_path + path
        if query:
            target += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        payload = None if body is None else json.dumps(body).encode()
        timeout = self.timeout + wait_ms / 1000.0
        sent_headers = dict(self.headers, **headers) if headers else self.headers
        attempt = 0
        while True:
            try:
                status, raw = self._exchange(method, target, payload, sent_headers, timeout)
            except (ConnectionError, http.client.HTTPException, OSError):
                if retry is None or attempt >= retry.attempts:
                    raise
            else:
                if status != 503 or retry is None or attempt >= retry.attempts:
                    break
            time.sleep(retry.pause(attempt))
            attempt += 1
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = {"error": raw.decode("utf-8", "replace")[:500]}
        if status >= 400:
            body = answer if isinstance(answer, dict) else {"error": str(answer)}
            raise error_for(status, body)
        return status, answer

    def _exchange(self, method: str, target: str, payload: Optional[bytes], headers: Dict[str, str],
                  timeout: float) -> Tuple[int, bytes]:
        # A kept-alive connection the server closed meanwhile: one fresh try.
        for attempt in (0, 1):
            conn = self._connection(timeout)
            reused = conn.sock is not None
            try:
                conn.request(method, target, body=payload, headers=headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 1 or not reused:
                    raise
        raise ConnectionError("unreachable")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _segment(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _message(data: Any, message_id: Optional[str], ttl: Optional[int]) -> Dict[str, Any]:
    message: Dict[str, Any] = {"payload": data}
    if message_id is not None:
        message["dedup_id"] = str(message_id)
    if ttl is not None:
        message["ttl"] = int(ttl * 1000)
    return message


class Queue:
    """A queue (or, with `is_dlq`, the dead letters of one), as LeanMQ's `Queue`."""

    def __init__(self, http_: _Http, name: str, consumer_group: str, is_dlq: bool = False):
        self._http = http_
        self.name = name
        self.consumer_group = consumer_group
        self.is_dlq = is_dlq

    def _path(self, *rest: str) -> str:
        return "/v1/queues/" + _segment(self.name) + "".join("/" + r for r in rest)

    def send_message(self, data: Dict[str, Any], message_id: Optional[str] = None,
                     ttl: Optional[int] = None) -> str:
        """Sends `data`; `message_id` is a dedup id, `ttl` seconds. Returns the message's id."""
        if self.is_dlq:
            raise TidingsError(400, {"error": "messages are sent to the main queue, not its dead letters"})
        _, answer = self._http.request("POST", self._path("messages"), _message(data, message_id, ttl))
        return answer["messages"][0]["id"]

    def get_messages(self, count: int = 1, block_for_seconds: Optional[float] = None,
                     consumer_id: str = "default-consumer") -> List[Message]:
        """Takes up to `count` messages for `consumer_id` of this queue's group, waiting up to
        `block_for_seconds` for the first (the server answers as soon as one arrives). On a
        dead-letter queue: the oldest `count` dead letters, with their `reason`."""
        if self.is_dlq:
            _, answer = self._http.request("GET", self._path("dead-letters"), query={"limit": min(count, _MAX_PAGE)})
            return [
                Message(id=d["id"], data=d["payload"], timestamp=d["dead_lettered_at"] / 1000.0,
                        delivery_count=d["attempts"], headers=d.get("headers") or {}, reason=d["reason"])
                for d in answer["dead_letters"]
            ]
        wait_ms = int((block_for_seconds or 0) * 1000)
        deadline = time.monotonic() + wait_ms / 1000.0
        while True:
            left = max(0, int((deadline - time.monotonic()) * 1000))
            chunk = min(left, _MAX_WAIT_MS)
            body = {"group": self.consumer_group, "consumer": consumer_id,
                    "max": max(1, min(count, _MAX_PAGE)), "wait": chunk}
            _, answer = self._http.request("POST", self._path("receive"), body, wait_ms=chunk)
            got = answer["messages"]
            if got or left <= chunk:
                return [
                    Message(id=m["id"], data=m["payload"], timestamp=m["enqueued_at"] / 1000.0,
                            delivery_count=m["delivery_count"], headers=m.get("headers") or {})
                    for m in got
                ]

    def acknowledge_messages(self, message_ids: List[str]) -> int:
        """Acks messages of this queue's group; returns how many were pending."""
        if self.is_dlq or not message_ids:
            return 0
        _, answer = self._http.request("POST", self._path("ack"),
                                       {"group": self.consumer_group, "ids": [str(i) for i in message_ids]})
        return answer["acked"]

    def retry_later(self, message_id: str, seconds: float) -> bool:
        """Gives a message back to be delivered again after `seconds` (not in LeanMQ)."""
        _, answer = self._http.request("POST", self._path("nack"),
                                       {"group": self.consumer_group, "id": str(message_id),
                                        "retry_after": int(seconds * 1000)})
        return answer["nacked"]

    def move_to_dlq(self, message_ids: List[str], reason: str, dlq: Optional["Queue"] = None) -> int:
        """Moves messages of this queue's group to its dead letters, with `reason`."""
        moved = 0
        for message_id in message_ids:
            _, answer = self._http.request("POST", self._path("nack"),
                                           {"group": self.consumer_group, "id": str(message_id),
                                            "dead_letter": reason})
            moved += 1 if answer["nacked"] else 0
        return moved

    def requeue_messages(self, message_ids: List[str], destination_queue: Optional["Queue"] = None) -> int:
        """On a dead-letter queue: puts these dead letters back in their queue."""
        if not self.is_dlq:
            return 0
        _, answer = self._http.request("POST", self._path("dead-letters", "requeue"),
                                       {"ids": [str(i) for i in message_ids]})
        return answer["requeued"]

    def delete_messages(self, message_ids: List[str]) -> int:
        """On a dead-letter queue: deletes these dead letters. On a queue: acks them."""
        if self.is_dlq:
            _, answer = self._http.request("POST", self._path("dead-letters", "purge"),
                                           {"ids": [str(i) for i in message_ids]})
            return answer["purged"]
        return self.acknowledge_messages(message_ids)

    def purge(self) -> int:
        """Deletes every message (or, on a dead-letter queue, every dead letter)."""
        if self.is_dlq:
            _, answer = self._http.request("POST", self._path("dead-letters", "purge"), {"all": True})
            return answer["purged"]
        _, answer = self._http.request("POST", self._path("purge"), {})
        return answer["purged"]

    def get_info(self) -> QueueInfo:
        _, info = self._http.request("GET", self._path())
        group = next((g for g in info["groups"] if g["name"] == self.consumer_group), None)
        if self.is_dlq:
            return QueueInfo(name=self.name + ":dlq", is_dlq=True, message_count=info["dead_letters"],
                             created_at=info["created_at"] / 1000.0)
        return QueueInfo(name=self.name, message_count=info["length"], consumer_group=self.consumer_group,
                         pending_messages=group["pending"] if group else 0,
                         created_at=info["created_at"] / 1000.0)


class Transaction:
    """Sends buffered until the `with` block ends, then applied all or nothing."""

    def __init__(self, http_: _Http):
        self._http = http_
        self.messages: List[Tuple[Queue, Any, Optional[str], Optional[int]]] = []
        self._acks: List[Tuple[Queue, List[str]]] = []

    def send_message(self, queue: Queue, data: Dict[str, Any], message_id: Optional[str] = None,
                     ttl: Optional[int] = None) -> str:
        message_id = message_id or str(uuid.uuid4())
        self.messages.append((queue, data, message_id, ttl))
        return message_id

    def ack(self, queue: Queue, message_ids: List[str]) -> None:
        """Also acks messages in the same transaction (not in LeanMQ)."""
        self._acks.append((queue, [str(i) for i in message_ids]))

    def _execute(self) -> List[str]:
        ops = [{"send": {"queue": q.name, "message": _message(d, i, t)}} for (q, d, i, t) in self.messages]
        ops += [{"ack": {"queue": q.name, "group": q.consumer_group, "ids": ids}} for (q, ids) in self._acks]
        if not ops:
            return []
        _, answer = self._http.request("POST", "/v1/transactions", {"ops": ops})
        return [m["id"] for m in answer["messages"]]


class LeanMQ:
    """LeanMQ's entry point, over `tidings serve` at `url`."""

    def __init__(self, url: str = "http://127.0.0.1:3310", api_key: Optional[str] = None,
                 admin_key: Optional[str] = None, timeout: float = 10.0, prefix: str = ""):
        self.url = url
        self.prefix = prefix
        self._http = _Http(url, api_key, admin_key, timeout)

    def _name(self, queue_name: str) -> str:
        return self.prefix + queue_name

    def create_queue_pair(self, queue_name: str, **settings: Any) -> Tuple[Queue, Queue]:
        """Creates the queue (if missing) and returns it and its dead-letter queue. `settings`:
        visibility_timeout, max_deliveries, default_ttl, dedup_window (ms), ..."""
        name = self._name(queue_name)
        body: Dict[str, Any] = {"name": name}
        if settings:
            body["settings"] = settings
        try:
            self._http.request("POST", "/v1/queues", body)
        except Conflict:
            pass  # it exists with other settings: use it as it is
        return self._pair(queue_name)

    def _pair(self, queue_name: str) -> Tuple[Queue, Queue]:
        name = self._name(queue_name)
        group = queue_name + "-group"
        return Queue(self._http, name, group), Queue(self._http, name, group, is_dlq=True)

    def get_queue(self, queue_name: str) -> Optional[Queue]:
        try:
            self._http.request("GET", "/v1/queues/" + _segment(self._name(queue_name)))
        except NotFound:
            return None
        return self._pair(queue_name)[0]

    def get_dead_letter_queue(self, queue_name: str) -> Optional[Queue]:
        return self._pair(queue_name)[1] if self.get_queue(queue_name) else None

    def list_queues(self) -> List[QueueInfo]:
        _, answer = self._http.request("GET", "/v1/queues")
        out = []
        for name in answer["queues"]:
            if name.startswith(self.prefix):
                queue = self._pair(name[len(self.prefix):])[0]
                with contextlib.suppress(NotFound):
                    out.append(queue.get_info())
        return out

    def delete_queue(self, queue_name: str, delete_dlq: bool = True) -> bool:
        try:
            self._http.request("DELETE", "/v1/queues/" + _segment(self._name(queue_name)))
        except NotFound:
            return False
        return True

    @contextlib.contextmanager
    def transaction(self):
        tx = Transaction(self._http)
        yield tx
        tx._execute()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "LeanMQ":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
