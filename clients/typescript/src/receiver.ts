/**
 * Receiving the hub's webhooks safely: verify the signature over the raw body, drop repeats,
 * answer fast. Verify the bytes as they arrived: a body parsed and serialised again is not the
 * one that was signed.
 */

import { createHmac, timingSafeEqual } from "node:crypto";

/** Standard Webhooks: a timestamp further than this from now is refused (stale or replayed). */
export const TOLERANCE_SECONDS = 5 * 60;

/** The delivery is not signed with the key given, was changed, or is stale. */
export class InvalidSignature extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidSignature";
  }
}

/** Headers as Node gives them (`IncomingMessage.headers`), a `Headers`, or a plain object. */
export type HeaderSource = Headers | Record<string, string | string[] | undefined>;

function header(headers: HeaderSource, name: string): string | undefined {
  if (typeof (headers as Headers).get === "function") {
    return (headers as Headers).get(name) ?? undefined;
  }
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() === name) return Array.isArray(v) ? v[0] : v;
  }
  return undefined;
}

function same(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Checks a delivery's signature and returns its body, parsed. `secret` is the subscription's
 * signing key (`whsec_...`: the Standard Webhooks headers, the timestamp within
 * `toleranceSeconds` of now) or the subscriber application's secret (`x-amebo-signature`, or
 * `x-amebo-signature-previous` during a rotation). Throws `InvalidSignature`.
 */
export function verify(headers: HeaderSource, rawBody: Buffer | Uint8Array, secret: string,
  toleranceSeconds = TOLERANCE_SECONDS, nowSeconds = Date.now() / 1000): Record<string, any> {
  if (typeof rawBody === "string") {
    throw new TypeError("verify the raw bytes received, not a decoded or re-serialised body");
  }
  const raw = Buffer.from(rawBody);
  if (secret.startsWith("whsec_")) {
    const key = Buffer.from(secret.slice("whsec_".length), "base64");
    const id = header(headers, "webhook-id");
    const stamp = header(headers, "webhook-timestamp");
    const given = header(headers, "webhook-signature");
    if (!id || !stamp || !given) {
      throw new InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature");
    }
    const sentAt = Number(stamp);
    if (!Number.isInteger(sentAt)) throw new InvalidSignature("webhook-timestamp is not Unix seconds");
    if (Math.abs(nowSeconds - sentAt) > toleranceSeconds) {
      throw new InvalidSignature(`webhook-timestamp is ${Math.round(nowSeconds - sentAt)} s from now (stale or replayed)`);
    }
    const expected = createHmac("sha256", key).update(`${id}.${stamp}.`).update(raw).digest();
    const ok = given.split(/\s+/).some((candidate) => {
      const [version, signature] = candidate.split(",", 2);
      return version === "v1" && signature !== undefined && same(Buffer.from(signature, "base64"), expected);
    });
    if (!ok) throw new InvalidSignature("no webhook-signature matches the signing key");
  } else {
    const expected = createHmac("sha256", secret).update(raw).digest();
    const ok = ["x-amebo-signature", "x-amebo-signature-previous"].some((name) => {
      const given = header(headers, name)?.trim().toLowerCase();
      return given !== undefined && /^[0-9a-f]{64}$/.test(given) && same(Buffer.from(given, "hex"), expected);
    });
    if (!ok) throw new InvalidSignature("x-amebo-signature does not match the secret");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new InvalidSignature("the body is not JSON");
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new InvalidSignature("the body is not a JSON object");
  }
  return parsed as Record<string, any>;
}

/** Where a receiver remembers the events it handled. */
export interface SeenStore {
  /** Takes `key` if nobody has lately: true once, then false until released or expired. */
  claim(key: string): boolean | Promise<boolean>;
  /** Gives `key` back (its handling failed, so a retry may handle it). */
  release(key: string): void | Promise<void>;
}

/** Event ids handled lately, in memory (one process): the most recent `size`, each for `ttlMs`. */
export class MemoryStore implements SeenStore {
  private readonly seen = new Map<string, number>();
  constructor(private readonly size = 100_000, private readonly ttlMs = 24 * 3600 * 1000) {}
  claim(key: string): boolean {
    const now = Date.now();
    for (const [k, until] of this.seen) {
      if (this.seen.size < this.size && until >= now) break;
      this.seen.delete(k);
    }
    if (this.seen.has(key)) return false;
    this.seen.set(key, now + this.ttlMs);
    return true;
  }
  release(key: string): void {
    this.seen.delete(key);
  }
}

/**
 * Verifies each delivery, hands each event to `handler` once, and says what to answer:
 * 401 for a delivery that fails verification, 200 without calling the handler for an event
 * already handled, 200 after the handler resolves, 500 if it throws (the hub retries; the event
 * is released for that retry).
 */
export class Receiver {
  constructor(
    private readonly secret: string,
    private readonly handler: (event: Record<string, any>) => unknown,
    private readonly store: SeenStore = new MemoryStore(),
    private readonly toleranceSeconds = TOLERANCE_SECONDS,
  ) {}

  async handle(headers: HeaderSource, rawBody: Buffer | Uint8Array): Promise<{ status: number; body: string }> {
    let event: Record<string, any>;
    try {
      event = verify(headers, rawBody, this.secret, this.toleranceSeconds);
    } catch (e) {
      if (e instanceof InvalidSignature) return { status: 401, body: JSON.stringify({ error: e.message }) };
      throw e;
    }
    const key = String(event.event ?? header(headers, "x-amebo-event-id") ?? "");
    if (key && !(await this.store.claim(key))) {
      return { status: 200, body: JSON.stringify({ duplicate: true }) };
    }
    try {
      await this.handler(event);
    } catch (e) {
      if (key) await this.store.release(key);
      return { status: 500, body: JSON.stringify({ error: (e as Error)?.name ?? "Error" }) };
    }
    return { status: 200, body: JSON.stringify({ ok: true }) };
  }
}
