// Page helpers for the chat UI: what a user does, in the words of the test.
import assert from 'node:assert/strict';

export async function openChat(page) {
  if (!(await page.locator('.chat-overlay').isVisible())) await page.locator('.chat-toggle-btn').click();
  await page.locator('.chat-overlay').waitFor({ state: 'visible' });
}

export async function closeChat(page) {
  if (await page.locator('.chat-overlay').isVisible()) await page.locator('.chat-toggle-btn').click();
  await page.locator('.chat-overlay').waitFor({ state: 'hidden' });
}

/** Creates a room from the sidebar form; returns its id as shown in the room header. */
export async function createRoom(page, name, description = '') {
  await page.getByLabel('Room name').fill(name);
  await page.getByLabel('Room description').fill(description);
  await page.getByRole('button', { name: 'Create room' }).click();
  await page.locator('.room-title-name', { hasText: name }).waitFor();
  const id = (await page.locator('.room-header .room-id').textContent()).replace('#', '');
  return Number(id);
}

export async function joinRoomById(page, id) {
  await page.getByLabel('Room id').fill(String(id));
  await page.getByRole('button', { name: 'Join', exact: true }).click();
  await page.locator('.room-header .room-id', { hasText: `#${id}` }).waitFor();
}

export function roomItem(page, name) {
  return page.locator('.room-item', { has: page.locator('.room-name', { hasText: name }) });
}

export async function send(page, text) {
  const input = page.getByLabel('Message', { exact: true });
  await input.fill(text);
  await input.press('Enter');
}

/** Waits until exactly one committed (not pending) bubble shows `text`, and stays one. */
export async function expectOnce(page, text, timeout = 15_000) {
  const exact = page.locator('.chat-message:not(.pending) .msg-bubble').getByText(text, { exact: true });
  await exact.first().waitFor({ timeout });
  await page.waitForTimeout(300);
  const all = page.locator('.chat-messages .msg-bubble').getByText(text, { exact: true });
  assert.equal(await all.count(), 1, `"${text}" should be shown exactly once`);
}

/** The page has no horizontal overflow at its current width. */
export async function assertNoHorizontalOverflow(page, what) {
  const { scroll, client } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  assert.ok(scroll <= client, `${what}: page is ${scroll}px wide in a ${client}px viewport`);
}

/** The element is visible and lies inside the viewport horizontally and vertically. */
export async function assertInViewport(page, locator, what) {
  await locator.waitFor({ state: 'visible' });
  const box = await locator.boundingBox();
  const vp = page.viewportSize();
  assert.ok(box, `${what}: no box`);
  assert.ok(box.x >= 0 && box.x + box.width <= vp.width + 0.5, `${what}: x ${box.x}+${box.width} outside ${vp.width}`);
  assert.ok(box.y >= 0 && box.y + box.height <= vp.height + 0.5, `${what}: y ${box.y}+${box.height} outside ${vp.height}`);
}
