// Accessibility checks for the browser tests: an axe-core audit, and visible focus.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

/** Runs axe-core on the page (or the part `selector` picks) and fails on any serious or
 *  critical violation. Returns every violation, for a look at the minor ones. */
export async function auditAccessibility(page, what, selector = null) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.addScriptTag({ path: AXE });
  const violations = await page.evaluate(async (sel) => {
    const result = await window.axe.run(sel ? document.querySelector(sel) : document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 4).map((n) => n.target.join(' ')),
    }));
  }, selector);
  const serious = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(serious, [], `${what}: serious accessibility violations`);
  // The minor ones are listed in the test output, to be looked at, not to fail on.
  for (const v of violations) console.log(`axe (${what}): ${v.impact} ${v.id}: ${v.help} — ${v.nodes.join(', ')}`);
  return violations;
}

/** The focused element shows a focus indicator: an outline at least 2 px wide. */
export async function assertFocusVisible(page, what) {
  const focus = await page.evaluate(() => {
    const el = document.activeElement;
    const s = getComputedStyle(el);
    return { tag: el.tagName, label: el.getAttribute('aria-label') || el.textContent.trim().slice(0, 30), style: s.outlineStyle, width: parseFloat(s.outlineWidth) };
  });
  assert.ok(focus.tag !== 'BODY', `${what}: something has focus`);
  assert.ok(focus.style !== 'none' && focus.width >= 2, `${what}: ${focus.tag} "${focus.label}" shows no focus outline (${focus.style} ${focus.width}px)`);
  return focus;
}
