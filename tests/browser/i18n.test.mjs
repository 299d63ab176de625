// The ja/en catalogue and the SDK's error codes, in Node without a browser: both
// catalogues complete, every error code has words, the language is chosen in the
// documented order, and dates are formatted with Intl in that language.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  CATALOGUES, LANGUAGES, chooseLanguage, dateFormatters, errorText, translate,
} from '../../frontend/i18n/index.js';
import { CLIENT_ERROR_CODES, SERVER_ERROR_CODES, canResend } from '../../frontend/sdk/index.js';

const keysOf = (lang) => Object.keys(CATALOGUES[lang]).sort();

describe('the message catalogue', () => {
  it('has English and Japanese', () => {
    assert.deepEqual([...LANGUAGES].sort(), ['en', 'ja']);
  });

  it('has the same keys in every language, none empty', () => {
    const en = keysOf('en');
    for (const lang of LANGUAGES) {
      const keys = keysOf(lang);
      assert.deepEqual(keys.filter((k) => !en.includes(k)), [], `${lang} has keys English lacks`);
      assert.deepEqual(en.filter((k) => !keys.includes(k)), [], `${lang} lacks keys`);
      for (const k of keys) assert.ok(CATALOGUES[lang][k].trim(), `${lang}.${k} is empty`);
    }
  });

  it('uses the same {placeholders} for a key in every language', () => {
    const params = (s) => (s.match(/\{\w+\}/g) || []).sort();
    for (const key of keysOf('en')) {
      for (const lang of LANGUAGES) {
        assert.deepEqual(params(CATALOGUES[lang][key]), params(CATALOGUES.en[key]), `${lang}.${key}`);
      }
    }
  });

  it('has every plural form each language needs', () => {
    const plural = new Set(keysOf('en').filter((k) => /\.(zero|one|two|few|many|other)$/.test(k)).map((k) => k.replace(/\.\w+$/, '')));
    assert.ok(plural.size > 0);
    for (const lang of LANGUAGES) {
      const forms = new Intl.PluralRules(lang).resolvedOptions().pluralCategories;
      for (const base of plural) for (const form of forms) assert.ok(`${base}.${form}` in CATALOGUES[lang], `${lang}: ${base}.${form}`);
    }
  });

  it('has a message for every error code, from the daemon and from the SDK', () => {
    const source = JSON.parse(readFileSync(new URL('../../frontend/sdk/error-codes.json', import.meta.url)));
    assert.deepEqual(SERVER_ERROR_CODES, source.codes.map((c) => c.code));
    assert.ok(SERVER_ERROR_CODES.includes('rate_limited') && CLIENT_ERROR_CODES.includes('disconnected'));
    for (const lang of LANGUAGES) {
      for (const code of [...SERVER_ERROR_CODES, ...CLIENT_ERROR_CODES]) {
        assert.ok(`error.${code}` in CATALOGUES[lang], `${lang} lacks error.${code}`);
        assert.equal(errorText(lang, code), CATALOGUES[lang][`error.${code}`]);
      }
    }
    assert.equal(errorText('ja', 'brand_new'), '問題が発生しました（brand_new）。');
  });

  it('fills in parameters and picks plural forms', () => {
    assert.equal(translate('en', 'room.members', { n: 1 }), '1 member');
    assert.equal(translate('en', 'room.members', { n: 3 }), '3 members');
    assert.equal(translate('ja', 'room.members', { n: 3 }), 'メンバー 3 人');
    assert.equal(translate('ja', 'typing.pair', { a: 'アリス', b: 'ボブ' }), 'アリスさんとボブさんが入力中…');
    assert.equal(translate('ja', 'no.such.key'), 'no.such.key');
  });
});

describe('choosing the language', () => {
  it('the root element\'s lang wins, then the option, then the browser, then English', () => {
    assert.equal(chooseLanguage({ attribute: 'ja', option: 'en', navigatorLanguages: ['en-US'] }), 'ja');
    assert.equal(chooseLanguage({ attribute: null, option: 'ja', navigatorLanguages: ['en-US'] }), 'ja');
    assert.equal(chooseLanguage({ option: undefined, navigatorLanguages: ['ja-JP', 'en'] }), 'ja');
    assert.equal(chooseLanguage({ navigatorLanguages: ['fr-FR', 'ja'] }), 'ja');
    assert.equal(chooseLanguage({ navigatorLanguages: ['fr-FR'] }), 'en');
    assert.equal(chooseLanguage({}), 'en');
    // An unsupported setting falls through to the next source.
    assert.equal(chooseLanguage({ attribute: 'de', option: 'ja' }), 'ja');
  });
});

describe('dates and times', () => {
  const now = new Date(2026, 11, 4, 15, 30);
  it('formats times, day separators and relative times in Japanese', () => {
    const ja = dateFormatters('ja');
    assert.equal(ja.messageTime(new Date(2026, 11, 4, 9, 5), now), '09:05');
    assert.equal(ja.messageTime(new Date(2026, 10, 20, 14, 5), now), '11月20日 14:05');
    assert.equal(ja.dayLabel(new Date(2026, 11, 4, 1, 0), now), '今日');
    assert.equal(ja.dayLabel(new Date(2026, 11, 3, 23, 0), now), '昨日');
    assert.equal(ja.dayLabel(new Date(2026, 10, 20, 12, 0), now), '2026年11月20日金曜日');
    assert.equal(ja.relative(new Date(now - 5 * 60_000), now), '5分前');
    assert.equal(ja.relative(new Date(now - 3 * 3_600_000), now), '3時間前');
    assert.equal(ja.relative(new Date(now - 10_000), now), 'たった今');
  });

  it('formats the same in English', () => {
    const en = dateFormatters('en');
    assert.equal(en.dayLabel(new Date(2026, 11, 3, 8, 0), now), 'Yesterday');
    assert.equal(en.dayLabel(new Date(2026, 10, 20, 12, 0), now), 'Friday, November 20, 2026');
    assert.equal(en.relative(new Date(now - 5 * 60_000), now), '5 min ago');
    assert.match(en.messageTime(new Date(2026, 11, 4, 9, 5), now), /^09:05\sAM$/);
    assert.equal(en.messageTime(new Date('nonsense'), now), '');
  });
});

describe('error codes in the SDK', () => {
  it('only rate_limited-like refusals are worth re-sending; unknown codes are not', () => {
    assert.equal(canResend('rate_limited'), true);
    assert.equal(canResend('internal'), true);
    assert.equal(canResend('forbidden'), false);
    assert.equal(canResend('message_too_long'), false);
    assert.equal(canResend('brand_new'), false);
  });
});
