// Used by scripts/pod-check: proves that a message written outside the socket reaches a
// real WebSocket. Connects, authenticates with TOKEN, joins ROOM, then runs the command
// after `--` (which writes a message with TEXT, e.g. through PostgREST), and succeeds
// once that message arrives on the socket. Every step is bounded in time.
//
//   node --experimental-websocket scripts/pod-ws-check.mjs URL TOKEN ROOM TEXT -- CMD...
//
// Node 20.10+ has a WebSocket client behind that flag (22+ without it): no npm install.
import { spawn } from "node:child_process";

const [url, token, room, text, dashes, ...command] = process.argv.slice(2);
if (!url || !token || !room || !text || dashes !== "--" || command.length === 0) {
  console.error("usage: pod-ws-check.mjs URL TOKEN ROOM TEXT -- COMMAND...");
  process.exit(2);
}
const roomId = Number(room);
const STEP_MS = 15_000;

function fail(why) {
  console.error(`pod-ws-check: ${why}`);
  process.exit(1);
}

const socket = new WebSocket(url);
const frames = [];
let waiting = null;
socket.addEventListener("message", (event) => {
  frames.push(JSON.parse(event.data));
  waiting?.();
});
socket.addEventListener("close", (event) => fail(`socket closed: ${event.code} ${event.reason}`));
socket.addEventListener("error", () => fail(`cannot connect to ${url}`));

/** The first frame (already received or yet to come) that `test` accepts. */
async function frame(what, test) {
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    const i = frames.findIndex(test);
    if (i >= 0) return frames.splice(i, 1)[0];
    const left = deadline - Date.now();
    if (left <= 0) fail(`no ${what} within ${STEP_MS} ms; got ${JSON.stringify(frames)}`);
    await new Promise((resolve) => {
      waiting = resolve;
      setTimeout(resolve, left);
    });
  }
}

async function request(payload, replyType) {
  socket.send(JSON.stringify(payload));
  const reply = await frame(replyType, (f) => f.ref === payload.ref);
  if (reply.type !== replyType) fail(`${payload.type} refused: ${JSON.stringify(reply)}`);
  return reply;
}

await new Promise((resolve) => socket.addEventListener("open", resolve, { once: true }));
const me = await request({ type: "auth", token, ref: "auth" }, "authenticated");
console.log(`pod-ws-check: authenticated as user ${me.user.id} (${me.user.name})`);
await request({ type: "join", roomId, ref: "join" }, "joined");
console.log(`pod-ws-check: joined room ${roomId}; running the writer`);

const writer = spawn(command[0], command.slice(1), { stdio: ["ignore", "inherit", "inherit"] });
const exit = await new Promise((resolve) => {
  const timer = setTimeout(() => {
    writer.kill("SIGKILL");
    resolve("timeout");
  }, STEP_MS);
  writer.on("exit", (code) => {
    clearTimeout(timer);
    resolve(code);
  });
});
if (exit !== 0) fail(`the writer failed (${exit})`);

const got = await frame("message", (f) => f.type === "message");
if (got.roomId !== roomId || got.message?.message !== text) {
  fail(`unexpected frame: ${JSON.stringify(got)}`);
}
console.log(
  `pod-ws-check: the socket received seq ${got.message.seq} "${got.message.message}" from user ${got.message.user_id}`,
);
socket.close(1000);
process.exit(0);
