"""LeanMQ's webhook-style API over tidings serve: `@webhook.get(path)`, `send`, `run_service`.

Paths map to queues by LeanMQ's rule, so Python and Rust services (tidings_patterns::webhook)
serve and send to each other's paths through one server.
"""

import logging
import os
import random
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from .client import LeanMQ, Queue, TidingsError

log = logging.getLogger("tidings_client.webhook")


def _normalize(path: str) -> str:
    """LeanMQ's: one trailing `/` dropped (unless the path is `/`), a leading `/` added."""
    if path != "/" and path.endswith("/"):
        path = path[:-1]
    return path if path.startswith("/") else "/" + path


def queue_name_for_path(path: str) -> str:
    """LeanMQ's rule: strip the slashes, every character that is not alphanumeric becomes `_`."""
    name = "".join(c if c.isalnum() else "_" for c in _normalize(path).strip("/"))
    if not name:
        raise ValueError(f"path {path!r} has no queue name")
    return name


class _Route:
    def __init__(self, path: str, handler: Callable[[Dict[str, Any]], Any], queue: Queue):
        self.path = path
        self.handler = handler
        self.queue = queue


class LeanMQWebhook:
    """Handlers by path, and sending to paths, as LeanMQ's `LeanMQWebhook`."""

    def __init__(self, url: str = "http://127.0.0.1:3310", api_key: Optional[str] = None,
                 admin_key: Optional[str] = None, max_attempts: int = 5, first_retry: float = 1.0,
                 max_retry: float = 60.0):
        self.mq = LeanMQ(url=url, api_key=api_key, admin_key=admin_key)
        self.routes: List[_Route] = []
        self.max_attempts = max_attempts
        self.first_retry = first_retry
        self.max_retry = max_retry

    def get(self, path: str) -> Callable:
        """Registers the decorated function as the handler of `path`."""
        def register(handler: Callable[[Dict[str, Any]], Any]) -> Callable:
            name = queue_name_for_path(path)
            if any(queue_name_for_path(r.path) == name for r in self.routes):
                raise ValueError(f"path {path!r} maps to queue {name!r}, which another route uses")
            queue, _ = self.mq.create_queue_pair(name)
            self.routes.append(_Route(_normalize(path), handler, queue))
            return handler
        return register

    def send(self, path: str, data: Dict[str, Any]) -> str:
        """Sends `data` to the handlers of `path` (creating its queue if nobody listens yet)."""
        normalized = _normalize(path)
        queue, _ = self.mq.create_queue_pair(queue_name_for_path(normalized))
        stamped = dict(data)
        stamped["_leanmq"] = {"webhook": {"path": normalized, "timestamp": time.time()}}
        return queue.send_message(stamped)

    def _handle(self, route: _Route, consumer: str, wait: float, count: int) -> int:
        handled = 0
        for message in route.queue.get_messages(count=count, block_for_seconds=wait, consumer_id=consumer):
            data = dict(message.data) if isinstance(message.data, dict) else message.data
            if isinstance(data, dict):
                data.pop("_leanmq", None)
            try:
                route.handler(data)
            except Exception as e:  # the handler's failure, whatever it is, fails its message
                if message.delivery_count >= self.max_attempts:
                    route.queue.move_to_dlq([message.id], f"Processing error: {e}")
                else:
                    delay = min(self.max_retry, self.first_retry * 2 ** (message.delivery_count - 1))
                    route.queue.retry_later(message.id, delay * random.uniform(0.5, 1.0))
                continue
            route.queue.acknowledge_messages([message.id])
            handled += 1
        return handled

    def process_messages(self, block: bool = False, timeout: float = 1, count: int = 10) -> int:
        """Handles what is waiting on every route once (LeanMQ's loop body)."""
        consumer = f"python-{os.getpid()}"
        return sum(self._handle(r, consumer, timeout if block else 0, count) for r in self.routes)

    def run_service(self, process_count: int = 10, block_for_seconds: float = 1, **_ignored: Any) -> "WebhookService":
        """Starts a worker thread per route and returns the service (stop with `stop()`)."""
        service = WebhookService(self, process_count, block_for_seconds)
        service.start()
        return service

    def close(self) -> None:
        self.mq.close()

    def __enter__(self) -> "LeanMQWebhook":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WebhookService:
    """One worker thread per route: an idle route never delays a busy one."""

    def __init__(self, webhook: LeanMQWebhook, process_count: int = 10, block_for_seconds: float = 1):
        self.webhook = webhook
        self.process_count = process_count
        self.block_for_seconds = block_for_seconds
        self.running = False
        self.threads: List[threading.Thread] = []

    def start(self) -> None:
        self.running = True
        for route in self.webhook.routes:
            t = threading.Thread(target=self._work, args=(route,), daemon=True)
            t.start()
            self.threads.append(t)

    def _work(self, route: _Route) -> None:
        consumer = f"python-{os.getpid()}-{threading.get_ident()}"
        trouble = 0.0
        while self.running:
            try:
                self.webhook._handle(route, consumer, self.block_for_seconds, self.process_count)
                trouble = 0.0
            except (TidingsError, OSError) as e:
                trouble = min(5.0, trouble * 2 or 0.1)
                log.warning("webhook worker for %s cannot receive (%s); retrying in %.1fs", route.path, e, trouble)
                time.sleep(trouble)
        self.webhook.mq._http.close()  # this thread's connection

    def stop(self) -> None:
        """Stops taking messages; handlers in progress finish (at most one wait)."""
        self.running = False
        for t in self.threads:
            t.join()

    def is_alive(self) -> bool:
        return self.running and any(t.is_alive() for t in self.threads)
