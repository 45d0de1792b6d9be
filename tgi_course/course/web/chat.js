// The course's streaming chat page (notebook 03). It sends one chat completion with `stream: true` through
// the browser's fetch() and reads the Server-Sent Events off `response.body` by hand, without a client
// library, so that every step of the wire format is visible. Stop aborts the request (AbortController).
//
// Configuration comes from the page's address:
//   chat.html?server=http://127.0.0.1:8080&model=<id>#key=<API key>
// The key sits in the fragment (after #), which the browser never sends to the server that serves this
// page; it goes only to the model server, in the Authorization header.
"use strict";

const query = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const config = {
  // Accept http://host:port, .../ or .../v1, as the Python side does.
  server: (query.get("server") || "").trim().replace(/\/+$/, "").replace(/\/v1$/, ""),
  model: query.get("model") || "tgi", // TGI serves one model and accepts any name; "tgi" is what its docs send
  apiKey: fragment.get("key") || "",
};

const $ = (id) => document.getElementById(id);
const form = $("ask");
const answer = $("answer");
const statusLine = $("status");
const sendButton = $("send");
const stopButton = $("stop");
let controller = null; // the AbortController of the request in progress, if any

$("server-url").textContent = config.server || "(none)";
$("model").textContent = config.model;
$("origin").textContent = location.origin;

function setStatus(state, text) {
  statusLine.dataset.state = state; // idle | streaming | done | stopped | error (what the tests read)
  statusLine.textContent = text;
}

// <sse-parser>
// SSE framing (the WHATWG HTML standard, "server-sent events"): the body is UTF-8 text made of lines.
// A line "data: <text>" adds to the current event, a line starting with ":" is a comment (servers send
// ": ping" to keep an idle connection open), and a blank line ends the event. Chat completions put one
// JSON chunk in each event and end the stream with the event "data: [DONE]".
async function* sseEvents(body) {
  const reader = body.getReader();
  // One decoder for the whole body, with stream: true: a character whose bytes are split across two
  // network reads (an accented letter, an emoji) is decoded once both halves have arrived.
  const decoder = new TextDecoder();
  let buffer = ""; // text received but not yet ended by a newline: a read can stop in the middle of a line
  let data = []; // the data lines of the event being read
  try {
    while (true) {
      const { value, done } = await reader.read(); // rejects with an AbortError once Stop is pressed
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1); // "\r\n" line ends are allowed too
        if (line === "") {
          if (data.length > 0) yield data.join("\n"); // the blank line: the event is complete
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, "")); // one space after the colon is part of the framing
        } // ":" comments, and the fields event:, id: and retry: that chat completions do not use, are skipped
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // after [DONE] or an error: close the body instead of leaving it open
  }
}
// </sse-parser>

// The error message in an error body, whatever the server's shape: TGI's {"error": "...", "error_type": ...},
// OpenAI's and vLLM's {"error": {"message": ...}}, or plain text.
function errorMessage(text) {
  try {
    const body = JSON.parse(text);
    if (typeof body.error === "string") return body.error;
    if (body.error && body.error.message) return body.error.message;
    if (body.message) return body.message;
    if (body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) {
    // not JSON: show the text itself
  }
  return text.trim() || "(empty body)";
}

async function ask(question) {
  controller = new AbortController();
  sendButton.disabled = true;
  stopButton.disabled = false;
  answer.textContent = "";
  setStatus("streaming", "streaming…");
  let chunks = 0;
  let finishReason = null;
  let sawDone = false;
  const body = {
    model: config.model,
    messages: [{ role: "user", content: question }],
    max_tokens: Number($("max-tokens").value) || 200,
    stream: true,
  };
  if ($("ignore-eos").checked) body.ignore_eos = true; // sent only when asked: other servers may refuse it
  const headers = { "Content-Type": "application/json" }; // not a "simple" request: the browser sends a preflight first
  if (config.apiKey) headers.Authorization = `Bearer ${config.apiKey}`;
  try {
    const response = await fetch(`${config.server}/v1/chat/completions`, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      signal: controller.signal, // abort() ends the request, and the connection with it
    });
    if (!response.ok) {
      setStatus("error", `error: HTTP ${response.status}: ${errorMessage(await response.text())}`);
      return;
    }
    for await (const data of sseEvents(response.body)) {
      if (data === "[DONE]") {
        sawDone = true;
        break;
      }
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(`the server ended the stream: ${errorMessage(data)}`);
      const choice = chunk.choices && chunk.choices[0];
      const piece = choice && choice.delta && choice.delta.content;
      if (piece) {
        answer.append(piece); // a text node per chunk: the answer grows as the tokens arrive
        chunks += 1;
      }
      if (choice && choice.finish_reason) finishReason = choice.finish_reason;
    }
    if (sawDone) {
      setStatus("done", `done: finish_reason ${finishReason}, ${chunks} chunks of text`);
    } else {
      setStatus("error", `error: the stream ended without data: [DONE] after ${chunks} chunks (the connection was cut)`);
    }
  } catch (error) {
    if (error.name === "AbortError") {
      setStatus("stopped", `stopped after ${chunks} chunks of text: the request was aborted`);
    } else if (error instanceof TypeError) {
      // fetch() gives no detail on purpose: a server that is down and a server that refused this page's
      // origin (no matching Access-Control-Allow-Origin) look the same to the page. DevTools' console tells them apart.
      setStatus(
        "error",
        `error: could not fetch ${config.server || "(no server given)"}/v1/chat/completions (${error.message}). ` +
          `Either the server is not reachable, or it does not allow this page's origin ${location.origin} ` +
          `(CORS: start it with CORS_ALLOW_ORIGIN=${location.origin}; TGI: --cors-allow-origin ${location.origin}).`,
      );
    } else {
      setStatus("error", `error: ${error.message}`);
    }
  } finally {
    controller = null;
    sendButton.disabled = false;
    stopButton.disabled = true;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!controller) ask($("question").value);
});
stopButton.addEventListener("click", () => {
  if (controller) controller.abort();
});

if (!config.server) {
  setStatus("error", "error: no server given; open this page as chat.html?server=http://127.0.0.1:<port>");
  sendButton.disabled = true;
}
