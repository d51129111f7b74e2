// The console in a real headless Chromium, against a real `tidings serve`
// (started by crates/tidings-cli/tests/console.rs, which passes):
//   TIDINGS_URL          the server
//   TIDINGS_ADMIN_KEY    its admin key
//   TIDINGS_SCREENSHOTS  where to write a screenshot of every page
//   CHROMIUM             the browser (default /usr/bin/chromium)
// Everything is done through the pages, as an operator would; the webhook
// receiver is a plain Node server here.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const base = process.env.TIDINGS_URL;
const adminKey = process.env.TIDINGS_ADMIN_KEY;
const shots = process.env.TIDINGS_SCREENSHOTS;
assert.ok(base && adminKey && shots, "TIDINGS_URL, TIDINGS_ADMIN_KEY and TIDINGS_SCREENSHOTS are required");
mkdirSync(shots, { recursive: true });

let browser;
let receiver;
let hook;
const received = [];

before(async () => {
  receiver = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push({ path: req.url, headers: req.headers, body });
      res.writeHead(req.url.startsWith("/fail") ? 500 : 200).end("ok");
    });
  });
  await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  hook = `http://127.0.0.1:${receiver.address().port}`;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
});

after(async () => {
  await browser?.close();
  receiver?.close();
});

async function shoot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

async function signIn(context, fields) {
  const page = await context.newPage();
  await page.goto(`${base}/console/`);
  assert.match(page.url(), /\/console\/sign-in\?next=/, "an anonymous visit is sent to sign in");
  for (const [name, value] of Object.entries(fields)) {
    await page.fill(`input[name=${name}]`, value);
  }
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  return page;
}

// Opens a page's folded form, as a person would (click its summary).
async function unfold(page) {
  if (!(await page.$eval("details.panel", (d) => d.open))) {
    await page.click("details.panel summary");
  }
}

async function waitFor(what, check, tries = 100) {
  for (let i = 0; i < tries; i++) {
    const value = await check();
    if (value) return value;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`timed out waiting for ${what}`);
}

// Shared between the steps, in order.
const made = {};

test("an operator signs in, is refused with a wrong key, and sees the overview", async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(`${base}/console/applications`);
  await shoot(page, "01-sign-in");
  await page.fill("input[name=admin_key]", "not the key at all");
  const refused = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/console/sign-in")),
    page.click("button[type=submit]"),
  ]);
  assert.equal(refused[0].status(), 401);
  assert.match(await page.textContent("[role=alert]"), /not accepted/);
  await page.fill("input[name=admin_key]", adminKey);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  assert.match(page.url(), /\/console\/applications$/, "back where the visit began");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "tidings_console");
  assert.ok(session, "a session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  made.admin = context;
});

test("the operator creates an application, whose secret and key are shown once", async () => {
  const page = await made.admin.newPage();
  await page.goto(`${base}/console/applications`);
  await unfold(page);
  await page.fill("#new-name", "shop");
  await page.fill("#new-address", hook);
  await page.fill("#new-description", "the web shop");
  await page.fill("#new-queues", "shop.*");
  await Promise.all([page.waitForNavigation(), page.click("form[action='/console/applications'] button")]);
  const secrets = await page.$$eval("code.secret", (els) => els.map((e) => e.textContent));
  assert.equal(secrets.length, 2, "secret and API key shown");
  [made.secret, made.apiKey] = secrets;
  assert.match(made.apiKey, /^tidings_/);
  await shoot(page, "02-application-created");
  await page.goto(`${base}/console/applications`);
  const listed = await page.content();
  assert.ok(listed.includes("shop"));
  assert.ok(!listed.includes(made.secret) && !listed.includes(made.apiKey), "never shown again");
  // A second application, for the isolation checks below.
  await unfold(page);
  await page.fill("#new-name", "warehouse");
  await page.fill("#new-address", hook);
  await Promise.all([page.waitForNavigation(), page.click("form[action='/console/applications'] button")]);
});

