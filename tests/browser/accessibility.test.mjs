// Accessibility: the message list is a live region (role="log"), every control has a
// name, keyboard focus is visible, and axe-core finds no serious violation on the main
// screen, the open chat (English and Japanese) and a phone-sized screen.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ChatEnv } from './harness.mjs';
import { assertFocusVisible, auditAccessibility } from './a11y.mjs';
import { createRoom, expectOnce, joinRoomById, openChat, send } from './ui.mjs';

describe('accessibility', { timeout: 180_000 }, () => {
  const env = new ChatEnv('a11y');
  let erin, frank, pe, pf, roomId;

  before(async () => {
    await env.start();
    erin = env.signup('erin@example.com', 'Erin');
    frank = env.signup('frank@example.com', 'Frank');
    pe = await env.openAs(erin);
    pf = await env.openAs(frank);
  });

  after(async () => {
    await env.stop();
  });

  it('the main screen with the chat toggle passes the audit', async () => {
    await auditAccessibility(pe, 'books main screen');
  });

  it('messages arrive in a role="log" live region of the open room', async () => {
    await openChat(pe);
    roomId = await createRoom(pe, 'Accessible reading', 'Large print welcome');
    await openChat(pf);
    await joinRoomById(pf, roomId);
    await send(pf, 'Hello from Frank');
    const log = pe.getByRole('log', { name: 'Messages in Accessible reading' });
    await log.getByText('Hello from Frank', { exact: true }).waitFor();
    assert.equal(await log.getAttribute('aria-live'), null, 'role=log is polite by itself');
    await expectOnce(pe, 'Hello from Frank');
    await send(pe, 'Welcome, Frank');
    await expectOnce(pe, 'Welcome, Frank');
    // Status and errors are announced too.
    assert.equal(await pe.locator('.conn-state').getAttribute('role'), 'status');
    await pe.getByLabel('Room id').fill('x');
    await pe.getByRole('button', { name: 'Join', exact: true }).click();
    await pe.getByRole('alert').getByText('A room id is a number, like 12.').waitFor();
    await pe.getByRole('button', { name: 'Dismiss' }).click();
  });

  it('every control in the chat has an accessible name', async () => {
    const unnamed = await pe.locator('.pgchat').evaluate((root) => [...root.querySelectorAll('button, input, textarea, select')]
      .filter((el) => el.offsetParent !== null || getComputedStyle(el).position === 'fixed')
      .filter((el) => !(el.getAttribute('aria-label') || el.textContent.trim() || (el.labels && el.labels.length)))
      .map((el) => el.outerHTML.slice(0, 80)));
    assert.deepEqual(unnamed, []);
  });

  it('keyboard focus is visible on every control reached with Tab', async () => {
    await pe.locator('.chat-toggle-btn').focus();
    const seen = [];
    // From the toggle through the overlay's controls, until focus leaves the chat.
    for (let i = 0; i < 20; i++) {
      await pe.keyboard.press('Tab');
      if (!(await pe.evaluate(() => !!document.activeElement.closest('.pgchat')))) break;
      const focus = await assertFocusVisible(pe, `tab stop ${i + 1}`);
      seen.push(`${focus.tag}:${focus.label}`);
    }
    assert.ok(seen.length >= 6, seen.join(', '));
    // Escape from inside the overlay closes it and puts focus back on the toggle.
    await pe.getByLabel('Message', { exact: true }).focus();
    await pe.keyboard.press('Escape');
    await pe.locator('.chat-overlay').waitFor({ state: 'hidden' });
    assert.equal(await pe.evaluate(() => document.activeElement.className), 'chat-toggle-btn');
    await assertFocusVisible(pe, 'toggle after Escape');
    await pe.keyboard.press('Enter');
    await pe.locator('.chat-overlay').waitFor({ state: 'visible' });
    assert.ok(seen.some((s) => s.startsWith('TEXTAREA')) && seen.some((s) => s.startsWith('INPUT')), seen.join(', '));
  });

  it('the open chat passes the audit in English and in Japanese', async () => {
    await auditAccessibility(pe, 'open room (en)');
    await env.screenshot(pe, '40-a11y-open-room');
    await pe.locator('.lang-select').selectOption('ja');
    await pe.locator('.conn-state', { hasText: '接続済み' }).waitFor();
    await auditAccessibility(pe, 'open room (ja)');
    await pe.locator('.lang-select').selectOption('en');
  });

  it('a phone-sized screen passes the audit', async () => {
    const phone = await env.openAs(frank, { width: 375, height: 740 });
    await auditAccessibility(phone, 'phone main screen');
    await openChat(phone);
    await auditAccessibility(phone, 'phone room list');
    await phone.locator('.room-item', { hasText: 'Accessible reading' }).click();
    await expectOnce(phone, 'Welcome, Frank');
    await auditAccessibility(phone, 'phone open room');
  });

  it('no page error happened', () => {
    assert.deepEqual(env.pageErrors, []);
  });
});
