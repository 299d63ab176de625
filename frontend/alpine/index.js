// The pgchat chat for an Alpine.js app. No build step: import this module from the page.
//
//   import { withChat, mountChat } from './pgchat/alpine/index.js';
//   Alpine.data('bookApp', () => withChat({ …the app's own state and methods… }, { lang: 'ja' }));
//   mountChat(document.querySelector('#chat'));   // inside the app's x-data element
//   Alpine.start();
//
// The host app calls `initChat()` from `init()` and `applyToken()`, and `logoutChat()`
// from `logout()`. Styles: ./chat.css, all under the `.pgchat` root class.
import { chatFeature } from './feature.js';
import { chatRooms } from './rooms.js';
import { chatRoomView } from './room-view.js';
import { chatComposer } from './composer.js';

export { CHAT_MARKUP, mountChat } from './markup.js';
export { chatFeature };

const merge = (target, source) => Object.defineProperties(target, Object.getOwnPropertyDescriptors(source));

/** Adds the chat to a host app object, keeping its getters intact. `options`: `lang`
 *  ("en" / "ja"; the chat root's `lang` attribute wins), `url` (pgchat's WebSocket URL;
 *  default `globalThis.PGCHAT_URL`, else this page's origin at `/ws`). */
export function withChat(app, options = {}) {
  for (const part of [chatFeature(options), chatRooms(), chatRoomView(), chatComposer()]) merge(app, part);
  return app;
}