test("the operator registers an action, sees its schema and an example, and publishes through try publish", async () => {
  const page = await made.admin.newPage();
  await page.goto(`${base}/console/actions`);
  await unfold(page);
  await page.fill("#act-name", "shop.order_placed");
  await page.fill("#act-app", "shop");
  await page.fill(
    "#act-schema",
    JSON.stringify({
      type: "object",
      required: ["order", "total", "email"],
      properties: {
        order: { type: "string", minLength: 3 },
        total: { type: "number", minimum: 1 },
        email: { type: "string", format: "email" },
      },
    }),
  );
  await Promise.all([page.waitForNavigation(), page.click("form[action='/console/actions'] button")]);
  assert.match(page.url(), /\/console\/actions$/);
  assert.match(await page.textContent("h1"), /shop\.order_placed/);
  const example = JSON.parse(await page.inputValue("#payload"));
  assert.equal(example.email, "someone@example.com", "the example follows the schema");
  assert.equal(example.total, 1);
  const tryPath = await page.$eval("form[action$='/try']", (f) => f.getAttribute("action"));
  made.actionPage = `${base}${tryPath.replace(/\/try$/, "")}`;

  // The warehouse's action, which the shop may see but not publish.
  const other = await made.admin.newPage();
  await other.goto(`${base}/console/actions`);
  await unfold(other);
  await other.fill("#act-name", "warehouse.stocked");
  await other.fill("#act-app", "warehouse");
  await other.fill("#act-schema", '{"type": "object"}');
  await Promise.all([other.waitForNavigation(), other.click("form[action='/console/actions'] button")]);
  made.otherAction = await other.$eval("form[action$='/try']", (f) => f.getAttribute("action"));
});

test("the operator subscribes an endpoint and sends it a test event", async () => {
  const page = await made.admin.newPage();
  await page.goto(`${base}/console/subscriptions`);
  await shoot(page, "05-subscriptions-empty");
  await unfold(page);
  await page.fill("#sub-app", "warehouse");
  await page.fill("#sub-action", "shop.order_placed");
  await page.fill("#sub-handler", `${hook}/hook`);
  await Promise.all([page.waitForNavigation(), page.click("form[action='/console/subscriptions'] button")]);
  assert.match(await page.textContent(".notice"), /Subscribed/);
  made.warehouseSub = await page.getAttribute("tr[data-subscription]", "data-subscription");
  const before = received.length;
  await Promise.all([page.waitForNavigation(), page.click("form[action$='/test'] button")]);
  assert.match(await page.textContent(".notice"), /delivered .* 200/);
  assert.equal(received.length, before + 1);
  const test = received[received.length - 1];
  assert.ok(test.headers["webhook-signature"], "signed as deliveries are");
  await shoot(page, "06-subscriptions");
});

test("a payload the schema refuses shows its reasons inline; a good one is published and delivered", async () => {
  const page = await made.admin.newPage();
  await page.goto(made.actionPage);
  await page.fill("#payload", JSON.stringify({ order: "x", total: 0 }));
  const [refused] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/try")),
    page.click("button[value=publish]"),
  ]);
  assert.equal(refused.status(), 406);
  const reasons = await page.$$eval("ul.reasons li", (els) => els.map((e) => e.textContent));
  assert.ok(reasons.length >= 2, `reasons: ${reasons}`);
  await shoot(page, "04-try-publish-refused");
  await page.fill("#payload", JSON.stringify({ order: "A-1001", total: 42.5, email: "a@example.com" }));
  const before = received.length;
  await Promise.all([page.waitForNavigation(), page.click("button[value=publish]")]);
  made.eventId = await page.textContent("code.event-id");
  assert.match(made.eventId, /^[0-9a-f]{32}$/);
  assert.match(await page.textContent(".notice"), /to 1 subscription/);
  await shoot(page, "03-action");
  await waitFor("the delivery", () => received.slice(before).find((r) => r.body.includes("A-1001")));
});

test("the event's page shows its delivery as a timeline, and replays it to one subscription", async () => {
  const page = await made.admin.newPage();
  await page.goto(`${base}/console/events`);
  await page.fill("input[name=action]", "shop.order_placed");
  await Promise.all([page.waitForNavigation(), page.click("form.filters button")]);
  await shoot(page, "07-events");
  await Promise.all([page.waitForNavigation(), page.click(`a[href='/console/events/${made.eventId}']`)]);
  await waitFor("the delivered attempt on the page", async () => {
    await page.reload();
    return (await page.textContent("section.delivery")).includes("delivered");
  });
  assert.match(await page.textContent("pre.json"), /A-1001/);
  assert.ok(await page.$("ol.timeline li.ok"), "the attempt in the timeline");
  await shoot(page, "08-event");
  const before = received.length;
  page.once("dialog", (d) => d.accept());
  await Promise.all([page.waitForNavigation(), page.click("form[action$='/replay'] button")]);
  assert.match(await page.textContent(".notice"), /Replayed: delivered \(200\)/);
  assert.equal(received.length, before + 1);
  assert.ok((await page.textContent("ol.timeline")).includes("replay"));
});

