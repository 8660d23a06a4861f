// The gateway's HTTP API (serving/http): JSON calls, binary downloads, and a round's server-sent events.
// Every failure is an ApiError carrying the server's own code name and message.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function failure(response) {
  const text = await response.text();
  try {
    const { error } = JSON.parse(text);
    return new ApiError(response.status, error.code, error.message);
  } catch {
    return new ApiError(response.status, `HTTP ${response.status}`, text || response.statusText);
  }
}

// One SSE stream as {event, data} objects; data is JSON on one line (serving/http/rounds.py).
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) yield { event, data: JSON.parse(data) };
    }
  }
}

export class Api {
  // token(): the bearer token to send, or "" for none
  constructor(token) {
    this.base = new URL("api/v1/", document.baseURI);
    this.token = token;
  }

  url(path) {
    return new URL(path.replace(/^\/?(api\/v1\/)?/, ""), this.base);
  }

  headers(extra = {}) {
    const token = this.token();
    return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
  }

  async fetch(path, init = {}) {
    const response = await fetch(this.url(path), { ...init, headers: this.headers(init.headers) });
    if (!response.ok) throw await failure(response);
    return response;
  }

  async json(path, init) {
    return (await this.fetch(path, init)).json();
  }

  async blob(path) {
    return (await this.fetch(path)).blob();
  }

  // A session from a file's bytes as the body; fields (DicomOptions...) in the query string.
  async createSession(body, fields = {}) {
    const query = new URLSearchParams(Object.entries(fields).filter(([, v]) => v !== "" && v != null));
    return this.json(`sessions?${query}`, {
      method: "POST", body, headers: { "Content-Type": "application/octet-stream" },
    });
  }

  // Ask one round; yields {event: "answer"|"round", data}. A network failure before any event is retried once with
  // the same request id, which the server appends once; an "error" event becomes an ApiError after the answer.
  async* ask(sessionId, question) {
    const init = {
      method: "POST",
      body: JSON.stringify(question),
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    };
    let response;
    try {
      response = await this.fetch(`sessions/${sessionId}/rounds`, init);
    } catch (e) {
      if (!(e instanceof TypeError)) throw e; // a TypeError is fetch's network failure; the rest are answers
      response = await this.fetch(`sessions/${sessionId}/rounds`, init);
    }
    for await (const { event, data } of events(response)) {
      if (event === "error") throw new ApiError(data.error.status, data.error.code, data.error.message);
      yield { event, data };
    }
  }
}
