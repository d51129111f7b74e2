/**
 * The event hub's client, with the calls of Amebo's client (`publishEvent`, `getEvents`).
 *
 * Calls that are safe to repeat (reads, deletes, updates to a given state, and a publish with a
 * deduper) are retried on connection errors and 503 answers; the others are not, so a publish
 * without a deduper is never sent twice.
 */

import { ClientOptions, Http, RequestOptions } from "./http.js";

/** An event, as the hub answers it (`EventView`). */
export interface EventView {
  event: string;
  row_id: number;
  action: string;
  payload: unknown;
  metadata: Record<string, unknown>;
  deduper?: string | null;
  publisher: string;
  timestamped: string;
  sleep_until: string;
  fanout?: number | null;
  duplicate?: boolean;
  trace_id?: string | null;
}

/** A delivery record (`GistView`). */
export interface GistView {
  id: string;
  event: string;
  subscription: string;
  action: string;
  subscriber: string;
  endpoint: string;
  status: "pending" | "retrying" | "delivered" | "failed" | string;
  completed: boolean;
  attempts: number;
  last_error?: string | null;
  last_status_code?: number | null;
  [field: string]: unknown;
}

/** Any other answer: the server's JSON object (its fields are in /openapi.json). */
export type Answer = Record<string, any>;

/** A time as the server takes it: a Date, ISO 8601, Unix seconds, or `today`, `7d`, ... */
export type When = Date | string | number;

function when(value: When | undefined): string | undefined {
  if (value === undefined) return undefined;
  return value instanceof Date ? value.toISOString() : String(value);
}

/** What the client sends: each request body's schema in /openapi.json with its fields. */
export const REQUEST_FIELDS: Record<string, readonly string[]> = {
  NewEvent: ["action", "payload", "deduper", "metadata", "sleep_until"],
  NewApplication: ["application", "address", "description", "secret", "queues"],
  NewAction: ["action", "application", "schemata", "dedup_window", "retention"],
  Validate: ["payload"],
  NewSubscription: [
    "application", "action", "handler", "max_retries", "retry_schedule", "ordered",
    "concurrency", "description", "signing_key", "amebo_signature",
  ],
  Backfill: ["subscription", "since", "until", "dry_run"],
};

/** What the client reads from answers: each response schema with the fields it reads. */
export const RESPONSE_FIELDS: Record<string, readonly string[]> = {
  EventView: ["event", "row_id"],
  GistPage: ["data", "pages"],
  GistView: ["id", "event"],
  Requeued: ["requeued"],
  Purged: ["purged"],
};

function body(schema: string, fields: Record<string, unknown>): Record<string, unknown> {
  const known = REQUEST_FIELDS[schema];
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (!known.includes(k)) throw new TypeError(`${schema} has no field ${k}`);
    if (v !== undefined && v !== null) out[k] = v;
  }
  return out;
}

/** The server's largest page. */
const MAX_PAGE = 100;

/** A `tidings serve` event hub, as an application (`apiKey`) or the admin (`adminKey`). */
export class Hub {
  private readonly http: Http;

  constructor(url = "http://127.0.0.1:3310", options: ClientOptions = {}) {
    this.http = new Http(url, options);
  }

  /** One call to the server (any route); with `safe`, retried as above. */
  request(method: string, path: string, options: RequestOptions = {}): Promise<any> {
    return this.http.request(method, path, options);
  }

  // Events

  /** Publishes an event; with a `deduper` a repeat returns the original (`duplicate: true`). */
  publishEvent(action: string, payload: Record<string, unknown>, options: {
    deduper?: string; metadata?: Record<string, unknown>; sleepUntil?: number;
  } = {}): Promise<EventView> {
    const sent = body("NewEvent", {
      action, payload, deduper: options.deduper, metadata: options.metadata,
      sleep_until: options.sleepUntil,
    });
    return this.request("POST", "/v1/events", { body: sent, safe: options.deduper !== undefined });
  }

  /** Events, newest first, a page at a time as the iteration goes; none twice. */
  async *getEvents(filter: {
    action?: string; application?: string; deduper?: string; fromDate?: When; toDate?: When;
    pageSize?: number;
  } = {}): AsyncGenerator<EventView> {
    const size = Math.max(1, Math.min(filter.pageSize ?? MAX_PAGE, MAX_PAGE));
    const query = {
      action: filter.action, application: filter.application, deduper: filter.deduper,
      from: when(filter.fromDate), to: when(filter.toDate), pagination: size,
    };
    let lastRow: number | undefined;
    for (let page = 1; ; page++) {
      const events: EventView[] = await this.request("GET", "/v1/events", {
        query: { ...query, page }, safe: true,
      });
      for (const event of events) {
        // Newer events push older ones onto later pages: skip what was seen.
        if (lastRow !== undefined && event.row_id >= lastRow) continue;
        lastRow = event.row_id;
        yield event;
      }
      if (events.length < size) return;
    }
  }

  /** One event. */
  getEvent(id: string): Promise<EventView> {
    return this.request("GET", `/v1/events/${encodeURIComponent(id)}`, { safe: true });
  }

