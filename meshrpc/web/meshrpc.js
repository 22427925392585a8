/* meshrpc.js: the browser client of a meshrpc web bridge (meshrpc.web.Bridge).
 * No dependencies; served by the bridge at <mount>/meshrpc.js.
 *
 *   <script src="/mesh/shop/meshrpc.js"></script>
 *   const mesh = meshrpc.connect();              // the bridge this script came from
 *   const quote = await mesh.send("quote.get", {item: "cable", qty: 2}, {timeout: 2});
 *   const off = mesh.on("metrics.*", (data, topic) => show(topic, data));
 *
 * send() returns a Promise that rejects with a meshrpc.MeshError whose .kind says what
 * happened (NoResponder, DeadlineExceeded, RemoteError with .remote_type, Forbidden,
 * Disconnected, ...). The connection comes back by itself with backoff; subscriptions
 * are renewed; calls that were sent when it dropped reject with "Disconnected" (they
 * may have run); calls made while disconnected wait for the connection until their
 * timeout. A call's timeout runs from send(): what is left of it when the call goes
 * out is what the bridge is given. Protocol and kinds: docs/web.md.
 */
(function (root) {
  "use strict";

  const SCRIPT_SRC =
    typeof document !== "undefined" && document.currentScript ? document.currentScript.src : null;
  const GRACE_MS = 1000; // beyond the call's timeout, for the bridge's own reply to arrive
  const MAX_TIMER_MS = 2147483647; // setTimeout fires at once beyond this

  class MeshError extends Error {
    constructor(kind, message, details) {
      super(message || kind);
      this.name = "MeshError";
      this.kind = kind;
      for (const [key, value] of Object.entries(details || {})) {
        if (key !== "kind" && key !== "message") this[key] = value;
      }
    }
  }

  function resolveUrl(url) {
    if (url === undefined || url === null) {
      if (!SCRIPT_SRC) throw new Error("meshrpc.connect(url): give the bridge's URL");
      url = SCRIPT_SRC.replace(/meshrpc\.js(\?.*)?$/, "");
    }
    const base = typeof location !== "undefined" ? location.href : undefined;
    const target = new URL(url, base);
    if (target.protocol === "http:") target.protocol = "ws:";
    else if (target.protocol === "https:") target.protocol = "wss:";
    return target.href;
  }

  function byteLength(text) {
    return new TextEncoder().encode(text).length;
  }

  function report(error) {
    // An exception in the app's event handler must not break the client: rethrow it
    // outside our stack, where the browser reports it.
    setTimeout(() => {
      throw error;
    }, 0);
  }

  class Mesh extends EventTarget {
    constructor(url, options) {
      super();
      const opts = options || {};
      this.url = resolveUrl(url);
      this.minDelay = opts.minDelay ?? 250; // ms before the first reconnection
      this.maxDelay = opts.maxDelay ?? 10000; // ms between attempts at most
      this.timeout = opts.timeout ?? 10; // s, until the bridge tells its own
      this.limits = null; // the bridge's, from its hello
      this._ws = null;
      this._ready = false;
      this._closed = false;
      this._attempt = 0;
      this._retryTimer = null;
      this._nextId = 1;
      this._queue = []; // calls not sent yet
      this._sent = new Map(); // id -> call waiting for its reply
      this._handlers = new Map(); // pattern -> Set of functions
      this._subscribing = new Map(); // id -> pattern (subscribe acknowledgements)
      this._open();
    }

    /** Whether the bridge's hello has arrived on the current connection. */
    get connected() {
      return this._ready;
    }

    /** Call `type` with `payload`; resolves with the result, rejects with a MeshError. */
    send(type, payload, options) {
      const opts = options || {};
      return new Promise((resolve, reject) => {
        if (this._closed) {
          reject(new MeshError("Closed", "this mesh connection was closed"));
          return;
        }
        let seconds = opts.timeout ?? this.timeout;
        if (typeof type !== "string") {
          reject(new MeshError("BadMessage", "the type must be a string"));
          return;
        }
        if (typeof seconds !== "number" || !(seconds > 0) || !Number.isFinite(seconds)) {
          reject(new MeshError("BadMessage", "timeout must be a positive number of seconds"));
          return;
        }
        let body;
        try {
          body = JSON.stringify(payload === undefined ? null : payload);
        } catch (error) {
          reject(new MeshError("BadMessage", "the payload has no JSON form: " + error.message));
          return;
        }
        if (this.limits) seconds = Math.min(seconds, this.limits.timeout);
        const id = this._nextId++;
        const call = {
          id,
          head: `{"id":${id},"type":${JSON.stringify(type)}`,
          body: body === undefined ? "null" : body, // a function or a symbol
          deadline: Date.now() + seconds * 1000,
          resolve,
          reject,
          timer: null,
        };
        const delay = Math.min(seconds * 1000 + GRACE_MS, MAX_TIMER_MS);
        call.timer = setTimeout(() => this._expire(call), delay);
        this._queue.push(call);
        this._flush();
      });
    }

    /** Run fn(data, topic) for each event matching `pattern`; returns a function that stops it. */
    on(pattern, fn) {
      let handlers = this._handlers.get(pattern);
      if (!handlers) {
        handlers = new Set();
        this._handlers.set(pattern, handlers);
        if (this._ready) this._subscribe(pattern);
      }
      handlers.add(fn);
      return () => this.off(pattern, fn);
    }

    off(pattern, fn) {
      const handlers = this._handlers.get(pattern);
      if (!handlers) return;
      handlers.delete(fn);
      if (handlers.size === 0) {
        this._handlers.delete(pattern);
        if (this._ready) this._write({op: "unsubscribe", id: this._nextId++, pattern});
      }
    }

    /** Close for good: pending calls reject with "Closed"; no reconnection. */
    close() {
      this._closed = true;
      clearTimeout(this._retryTimer);
      this._failAll("Closed", "this mesh connection was closed", true);
      if (this._ws) this._ws.close(1000, "closed by the page");
    }

    // -- connection ------------------------------------------------------------------

    _open() {
      if (this._closed) return;
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (error) {
        this._emit("error", new MeshError("Disconnected", String(error)));
        this._retry();
        return;
      }
      this._ws = ws;
      ws.onmessage = (event) => {
        if (this._ws === ws) this._receive(event.data);
      };
      ws.onclose = (event) => {
        if (this._ws !== ws) return;
        this._ws = null;
        const was = this._ready;
        this._ready = false;
        this._subscribing.clear();
        this._failAll("Disconnected", "the connection to the bridge was lost", false);
        if (was) this._emit("close", {code: event.code, reason: event.reason});
        this._retry();
      };
    }

    _retry() {
      if (this._closed) return;
      const delay = Math.min(this.maxDelay, this.minDelay * 2 ** this._attempt);
      this._attempt += 1;
      this._retryTimer = setTimeout(() => this._open(), delay * (0.5 + Math.random() / 2));
    }

    _receive(data) {
      let message;
      try {
        message = JSON.parse(data);
      } catch (error) {
        this._emit("error", new MeshError("BadMessage", "the bridge sent something not JSON"));
        return;
      }
      if (message.op === "hello") {
        this.limits = message.limits;
        this._ready = true;
        this._attempt = 0;
        for (const pattern of this._handlers.keys()) this._subscribe(pattern);
        this._emit("open", this.limits);
        this._flush();
      } else if (message.event !== undefined) {
        const handlers = this._handlers.get(message.pattern);
        for (const fn of handlers ? [...handlers] : []) {
          try {
            fn(message.data, message.event);
          } catch (error) {
            report(error);
          }
        }
      } else if (this._sent.has(message.id)) {
        const call = this._sent.get(message.id);
        this._sent.delete(message.id);
        clearTimeout(call.timer);
        if (message.error) {
          call.reject(new MeshError(message.error.kind, message.error.message, message.error));
        } else {
          call.resolve(message.result);
        }
        this._flush();
      } else if (message.error && (message.id === null || this._subscribing.has(message.id))) {
        const error = new MeshError(message.error.kind, message.error.message, message.error);
        if (this._subscribing.has(message.id)) error.pattern = this._subscribing.get(message.id);
        this._subscribing.delete(message.id);
        this._emit("error", error);
      } else {
        // An acknowledgement, or the late answer of a call that expired here.
        this._subscribing.delete(message.id);
      }
    }

    _subscribe(pattern) {
      const id = "s" + this._nextId++;
      this._subscribing.set(id, pattern);
      this._write({op: "subscribe", id, pattern});
    }

    _write(message) {
      this._ws.send(JSON.stringify(message));
    }

    _flush() {
      if (!this._ready) return;
      const limits = this.limits || {};
      const most = limits.max_in_flight ?? Infinity;
      while (this._queue.length && this._sent.size < most) {
        const call = this._queue.shift();
        // What is left of the call's timeout, so that the bridge gives up no later than
        // this page does (a call expired here while the bridge still held it would take
        // a slot of max_in_flight the page believes free).
        const left = (call.deadline - Date.now()) / 1000;
        if (left <= 0) {
          const why = "the call's timeout passed while it waited to be sent";
          this._settle(call, new MeshError("DeadlineExceeded", why));
          continue;
        }
        const text = `${call.head},"timeout":${left},"payload":${call.body}}`;
        if (limits.max_message && byteLength(text) > limits.max_message) {
          const why = `the call is over the bridge's limit of ${limits.max_message} bytes`;
          this._settle(call, new MeshError("TooLarge", why));
          continue;
        }
        this._sent.set(call.id, call);
        this._ws.send(text);
      }
    }

    _settle(call, error) {
      clearTimeout(call.timer);
      call.reject(error);
    }

    _expire(call) {
      if (this._sent.get(call.id) === call) {
        this._sent.delete(call.id);
        call.reject(new MeshError("DeadlineExceeded", "no reply from the bridge in time"));
        this._flush();
        return;
      }
      const index = this._queue.indexOf(call);
      if (index >= 0) {
        this._queue.splice(index, 1);
        const kind = this._ready ? "DeadlineExceeded" : "Disconnected";
        call.reject(new MeshError(kind, "the call could not be sent to the bridge in time"));
      }
    }

    _failAll(kind, message, queuedToo) {
      for (const call of this._sent.values()) this._settle(call, new MeshError(kind, message));
      this._sent.clear();
      if (queuedToo) {
        for (const call of this._queue) this._settle(call, new MeshError(kind, message));
        this._queue = [];
      }
    }

    _emit(name, detail) {
      this.dispatchEvent(new CustomEvent(name, {detail}));
    }
  }

  function connect(url, options) {
    return new Mesh(url, options);
  }

  const api = {connect, Mesh, MeshError};
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.meshrpc = api;
})(typeof globalThis !== "undefined" ? globalThis : this);