test("a delivery that fails every attempt is a dead letter, requeued and purged from its page", async () => {
  const page = await made.admin.newPage();
  page.on("dialog", (d) => d.accept());
  await page.goto(`${base}/console/subscriptions`);
  await unfold(page);
  await page.fill("#sub-app", "warehouse");
  await page.fill("#sub-action", "shop.order_placed");
  await page.fill("#sub-handler", `${hook}/fail`);
  await page.fill("#sub-retries", "1");
  await Promise.all([page.waitForNavigation(), page.click("form[action='/console/subscriptions'] button")]);
  await page.goto(made.actionPage);
  await page.fill("#payload", JSON.stringify({ order: "B-2002", total: 5, email: "b@example.com" }));
  await Promise.all([page.waitForNavigation(), page.click("button[value=publish]")]);
  await waitFor("the dead letter", async () => {
    await page.goto(`${base}/console/dead-letters`);
    return (await page.$$("section.delivery tbody tr")).length === 1;
  });
  assert.match(await page.textContent("section.delivery"), /500/);
  await shoot(page, "09-dead-letters");
  const failing = received.filter((r) => r.path === "/fail").length;
  await page.check("section.delivery tbody input[type=checkbox]");
  await Promise.all([page.waitForNavigation(), page.click("button[form^='selected-'][value=requeue]")]);
  assert.match(await page.textContent(".notice"), /1 dead letter requeued/);
  await waitFor("the requeued attempt", () => received.filter((r) => r.path === "/fail").length > failing);
  await waitFor("the dead letter again", async () => {
    await page.goto(`${base}/console/dead-letters`);
    return (await page.$$("section.delivery tbody tr")).length === 1;
  });
  await Promise.all([page.waitForNavigation(), page.click("button[value=purge]")]);
  assert.match(await page.textContent(".notice"), /1 dead letter purged/);
  assert.equal((await page.$$("section.delivery")).length, 0);
});

