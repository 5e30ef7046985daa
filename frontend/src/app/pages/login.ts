import { api } from '../../api';
import { h } from '../dom';
import { showError } from '../errors';
import { navigate, type RouteContext } from '../router';
import { setCurrentUser } from '../session';

export function loginPage(root: HTMLElement, ctx: RouteContext): void {
  const errorSlot = h('div');
  const username = h('input', { name: 'username', id: 'username', autocomplete: 'username', required: true });
  const password = h('input', {
    name: 'password',
    id: 'password',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
  });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Log in');

  const form = h(
    'form',
    { class: 'card login-card' },
    h('h1', {}, 'Log in to Leukolab'),
    errorSlot,
    h('label', { for: 'username' }, 'Username'),
    username,
    h('label', { for: 'password' }, 'Password'),
    password,
    submit,
  );
  form.addEventListener('submit', async (evt) => {
    evt.preventDefault();
    submit.disabled = true;
    showError(errorSlot, null);
    try {
      const user = await api.login(username.value.trim(), password.value);
      setCurrentUser(user);
      document.dispatchEvent(new CustomEvent('leukolab:user'));
      const next = ctx.query.get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('/login') ? next : '/patients');
    } catch (err) {
      showError(errorSlot, err);
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  root.append(form);
  username.focus();
}
