// The DOM-free client SDK in Node, without a browser or server: a scripted fake
// WebSocket checks backoff, resume by `since` and `sinceRev`, the room stream's
// prevRev chain (upsert by id, gaps, duplicates, `behind`), and outbox re-send until ack.
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createChatClient, backoffDelay } from '../../frontend/sdk/index.js';

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code = 1000) { this.drop(code); }
  // Test controls.
  accept() { this.readyState = 1; this.onopen && this.onopen(); }
  reply(frame) { this.onmessage({ data: JSON.stringify(frame) }); }
  drop(code = 1006) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose && this.onclose({ code });
  }
  framesOf(type) { return this.sent.filter((f) => f.type === type); }
}

const latest = () => FakeSocket.all[FakeSocket.all.length - 1];
const tick = () => new Promise((r) => setImmediate(r));

function connectedClient(t) {
  const client = createChatClient('tok', 'ws://x/ws', { WebSocket: FakeSocket });
  client.connect();
  latest().accept();
  assert.deepEqual(latest().sent[0], { type: 'auth', token: 'tok', ref: 'auth' });
  latest().reply({ type: 'authenticated', ref: 'auth', user: { id: 7, name: 'Alice' } });
  t.after(() => client.close());
  return client;
}

describe('chat client', () => {
  beforeEach((t) => {
    FakeSocket.all = [];
    t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  });
  afterEach((t) => t.mock.timers.reset());

  it('backs off from 1 s to 30 s with jitter', () => {
    assert.equal(backoffDelay(0, () => 1), 1000);
    assert.equal(backoffDelay(0, () => 0), 500);
    assert.equal(backoffDelay(3, () => 1), 8000);
    assert.equal(backoffDelay(10, () => 1), 30000);
    assert.equal(backoffDelay(50, () => 0), 15000);
  });

  it('reconnects after a drop and resumes each room from the last seq seen', (t) => {
    const client = connectedClient(t);
    client.joinRoom(1, 0);
    client.joinRoom(2, 5);
    assert.deepEqual(latest().framesOf('join').map((f) => [f.roomId, f.since]), [[1, 0], [2, 5]]);
    latest().reply({ type: 'message', roomId: 1, message: { id: 10, seq: 3, user_id: 8 } });
    latest().reply({ type: 'message', roomId: 1, message: { id: 11, seq: 4, user_id: 8 } });

    const states = [];
    client.on('state', (s) => states.push(s.state));
    latest().drop();
    assert.equal(client.state, 'reconnecting');
    t.mock.timers.tick(1000);
    assert.equal(FakeSocket.all.length, 2, 'a new socket after at most 1 s');
    latest().accept();
    latest().reply({ type: 'authenticated', ref: 'auth', user: { id: 7, name: 'Alice' } });
    assert.deepEqual(latest().framesOf('join').map((f) => [f.roomId, f.since]), [[1, 4], [2, 5]]);
    assert.deepEqual(states, ['reconnecting', 'reconnecting', 'open']);
  });

  it('a room joined live-only resumes from the seq the server reported in joined', (t) => {
    const client = connectedClient(t);
    client.joinRoom(4);
    assert.equal(latest().framesOf('join')[0].since, undefined);
    latest().reply({ type: 'joined', ref: 'join:4', roomId: 4, online: [], lastSeq: 70 });
    latest().drop();
    t.mock.timers.tick(1000);
    latest().accept();
    latest().reply({ type: 'authenticated', ref: 'auth', user: { id: 7, name: 'Alice' } });
    assert.equal(latest().framesOf('join')[0].since, 70);
  });

  it('keeps failing reconnects spaced out, growing to the cap', (t) => {
    connectedClient(t);
    latest().drop();
    const gaps = [];
    for (let i = 0; i < 8; i++) {
      const before = FakeSocket.all.length;
      let waited = 0;
      while (FakeSocket.all.length === before) { t.mock.timers.tick(250); waited += 250; }
      gaps.push(waited);
      latest().drop();
    }
    assert.ok(gaps[0] <= 1000 && gaps[3] >= 4000 && gaps[7] <= 30000, `gaps ${gaps}`);
  });

  it('re-sends unacknowledged messages with the same clientId until ack', async (t) => {
    const client = connectedClient(t);
    const id = client.sendMessage(1, 'hello');
    const first = latest().framesOf('message');
    assert.equal(first.length, 1);
    assert.equal(first[0].clientId, id);
    latest().drop(); // no ack arrived

    t.mock.timers.tick(1000);
    latest().accept();
    latest().reply({ type: 'authenticated', ref: 'auth', user: { id: 7, name: 'Alice' } });
    const again = latest().framesOf('message');
    assert.deepEqual(again.map((f) => [f.clientId, f.message]), [[id, 'hello']]);
    latest().reply({ type: 'ack', ref: again[0].ref, id: 99, seq: 1 });
    assert.deepEqual(client.pendingMessages(), []);

    // Acked messages are not sent again after the next reconnect.
    latest().drop();
    t.mock.timers.tick(1000);
    latest().accept();
    latest().reply({ type: 'authenticated', ref: 'auth', user: { id: 7, name: 'Alice' } });
    assert.equal(latest().framesOf('message').length, 0);
    await tick();
  });

  it('messages written while offline wait in the outbox', (t) => {
    const client = connectedClient(t);
    latest().drop();
    client.sendMessage(3, 'offline one');
    assert.equal(client.pendingMessages().length, 1);
    t.mock.timers.tick(1000);
    latest().accept();
    assert.equal(latest().framesOf('message').length, 0, 'nothing before auth');
    latest().reply({ type: 'authenticated', ref: 'auth', user: { id: 7, name: 'Alice' } });
    const sent = latest().framesOf('message');
    assert.equal(sent.length, 1);
    // The echo of our own message settles it as well as an ack would.
    latest().reply({ type: 'message', roomId: 3, message: { id: 5, seq: 9, user_id: 7, client_id: sent[0].clientId } });
    assert.deepEqual(client.pendingMessages(), []);
  });

  it('a refusal that a retry cannot cure fails the message; rate_limited is re-sent', (t) => {
    const client = connectedClient(t);
    const failed = [];
    client.on('send_failed', (f) => failed.push(f));
    const slow = client.sendMessage(1, 'too fast');
    const doomed = client.sendMessage(1, 'not a member');
    const [first, second] = latest().framesOf('message');
    latest().reply({ type: 'error', ref: first.ref, code: 'rate_limited', message: 'slow down' });
    latest().reply({ type: 'error', ref: second.ref, code: 'forbidden', message: 'not a member' });
    assert.deepEqual(failed.map((f) => [f.clientId, f.code]), [[doomed, 'forbidden']]);
    assert.deepEqual(client.pendingMessages().map((m) => m.clientId), [slow]);
    t.mock.timers.tick(2000);
    const resent = latest().framesOf('message').filter((f) => f.clientId === slow);
    assert.equal(resent.length, 2, 'sent again after 2 s on the same connection');
  });

  it('requests resolve with the reply carrying their ref, and reject on error', async (t) => {
    const client = connectedClient(t);
    const rooms = client.request({ type: 'rooms' });
    const ref = latest().framesOf('rooms')[0].ref;
    latest().reply({ type: 'rooms', ref, rooms: [{ id: 1 }] });
    assert.deepEqual((await rooms).rooms, [{ id: 1 }]);

    const join = client.request({ type: 'join_room', roomId: 404 });
    const jref = latest().framesOf('join_room')[0].ref;
    latest().reply({ type: 'error', ref: jref, code: 'not_found', message: 'room not found' });
    await assert.rejects(join, (e) => e.code === 'not_found');
  });

  it('stops for good when the token expires (close 4001)', (t) => {
    const client = connectedClient(t);
    let failed = null;
    client.on('auth_failed', (f) => { failed = f; });
    latest().drop(4001);
    assert.equal(client.state, 'closed');
    assert.equal(failed.code, 'token_expired');
    t.mock.timers.tick(60_000);
    assert.equal(FakeSocket.all.length, 1);
  });

  const reconnect = (t) => {
    latest().drop();
    t.mock.timers.tick(1000);
    latest().accept();
    latest().reply({ type: 'authenticated', ref: 'auth', user: { id: 7, name: 'Alice' } });
  };
  const msg = (id, seq, rev, extra = {}) => Object.assign({ id, room_id: 1, seq, rev, user_id: 8, message: 'm' + id }, extra);

  it('upserts messages by id: a later state replaces the earlier, a deletion included', (t) => {
    const client = connectedClient(t);
    const states = [];
    client.on('message_state', (e) => states.push([e.message.id, e.message.message, e.isNew]));
    client.joinRoom(1);
    latest().reply({ type: 'joined', ref: 'join:1', roomId: 1, online: [], lastSeq: 0, lastRev: 10 });
    latest().reply({ type: 'message', roomId: 1, rev: 11, prevRev: 10, message: msg(1, 1, 11) });
    latest().reply({ type: 'message', roomId: 1, rev: 12, prevRev: 11, message: msg(2, 2, 12) });
    latest().reply({ type: 'message_updated', roomId: 1, rev: 13, prevRev: 12, message: msg(1, 1, 13, { message: 'edited', edited_at: 'x' }) });
    latest().reply({ type: 'message_updated', roomId: 1, rev: 14, prevRev: 13, message: msg(2, 2, 14, { message: '', deleted_at: 'y', deleted_by: 8 }) });
    assert.deepEqual(client.messages(1).map((m) => [m.id, m.message, m.deleted_at || null]),
      [[1, 'edited', null], [2, '', 'y']]);
    assert.deepEqual(states, [[1, 'm1', true], [2, 'm2', true], [1, 'edited', false], [2, '', false]]);
    assert.equal(client.lastRev(1), 14);
    // The earlier protocol's deletion frame is still understood.
    latest().reply({ type: 'message_deleted', roomId: 1, message: { id: 1, room_id: 1, seq: 1 } });
    const first = client.messages(1)[0];
    assert.equal(first.message, '');
    assert.ok(first.deleted_at);
  });

  it('resumes after a reconnect from the last rev seen, with sinceRev', (t) => {
    const client = connectedClient(t);
    client.joinRoom(1);
    latest().reply({ type: 'joined', ref: 'join:1', roomId: 1, online: [], lastSeq: 4, lastRev: 20 });
    latest().reply({ type: 'read', roomId: 1, rev: 21, prevRev: 20, user: { id: 8, name: 'B' }, seq: 4 });
    latest().reply({ type: 'member_joined', roomId: 1, rev: 22, prevRev: 21, user: { id: 9, name: 'C' }, role: 'member' });
    reconnect(t);
    assert.deepEqual(latest().framesOf('join').map((f) => [f.roomId, f.sinceRev, f.since]), [[1, 22, 4]]);
    // The replay chains from sinceRev; then joined; then live from its lastRev.
    latest().reply({ type: 'message', roomId: 1, rev: 24, prevRev: 22, message: msg(5, 5, 24) });
    latest().reply({ type: 'joined', ref: 'join:1', roomId: 1, online: [], lastSeq: 5, lastRev: 25 });
    latest().reply({ type: 'message', roomId: 1, rev: 26, prevRev: 25, message: msg(6, 6, 26) });
    assert.deepEqual(client.messages(1).map((m) => m.id), [5, 6]);
    assert.equal(client.lastRev(1), 26);
    assert.equal(latest().framesOf('join').length, 1, 'no gap seen');
  });

  it('a prevRev that is not the last rev seen re-joins with sinceRev; duplicates are dropped', (t) => {
    const client = connectedClient(t);
    const gaps = [];
    client.on('gap', (g) => gaps.push([g.lastRev, g.prevRev]));
    client.joinRoom(1);
    latest().reply({ type: 'joined', ref: 'join:1', roomId: 1, online: [], lastSeq: 0, lastRev: 10 });
    latest().reply({ type: 'message', roomId: 1, rev: 11, prevRev: 10, message: msg(1, 1, 11) });
    // A duplicate (rev already seen) changes nothing.
    latest().reply({ type: 'message_updated', roomId: 1, rev: 11, prevRev: 10, message: msg(1, 1, 11, { message: 'stale' }) });
    assert.equal(client.messages(1)[0].message, 'm1');
    // Rev 12 never arrived.
    latest().reply({ type: 'message', roomId: 1, rev: 13, prevRev: 12, message: msg(3, 3, 13) });
    latest().reply({ type: 'message', roomId: 1, rev: 14, prevRev: 13, message: msg(4, 4, 14) });
    assert.deepEqual(gaps, [[11, 12]], 'one gap, one re-join');
    const joins = latest().framesOf('join');
    assert.deepEqual(joins.map((f) => f.sinceRev), [undefined, 11]);
    assert.deepEqual(client.messages(1).map((m) => m.id), [1], 'frames past the gap wait for the replay');
    // The replay brings 12 (compacted: message 2's latest state), 13 and 14 again.
    latest().reply({ type: 'message', roomId: 1, rev: 12, prevRev: 11, message: msg(2, 2, 12) });
    latest().reply({ type: 'message', roomId: 1, rev: 13, prevRev: 12, message: msg(3, 3, 13) });
    latest().reply({ type: 'message', roomId: 1, rev: 14, prevRev: 13, message: msg(4, 4, 14) });
    latest().reply({ type: 'joined', ref: 'join:1', roomId: 1, online: [], lastSeq: 4, lastRev: 14 });
    latest().reply({ type: 'message', roomId: 1, rev: 15, prevRev: 14, message: msg(5, 5, 15) });
    assert.deepEqual(client.messages(1).map((m) => m.id), [1, 2, 3, 4, 5]);
    assert.equal(gaps.length, 1);
  });

  it('a resync re-joins the room from the last rev seen', (t) => {
    const client = connectedClient(t);
    client.joinRoom(1);
    latest().reply({ type: 'joined', ref: 'join:1', roomId: 1, online: [], lastSeq: 3, lastRev: 9 });
    latest().reply({ type: 'resync', roomId: 1, lastSeq: 20000, lastRev: 30000 });
    assert.deepEqual(latest().framesOf('join').map((f) => [f.sinceRev, f.since]), [[undefined, undefined], [9, 3]]);
    // Frames after the jump do not continue the chain: dropped until the re-join answers.
    latest().reply({ type: 'message', roomId: 1, rev: 30001, prevRev: 30000, message: msg(7, 20001, 30001) });
    assert.deepEqual(client.messages(1), []);
    assert.equal(latest().framesOf('join').length, 2, 'one re-join');
  });

  it('joined with behind drops what it held and loads the latest history page', async (t) => {
    const client = connectedClient(t);
    let behind = null;
    client.on('behind', (b) => { behind = b; });
    client.joinRoom(1, null, 5);
    assert.equal(latest().framesOf('join')[0].sinceRev, 5);
    latest().reply({ type: 'message', roomId: 1, message: msg(1, 1, 1) });
    latest().reply({ type: 'joined', ref: 'join:1', roomId: 1, online: [], lastSeq: 3000, lastRev: 4000, behind: true });
    const history = latest().framesOf('history');
    assert.equal(history.length, 1);
    assert.equal(history[0].roomId, 1);
    latest().reply({ type: 'history', ref: history[0].ref, roomId: 1, messages: [msg(3000, 3000, 4000), msg(2999, 2999, 3999)] });
    await tick();
    assert.deepEqual(behind.messages.map((m) => m.seq), [2999, 3000]);
    assert.deepEqual(client.messages(1).map((m) => m.seq), [2999, 3000]);
    // Live goes on from lastRev.
    latest().reply({ type: 'message', roomId: 1, rev: 4001, prevRev: 4000, message: msg(3001, 3001, 4001) });
    assert.equal(client.messages(1).length, 3);
    reconnect(t);
    assert.equal(latest().framesOf('join')[0].sinceRev, 4001);
  });
});