test("a queue's groups and dead letters are on its page, where they are requeued", async () => {
  const api = async (method, path, body) => {
    const r = await fetch(`${base}${path}`, {
      method,
      headers: { "x-tidings-admin-key": adminKey, "content-type": "application/json" },
      body: body && JSON.stringify(body),
    });
    const text = await r.text();
    assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  await api("POST", "/v1/queues", { name: "emails" });
  await api("POST", "/v1/queues/emails/messages", { payload: { to: "a@example.com" } });
  await api("POST", "/v1/queues/emails/messages", { payload: { to: "b@example.com" } });
  const got = await api("POST", "/v1/queues/emails/receive", { group: "senders", consumer: "s1", max: 1 });
  const id = got.messages[0].id;
  await api("POST", "/v1/queues/emails/nack", { group: "senders", id, dead_letter: "bounced" });
  const page = await made.admin.newPage();
  page.on("dialog", (d) => d.accept());
  await page.goto(`${base}/console/queues`);
  assert.match(await page.textContent("tbody"), /emails/);
  await shoot(page, "10-queues");
  await Promise.all([page.waitForNavigation(), page.click("a[href='/console/queues/emails']")]);
  assert.match(await page.textContent("table"), /senders/);
  assert.match(await page.textContent("main"), /bounced/);
  assert.match(await page.textContent("table.messages"), /b@example\.com/, "the message waiting, peeked at");
  await shoot(page, "11-queue");
  await Promise.all([page.waitForNavigation(), page.click("button[value=requeue]")]);
  assert.match(await page.textContent(".notice"), /1 dead letter requeued/);
});

test("the overview's charts render with the activity", async () => {
  const page = await made.admin.newPage();
  await waitFor("a reading with the publish", async () => {
    await page.goto(`${base}/console/`);
    const published = Number(await page.getAttribute("#chart-published", "data-max"));
    const delivered = Number(await page.getAttribute("#chart-deliveries", "data-max"));
    return published > 0 && delivered > 0;
  }, 60);
  const lines = await page.$$eval("#chart-published polyline", (els) => els.length);
  assert.ok(lines > 0, "a line is drawn");
  assert.match(await page.textContent("#live"), /Events stored/);
  await shoot(page, "00-overview");
  // The live part refreshes itself.
  await page.waitForSelector("#live[data-refreshed]", { timeout: 30_000 });
  // Phone width: the same page, readable.
  await page.setViewportSize({ width: 390, height: 844 });
  await shoot(page, "00-overview-phone");
});

test("an application signed in with its API key sees only its own, and is refused another's", async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await signIn(context, { api_key: made.apiKey });
  assert.match(await page.textContent("h1"), /Overview of shop/);
  await page.goto(`${base}/console/applications`);
  const names = await page.$$eval("tbody th", (els) => els.map((e) => e.textContent));
  assert.ok(names.some((n) => n.startsWith("shop")), `${names}`);
  assert.ok(!names.some((n) => n.startsWith("warehouse")), "another application is not listed");
  assert.equal(await page.$("form[action$='/apikey']"), null, "minting keys is the admin's");
  // Another application's action: its page shows no form, and a forged post is refused.
  const csrf = await page.$eval("input[name=csrf]", (e) => e.value);
  const forged = await page.request.post(`${base}${made.otherAction}`, {
    form: { csrf, payload: "{}", mode: "publish" },
  });
  assert.equal(forged.status(), 403);
  const live = await page.request.get(`${base}/console/live`);
  assert.equal(live.status(), 403, "the hub-wide overview is the admin's");
  const disable = await page.request.post(`${base}/console/subscriptions/${made.warehouseSub}/active`, {
    form: { csrf, active: "false" },
  });
  assert.equal(disable.status(), 403, "another application's subscription");
  const queue = await page.request.get(`${base}/console/queues/emails`);
  assert.equal(queue.status(), 403, "a queue outside its allow-list (shop.*)");
  await page.goto(`${base}/console/queues`);
  const queues = await page.$$eval("tbody th", (els) => els.map((e) => e.textContent));
  assert.ok(!queues.includes("emails"), "not listed either");
  const requeue = await page.request.post(`${base}/console/dead-letters`, {
    form: { csrf, subscription: made.warehouseSub, all: "true", do: "requeue" },
  });
  assert.equal(requeue.status(), 403, "requeues are the admin's");
  await page.goto(`${base}/console/subscriptions`);
  assert.ok(!(await page.content()).includes("warehouse ←"), "others' subscriptions are not listed");
  await context.close();
});

test("a form without its token is refused, and so is one from another site", async () => {
  const page = await made.admin.newPage();
  await page.goto(`${base}/console/applications`);
  const none = await page.request.post(`${base}/console/applications`, {
    form: { application: "sneaky", address: hook },
  });
  assert.equal(none.status(), 403);
  const csrf = await page.$eval("input[name=csrf]", (e) => e.value);
  const crossSite = await page.request.post(`${base}/console/applications`, {
    form: { csrf, application: "sneaky", address: hook },
    headers: { "sec-fetch-site": "cross-site" },
  });
  assert.equal(crossSite.status(), 403);
  await page.goto(`${base}/console/applications`);
  assert.ok(!(await page.content()).includes("sneaky"), "nothing was created");
});

test("the pages can be used with the keyboard alone", async () => {
  const page = await made.admin.newPage();
  await page.goto(`${base}/console/applications`);
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Tidings");
  await shoot(page, "02-applications");
  await page.goto(`${base}/console/actions`);
  await shoot(page, "03-actions");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/console/subscriptions`);
  await shoot(page, "06-subscriptions-phone");
});

test("signing out ends the session", async () => {
  const page = await made.admin.newPage();
  await page.goto(`${base}/console/`);
  await Promise.all([page.waitForNavigation(), page.click("button.link")]);
  assert.match(page.url(), /sign-in/);
  await page.goto(`${base}/console/applications`);
  assert.match(page.url(), /sign-in/);
});
