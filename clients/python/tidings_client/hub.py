"""The event hub's client, with the calls of Amebo's client (`publish_event`, `get_events`).

    from tidings_client import Hub
    hub = Hub("http://127.0.0.1:3310", api_key=os.environ["TIDINGS_API_KEY"])
    hub.publish_event("user.created", {"id": 1, "email": "a@example.com"}, deduper="user-1")
    for event in hub.get_events(action="user.created", from_date=yesterday):
        print(event["event"], event["payload"])

Answers are the server's JSON objects as dicts (their fields are in /openapi.json); errors are
the exceptions of `tidings_client.errors`. Calls that are safe to repeat (reads, deletes,
updates to a given state, and a publish with a deduper) are retried on connection errors and
503 answers; the others are not, so a publish without a deduper is never sent twice.
"""

import datetime
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from .client import Retry, _Http, _segment

# The server's largest page.
_MAX_PAGE = 100

When = Union[datetime.datetime, datetime.date, str, int, float]


def _when(value: Optional[When]) -> Optional[str]:
    """A time as the server takes it: ISO 8601 (naive datetimes are taken as UTC), Unix seconds,
    or a word it knows (`today`, `7d`, ...)."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.isoformat()
    if isinstance(value, datetime.date):
        return datetime.datetime.combine(value, datetime.time(), datetime.timezone.utc).isoformat()
    return str(value)


class Hub:
    """A `tidings serve` event hub, as an application (`api_key`) or the admin (`admin_key`).

    Without either, `TIDINGS_API_KEY` or `TIDINGS_ADMIN_KEY` from the environment is used; with
    neither, calls go without credentials (the admin in protected mode, on the server's host)."""

    def __init__(self, url: str = "http://127.0.0.1:3310", api_key: Optional[str] = None,
                 admin_key: Optional[str] = None, timeout: float = 10.0,
                 retry: Optional[Retry] = None):
        self._http = _Http(url, api_key, admin_key, timeout)
        self._retry = retry or Retry()

    def _get(self, path: str, query: Optional[Dict[str, Any]] = None) -> Any:
        return self._http.request("GET", path, query=query, retry=self._retry)[1]

    def _all(self, path: str, query: Dict[str, Any], page_size: int = 100) -> List[Dict[str, Any]]:
        """Every page of a listing that answers an array."""
        page_size = max(1, min(page_size, _MAX_PAGE))
        found: List[Dict[str, Any]] = []
        page = 1
        while True:
            items = self._get(path, dict(query, page=page, pagination=page_size))
            found.extend(items)
            if len(items) < page_size:
                return found
            page += 1

    def _call(self, method: str, path: str, body: Any = None, safe: bool = False,
              query: Optional[Dict[str, Any]] = None) -> Any:
        retry = self._retry if safe else None
        return self._http.request(method, path, body, query=query, retry=retry)[1]

    # Events

    def publish_event(self, action: str, payload: Dict[str, Any], deduper: Optional[str] = None,
                      metadata: Optional[Dict[str, Any]] = None,
                      sleep_until: Optional[float] = None) -> Dict[str, Any]:
        """Publishes an event of `action`; returns it (`event`, `fanout`, ...). With a `deduper`,
        a repeat returns the original event (`duplicate: true`) and the call is retried on
        connection errors; `sleep_until` delays its deliveries by that many seconds."""
        body = _body("NewEvent", action=action, payload=payload, deduper=deduper, metadata=metadata,
                     sleep_until=sleep_until)
        return self._call("POST", "/v1/events", body, safe=deduper is not None)

    def get_events(self, action: Optional[str] = None, from_date: Optional[When] = None,
                   to_date: Optional[When] = None, application: Optional[str] = None,
                   deduper: Optional[str] = None, page_size: int = 100) -> Iterator[Dict[str, Any]]:
        """Events, newest first, a page at a time as the iteration goes. Events published while
        it runs are not returned (they are newer than the first page); none is returned twice."""
        page_size = max(1, min(page_size, _MAX_PAGE))
        query: Dict[str, Any] = {
            "action": action,
            "application": application,
            "deduper": deduper,
            "from": _when(from_date),
            "to": _when(to_date),
            "pagination": page_size,
        }
        page = 1
        last_row: Optional[int] = None
        while True:
            events = self._get("/v1/events", dict(query, page=page))
            for event in events:
                # Newer events push older ones onto later pages: skip what was seen.
                if last_row is not None and event["row_id"] >= last_row:
                    continue
                last_row = event["row_id"]
                yield event
            if len(events) < page_size:
                return
            page += 1

    def get_event(self, event_id: str) -> Dict[str, Any]:
        """One event (NotFound if there is none, or it is not the caller's to read)."""
        return self._get("/v1/events/" + _segment(event_id))

    # Applications

    def create_application(self, application: str, address: str, description: Optional[str] = None,
                           secret: Optional[str] = None,
                           queues: Optional[List[str]] = None) -> Dict[str, Any]:
        """Registers an application (admin); the answer holds its `secret` and `apikey`, shown
        only here."""
        body = _body("NewApplication", application=application, address=address,
                     description=description, secret=secret, queues=queues)
        return self._call("POST", "/v1/applications", body)

    def get_applications(self, application: Optional[str] = None) -> List[Dict[str, Any]]:
        """Applications (the caller's own, unless admin)."""
        return self._all("/v1/applications", {"application": application})

    def update_application(self, application: str, address: Optional[str] = None,
                           description: Optional[str] = None,
                           queues: Optional[List[str]] = None) -> Dict[str, Any]:
        body = _body("ApplicationUpdate", address=address, description=description, queues=queues)
        return self._call("PUT", "/v1/applications/" + _segment(application), body, safe=True)

    def set_application_active(self, application: str, active: bool) -> Dict[str, Any]:
        """Enables or disables an application (admin)."""
        return self._call("PATCH", "/v1/applications/" + _segment(application),
                          _body("Toggle", active=active), safe=True)

    def rotate_secret(self, application: str, secret: Optional[str] = None,
                      grace_period: Optional[Union[int, str]] = None) -> Dict[str, Any]:
        """Replaces an application's secret (generated when not given); the old one keeps
        working for `grace_period` (seconds or "90m", "2d"; the server's default otherwise)."""
        body = _body("SecretRotation", secret=secret, grace_period=grace_period)
        return self._call("PUT", "/v1/applications/" + _segment(application) + "/secret", body)

    def new_api_key(self, application: str) -> str:
        """Mints a new API key for an application; the old one stops working."""
        return self._call("POST", "/v1/applications/" + _segment(application) + "/apikey")["apikey"]

    def delete_application(self, application: str) -> Dict[str, Any]:
        return self._call("DELETE", "/v1/applications/" + _segment(application), safe=True)

    # Actions

    def register_action(self, action: str, application: str, schemata: Dict[str, Any],
                        dedup_window: Optional[str] = None,
                        retention: Optional[str] = None) -> Dict[str, Any]:
        """Registers an action with its JSON Schema; registering it again with the same schema
        answers `unchanged`."""
        body = _body("NewAction", action=action, application=application, schemata=schemata,
                     dedup_window=dedup_window, retention=retention)
        return self._call("POST", "/v1/actions", body, safe=True)

    def get_actions(self, action: Optional[str] = None,
                    application: Optional[str] = None) -> List[Dict[str, Any]]:
        return self._all("/v1/actions", {"action": action, "application": application})

    def update_action(self, action_id: Union[int, str], schemata: Dict[str, Any],
                      dedup_window: Optional[str] = None,
                      retention: Optional[str] = None) -> Dict[str, Any]:
        body = _body("ActionUpdate", schemata=schemata, dedup_window=dedup_window, retention=retention)
        return self._call("PATCH", f"/v1/actions/{_segment(str(action_id))}", body, safe=True)

    def validate(self, action_id: Union[int, str], payload: Dict[str, Any]) -> Dict[str, Any]:
        """Checks a payload against an action's schema without publishing."""
        return self._call("POST", f"/v1/actions/{_segment(str(action_id))}/validations",
                          _body("Validate", payload=payload), safe=True)

    def delete_action(self, action_id: Union[int, str]) -> Dict[str, Any]:
        return self._call("DELETE", f"/v1/actions/{_segment(str(action_id))}", safe=True)

    # Subscriptions

    def subscribe(self, application: str, action: str, handler: str, max_retries: Optional[int] = None,
                  retry_schedule: Optional[List[Any]] = None, ordered: Optional[bool] = None,
                  concurrency: Optional[int] = None, description: Optional[str] = None,
                  signing_key: Optional[str] = None,
                  amebo_signature: Optional[bool] = None) -> Dict[str, Any]:
        """Subscribes `application` to `action`, delivered to the URL `handler`; the answer holds
        the `signing_key` of its Standard Webhooks signatures (shown only here and by
        `signing_key`). The same handler again reactivates the subscription."""
        body = _body("NewSubscription", application=application, action=action, handler=handler,
                     max_retries=max_retries, retry_schedule=retry_schedule, ordered=ordered,
                     concurrency=concurrency, description=description, signing_key=signing_key,
                     amebo_signature=amebo_signature)
        return self._call("POST", "/v1/subscriptions", body, safe=True)

    def get_subscriptions(self, application: Optional[str] = None, action: Optional[str] = None,
                          active: Optional[bool] = None) -> List[Dict[str, Any]]:
        query = {"application": application, "action": action,
                 "active": None if active is None else str(active).lower()}
        return self._all("/v1/subscriptions", query)

    def unsubscribe(self, subscription: str) -> Dict[str, Any]:
        return self._call("DELETE", "/v1/subscriptions/" + _segment(subscription), safe=True)

    def signing_key(self, subscription: str) -> Optional[str]:
        """The key of a subscription's Standard Webhooks signatures (None for one still signed
        with its application's secret)."""
        return self._get(f"/v1/subscriptions/{_segment(subscription)}/signing-key").get("signing_key")

    def rotate_signing_key(self, subscription: str, signing_key: Optional[str] = None,
                           grace_period: Optional[Union[int, str]] = None) -> Dict[str, Any]:
        body = _body("SigningKeyRotation", signing_key=signing_key, grace_period=grace_period)
        return self._call("POST", f"/v1/subscriptions/{_segment(subscription)}/signing-key/rotate", body)

    # Deliveries (gists)

    def get_gists(self, page_size: int = 100, **filters: Any) -> Iterator[Dict[str, Any]]:
        """Deliveries, newest event first, a page at a time. Filters are the server's: `event`,
        `subscription`, `action`, `subscriber`, `status` (pending, retrying, delivered, failed),
        `completed`, `from_date`, `to_date`."""
        query = _gist_query(filters)
        page_size = max(1, min(page_size, _MAX_PAGE))
        page = 1
        last_row: Optional[int] = None
        seen_of_last_row: set = set()
        while True:
            answer = self._get("/v1/gists", dict(query, page=page, pagination=page_size))
            for gist in answer["data"]:
                # Deliveries of newer events push older ones onto later pages: skip what was
                # seen (the event id starts with its row id, in hex).
                row = int(gist["event"][:16], 16)
                if last_row is not None and (row > last_row or (row == last_row and gist["id"] in seen_of_last_row)):
                    continue
                if row != last_row:
                    last_row, seen_of_last_row = row, set()
                seen_of_last_row.add(gist["id"])
                yield gist
            if page >= answer["pages"] or not answer["data"]:
                return
            page += 1

    def requeue(self, **filters: Any) -> int:
        """Sends failed deliveries matching the filters (as `get_gists`) again from their first
        attempt (admin); returns how many."""
        return self._call("POST", "/v1/requeues", query=_gist_query(filters))["requeued"]

    def purge(self, **filters: Any) -> int:
        """Discards failed deliveries matching the filters (as `get_gists`) (admin): their dead
        letters and records go, the events stay; returns how many."""
        return self._call("POST", "/v1/purges", query=_gist_query(filters))["purged"]

    def replay(self, gist: str) -> Dict[str, Any]:
        """Delivers one delivery again, now, once (admin): `delivered`, `status_code`, `ms`."""
        return self._call("POST", "/v1/regists/" + _segment(gist))

    def backfill(self, subscription: str, since: Optional[When] = None, until: Optional[When] = None,
                 dry_run: bool = False) -> Dict[str, Any]:
        """Delivers the stored events of a date range to a subscription (admin); with `dry_run`,
        only counts them."""
        body = _body("Backfill", subscription=subscription, since=_when(since), until=_when(until),
                     dry_run=dry_run)
        return self._call("POST", "/v1/backfills", body)

    def stats(self) -> Dict[str, Any]:
        """Totals of events and deliveries."""
        return self._get("/v1/stats")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Hub":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# What the client sends: each request body's schema in /openapi.json, with the fields the client
# can give. tests/test_openapi.py checks them against the server's document: every field must be
# one the server knows, and every field the server requires must be here.
REQUEST_FIELDS: Dict[str, Tuple[str, ...]] = {
    "NewEvent": ("action", "payload", "deduper", "metadata", "sleep_until"),
    "NewApplication": ("application", "address", "description", "secret", "queues"),
    "ApplicationUpdate": ("address", "description", "queues"),
    "Toggle": ("active",),
    "SecretRotation": ("secret", "grace_period"),
    "NewAction": ("action", "application", "schemata", "dedup_window", "retention"),
    "ActionUpdate": ("schemata", "dedup_window", "retention"),
    "Validate": ("payload",),
    "NewSubscription": ("application", "action", "handler", "max_retries", "retry_schedule",
                        "ordered", "concurrency", "description", "signing_key", "amebo_signature"),
    "SigningKeyRotation": ("signing_key", "grace_period"),
    "Backfill": ("subscription", "since", "until", "dry_run"),
}

# What the client reads from answers (besides handing them over): each response schema with the
# fields read, which the server must always send (tests/test_openapi.py).
RESPONSE_FIELDS: Dict[str, Tuple[str, ...]] = {
    "EventView": ("event", "row_id"),
    "GistPage": ("data", "pages"),
    "GistView": ("id", "event"),
    "ApiKeyIssued": ("apikey",),
    "Requeued": ("requeued",),
    "Purged": ("purged",),
}


def _body(schema: str, **fields: Any) -> Dict[str, Any]:
    """A request body of `schema` from the fields given (those that are None left out)."""
    known = REQUEST_FIELDS[schema]
    unknown = set(fields) - set(known)
    if unknown:
        raise TypeError(f"{schema} has no field {sorted(unknown)}")
    return {k: v for k, v in fields.items() if v is not None}


def _gist_query(filters: Dict[str, Any]) -> Dict[str, Any]:
    query = dict(filters)
    if "from_date" in query:
        query["from"] = _when(query.pop("from_date"))
    if "to_date" in query:
        query["to"] = _when(query.pop("to_date"))
    if isinstance(query.get("completed"), bool):
        query["completed"] = str(query["completed"]).lower()
    return query
