"""The hub client and the receiver's toolkit against a real tidings serve at $TIDINGS_URL (run by
crates/tidings-server/tests/clients.rs, which starts the server with the admin key in
$TIDINGS_ADMIN_KEY and lets it deliver to 127.0.0.1)."""

import base64
import datetime
import hashlib
import hmac
import http.server
import json
import threading
import time
import unittest

from tidings_client import (
    Forbidden,
    Hub,
    InvalidSignature,
    NotFound,
    Receiver,
    Retry,
    SchemaViolation,
    Unauthorized,
    Unavailable,
    Unprocessable,
    verify,
)

from support import PATIENCE, URL, unique, until  # noqa: E402 (run with: unittest discover -s tests)

USER_SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "email": {"type": "string"}},
    "required": ["id", "email"],
}


class Endpoint:
    """A local HTTP endpoint (the standard library's server): `answer(headers, body)` gives each
    request's status and body; every request is kept in `seen`."""

    def __init__(self, answer):
        self.answer = answer
        self.seen = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = dict(self.headers.items())
                endpoint.seen.append((headers, raw))
                status, body = endpoint.answer(headers, raw)
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class HubCase(unittest.TestCase):
    def setUp(self):
        self.admin = Hub(URL)  # the admin key from TIDINGS_ADMIN_KEY
        self.endpoints = []

    def tearDown(self):
        for e in self.endpoints:
            e.close()
        self.admin.close()

    def endpoint(self, answer):
        e = Endpoint(answer)
        self.endpoints.append(e)
        return e

    def publisher(self):
        """A publishing application with a `user.created`-like action; its Hub and the action."""
        app = self.admin.create_application(unique("users"), "http://users.invalid")
        action = unique("user.created")
        registered = self.admin.register_action(action, app["application"], USER_SCHEMA)
        self.assertEqual(registered["status"], "active")
        return Hub(URL, api_key=app["apikey"]), app, action, registered


class SeedFlows(HubCase):
    def test_user_registration_reaches_a_verifying_receiver_once(self):
        users, _, action, _ = self.publisher()
        handled = []
        receiver = None
        endpoint = self.endpoint(lambda h, b: receiver.handle(h, b))
        mailer = self.admin.create_application(unique("mailer"), endpoint.url)
        sub = self.admin.subscribe(mailer["application"], action, endpoint.url)
        receiver = Receiver(sub["signing_key"], handled.append)

        published = users.publish_event(action, {"id": 1, "email": "ada@example.com"},
                                         deduper="user-1", metadata={"source": "signup"})
        self.assertEqual(published["fanout"], 1)
        until("the receiver handles the event", lambda: len(handled) == 1)
        event = handled[0]
        self.assertEqual(event["event"], published["event"])
        self.assertEqual(event["payload"], {"id": 1, "email": "ada@example.com"})
        self.assertEqual(event["metadata"], {"source": "signup"})
        # The same delivery verifies with the application's secret on Amebo's header too.
        headers, raw = endpoint.seen[0]
        self.assertEqual(verify(headers, raw, mailer["secret"])["event"], published["event"])

        # A replay reaches the endpoint again; the receiver answers 2xx and handles nothing.
        gist = next(self.admin.get_gists(event=published["event"]))
        until("the delivery is recorded as delivered",
              lambda: next(self.admin.get_gists(event=published["event"]))["status"] == "delivered")
        replayed = self.admin.replay(gist["id"])
        self.assertTrue(replayed["delivered"])
        self.assertEqual(len(endpoint.seen), 2)
        self.assertEqual(len(handled), 1)
        users.close()

    def test_order_placed_with_a_repeat_and_the_events_read_back(self):
        shop, _, action, _ = self.publisher()
        first = shop.publish_event(action, {"id": 7, "email": "o@example.com"}, deduper="order-7")
        again = shop.publish_event(action, {"id": 7, "email": "o@example.com"}, deduper="order-7")
        self.assertEqual(again["event"], first["event"])
        self.assertTrue(again["duplicate"])
        self.assertEqual(shop.get_event(first["event"])["payload"]["id"], 7)
        self.assertEqual([e["event"] for e in shop.get_events(action=action)], [first["event"]])
        shop.close()

    def test_replay_of_a_date_range_backfills_a_new_subscriber(self):
        shop, _, action, _ = self.publisher()
        started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
        ids = [shop.publish_event(action, {"id": i, "email": f"{i}@example.com"})["event"] for i in range(5)]
        got = []
        endpoint = self.endpoint(lambda h, b: (got.append(json.loads(b)["event"]), (200, "{}"))[1])
        late = self.admin.create_application(unique("late"), endpoint.url)
        sub = self.admin.subscribe(late["application"], action, endpoint.url)
        counted = self.admin.backfill(sub["subscription"], since=started, dry_run=True)
        self.assertEqual(counted["count"], 5)
        done = self.admin.backfill(sub["subscription"], since=started)
        self.assertEqual(done["backfilled"], 5)
        until("the backfill arrives", lambda: len(got) == 5)
        self.assertEqual(sorted(got), sorted(ids))
        shop.close()


