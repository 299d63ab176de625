// Error codes, from the one list the daemon is tested against (error-codes.json).
import table from './error-codes.json' with { type: 'json' };

/** Every code the daemon sends in `error` frames, in its order. */
export const SERVER_ERROR_CODES = Object.freeze(table.codes.map((c) => c.code));

/** Codes the SDK gives to requests that failed on the client's side. */
export const CLIENT_ERROR_CODES = Object.freeze([...table.clientCodes.codes]);

const RESENDABLE = new Set(table.codes.filter((c) => c.resend).map((c) => c.code));

/** Whether re-sending a refused chat message can succeed later (rate_limited, internal…).
 *  An unknown code (a newer daemon's) counts as permanent: the message is shown failed. */
export function canResend(code) {
  return RESENDABLE.has(code);
}

/** An Error carrying a protocol or client error code, as requests reject with. */
export function chatError(code, message, frame) {
  return Object.assign(new Error(message || code), { code, frame });
}
