"""The Python client against a real tidings serve at $TIDINGS_URL (run by
crates/tidings-server/tests/clients.rs, which starts the server)."""

import threading
import time
import unittest

from tidings_client import Conflict, LeanMQ, LeanMQWebhook, NotFound, queue_name_for_path

from support import PATIENCE, URL, unique, until  # noqa: E402 (run with: unittest discover -s tests)


class QueueTests(unittest.TestCase):
    def setUp(self):
        self.mq = LeanMQ(url=URL)

    def tearDown(self):
        self.mq.close()

    def test_send_get_ack(self):
        name = unique("orders")
        main, dlq = self.mq.create_queue_pair(name)
        first = main.send_message({"order": 1, "big": 12345678901234567890}, message_id="o-1")
        again = main.send_message({"order": 1}, message_id="o-1")
        self.assertEqual(first, again, "a message id is a dedup id")
        main.send_message({"order": 2}, ttl=60)
        got = main.get_messages(count=10, block_for_seconds=1)
        self.assertEqual([m.data["order"] for m in got], [1, 2])
        self.assertEqual(got[0].data["big"], 12345678901234567890)
        self.assertEqual(got[0].delivery_count, 1)
        self.assertEqual(main.get_info().pending_messages, 2)
        self.assertEqual(main.acknowledge_messages([m.id for m in got]), 2)
        info = main.get_info()
        self.assertEqual((info.message_count, info.pending_messages), (0, 0))
        self.assertEqual(main.get_messages(count=10), [])
        self.assertIn(name, [q.name for q in self.mq.list_queues()])
        self.assertTrue(self.mq.delete_queue(name))
        self.assertIsNone(self.mq.get_queue(name))

    def test_a_blocked_get_wakes_on_send(self):
        main, _ = self.mq.create_queue_pair(unique("jobs"))
        got = []

        def wait():
            with LeanMQ(url=URL) as other:
                got.extend(other._pair(main.name)[0].get_messages(block_for_seconds=20))

        waiter = threading.Thread(target=wait)
        started = time.monotonic()
        waiter.start()
        until("the get is waiting",
              lambda: self.mq._http.request("GET", f"/v1/queues/{main.name}")[1]["groups"])
        main.send_message({"job": 1})
        waiter.join()
        self.assertEqual(got[0].data, {"job": 1})
        self.assertLess(time.monotonic() - started, 20, "woke on the send, not the wait")

    def test_dead_letters_and_requeue(self):
        main, dlq = self.mq.create_queue_pair(unique("mail"))
        main.send_message({"to": "a@example.com"})
        [m] = main.get_messages(block_for_seconds=1)
        self.assertEqual(main.move_to_dlq([m.id], "bounced", dlq), 1)
        [dead] = dlq.get_messages(count=10)
        self.assertEqual((dead.reason, dead.data), ("bounced", {"to": "a@example.com"}))
        self.assertEqual(dlq.get_info().message_count, 1)
        self.assertEqual(dlq.requeue_messages([dead.id], main), 1)
        [back] = main.get_messages(block_for_seconds=1)
        self.assertEqual(back.data, {"to": "a@example.com"})
        self.assertEqual(dlq.get_messages(count=10), [])

    def test_transactions_are_all_or_nothing(self):
        a, _ = self.mq.create_queue_pair(unique("a"))
        b, _ = self.mq.create_queue_pair(unique("b"))
        with self.mq.transaction() as tx:
            tx.send_message(a, {"n": 1})
            tx.send_message(b, {"n": 2})
        self.assertEqual((a.get_info().message_count, b.get_info().message_count), (1, 1))
        missing = self.mq._pair(unique("missing"))[0]
        with self.assertRaises(NotFound):
            with self.mq.transaction() as tx:
                tx.send_message(a, {"n": 3})
                tx.send_message(missing, {"n": 4})
        self.assertEqual(a.get_info().message_count, 1, "nothing of a refused transaction is applied")

    def test_bad_input_raises(self):
        name = unique("q")
        self.mq.create_queue_pair(name, max_deliveries=3)
        with self.assertRaises(Conflict):
            self.mq._http.request("POST", "/v1/queues", {"name": name, "settings": {"max_deliveries": 9}})
        with self.assertRaises(Exception) as refused:
            self.mq.create_queue_pair("bad name")
        self.assertEqual(refused.exception.status, 400)


class WebhookTests(unittest.TestCase):
    def test_paths_map_like_leanmq(self):
        self.assertEqual(queue_name_for_path("/order/status/"), "order_status")
        self.assertEqual(queue_name_for_path("order/status"), "order_status")
        self.assertEqual(queue_name_for_path("//x//"), "x")
        self.assertEqual(queue_name_for_path("/v1/users/{id}"), "v1_users__id_")

    def test_handlers_get_what_is_sent_and_failures_end_in_the_dlq(self):
        hook = LeanMQWebhook(url=URL, max_attempts=2, first_retry=0.05, max_retry=0.1)
        path, failing = f"/{unique('status')}/", f"/{unique('broken')}/"
        seen = []
        attempts = []

        @hook.get(path)
        def status(data):
            seen.append(data)

        @hook.get(failing)
        def broken(data):
            attempts.append(data)
            raise RuntimeError("card service down")

        service = hook.run_service(block_for_seconds=0.2)
        hook.send(path, {"order_id": "o-1", "status": "shipped"})
        hook.send(failing, {"order_id": "o-2"})
        until("the handler ran", lambda: seen)
        self.assertEqual(seen[0], {"order_id": "o-1", "status": "shipped"})
        _, dlq = hook.mq._pair(queue_name_for_path(failing))
        until("the failing message is dead-lettered", lambda: dlq.get_messages(count=10))
        service.stop()
        [dead] = dlq.get_messages(count=10)
        self.assertEqual(dead.reason, "Processing error: card service down")
        self.assertEqual(len(attempts), 2)
        with self.assertRaises(ValueError):
            hook.get(path.replace("-", "_"))(lambda d: None)
        hook.close()


if __name__ == "__main__":
    unittest.main()