class Reading(HubCase):
    def test_get_events_pages_without_repeats_and_honours_dates(self):
        shop, _, action, _ = self.publisher()
        ids = [shop.publish_event(action, {"id": i, "email": "x@example.com"})["event"] for i in range(23)]
        events = shop.get_events(action=action, page_size=10)
        seen = [next(events)["event"] for _ in range(5)]
        # Newer events published while it pages are not returned, and nothing comes twice.
        shop.publish_event(action, {"id": 99, "email": "late@example.com"})
        seen += [e["event"] for e in events]
        self.assertEqual(seen, list(reversed(ids)))
        past = datetime.datetime.now() - datetime.timedelta(days=2)
        self.assertEqual(list(shop.get_events(action=action, to_date=past)), [])
        self.assertEqual(len(list(shop.get_events(action=action, from_date=past.date()))), 24)
        shop.close()

    def test_gists_page_by_status_and_failed_ones_are_requeued(self):
        shop, _, action, _ = self.publisher()
        healthy = {"ok": False}
        endpoint = self.endpoint(lambda h, b: (200, "{}") if healthy["ok"] else (500, "{}"))
        app = self.admin.create_application(unique("flaky"), endpoint.url)
        sub = self.admin.subscribe(app["application"], action, endpoint.url, max_retries=1)
        for i in range(3):
            shop.publish_event(action, {"id": i, "email": "f@example.com"})
        failed = lambda: list(self.admin.get_gists(subscription=sub["subscription"], status="failed", page_size=2))
        until("three deliveries fail", lambda: len(failed()) == 3)
        self.assertEqual(len({g["id"] for g in failed()}), 3)
        healthy["ok"] = True
        self.assertEqual(self.admin.requeue(subscription=sub["subscription"], status="failed"), 3)
        until("they are delivered", lambda: len(list(
            self.admin.get_gists(subscription=sub["subscription"], status="delivered"))) == 3)
        self.assertGreaterEqual(self.admin.stats()["delivered"], 3)
        # Failing again: discarded instead.
        healthy["ok"] = False
        shop.publish_event(action, {"id": 9, "email": "f@example.com"})
        until("the fourth fails", lambda: len(failed()) == 1)
        self.assertEqual(self.admin.purge(subscription=sub["subscription"]), 1)
        self.assertEqual(failed(), [])
        shop.close()

    def test_catalog_calls(self):
        shop, app, action, registered = self.publisher()
        names = [a["application"] for a in self.admin.get_applications()]
        self.assertIn(app["application"], names)
        self.assertEqual([a["action"] for a in shop.get_actions(action=action)], [action])
        check = shop.validate(registered["id"], {"id": "one"})
        self.assertFalse(check["valid"])
        self.assertTrue(check["errors"])
        subs = self.admin.get_subscriptions(action=action)
        self.assertEqual(subs, [])
        key = self.admin.new_api_key(app["application"])
        with self.assertRaises(Unauthorized):
            shop.get_actions()
        with Hub(URL, api_key=key) as again:
            self.assertEqual(len(again.get_actions(action=action)), 1)
        shop.close()


class Errors(HubCase):
    def test_each_error_answer_has_its_exception(self):
        shop, _, action, _ = self.publisher()
        with self.assertRaises(SchemaViolation) as violation:
            shop.publish_event(action, {"id": "one"})
        self.assertEqual(violation.exception.status, 406)
        self.assertTrue(any("$.id" in e for e in violation.exception.errors), violation.exception.errors)
        self.assertTrue(any("email" in e for e in violation.exception.errors), violation.exception.errors)
        with self.assertRaises(Unprocessable):
            shop.publish_event(unique("nobody.registered"), {"id": 1})
        with self.assertRaises(NotFound):
            shop.get_event("0" * 32)
        with self.assertRaises(Unauthorized):
            with Hub(URL, api_key="tidings_" + "0" * 64) as stranger:
                stranger.publish_event(action, {"id": 1, "email": "e@example.com"})
        other, _, other_action, _ = self.publisher()
        with self.assertRaises(Forbidden):
            shop.publish_event(other_action, {"id": 1, "email": "e@example.com"})
        other.close()
        shop.close()


