// The minimal host page in examples/: an Alpine.js app served by its own server adds the
// chat with withChat(), takes the token from localStorage.token, reaches pgchat on
// another origin through PGCHAT_URL, chooses Japanese by the chat root's lang attribute,
// and leaves the host page's own styles untouched.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ChatEnv, REPO } from './harness.mjs';
import { serveStatic } from './static-server.mjs';
import { auditAccessibility } from './a11y.mjs';
import { expectOnce, joinRoomById, openChat, send } from './ui.mjs';

describe('embedding in a host app (examples/minimal)', { timeout: 180_000 }, () => {
  const env = new ChatEnv('embed');
  let host, gina, hugo, page, pb, exampleUrl, roomId;

  before(async () => {
    await env.start();
    host = await serveStatic(REPO, ['examples', 'frontend']);
    gina = env.signup('gina@example.com', 'Gina');
    hugo = env.signup('hugo@example.com', 'Hugo');
    exampleUrl = `${host.url}examples/minimal/?pgchat=${encodeURIComponent(`ws://127.0.0.1:${env.port}/ws`)}`;
    page = await env.newPage('host page (Gina)', { locale: 'en-US' });
    pb = await env.openAs(hugo);
  });

  after(async () => {
    if (host) await host.close();
    await env.stop();
  });

  it('signed out: no chat toggle; the chat root\'s lang beats the browser\'s', async () => {
    await page.goto(exampleUrl);
    await page.getByRole('button', { name: 'ログイン' }).waitFor();
    assert.equal(await page.locator('.chat-toggle-btn').isVisible(), false);
    assert.equal(await page.evaluate(() => navigator.language), 'en-US');
    assert.equal(await page.locator('#chat').getAttribute('lang'), 'ja');
    assert.equal(await page.locator('#chat').getAttribute('class'), 'pgchat');
  });

  it('the chat stylesheet changes nothing of the host page\'s own elements', async () => {
    const styles = () => page.evaluate(() => {
      const props = ['font-family', 'font-size', 'color', 'background-color', 'box-sizing', 'margin-top', 'padding-left', 'border-top-width', 'outline-style', 'line-height'];
      return ['html', 'body', 'h1', 'form', 'label', 'input', 'button'].map((sel) => {
        const s = getComputedStyle(document.querySelector(sel));
        return [sel, props.map((p) => s.getPropertyValue(p))];
      });
    });
    const sheet = (on) => page.evaluate((on) => {
      for (const s of document.styleSheets) if (s.href && s.href.endsWith('chat.css')) s.disabled = !on;
    }, on);
    const withChatCss = await styles();
    await sheet(false);
    const without = await styles();
    await sheet(true);
    assert.deepEqual(withChatCss, without);
  });

  it('signing in stores the token in localStorage and starts the chat through PGCHAT_URL', async () => {
    await page.getByRole('textbox', { name: 'トークン' }).fill(gina.token);
    await page.getByRole('button', { name: 'ログイン' }).click();
    await page.locator('.conn-state.conn-connected').waitFor({ state: 'attached' });
    assert.equal(await page.evaluate(() => localStorage.getItem('token')), gina.token);
    await openChat(page);
    await page.getByLabel('ルーム名').fill('はじめての部屋');
    await page.getByRole('button', { name: 'ルームを作成' }).click();
    await page.locator('.room-title-name', { hasText: 'はじめての部屋' }).waitFor();
    roomId = Number((await page.locator('.room-header .room-id').textContent()).replace('#', ''));
    await openChat(pb);
    await joinRoomById(pb, roomId);
    const input = page.getByLabel('メッセージ', { exact: true });
    await input.fill('ホストアプリから送信');
    await input.press('Enter');
    await expectOnce(pb, 'ホストアプリから送信');
    await send(pb, 'Reply from the demo page');
    await expectOnce(page, 'Reply from the demo page');
    await page.locator('.online-names', { hasText: 'Hugo がオンライン' }).waitFor();
    await env.screenshot(page, '50-example-host-page');
    await auditAccessibility(page, 'example host page, chat open');
  });

  it('a reload signs in again from localStorage.token', async () => {
    await page.reload();
    await page.locator('.conn-state.conn-connected').waitFor({ state: 'attached' });
    await openChat(page);
    await page.locator('.room-item', { hasText: 'はじめての部屋' }).click();
    await expectOnce(page, 'Reply from the demo page');
  });

  it('logout closes the chat: the toggle goes, the token is removed, others see Gina leave', async () => {
    await pb.locator('.online-names', { hasText: 'Gina online' }).waitFor();
    await page.locator('.chat-toggle-btn').click(); // back to the host page
    await page.getByRole('button', { name: 'ログアウト' }).click();
    await page.locator('.chat-toggle-btn').waitFor({ state: 'hidden' });
    assert.equal(await page.evaluate(() => localStorage.getItem('token')), null);
    await pb.locator('.online-names').waitFor({ state: 'hidden' });
  });

  it('no page error happened', () => {
    assert.deepEqual(env.pageErrors, []);
  });
});
