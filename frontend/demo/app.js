// "Books", a stand-in for the host Alpine.js app: its own state plus the three
// integration points plan 000 names — init(), applyToken() and logout() — which start
// and stop the chat. A real host app adds `withChat(...)` and those calls, nothing else.
import { withChat } from '../alpine/index.js';

const BOOKS = [
  { id: 1, title: 'The Left Hand of Darkness', author: 'Ursula K. Le Guin', year: 1969, color: '#6d5dfc' },
  { id: 2, title: 'Kitchen', author: 'Banana Yoshimoto', year: 1988, color: '#f59e0b' },
  { id: 3, title: 'Invisible Cities', author: 'Italo Calvino', year: 1972, color: '#10b981' },
  { id: 4, title: 'Norwegian Wood', author: 'Haruki Murakami', year: 1987, color: '#ef4444' },
  { id: 5, title: 'The Dispossessed', author: 'Ursula K. Le Guin', year: 1974, color: '#0ea5e9' },
  { id: 6, title: 'Piranesi', author: 'Susanna Clarke', year: 2020, color: '#8b5cf6' },
];

/** The claims of a JWT, unverified (display only; pgchat and PostgREST verify). */
function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(Array.from(atob(part), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''));
    return JSON.parse(json);
  } catch (e) {
    return {};
  }
}

/** A `#token=…` fragment (the demo's links) wins over the stored token; it is moved
 *  into localStorage and removed from the address bar. */
function takeTokenFromFragment() {
  const match = /(?:^#|&)token=([^&]+)/.exec(globalThis.location.hash);
  if (!match) return null;
  const token = decodeURIComponent(match[1]);
  globalThis.localStorage.setItem('token', token);
  globalThis.history.replaceState(null, '', globalThis.location.pathname + globalThis.location.search);
  return token;
}

export function bookApp(chatOptions) {
  return withChat({
    token: null,
    userName: '',
    tokenInput: '',
    books: BOOKS,
    query: '',

    get filteredBooks() {
      const q = this.query.trim().toLowerCase();
      return q ? this.books.filter((b) => (b.title + ' ' + b.author).toLowerCase().includes(q)) : this.books;
    },

    init() {
      const token = takeTokenFromFragment() || globalThis.localStorage.getItem('token');
      if (token) this.applyToken(token);
    },

    applyToken(token) {
      token = (token || '').trim();
      if (!token) return;
      globalThis.localStorage.setItem('token', token);
      this.token = token;
      this.userName = tokenClaims(token).name || 'user ' + (tokenClaims(token).sub || '?');
      this.tokenInput = '';
      this.initChat();
    },

    logout() {
      globalThis.localStorage.removeItem('token');
      this.token = null;
      this.userName = '';
      this.logoutChat();
    },
  }, chatOptions);
}
