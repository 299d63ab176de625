// The chat's words and dates in the reader's language. DOM-free.
//
// One JSON catalogue per language, all with the same keys (a test fails otherwise).
// A key ending in `.one` / `.other` … is chosen by `Intl.PluralRules`; `{name}` in a
// string is replaced by the parameter of that name. Dates and times use `Intl` in the
// chosen locale.
import en from './en.json' with { type: 'json' };
import ja from './ja.json' with { type: 'json' };

export const CATALOGUES = Object.freeze({ en, ja });
export const LANGUAGES = Object.freeze(Object.keys(CATALOGUES));
export const FALLBACK_LANGUAGE = 'en';

/** The first supported language among `candidates` ("ja-JP" counts as "ja"), or null. */
export function supportedLanguage(...candidates) {
  for (const c of candidates.flat()) {
    if (typeof c !== 'string' || !c.trim()) continue;
    const base = c.trim().toLowerCase().split(/[-_]/)[0];
    if (LANGUAGES.includes(base)) return base;
  }
  return null;
}

/** The chat's language: the host's setting (the `lang` attribute of the chat's root
 *  element, then the option given to the Alpine layer), else the browser's languages,
 *  else English. An unsupported setting falls through to the next source. */
export function chooseLanguage({ attribute, option, navigatorLanguages } = {}) {
  return supportedLanguage(attribute) || supportedLanguage(option)
    || supportedLanguage(navigatorLanguages || []) || FALLBACK_LANGUAGE;
}

/** The browser's preferred languages, or none outside a browser. */
export function browserLanguages(nav = globalThis.navigator) {
  if (!nav) return [];
  return nav.languages && nav.languages.length ? [...nav.languages] : [nav.language].filter(Boolean);
}

const pluralRules = new Map();
function pluralCategory(lang, n) {
  if (!pluralRules.has(lang)) pluralRules.set(lang, new Intl.PluralRules(lang));
  return pluralRules.get(lang).select(n);
}

/** The text of `key` in `lang`, with `{param}`s filled in. A key with plural forms is
 *  chosen by `params.n`. A missing key shows itself, never `undefined`. */
export function translate(lang, key, params = {}) {
  const cat = CATALOGUES[lang] || CATALOGUES[FALLBACK_LANGUAGE];
  let text = cat[key];
  if (text === undefined && typeof params.n === 'number') {
    text = cat[`${key}.${pluralCategory(lang, params.n)}`] ?? cat[`${key}.other`];
  }
  if (text === undefined) return key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** The user-facing text for an error code from the daemon or the SDK. */
export function errorText(lang, code) {
  const key = `error.${code}`;
  return key in (CATALOGUES[lang] || {}) ? translate(lang, key) : translate(lang, 'error.unknown', { code });
}

const DAY_MS = 24 * 60 * 60 * 1000;
const startOfDay = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate());

/** Date and time formatting for one language, in the local time zone. */
export function dateFormatters(lang) {
  const time = new Intl.DateTimeFormat(lang, { hour: '2-digit', minute: '2-digit' });
  const dateTime = new Intl.DateTimeFormat(lang, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
  });
  const day = new Intl.DateTimeFormat(lang, {
    weekday: 'long', year: 'numeric', month: 'long', day: 'numeric',
  });
  const shortDate = new Intl.DateTimeFormat(lang, { month: 'short', day: 'numeric' });
  const sameDay = (a, b) => startOfDay(a).getTime() === startOfDay(b).getTime();
  return {
    /** "14:05" today, "Nov 20, 14:05" / "11月20日 14:05" before. */
    messageTime(at, now = new Date()) {
      if (Number.isNaN(at.getTime())) return '';
      return sameDay(at, now) ? time.format(at) : dateTime.format(at);
    },
    /** The day separator: "Today", "Yesterday", else the full date. */
    dayLabel(at, now = new Date()) {
      if (sameDay(at, now)) return translate(lang, 'day.today');
      if (sameDay(at, new Date(startOfDay(now).getTime() - DAY_MS / 2))) return translate(lang, 'day.yesterday');
      return day.format(at);
    },
    /** A key that is the same for two instants on the same local day. */
    dayKey(at) {
      return startOfDay(at).getTime();
    },
    /** "just now", "5 min ago", "3 h ago", else the date. */
    relative(at, now = new Date()) {
      const ms = now - at;
      if (Number.isNaN(ms)) return '';
      if (ms < 60_000) return translate(lang, 'time.justNow');
      if (ms < 3_600_000) return translate(lang, 'time.minutesAgo', { n: Math.floor(ms / 60_000) });
      if (ms < DAY_MS) return translate(lang, 'time.hoursAgo', { n: Math.floor(ms / 3_600_000) });
      return shortDate.format(at);
    },
  };
}
