// Showing API errors to the user, plainly.
import { ApiError, describeExtra } from '../api';
import { h } from './dom';
import { navigate } from './router';
import { setCurrentUser } from './session';

export function errorMessage(err: unknown): { message: string; details: string[] } {
  if (err instanceof ApiError) return { message: err.message, details: describeExtra(err.extra) };
  if (err instanceof Error) return { message: err.message, details: [] };
  return { message: String(err), details: [] };
}

/** An alert box for an error; role="alert" so screen readers announce it. */
export function errorBox(err: unknown): HTMLElement {
  const { message, details } = errorMessage(err);
  return h(
    'div',
    { class: 'alert alert-error', role: 'alert' },
    h('strong', {}, message),
    details.length ? h('ul', {}, details.map((d) => h('li', {}, d))) : null,
  );
}

/** Replace the contents of a slot with an error box (or empty it when err is null). */
export function showError(slot: HTMLElement, err: unknown | null): void {
  if (err instanceof ApiError && err.isUnauthenticated && !window.location.hash.startsWith('#/login')) {
    // The session ended (logout in another tab, expiry): log in again and come back here.
    setCurrentUser(null);
    document.dispatchEvent(new CustomEvent('leukolab:user'));
    navigate(`/login?next=${encodeURIComponent(window.location.hash.replace(/^#/, ''))}`);
    return;
  }
  slot.replaceChildren(...(err === null ? [] : [errorBox(err)]));
}
