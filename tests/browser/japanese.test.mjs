// The chat in Japanese: a browser whose language is ja gets every word in Japanese,
// dates through Intl in ja, a system message and an error message in Japanese, and an
// IME composition never sends on Enter. A second user's browser stays in English.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ChatEnv } from './harness.mjs';
import { expectOnce, openChat } from './ui.mjs';

describe('the chat in Japanese', { timeout: 180_000 }, () => {
  const env = new ChatEnv('ja');
  let alice, bob, pa, pb, roomId;

  before(async () => {
    await env.start();
    alice = env.signup('alice@example.com', 'アリス');
    bob = env.signup('bob@example.com', 'Bob');
    pa = await env.openAs(alice, { locale: 'ja-JP' });
    pb = await env.openAs(bob, { locale: 'en-US' });
  });

  after(async () => {
    await env.stop();
  });

  it('follows the browser\'s language: labels, connection state and the toggle are Japanese', async () => {
    assert.equal(await pa.locator('.chat-toggle-btn > span').first().textContent(), '💬 チャット');
    await openChat(pa);
    await pa.locator('.conn-state', { hasText: '接続済み' }).waitFor();
    await pa.locator('.room-empty', { hasText: 'まだルームがありません。' }).waitFor();
    assert.equal(await pa.locator('.pgchat').getAttribute('lang'), 'ja');
    await pa.getByRole('button', { name: 'ルームを作成' }).waitFor();
    await env.screenshot(pa, '30-ja-rooms');
    // The other browser is English.
    await openChat(pb);
    await pb.locator('.conn-state', { hasText: 'Connected' }).waitFor();
  });

  it('creates a room with a system message, and sends and receives messages', async () => {
    await pa.getByLabel('ルーム名').fill('読書会');
    await pa.getByLabel('ルームの説明').fill('今読んでいる本について');
    await pa.getByRole('button', { name: 'ルームを作成' }).click();
    await pa.locator('.room-title-name', { hasText: '読書会' }).waitFor();
    roomId = Number((await pa.locator('.room-header .room-id').textContent()).replace('#', ''));
    await pa.locator('.chat-system', { hasText: 'ルームを作成しました。' }).waitFor();
    await pa.locator('.room-title-sub', { hasText: 'メンバー 1 人' }).waitFor();

    const input = pa.getByLabel('メッセージ', { exact: true });
    assert.equal(await input.getAttribute('placeholder'), 'メッセージを入力…');
    await input.fill('こんにちは！『キッチン』を読み終えました。');
    await input.press('Enter');
    await expectOnce(pa, 'こんにちは！『キッチン』を読み終えました。');
    const mine = pa.locator('.chat-message.mine').last();
    assert.equal(await mine.locator('.msg-sender').textContent(), 'あなた');
    // Intl in ja: a 24-hour "HH:MM" time today, under a 今日 (today) separator.
    assert.match(await mine.locator('.msg-time').textContent(), /^\d{2}:\d{2}$/);
    await pa.locator('.day-separator', { hasText: '今日' }).first().waitFor();
    await pa.locator('.room-time', { hasText: 'たった今' }).waitFor();

    // Bob (English) joins and answers; Alice sees his typing and his message in Japanese.
    await pb.getByLabel('Room id').fill(String(roomId));
    await pb.getByRole('button', { name: 'Join', exact: true }).click();
    await pb.locator('.chat-system', { hasText: 'You joined this room.' }).waitFor();
    await expectOnce(pb, 'こんにちは！『キッチン』を読み終えました。');
    await pb.getByLabel('Message', { exact: true }).pressSequentially('Wonderful', { delay: 20 });
    await pa.locator('.typing-line', { hasText: 'Bobさんが入力中…' }).waitFor();
    await pb.getByLabel('Message', { exact: true }).press('Enter');
    await expectOnce(pa, 'Wonderful');
    await pa.locator('.online-names', { hasText: 'Bob がオンライン' }).waitFor();
    await pa.locator('.room-title-sub', { hasText: 'メンバー 2 人' }).waitFor();
    await env.screenshot(pa, '31-ja-conversation');
  });

  it('shows an error message in Japanese', async () => {
    await pa.getByLabel('ルーム番号').fill('999999');
    await pa.getByRole('button', { name: '参加', exact: true }).click();
    const alert = pa.getByRole('alert');
    await alert.getByText('ルーム #999999 はありません。').waitFor();
    await env.screenshot(pa, '32-ja-error');
    await alert.getByRole('button', { name: '閉じる' }).click();
    await alert.waitFor({ state: 'hidden' });
    await pa.getByLabel('ルーム番号').fill('abc');
    await pa.getByRole('button', { name: '参加', exact: true }).click();
    await alert.getByText('ルーム番号は 12 のような数字です。').waitFor();
    await alert.getByRole('button', { name: '閉じる' }).click();
  });

  it('Enter during an IME composition never sends; Enter after it does', async () => {
    const input = pa.getByLabel('メッセージ', { exact: true });
    const fire = (type, init) => input.evaluate((el, [type, init]) => {
      const ev = type.startsWith('composition') ? new CompositionEvent(type, init) : new KeyboardEvent(type, init);
      el.dispatchEvent(ev);
      return ev.defaultPrevented;
    }, [type, init]);
    const enter = { key: 'Enter', code: 'Enter', bubbles: true, cancelable: true };

    await input.focus();
    await fire('compositionstart', { data: '', bubbles: true });
    await input.fill('にほんご');
    // Chromium and Firefox: the confirming Enter's keydown is marked as composing.
    assert.equal(await fire('keydown', { ...enter, isComposing: true, keyCode: 229 }), false);
    // A plain Enter keydown between compositionstart and compositionend.
    assert.equal(await fire('keydown', enter), false);
    await input.fill('日本語');
    await fire('compositionend', { data: '日本語', bubbles: true });
    // Safari: compositionend first, then the confirming keydown (keyCode 229).
    assert.equal(await fire('keydown', { ...enter, keyCode: 229 }), false);
    assert.equal(await input.inputValue(), '日本語', 'the text is still being edited');
    await pa.waitForTimeout(50);

    // The composition is over: Enter sends what was confirmed, once.
    await input.press('Enter');
    await expectOnce(pa, '日本語');
    await expectOnce(pb, '日本語');
    for (const page of [pa, pb]) {
      assert.equal(await page.locator('.chat-messages .msg-bubble').getByText('にほんご').count(), 0);
    }
    const stored = env.asUser(alice, `select string_agg(message, '|' order by seq) from api.chat_messages where room_id = ${roomId}`);
    assert.equal(stored[0], 'こんにちは！『キッチン』を読み終えました。|Wonderful|日本語');
  });

  it('the host can switch the language at run time', async () => {
    await pb.locator('.lang-select').selectOption('ja');
    await pb.locator('.conn-state', { hasText: '接続済み' }).waitFor();
    await pb.getByLabel('メッセージ', { exact: true }).waitFor();
    assert.equal(await pb.locator('.pgchat').getAttribute('lang'), 'ja');
    await pb.locator('.lang-select').selectOption('en');
    await pb.locator('.conn-state', { hasText: 'Connected' }).waitFor();
  });

  it('no page error happened', () => {
    assert.deepEqual(env.pageErrors, []);
  });
});
