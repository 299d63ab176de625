// Starts the demo page: Alpine.js from npm (served locally, no CDN), the Books app with
// the chat added, the chat's markup mounted in its root, then Alpine.
import Alpine from '../node_modules/alpinejs/dist/module.esm.js';
import { mountChat } from '../alpine/index.js';
import { bookApp } from './app.js';

// `?lang=ja` is the demo's stand-in for a host app's language setting.
const lang = new URLSearchParams(globalThis.location.search).get('lang') || undefined;
Alpine.data('bookApp', () => bookApp({ lang }));
mountChat(document.getElementById('chat'));
globalThis.Alpine = Alpine;
Alpine.start();