class ErrorClasses(unittest.TestCase):
    def test_every_status_the_server_answers_has_its_class(self):
        from tidings_client import errors
        expected = {400: errors.BadRequest, 401: errors.Unauthorized, 403: errors.Forbidden,
                    404: errors.NotFound, 406: errors.SchemaViolation, 409: errors.Conflict,
                    413: errors.PayloadTooLarge, 415: errors.UnsupportedMediaType,
                    417: errors.EndpointCheckFailed, 422: errors.Unprocessable,
                    429: errors.TooManyRequests, 502: errors.BadGateway, 503: errors.Unavailable,
                    507: errors.InsufficientStorage}
        for status, cls in expected.items():
            e = errors.error_for(status, {"error": "x", "code": "c"})
            self.assertIs(type(e), cls)
            self.assertEqual((e.status, e.code, str(e)), (status, "c", "x"))
        self.assertIs(type(errors.error_for(418, {"error": "teapot"})), errors.TidingsError)


class Retries(unittest.TestCase):
    """Which calls are tried again: against a local server answering 503 twice, then 201."""

    def setUp(self):
        self.calls = 0

        def answer(headers, body):
            self.calls += 1
            if self.calls <= 2:
                return 503, '{"error": "try again"}'
            return 201, '{"event": "e", "row_id": 1}'

        self.endpoint = Endpoint(answer)
        self.hub = Hub(self.endpoint.url.rsplit("/", 1)[0], api_key="k",
                       retry=Retry(attempts=3, first=0.01, most=0.02))

    def tearDown(self):
        self.hub.close()
        self.endpoint.close()

    def test_a_publish_with_a_deduper_is_retried(self):
        self.assertEqual(self.hub.publish_event("a", {}, deduper="d")["event"], "e")
        self.assertEqual(self.calls, 3)

    def test_a_publish_without_a_deduper_is_not(self):
        with self.assertRaises(Unavailable):
            self.hub.publish_event("a", {})
        self.assertEqual(self.calls, 1)

    def test_connection_errors_are_retried_then_raised(self):
        self.endpoint.close()
        started = time.monotonic()
        with self.assertRaises(OSError):
            self.hub.get_event("x")
        self.assertLess(time.monotonic() - started, PATIENCE)


def standard_headers(key: str, body: bytes, msg_id: str = "msg_1", at: float = None):
    stamp = str(int(time.time() if at is None else at))
    raw_key = base64.b64decode(key[len("whsec_"):])
    mac = hmac.new(raw_key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": stamp,
            "Webhook-Signature": "v1," + base64.b64encode(mac).decode()}


class Receiving(unittest.TestCase):
    KEY = "whsec_" + base64.b64encode(b"k" * 32).decode()
    BODY = b'{"event":"e1","action":"a","payload":{"n":1},"metadata":{}}'

    def test_verify_takes_the_right_key_and_bytes_only(self):
        headers = standard_headers(self.KEY, self.BODY)
        self.assertEqual(verify(headers, self.BODY, self.KEY)["payload"], {"n": 1})
        other = "whsec_" + base64.b64encode(b"x" * 32).decode()
        for bad_key, body in ((other, self.BODY), (self.KEY, self.BODY.replace(b"1", b"2"))):
            with self.assertRaises(InvalidSignature):
                verify(headers, body, bad_key)
        # The same meaning re-serialised is not the bytes that were signed.
        reordered = json.dumps(json.loads(self.BODY), sort_keys=True).encode()
        with self.assertRaises(InvalidSignature):
            verify(headers, reordered, self.KEY)
        with self.assertRaises(InvalidSignature):
            verify(standard_headers(self.KEY, self.BODY, at=time.time() - 600), self.BODY, self.KEY)
        with self.assertRaises(TypeError):
            verify(headers, self.BODY.decode(), self.KEY)

    def test_amebo_signature_and_its_previous_secret(self):
        sig = lambda secret: hmac.new(secret.encode(), self.BODY, hashlib.sha256).hexdigest()
        self.assertEqual(verify({"X-Amebo-Signature": sig("s1")}, self.BODY, "s1")["event"], "e1")
        during_rotation = {"x-amebo-signature": sig("new"), "x-amebo-signature-previous": sig("old")}
        self.assertEqual(verify(during_rotation, self.BODY, "old")["event"], "e1")
        with self.assertRaises(InvalidSignature):
            verify(during_rotation, self.BODY, "neither")

    def test_receiver_handles_each_event_once_and_lets_a_failure_retry(self):
        handled, failures = [], [1]

        def handler(event):
            if failures:
                failures.pop()
                raise RuntimeError("database down")
            handled.append(event["event"])

        receiver = Receiver(self.KEY, handler)
        headers = standard_headers(self.KEY, self.BODY)
        self.assertEqual(receiver.handle(headers, self.BODY)[0], 500)
        self.assertEqual(receiver.handle(headers, self.BODY)[0], 200)
        self.assertEqual(receiver.handle(headers, self.BODY)[0], 200)
        self.assertEqual(handled, ["e1"])
        self.assertEqual(receiver.handle(headers, self.BODY + b" ")[0], 401)
        stale = standard_headers(self.KEY, self.BODY, at=time.time() - 3600)
        self.assertEqual(receiver.handle(stale, self.BODY)[0], 401)


if __name__ == "__main__":
    unittest.main()
