/**
 * The queue API of `tidings serve`: send, receive (long poll), ack, nack, and streaming with
 * credit (server-sent events: the server sends at most as many messages as it was given credit
 * for, so a slow consumer is never flooded).
 */

import { errorFor } from "./errors.js";
import { ClientOptions, Http } from "./http.js";

/** A delivered message (`DeliveryView`). */
export interface Delivery {
  id: string;
  payload: unknown;
  headers: Record<string, string>;
  enqueued_at: number;
  delivery_count: number;
  dedup_id?: string | null;
}

/** What a send returns (`SendReceipt`). */
export interface SendReceipt {
  id: string;
  duplicate: boolean;
}

/** A message to send. */
export interface OutgoingMessage {
  payload: unknown;
  /** A second send with it within the queue's dedup window returns the first message's id. */
  dedupId?: string;
  delayMs?: number;
  ttlMs?: number;
  headers?: Record<string, string>;
}

/** Who receives: a consumer of a group. */
export interface Consumer {
  group: string;
  consumer: string;
}

const segment = (name: string) => encodeURIComponent(name);

function wire(m: OutgoingMessage): Record<string, unknown> {
  const out: Record<string, unknown> = { payload: m.payload };
  if (m.dedupId !== undefined) out.dedup_id = m.dedupId;
  if (m.delayMs !== undefined) out.delay = m.delayMs;
  if (m.ttlMs !== undefined) out.ttl = m.ttlMs;
  if (m.headers !== undefined) out.headers = m.headers;
  return out;
}

/** The queues of a `tidings serve`. */
export class Queues {
  private readonly http: Http;

  constructor(url = "http://127.0.0.1:3310", options: ClientOptions = {}) {
    this.http = new Http(url, options);
  }

  /** Makes a queue (no change if it exists with the same settings; times in ms). */
  create(name: string, settings: Record<string, unknown> = {}): Promise<Record<string, any>> {
    return this.http.request("POST", "/v1/queues", { body: { name, settings }, safe: true });
  }

  /** Sends one message; with a `dedupId` the call is retried on connection errors and 503. */
  async send(queue: string, message: OutgoingMessage): Promise<SendReceipt> {
    const answer = await this.http.request("POST", `/v1/queues/${segment(queue)}/messages`, {
      body: wire(message), safe: message.dedupId !== undefined,
    });
    return answer.messages[0];
  }

  /** Sends several messages atomically, in order. */
  async sendBatch(queue: string, messages: OutgoingMessage[]): Promise<SendReceipt[]> {
    const answer = await this.http.request("POST", `/v1/queues/${segment(queue)}/messages`, {
      body: { messages: messages.map(wire) },
      safe: messages.every((m) => m.dedupId !== undefined),
    });
    return answer.messages;
  }

  /** Takes up to `max` messages, waiting up to `waitMs` for a first one (never polls). */
  async receive(queue: string, who: Consumer, options: { max?: number; waitMs?: number } = {}): Promise<Delivery[]> {
    const answer = await this.http.request("POST", `/v1/queues/${segment(queue)}/receive`, {
      body: { ...who, max: options.max ?? 1, wait: options.waitMs ?? 0 },
      extraMs: options.waitMs ?? 0,
    });
    return answer.messages;
  }

  /** Acknowledges messages delivered to `group`; returns how many applied. */
  async ack(queue: string, group: string, ids: string[]): Promise<number> {
    const answer = await this.http.request("POST", `/v1/queues/${segment(queue)}/ack`, {
      body: { group, ids }, safe: true,
    });
    return answer.acked;
  }

  /** Gives messages back: delivered again after `retryAfterMs`, or dead-lettered with a reason. */
  async nack(queue: string, group: string, ids: string[],
    options: { retryAfterMs?: number; deadLetter?: string } = {}): Promise<number> {
    const answer = await this.http.request("POST", `/v1/queues/${segment(queue)}/nack`, {
      body: { group, ids, retry_after: options.retryAfterMs, dead_letter: options.deadLetter },
    });
    return answer.nacked;
  }

  /**
   * A stream of deliveries to one consumer, given `credit` messages to start with; call
   * `more(n)` as you finish with them. Iterate it with `for await`; `close()` ends it (messages
   * sent and not acked are delivered again after the queue's visibility timeout).
   */
  stream(queue: string, who: Consumer, credit = 16): Stream {
    return new Stream(this.http, queue, who, credit);
  }
}

/** An open stream of deliveries (see `Queues.stream`). */
export class Stream implements AsyncIterable<Delivery> {
  private readonly abort = new AbortController();

  constructor(private readonly http: Http, private readonly queue: string,
    private readonly who: Consumer, private readonly credit: number) {}

  /** Lets the server send `n` more messages; returns the credit it now has. */
  async more(n: number): Promise<number> {
    const answer = await this.http.request("POST", `/v1/queues/${segment(this.queue)}/stream/credit`, {
      body: { ...this.who, credit: n },
    });
    return answer.credit;
  }

  /** Ends the stream. */
  close(): void {
    this.abort.abort();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Delivery> {
    const url = this.http.url(`/v1/queues/${segment(this.queue)}/stream`, { ...this.who, credit: this.credit });
    const response = await fetch(url, {
      headers: { ...this.http.headers, accept: "text/event-stream" },
      signal: this.abort.signal,
    });
    if (!response.ok || !response.body) {
      const text = await response.text();
      let body: any;
      try {
        body = JSON.parse(text);
      } catch {
        body = { error: text.slice(0, 500) };
      }
      throw errorFor(response.status, body);
    }
    const decoder = new TextDecoder();
    let buffered = "";
    try {
      for await (const chunk of response.body) {
        buffered += decoder.decode(chunk as Uint8Array, { stream: true });
        let end: number;
        while ((end = buffered.indexOf("\n\n")) >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          let event = "message";
          const data: string[] = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (data.length === 0) continue; // a keep-alive comment
          const parsed = JSON.parse(data.join("\n"));
          if (event === "error") throw errorFor(503, parsed);
          yield parsed as Delivery;
        }
      }
    } catch (e) {
      if (this.abort.signal.aborted) return;
      throw e;
    }
  }
}
