"""Python client of tidings serve: the event hub (`Hub`, with Amebo's client calls), a webhook
receiver's toolkit (`verify`, `Receiver`), and the queue API with LeanMQ 0.2.0's classes.

Switch from LeanMQ by changing the import and passing the server's URL:
``from tidings_client import LeanMQ, LeanMQWebhook``.
"""

from .client import LeanMQ, Message, Queue, QueueInfo, Retry, Transaction
from .errors import (
    BadGateway,
    BadRequest,
    Conflict,
    EndpointCheckFailed,
    Forbidden,
    InsufficientStorage,
    NotFound,
    PayloadTooLarge,
    SchemaViolation,
    TidingsError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from .hub import Hub
from .receiver import InvalidSignature, MemoryStore, Receiver, verify
from .webhook import LeanMQWebhook, WebhookService, queue_name_for_path

__all__ = [
    "BadGateway",
    "BadRequest",
    "Conflict",
    "EndpointCheckFailed",
    "Forbidden",
    "Hub",
    "InsufficientStorage",
    "InvalidSignature",
    "LeanMQ",
    "LeanMQWebhook",
    "MemoryStore",
    "Message",
    "NotFound",
    "PayloadTooLarge",
    "Queue",
    "QueueInfo",
    "Receiver",
    "Retry",
    "SchemaViolation",
    "TidingsError",
    "TooManyRequests",
    "Transaction",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "WebhookService",
    "queue_name_for_path",
    "verify",
]
