// A 375 px wide phone: the room list, the forms and the message input are reachable and
// nothing overflows sideways.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ChatEnv } from './harness.mjs';
import {
  assertInViewport, assertNoHorizontalOverflow, expectOnce, openChat, roomItem, send,
} from './ui.mjs';

describe('a 375 px viewport', { timeout: 180_000 }, () => {
  const env = new ChatEnv('mobile');
  let carol, dave, phone, roomId;

  before(async () => {
    await env.start();
    carol = env.signup('carol@example.com', 'Carol');
    dave = env.signup('dave@example.com', 'Dave');
    // Dave's room, with some history, created through the SQL functions PostgREST serves.
    roomId = JSON.parse(env.asUser(dave, `select api.create_chat_room('Reading on the train', 'Short reads for short trips')`)[0]).id;
    env.asUser(carol, `select api.join_chat_room(${roomId})`);
    env.asUser(dave, `select api.send_message(${roomId}, 'Anyone tried the new Calvino translation? It reads beautifully on a small screen, even in long paragraphs that wrap several times.', null)`);
    phone = await env.openAs(carol, { width: 375, height: 740 });
  });

  after(async () => {
    await env.stop();
  });

  it('the main screen fits', async () => {
    await assertNoHorizontalOverflow(phone, 'books screen');
    await assertInViewport(phone, phone.locator('.chat-toggle-btn'), 'chat button');
    await env.screenshot(phone, '20-mobile-books');
  });

  it('the room list and forms are reachable', async () => {
    await openChat(phone);
    await assertNoHorizontalOverflow(phone, 'room list');
    await assertInViewport(phone, roomItem(phone, 'Reading on the train'), 'room item');
    await assertInViewport(phone, phone.getByLabel('Room name'), 'create form');
    await assertInViewport(phone, phone.getByLabel('Room id'), 'join form');
    await assertInViewport(phone, phone.locator('.conn-state'), 'connection state');
    assert.equal(await roomItem(phone, 'Reading on the train').locator('.unread-badge').textContent(), '1');
    await env.screenshot(phone, '21-mobile-rooms');
  });

  it('a room opens full width with its input, and back returns to the list', async () => {
    await roomItem(phone, 'Reading on the train').click();
    await expectOnce(phone, 'Anyone tried the new Calvino translation? It reads beautifully on a small screen, even in long paragraphs that wrap several times.');
    await assertInViewport(phone, phone.getByLabel('Message', { exact: true }), 'message input');
    await assertInViewport(phone, phone.getByRole('button', { name: 'Send' }), 'send button');
    await assertInViewport(phone, phone.getByRole('button', { name: 'Back to rooms' }), 'back button');
    await send(phone, 'Yes! Reading it on my phone right now.');
    await expectOnce(phone, 'Yes! Reading it on my phone right now.');
    await assertNoHorizontalOverflow(phone, 'open room');
    await env.screenshot(phone, '22-mobile-room');

    await phone.getByRole('button', { name: 'Back to rooms' }).click();
    await assertInViewport(phone, roomItem(phone, 'Reading on the train'), 'room list after back');
  });

  it('no page error happened', () => {
    assert.deepEqual(env.pageErrors, []);
  });
});
