// The pgchat client SDK: no DOM, no framework. The Alpine.js layer (../alpine/) is
// one user of it; another UI can be built on these exports alone.
export { createChatClient, backoffDelay, defaultChatUrl } from './client.js';
export { SERVER_ERROR_CODES, CLIENT_ERROR_CODES, canResend, chatError } from './errors.js';
