// The queue client against a real tidings serve at $TIDINGS_URL (see hub.test.ts).

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { BadRequest, Delivery, NotFound, Queues } from "../src/index.js";

const queues = new Queues(process.env.TIDINGS_URL ?? "http://127.0.0.1:3310");
const unique = (name: string) => `${name}-${randomBytes(4).toString("hex")}`;
const who = { group: "billing", consumer: "c1" };

test("send, receive, ack and nack", async () => {
  const q = unique("orders");
  await queues.create(q, { visibility_timeout: 30_000 });
  const first = await queues.send(q, { payload: { order: 1 }, dedupId: "o-1", headers: { trace: "t1" } });
  const again = await queues.send(q, { payload: { order: 1 }, dedupId: "o-1" });
  assert.equal(again.id, first.id);
  assert.equal(again.duplicate, true);
  const batch = await queues.sendBatch(q, [{ payload: { order: 2 } }, { payload: { order: 3 } }]);
  assert.equal(batch.length, 2);

  const got = await queues.receive(q, who, { max: 10, waitMs: 1000 });
  assert.deepEqual(got.map((m) => (m.payload as any).order), [1, 2, 3]);
  assert.equal(got[0].headers.trace, "t1");
  assert.equal(got[0].delivery_count, 1);
  assert.equal(await queues.ack(q, who.group, [got[0].id, got[1].id]), 2);
  assert.equal(await queues.nack(q, who.group, [got[2].id], { retryAfterMs: 0 }), 1);
  const redelivered = await queues.receive(q, who, { max: 10, waitMs: 1000 });
  assert.equal(redelivered.length, 1);
  assert.equal(redelivered[0].delivery_count, 2);
  assert.equal(await queues.ack(q, who.group, [redelivered[0].id]), 1);
  assert.deepEqual(await queues.receive(q, who, { max: 10 }), []);
});

test("a receive waits for a message instead of polling", async () => {
  const q = unique("waits");
  await queues.create(q);
  const started = Date.now();
  const waiting = queues.receive(q, who, { waitMs: 20_000 });
  setTimeout(() => void queues.send(q, { payload: { late: true } }), 200);
  const got = await waiting;
  assert.equal(got.length, 1);
  assert.ok(Date.now() - started < 15_000, "answered when the message came, not at the end of the wait");
});

test("a stream sends no more than its credit until given more", async () => {
  const q = unique("stream");
  await queues.create(q);
  for (let i = 0; i < 3; i++) await queues.send(q, { payload: { n: i } });
  const stream = queues.stream(q, who, 2);
  const got: Delivery[] = [];
  let gaveMore = false;
  for await (const m of stream) {
    got.push(m);
    if (got.length === 2) {
      // Two came on the first credit; the third is held until there is more.
      const held = await queues.receive(q, { group: who.group, consumer: "other" }, { max: 10 });
      assert.equal(held.length, 1, "the third message is still in the queue for others");
      await queues.nack(q, who.group, [held[0].id], { retryAfterMs: 0 });
      // What is left of it: 1, or 0 if the stream already spent it on the third message.
      assert.ok((await stream.more(1)) <= 1);
      gaveMore = true;
    }
    if (got.length === 3) break;
  }
  stream.close();
  assert.ok(gaveMore);
  assert.deepEqual(got.map((m) => (m.payload as any).n).sort(), [0, 1, 2]);
  assert.equal(await queues.ack(q, who.group, got.map((m) => m.id)), 3);
});

test("queue errors have their classes", async () => {
  await assert.rejects(queues.receive(unique("missing"), who), NotFound);
  await assert.rejects(queues.create("not a name!"), BadRequest);
});
