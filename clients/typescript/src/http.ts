/** The HTTP transport the hub and queue clients share: credentials, timeouts, retries. */

import { ErrorBody, errorFor } from "./errors.js";

/** How calls that are safe to repeat are retried. */
export interface Retry {
  /** More tries after the first (4). */
  attempts: number;
  /** The first pause, ms (100), doubling up to `mostMs` (2000), each scaled by 0.5–1. */
  firstMs: number;
  mostMs: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Options of a client. */
export interface ClientOptions {
  /** An application's API key (else `TIDINGS_API_KEY`). */
  apiKey?: string;
  /** The admin key (else `TIDINGS_ADMIN_KEY`). */
  adminKey?: string;
  /** Per call, ms (10,000; a receive's wait is added). */
  timeoutMs?: number;
  retry?: Partial<Retry>;
}

/** One call's options. */
export interface RequestOptions {
  body?: unknown;
  query?: Record<string, unknown>;
  /** Safe to repeat: retried on connection errors and 503. */
  safe?: boolean;
  /** Added to the timeout (a receive's wait). */
  extraMs?: number;
}

/** Calls to one server. */
export class Http {
  readonly base: string;
  readonly headers: Record<string, string>;
  private readonly timeoutMs: number;
  private readonly retry: Retry;

  constructor(url: string, options: ClientOptions = {}) {
    const parsed = new URL(url);
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new TypeError(`the server's URL must be http(s)://host:port, not ${url}`);
    }
    this.base = url.replace(/\/+$/, "");
    this.headers = { "content-type": "application/json" };
    const apiKey = options.apiKey ?? process.env.TIDINGS_API_KEY;
    const adminKey = options.adminKey ?? process.env.TIDINGS_ADMIN_KEY;
    if (apiKey) this.headers.authorization = `Bearer ${apiKey}`;
    else if (adminKey) this.headers["x-amebo-admin-key"] = adminKey;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.retry = { attempts: 4, firstMs: 100, mostMs: 2_000, ...options.retry };
  }

  /** The URL of `path` with `query` (absent values left out). */
  url(path: string, query: Record<string, unknown> = {}): URL {
    const url = new URL(this.base + path);
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    }
    return url;
  }

  /** One call; with `safe`, connection errors and 503 are tried again after a growing pause. */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<any> {
    const url = this.url(path, options.query);
    const init = {
      method,
      headers: this.headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    };
    const timeout = this.timeoutMs + (options.extraMs ?? 0);
    for (let attempt = 0; ; attempt++) {
      const last = !options.safe || attempt >= this.retry.attempts;
      let response: Response;
      try {
        response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeout) });
      } catch (e) {
        if (last) throw e;
        await sleep(this.pause(attempt));
        continue;
      }
      if (response.status === 503 && !last) {
        await response.body?.cancel();
        await sleep(this.pause(attempt));
        continue;
      }
      return answerOf(response);
    }
  }

  private pause(attempt: number): number {
    return Math.min(this.retry.mostMs, this.retry.firstMs * 2 ** attempt) * (0.5 + Math.random() / 2);
  }
}

/** A response's JSON, or its error thrown as the status's class. */
export async function answerOf(response: Response): Promise<any> {
  const text = await response.text();
  let answer: any = null;
  try {
    answer = text ? JSON.parse(text) : null;
  } catch {
    answer = { error: text.slice(0, 500) };
  }
  if (response.status >= 400) {
    const errorBody: ErrorBody = answer && typeof answer === "object" ? answer : { error: String(answer) };
    throw errorFor(response.status, errorBody);
  }
  return answer;
}
