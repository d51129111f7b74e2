// The hub client and the receiver's toolkit against a real tidings serve at $TIDINGS_URL (run by
// crates/tidings-server/tests/typescript_client.rs, which starts the server with the admin key
// in $TIDINGS_ADMIN_KEY and lets it deliver to 127.0.0.1).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

import {
  Forbidden, Hub, InvalidSignature, NotFound, REQUEST_FIELDS, RESPONSE_FIELDS, Receiver,
  SchemaViolation, Unauthorized, Unavailable, Unprocessable, verify,
} from "../src/index.js";

const URL_ = process.env.TIDINGS_URL ?? "http://127.0.0.1:3310";
const PATIENCE_MS = 10_000;
const USER_SCHEMA = {
  type: "object",
  properties: { id: { type: "integer" }, email: { type: "string" } },
  required: ["id", "email"],
};

const unique = (name: string) => `${name}-${randomBytes(4).toString("hex")}`;

async function until(what: string, check: () => boolean | Promise<boolean>) {
  const deadline = Date.now() + PATIENCE_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`never: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

type Answer = (headers: http.IncomingHttpHeaders, raw: Buffer) => Promise<[number, string]> | [number, string];

/** A local endpoint: `answer` gives each request's status and body; requests are kept. */
async function endpoint(answer: Answer) {
  const seen: Array<[http.IncomingHttpHeaders, Buffer]> = [];
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    seen.push([req.headers, raw]);
    const [status, body] = await answer(req.headers, raw);
    res.writeHead(status, { "content-type": "application/json" }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  return { url, seen, close: () => new Promise((r) => server.close(r)) };
}

const admin = new Hub(URL_);

async function publisher() {
  const app = await admin.createApplication(unique("users"), "http://users.invalid");
  const action = unique("user.created");
  const registered = await admin.registerAction(action, app.application, USER_SCHEMA);
  assert.equal(registered.status, "active");
  return { hub: new Hub(URL_, { apiKey: app.apikey }), app, action, registered };
}

test("user registration reaches a verifying receiver once, a replay is not handled twice", async () => {
  const { hub: users, action } = await publisher();
  const handled: Array<Record<string, any>> = [];
  let receiver: Receiver | undefined;
  const hook = await endpoint(async (h, raw) => {
    const r = await receiver!.handle(h, raw);
    return [r.status, r.body];
  });
  const mailer = await admin.createApplication(unique("mailer"), hook.url);
  const sub = await admin.subscribe(mailer.application, action, hook.url);
  receiver = new Receiver(sub.signing_key, (e) => { handled.push(e); });

  const published = await users.publishEvent(action, { id: 1, email: "ada@example.com" },
    { deduper: "user-1", metadata: { source: "signup" } });
  assert.equal(published.fanout, 1);
  await until("the receiver handles the event", () => handled.length === 1);
  assert.equal(handled[0].event, published.event);
  assert.deepEqual(handled[0].payload, { id: 1, email: "ada@example.com" });
  const [headers, raw] = hook.seen[0];
  assert.equal(verify(headers, raw, mailer.secret).event, published.event);

  const first = async () => (await collect(admin.getGists({ event: published.event })))[0];
  await until("delivered", async () => (await first()).status === "delivered");
  const replayed = await admin.replay((await first()).id);
  assert.equal(replayed.delivered, true);
  assert.equal(hook.seen.length, 2);
  assert.equal(handled.length, 1);
  await hook.close();
});

test("an order placed twice with one deduper is one event, read back by id and by action", async () => {
  const { hub: shop, action } = await publisher();
  const first = await shop.publishEvent(action, { id: 7, email: "o@example.com" }, { deduper: "order-7" });
  const again = await shop.publishEvent(action, { id: 7, email: "o@example.com" }, { deduper: "order-7" });
  assert.equal(again.event, first.event);
  assert.equal(again.duplicate, true);
  assert.equal(((await shop.getEvent(first.event)).payload as any).id, 7);
  assert.deepEqual((await collect(shop.getEvents({ action }))).map((e) => e.event), [first.event]);
});

test("a replay of a date range backfills a new subscriber", async () => {
  const { hub: shop, action } = await publisher();
  const started = new Date(Date.now() - 1000);
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push((await shop.publishEvent(action, { id: i, email: `${i}@example.com` })).event);
  const got: string[] = [];
  const hook = await endpoint((_h, raw) => { got.push(JSON.parse(raw.toString()).event); return [200, "{}"]; });
  const late = await admin.createApplication(unique("late"), hook.url);
  const sub = await admin.subscribe(late.application, action, hook.url);
  assert.equal((await admin.backfill(sub.subscription, { since: started, dryRun: true })).count, 5);
  assert.equal((await admin.backfill(sub.subscription, { since: started })).backfilled, 5);
  await until("the backfill arrives", () => got.length === 5);
  assert.deepEqual([...got].sort(), [...ids].sort());
  await hook.close();
});

test("events page without repeats while new ones arrive, and honour dates", async () => {
  const { hub: shop, action } = await publisher();
  const ids: string[] = [];
  for (let i = 0; i < 23; i++) ids.push((await shop.publishEvent(action, { id: i, email: "x@example.com" })).event);
  const events = shop.getEvents({ action, pageSize: 10 });
  const seen: string[] = [];
  for (let i = 0; i < 5; i++) seen.push((await events.next()).value!.event);
  await shop.publishEvent(action, { id: 99, email: "late@example.com" });
  for await (const e of events) seen.push(e.event);
  assert.deepEqual(seen, [...ids].reverse());
  const past = new Date(Date.now() - 2 * 86_400_000);
  assert.deepEqual(await collect(shop.getEvents({ action, toDate: past })), []);
  assert.equal((await collect(shop.getEvents({ action, fromDate: past }))).length, 24);
});

test("failed deliveries are listed by status and requeued", async () => {
  const { hub: shop, action } = await publisher();
  let healthy = false;
  const hook = await endpoint(() => (healthy ? [200, "{}"] : [500, "{}"]));
  const app = await admin.createApplication(unique("flaky"), hook.url);
  const sub = await admin.subscribe(app.application, action, hook.url, { max_retries: 1 });
  for (let i = 0; i < 3; i++) await shop.publishEvent(action, { id: i, email: "f@example.com" });
  const failed = () => collect(admin.getGists({ subscription: sub.subscription, status: "failed", pageSize: 2 }));
  await until("three deliveries fail", async () => (await failed()).length === 3);
  healthy = true;
  assert.equal(await admin.requeue({ subscription: sub.subscription, status: "failed" }), 3);
  await until("they are delivered", async () =>
    (await collect(admin.getGists({ subscription: sub.subscription, status: "delivered" }))).length === 3);
  // Failing again: discarded instead.
  healthy = false;
  await shop.publishEvent(action, { id: 9, email: "f@example.com" });
  await until("the fourth fails", async () => (await failed()).length === 1);
  assert.equal(await admin.purge({ subscription: sub.subscription }), 1);
  assert.equal((await failed()).length, 0);
  await hook.close();
});

test("each error answer has its exception", async () => {
  const { hub: shop, action, registered } = await publisher();
  const violation = await shop.publishEvent(action, { id: "one" }).catch((e) => e);
  assert.ok(violation instanceof SchemaViolation);
  assert.equal(violation.status, 406);
  assert.ok(violation.errors.some((e: string) => e.includes("$.id")), violation.errors.join());
  await assert.rejects(shop.publishEvent(unique("nobody"), { id: 1 }), Unprocessable);
  await assert.rejects(shop.getEvent("0".repeat(32)), NotFound);
  await assert.rejects(new Hub(URL_, { apiKey: "tidings_" + "0".repeat(64) }).getEvent("x"), Unauthorized);
  const other = await publisher();
  await assert.rejects(shop.publishEvent(other.action, { id: 1, email: "e@example.com" }), Forbidden);
  const check = await shop.validate(registered.id, { id: "one" });
  assert.equal(check.valid, false);
});

test("only calls safe to repeat are retried", async () => {
  let calls = 0;
  const flaky = await endpoint(() => (++calls <= 2 ? [503, '{"error":"again"}'] : [201, '{"event":"e","row_id":1}']));
  const hub = new Hub(flaky.url.replace(/\/hook$/, ""), { apiKey: "k", retry: { attempts: 3, firstMs: 5, mostMs: 10 } });
  assert.equal((await hub.publishEvent("a", {}, { deduper: "d" })).event, "e");
  assert.equal(calls, 3);
  calls = 0;
  await assert.rejects(hub.publishEvent("a", {}), Unavailable);
  assert.equal(calls, 1);
  await flaky.close();
});

test("the client's fields agree with the server's /openapi.json", async () => {
  const doc = await (await fetch(`${URL_}/openapi.json`)).json();
  const schemas = doc.components.schemas;
  for (const [name, fields] of Object.entries(REQUEST_FIELDS)) {
    const known = Object.keys(schemas[name].properties ?? {});
    for (const f of fields) assert.ok(known.includes(f), `${name}.${f} is not a field the server knows`);
    for (const r of schemas[name].required ?? []) assert.ok(fields.includes(r), `${name}.${r} is required and not sent`);
  }
  for (const [name, fields] of Object.entries(RESPONSE_FIELDS)) {
    for (const f of fields) assert.ok((schemas[name].required ?? []).includes(f), `${name}.${f} may be missing`);
  }
});

test("every status the server answers has its error class", async () => {
  const errors = await import("../src/errors.js");
  const expected: Array<[number, Function]> = [
    [400, errors.BadRequest], [401, errors.Unauthorized], [403, errors.Forbidden],
    [404, errors.NotFound], [406, errors.SchemaViolation], [409, errors.Conflict],
    [413, errors.PayloadTooLarge], [415, errors.UnsupportedMediaType],
    [417, errors.EndpointCheckFailed], [422, errors.Unprocessable], [429, errors.TooManyRequests],
    [502, errors.BadGateway], [503, errors.Unavailable], [507, errors.InsufficientStorage],
  ];
  for (const [status, Class] of expected) {
    const e = errors.errorFor(status, { error: "x", code: "c" });
    assert.equal(e.constructor, Class);
    assert.deepEqual([e.status, e.code, e.message], [status, "c", "x"]);
  }
  assert.equal(errors.errorFor(418, { error: "teapot" }).constructor, errors.TidingsError);
});

const KEY = "whsec_" + Buffer.alloc(32, "k").toString("base64");
const BODY = Buffer.from('{"event":"e1","action":"a","payload":{"n":1},"metadata":{}}');

function signed(body: Buffer, at = Math.floor(Date.now() / 1000), id = "msg_1") {
  const mac = createHmac("sha256", Buffer.from(KEY.slice(6), "base64")).update(`${id}.${at}.`).update(body).digest("base64");
  return { "webhook-id": id, "webhook-timestamp": String(at), "webhook-signature": `v1,${mac}` };
}

test("verify takes the right key and the bytes that were signed only", () => {
  assert.deepEqual(verify(signed(BODY), BODY, KEY).payload, { n: 1 });
  const other = "whsec_" + Buffer.alloc(32, "x").toString("base64");
  assert.throws(() => verify(signed(BODY), BODY, other), InvalidSignature);
  assert.throws(() => verify(signed(BODY), Buffer.from(BODY.toString().replace("1", "2")), KEY), InvalidSignature);
  const reordered = Buffer.from(JSON.stringify({ payload: { n: 1 }, metadata: {}, action: "a", event: "e1" }));
  assert.throws(() => verify(signed(BODY), reordered, KEY), InvalidSignature);
  assert.throws(() => verify(signed(BODY, Math.floor(Date.now() / 1000) - 600), BODY, KEY), InvalidSignature);
  const amebo = createHmac("sha256", "old").update(BODY).digest("hex");
  assert.equal(verify({ "x-amebo-signature-previous": amebo }, BODY, "old").event, "e1");
});

test("a receiver handles each event once and lets a failure be retried", async () => {
  const handled: string[] = [];
  let failures = 1;
  const receiver = new Receiver(KEY, (e) => {
    if (failures-- > 0) throw new Error("database down");
    handled.push(e.event);
  });
  assert.equal((await receiver.handle(signed(BODY), BODY)).status, 500);
  assert.equal((await receiver.handle(signed(BODY), BODY)).status, 200);
  assert.equal((await receiver.handle(signed(BODY), BODY)).status, 200);
  assert.deepEqual(handled, ["e1"]);
  assert.equal((await receiver.handle(signed(BODY), Buffer.concat([BODY, Buffer.from(" ")]))).status, 401);
});
