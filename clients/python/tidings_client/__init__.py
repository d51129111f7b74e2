"""Python client of tidings serve's queue API, with LeanMQ 0.2.0's API.

Switch from LeanMQ by changing the import and passing the server's URL:
``from tidings_client import LeanMQ, LeanMQWebhook``.
"""

from .client import (
    Conflict,
    LeanMQ,
    Message,
    NotFound,
    Queue,
    QueueInfo,
    TidingsError,
    Transaction,
)
from .webhook import LeanMQWebhook, WebhookService, queue_name_for_path

__all__ = [
    "Conflict",
    "LeanMQ",
    "LeanMQWebhook",
    "Message",
    "NotFound",
    "Queue",
    "QueueInfo",
    "TidingsError",
    "Transaction",
    "WebhookService",
    "queue_name_for_path",
]
