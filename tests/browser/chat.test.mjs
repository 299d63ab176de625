// Two users in two browser contexts chat through a real pgchat: rooms, messages both
// ways, typing, unread counts, HTML shown as text, and a pgchat crash and restart.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ChatEnv } from './harness.mjs';
import {
  closeChat, createRoom, expectOnce, joinRoomById, openChat, roomItem, send,
} from './ui.mjs';

describe('two users chatting', { timeout: 300_000 }, () => {
  const env = new ChatEnv('chat');
  let alice, bob, pa, pb, roomId;

  before(async () => {
    await env.start();
    alice = env.signup('alice@example.com', 'Alice');
    bob = env.signup('bob@example.com', 'Bob');
    pa = await env.openAs(alice);
    pb = await env.openAs(bob);
    await env.screenshot(pa, '01-books-main-screen');
  });

  after(async () => {
    await env.stop();
  });

  it('one user creates a room and the other joins it by id', async () => {
    await openChat(pa);
    await env.screenshot(pa, '02-chat-empty');
    roomId = await createRoom(pa, 'Book club', 'What are you reading?');
    assert.ok(roomId > 0);
    await openChat(pb);
    await joinRoomById(pb, roomId);
    await roomItem(pb, 'Book club').waitFor();
    // Presence: each sees the other online in the room.
    await roomItem(pa, 'Book club').locator('.presence-dot').waitFor({ state: 'visible' });
    await pa.locator('.online-names', { hasText: 'Bob online' }).waitFor();
    await pb.locator('.online-names', { hasText: 'Alice online' }).waitFor();
  });

  it('messages go both ways, each shown once', async () => {
    await send(pa, 'Hi Bob! Finished Piranesi yet?');
    await expectOnce(pb, 'Hi Bob! Finished Piranesi yet?');
    await expectOnce(pa, 'Hi Bob! Finished Piranesi yet?');
    await send(pb, 'Almost — the statues chapter is wonderful.');
    await expectOnce(pa, 'Almost — the statues chapter is wonderful.');
    await expectOnce(pb, 'Almost — the statues chapter is wonderful.');
    await send(pa, 'Multi-byte works too: 日本語のメッセージ 🎉');
    await expectOnce(pb, 'Multi-byte works too: 日本語のメッセージ 🎉');
    const sender = pb.locator('.chat-message:not(.mine) .msg-sender').first();
    assert.equal(await sender.textContent(), 'Alice');
    assert.match(await pb.locator('.chat-message .msg-time').first().textContent(), /\d/);
    await env.screenshot(pa, '03-conversation-alice');
    await env.screenshot(pb, '04-conversation-bob');
  });

  it('the typing indicator appears and disappears', async () => {
    const line = pa.locator('.typing-line');
    await pb.getByLabel('Message', { exact: true }).pressSequentially('I am typing something', { delay: 20 });
    await line.getByText('Bob is typing…').waitFor();
    await env.screenshot(pa, '05-typing-indicator');
    // Bob stops typing without sending: the line goes by itself (idle / expiry).
    await line.getByText('Bob is typing…').waitFor({ state: 'detached', timeout: 12_000 });
    await pb.getByLabel('Message', { exact: true }).fill('');
  });

  it('the unread count rises and clears', async () => {
    // Bob looks at another room; Alice writes in Book club.
    const quietId = await createRoom(pb, 'Quiet corner');
    assert.notEqual(quietId, roomId);
    await send(pa, 'Unread one');
    await send(pa, 'Unread two');
    const badge = roomItem(pb, 'Book club').locator('.unread-badge');
    await badge.getByText('2', { exact: true }).waitFor();
    await env.screenshot(pb, '06-unread-in-sidebar');

    // With the chat closed, the floating button counts too.
    await closeChat(pb);
    await send(pa, 'Unread three');
    await pb.locator('.chat-toggle-btn .toggle-badge').getByText('3', { exact: true }).waitFor();
    await env.screenshot(pb, '07-unread-on-toggle');
    await openChat(pb);
    await roomItem(pb, 'Book club').click();
    await expectOnce(pb, 'Unread three');
    await badge.waitFor({ state: 'hidden' });
    await pb.locator('.chat-toggle-btn .toggle-badge').waitFor({ state: 'hidden' });

    // The read marker was stored: a reload still shows nothing unread.
    await pb.reload();
    await pb.locator('.conn-state.conn-connected').waitFor({ state: 'attached' });
    await roomItem(pb, 'Book club').waitFor({ state: 'attached' });
    await pb.waitForTimeout(500);
    assert.equal(await pb.locator('.chat-toggle-btn .toggle-badge').isVisible(), false);
    await openChat(pb);
    await roomItem(pb, 'Book club').click();
  });

  it('a message containing HTML is shown as text and runs nothing', async () => {
    const evil = '<img src=x onerror=window.__xss=1>';
    await send(pa, evil);
    await expectOnce(pb, evil);
    await expectOnce(pa, evil);
    for (const page of [pa, pb]) {
      assert.equal(await page.locator('.chat-messages img').count(), 0);
      assert.equal(await page.evaluate(() => window.__xss), undefined);
    }
    await env.screenshot(pb, '08-html-shown-as-text');
  });

  it('pgchat is killed and restarted: the UI reconnects and shows what was sent meanwhile once', async () => {
    await env.killServer();
    for (const page of [pa, pb]) {
      await page.locator('.conn-state.conn-reconnecting').waitFor({ timeout: 10_000 });
      await page.locator('.chat-banner').waitFor({ state: 'visible' });
    }
    await env.screenshot(pa, '09-connection-lost');

    // While pgchat is down: Bob writes through PostgREST's SQL path, Alice in the UI.
    env.asUser(bob, `select api.send_message(${roomId}, 'Sent through PostgREST while pgchat was down', null)`);
    await send(pa, 'Typed while offline');
    await pa.locator('.chat-message.pending .msg-bubble').getByText('Typed while offline').waitFor();
    await env.screenshot(pa, '10-pending-while-offline');

    await env.startServer();
    for (const page of [pa, pb]) {
      await page.locator('.conn-state.conn-connected').waitFor({ timeout: 45_000 });
      await expectOnce(page, 'Sent through PostgREST while pgchat was down');
      await expectOnce(page, 'Typed while offline');
    }
    await pa.locator('.chat-message.pending').waitFor({ state: 'detached' });
    await env.screenshot(pa, '11-reconnected');

    const stored = env.asUser(alice, `select count(*) from api.chat_messages where room_id = ${roomId} and message = 'Typed while offline'`);
    assert.equal(stored[0], '1', 'the offline message is stored exactly once');
    // Live delivery works again after the restart.
    await send(pb, 'Back online!');
    await expectOnce(pa, 'Back online!');
  });

  it('a room joined through PostgREST appears live, and leaving removes it', async () => {
    const news = JSON.parse(env.asUser(alice, `select api.create_chat_room('Announcements', 'News from the shelf')`)[0]);
    env.asUser(alice, `select api.send_message(${news.id}, 'Welcome to the announcements!', null)`);
    env.asUser(bob, `select api.join_chat_room(${news.id})`);
    const item = roomItem(pb, 'Announcements');
    await item.waitFor();
    await item.click();
    await expectOnce(pb, 'Welcome to the announcements!');
    await pb.getByRole('button', { name: 'Leave' }).click();
    await item.waitFor({ state: 'detached' });
    await pb.locator('.chat-empty').waitFor({ state: 'visible' });
    // Bob no longer receives the room.
    env.asUser(alice, `select api.send_message(${news.id}, 'Bob has left', null)`);
    await pa.waitForTimeout(500);
    assert.equal(await roomItem(pb, 'Announcements').count(), 0);
  });

  it('older history loads on demand, in order and once', async () => {
    const hist = JSON.parse(env.asUser(alice, `select api.create_chat_room('Archive', '')`)[0]);
    env.asUser(alice, `select count(api.send_message(${hist.id}, 'Archive note ' || g, null)) from generate_series(1, 70) g`);
    env.asUser(bob, `select api.join_chat_room(${hist.id})`); // Bob arrives after the 70
    await roomItem(pb, 'Archive').click();
    await expectOnce(pb, 'Archive note 70');
    assert.equal(await pb.locator('.chat-messages .msg-bubble').count(), 50, 'the newest page first');
    await pb.getByRole('button', { name: 'Load earlier messages' }).click();
    await expectOnce(pb, 'Archive note 1');
    const texts = await pb.locator('.chat-messages .msg-bubble').allTextContents();
    assert.deepEqual(texts, Array.from({ length: 70 }, (_, i) => `Archive note ${i + 1}`));
    await pb.getByRole('button', { name: 'Load earlier messages' }).waitFor({ state: 'hidden' });
  });

  it('no page error happened', () => {
    assert.deepEqual(env.pageErrors, []);
  });
});
