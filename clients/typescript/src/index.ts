/** Client of tidings serve's event hub, and a webhook receiver's toolkit. */
export * from "./errors.js";
export * from "./hub.js";
export * from "./queues.js";
export * from "./receiver.js";
export { Retry, ClientOptions } from "./http.js";
