// An APNs-shaped HTTP/2 server (Node.js's http2 core API, which is nghttp2
// underneath) for bench/apns.py and bench/calls.py (via bench/_h2server.py)
// and tests/apns/test_apns_node_server.py. It answers as Apple documents a
// good push: one HEADERS frame that ends the stream, with `:status 200` and
// the request's `apns-id` (a fresh UUID when the request has none), no body.
// nghttpd, the other server the bench can use, serves a file instead: an
// extra DATA frame and five more response headers per push, and no apns-id.
//
//   node bench/apns_server.mjs <port> <key.pem> <cert.pem>
//
// Only POST /3/device/<hex token> is a push; anything else gets APNs's 404
// or 405 with its JSON reason. Listens on 127.0.0.1 only; prints "listening"
// once it does. Exits on SIGTERM or when its parent's stdin closes.

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import http2 from "node:http2";

const [port, keyFile, certFile] = process.argv.slice(2);
const TOKEN_PATH = /^\/3\/device\/[0-9a-fA-F]{1,200}$/;

function answer(stream, headers, status, reason) {
  const id = headers["apns-id"] || randomUUID();
  if (status === 200) {
    stream.respond({ ":status": 200, "apns-id": id }, { endStream: true });
    return;
  }
  stream.respond({ ":status": status, "apns-id": id, "content-type": "application/json" });
  stream.end(JSON.stringify({ reason }));
}

const server = http2.createSecureServer({
  key: readFileSync(keyFile),
  cert: readFileSync(certFile),
  allowHTTP1: false,
  settings: { maxConcurrentStreams: 1000 },
  // The bench keeps up to 1,000 streams open on one connection.
  peerMaxConcurrentStreams: 1000,
  maxSessionMemory: 64,
});

server.on("stream", (stream, headers) => {
  stream.on("error", () => {});
  let status = 200;
  let reason = "";
  if (headers[":method"] !== "POST") {
    status = 405;
    reason = "MethodNotAllowed";
  } else if (!TOKEN_PATH.test(headers[":path"] || "")) {
    status = 404;
    reason = "BadPath";
  }
  // Answer once the request body has arrived, as APNs does.
  stream.on("data", () => {});
  stream.on("end", () => {
    if (!stream.destroyed) answer(stream, headers, status, reason);
  });
});

server.on("sessionError", () => {});
server.listen(Number(port), "127.0.0.1", () => {
  process.stdout.write("listening\n");
});
process.on("SIGTERM", () => process.exit(0));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