  // Catalog

  /** Registers an application (admin); the answer holds its `secret` and `apikey`. */
  createApplication(application: string, address: string, options: {
    description?: string; secret?: string; queues?: string[];
  } = {}): Promise<Answer> {
    return this.request("POST", "/v1/applications", {
      body: body("NewApplication", { application, address, ...options }),
    });
  }

  /** Every application the caller may see. */
  getApplications(): Promise<Answer[]> {
    return this.all("/v1/applications", {});
  }

  /** Registers an action with its JSON Schema. */
  registerAction(action: string, application: string, schemata: Record<string, unknown>, options: {
    dedup_window?: string; retention?: string;
  } = {}): Promise<Answer> {
    return this.request("POST", "/v1/actions", {
      body: body("NewAction", { action, application, schemata, ...options }), safe: true,
    });
  }

  getActions(filter: { action?: string; application?: string } = {}): Promise<Answer[]> {
    return this.all("/v1/actions", filter);
  }

  /** Checks a payload against an action's schema without publishing. */
  validate(actionId: number | string, payload: Record<string, unknown>): Promise<Answer> {
    return this.request("POST", `/v1/actions/${encodeURIComponent(String(actionId))}/validations`, {
      body: body("Validate", { payload }), safe: true,
    });
  }

  /** Subscribes an application to an action; the answer holds the `signing_key`. */
  subscribe(application: string, action: string, handler: string, options: {
    max_retries?: number; retry_schedule?: unknown[]; ordered?: boolean; concurrency?: number;
    description?: string; signing_key?: string; amebo_signature?: boolean;
  } = {}): Promise<Answer> {
    return this.request("POST", "/v1/subscriptions", {
      body: body("NewSubscription", { application, action, handler, ...options }), safe: true,
    });
  }

  getSubscriptions(filter: { application?: string; action?: string } = {}): Promise<Answer[]> {
    return this.all("/v1/subscriptions", filter);
  }

  unsubscribe(subscription: string): Promise<Answer> {
    return this.request("DELETE", `/v1/subscriptions/${encodeURIComponent(subscription)}`, { safe: true });
  }

  // Deliveries

  /** Deliveries, newest event first, a page at a time; the server's filters. */
  async *getGists(filter: {
    event?: string; subscription?: string; action?: string; subscriber?: string;
    status?: string; completed?: boolean; fromDate?: When; toDate?: When; pageSize?: number;
  } = {}): AsyncGenerator<GistView> {
    const { pageSize, fromDate, toDate, ...rest } = filter;
    const size = Math.max(1, Math.min(pageSize ?? MAX_PAGE, MAX_PAGE));
    const query = { ...rest, from: when(fromDate), to: when(toDate), pagination: size };
    let lastRow: bigint | undefined;
    let seenOfLastRow = new Set<string>();
    for (let page = 1; ; page++) {
      const answer = await this.request("GET", "/v1/gists", { query: { ...query, page }, safe: true });
      for (const gist of answer.data as GistView[]) {
        // The event id starts with its row id, in hex: skip what newer deliveries pushed down.
        const row = BigInt("0x" + gist.event.slice(0, 16));
        if (lastRow !== undefined && (row > lastRow || (row === lastRow && seenOfLastRow.has(gist.id)))) continue;
        if (row !== lastRow) {
          lastRow = row;
          seenOfLastRow = new Set();
        }
        seenOfLastRow.add(gist.id);
        yield gist;
      }
      if (page >= answer.pages || answer.data.length === 0) return;
    }
  }

  /** Sends failed deliveries matching the filters again (admin); returns how many. */
  async requeue(filter: Record<string, string | boolean>): Promise<number> {
    return (await this.request("POST", "/v1/requeues", { query: filter })).requeued;
  }

  /** Discards failed deliveries matching the filter (admin): their dead letters and records go, the events stay; how many. */
  async purge(filter: Record<string, string | boolean>): Promise<number> {
    return (await this.request("POST", "/v1/purges", { query: filter })).purged;
  }

  /** Delivers one delivery again, now, once (admin). */
  replay(gist: string): Promise<Answer> {
    return this.request("POST", `/v1/regists/${encodeURIComponent(gist)}`);
  }

  /** Delivers the stored events of a date range to a subscription (admin). */
  backfill(subscription: string, options: { since?: When; until?: When; dryRun?: boolean } = {}): Promise<Answer> {
    return this.request("POST", "/v1/backfills", {
      body: body("Backfill", {
        subscription, since: when(options.since), until: when(options.until),
        dry_run: options.dryRun,
      }),
    });
  }

  /** Totals of events and deliveries. */
  stats(): Promise<Answer> {
    return this.request("GET", "/v1/stats", { safe: true });
  }

  private async all(path: string, filter: Record<string, unknown>): Promise<Answer[]> {
    const found: Answer[] = [];
    for (let page = 1; ; page++) {
      const items: Answer[] = await this.request("GET", path, {
        query: { ...filter, page, pagination: MAX_PAGE }, safe: true,
      });
      found.push(...items);
      if (items.length < MAX_PAGE) return found;
    }
  }
}
