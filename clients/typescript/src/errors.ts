/** The server's error answers as exceptions: one class per status, all `TidingsError`. */

/** An error answer's body (`ErrorBody` in /openapi.json). */
export interface ErrorBody {
  error: string;
  code?: string | null;
  errors?: string[] | null;
  reasons?: string[] | null;
  request_id?: string | null;
  outcome?: string | null;
  [field: string]: unknown;
}

/** An error answer of the server: its `status` and `body`. */
export class TidingsError extends Error {
  readonly status: number;
  readonly body: ErrorBody;
  constructor(status: number, body: ErrorBody) {
    super(body.error || `HTTP ${status}`);
    this.name = new.target.name;
    this.status = status;
    this.body = body;
  }
  /** The machine-readable code, when the server gives one. */
  get code(): string | null | undefined {
    return this.body.code;
  }
}

/** 400: a malformed request. */
export class BadRequest extends TidingsError {}
/** 401: no valid credentials. */
export class Unauthorized extends TidingsError {}
/** 403: not allowed (another application's, an admin's). */
export class Forbidden extends TidingsError {}
/** 404: no such thing. */
export class NotFound extends TidingsError {}
/** 406: the payload does not conform to the action's schema; `errors` lists every reason. */
export class SchemaViolation extends TidingsError {
  get errors(): string[] {
    return [...(this.body.errors ?? this.body.reasons ?? [])];
  }
}
/** 409: exists otherwise, an Idempotency-Key reused, a record changed meanwhile. */
export class Conflict extends TidingsError {}
/** 413: the body exceeds the server's limit. */
export class PayloadTooLarge extends TidingsError {}
/** 415: the body is not JSON. */
export class UnsupportedMediaType extends TidingsError {}
/** 417: a subscription's endpoint did not pass the hub's check. */
export class EndpointCheckFailed extends TidingsError {}
/** 422: understood but refused (an unknown action, a refused destination). */
export class Unprocessable extends TidingsError {}
/** 429: slow down. */
export class TooManyRequests extends TidingsError {}
/** 502: the subscriber's endpoint failed during a replay. */
export class BadGateway extends TidingsError {}
/** 503: the server or its store cannot answer now. */
export class Unavailable extends TidingsError {}
/** 507: the server's disk is full. */
export class InsufficientStorage extends TidingsError {}

const byStatus: Record<number, new (status: number, body: ErrorBody) => TidingsError> = {
  400: BadRequest,
  401: Unauthorized,
  403: Forbidden,
  404: NotFound,
  406: SchemaViolation,
  409: Conflict,
  413: PayloadTooLarge,
  415: UnsupportedMediaType,
  417: EndpointCheckFailed,
  422: Unprocessable,
  429: TooManyRequests,
  502: BadGateway,
  503: Unavailable,
  507: InsufficientStorage,
};

/** The exception for an error answer (`TidingsError` itself for a status without a class). */
export function errorFor(status: number, body: ErrorBody): TidingsError {
  const Class = byStatus[status] ?? TidingsError;
  return new Class(status, body);
}
