"""The Python side of the interop tests: drives the real LeanMQ 0.2.0.

Usage: python leanmq_peer.py '<json request>'; prints one JSON answer.
The request names a command and its arguments; see COMMANDS below.
"""

import json
import sys
import threading
import time

from leanmq import LeanMQ, LeanMQWebhook


def mq(req):
    return LeanMQ(redis_host=req["host"], redis_port=req["port"], redis_db=req["db"],
                  prefix=req["prefix"])


def message(m):
    return {"id": m.id, "data": m.data, "timestamp": m.timestamp,
            "delivery_count": m.delivery_count}


def create(req):
    main, dlq = mq(req).create_queue_pair(req["queue"])
    return {"main": main.name, "dlq": dlq.name, "group": main.consumer_group}


def attach(req):
    q = mq(req).get_queue(req["queue"])
    d = mq(req).get_dead_letter_queue(req["queue"])
    return {"found": q is not None, "dlq": d is not None}


def send(req):
    q = mq(req).get_queue(req["queue"])
    ids = []
    for item in req["messages"]:
        data = item["data"]
        # JSON cannot carry what Python's json.dumps writes: make it here.
        if item.get("python_extras"):
            data = dict(data, nan=float("nan"), inf=float("inf"), big=2 ** 70)
        ids.append(q.send_message(data, message_id=item.get("message_id"),
                                  ttl=item.get("ttl")))
    return {"ids": ids}


def transaction(req):
    m = mq(req)
    queues = {name: m.get_queue(name) for name in {i["queue"] for i in req["messages"]}}
    with m.transaction() as tx:
        ids = [tx.send_message(queues[i["queue"]], i["data"], message_id=i.get("message_id"))
               for i in req["messages"]]
    return {"ids": ids}


def receive(req):
    q = mq(req).get_queue(req["queue"])
    got = q.get_messages(count=req.get("count", 10), block_for_seconds=req.get("block"),
                         consumer_id=req.get("consumer", "default-consumer"))
    if req.get("ack"):
        q.acknowledge_messages([m.id for m in got])
    return {"messages": [message(m) for m in got]}


def dead_letter(req):
    m = mq(req)
    q = m.get_queue(req["queue"])
    dlq = m.get_dead_letter_queue(req["queue"])
    got = q.get_messages(count=req.get("count", 10))
    moved = q.move_to_dlq([x.id for x in got], req["reason"], dlq)
    return {"moved": moved, "messages": [message(x) for x in got]}


def dead_letters(req):
    dlq = mq(req).get_dead_letter_queue(req["queue"])
    got = dlq.get_messages(count=req.get("count", 10))
    return {"messages": [message(x) for x in got]}


def requeue(req):
    m = mq(req)
    q = m.get_queue(req["queue"])
    dlq = m.get_dead_letter_queue(req["queue"])
    ids = req.get("ids") or [x.id for x in dlq.get_messages(count=req.get("count", 10))]
    moved = dlq.requeue_messages(ids, q)
    return {"moved": moved}


def webhook_send(req):
    hook = LeanMQWebhook(redis_host=req["host"], redis_port=req["port"], redis_db=req["db"],
                         prefix=req["prefix"])
    return {"ids": [hook.send(req["path"], data) for data in req["messages"]]}


def webhook_serve(req):
    """Registers handlers for the paths, serves until `count` messages were
    handled (or `seconds` passed), and returns what the handlers saw.
    A handler raises for data holding {"fail": true}."""
    hook = LeanMQWebhook(redis_host=req["host"], redis_port=req["port"], redis_db=req["db"],
                         prefix=req["prefix"])
    seen = []
    done = threading.Event()

    def make(path):
        def handler(data):
            seen.append({"path": path, "data": data})
            if len(seen) >= req["count"]:
                done.set()
            if data.get("fail"):
                raise ValueError("handler refused")
        return handler

    for path in req["paths"]:
        hook.get(path)(make(path))
    print(json.dumps({"ready": True}), flush=True)
    service = hook.run_service(handle_signals=False)
    done.wait(req.get("seconds", 20))
    service.stop()
    return {"seen": seen}


def queue_name(req):
    hook = LeanMQWebhook(redis_host=req["host"], redis_port=req["port"], redis_db=req["db"],
                         prefix=req["prefix"])
    return {"names": [[p, hook._normalize_path(p),
                       hook._path_to_queue_name(hook._normalize_path(p))]
                      for p in req["paths"]]}


COMMANDS = {
    "create": create, "attach": attach, "send": send, "transaction": transaction,
    "receive": receive, "dead_letter": dead_letter, "dead_letters": dead_letters,
    "requeue": requeue, "webhook_send": webhook_send, "webhook_serve": webhook_serve,
    "queue_name": queue_name,
}

if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    answer = COMMANDS[request["cmd"]](request)
    print(json.dumps(answer, allow_nan=False, default=str))
