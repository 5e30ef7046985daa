import './styles.css';
import { api } from './api';
import { h } from './app/dom';
import { loginPage } from './app/pages/login';
import { modelsPage } from './app/pages/models';
import { patientPage } from './app/pages/patient';
import { patientsPage } from './app/pages/patients';
import { reportPage } from './app/pages/report';
import { slidePage } from './app/pages/slide';
import { navigate, Router } from './app/router';
import { currentUser, setCurrentUser } from './app/session';

const userSlot = h('div', { class: 'user' });
const main = h('main', { id: 'main' });
document.getElementById('app')!.append(
  h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'brand', href: '#/patients' }, 'Leukolab'),
    h('nav', {}, h('a', { href: '#/patients' }, 'Patients'), h('a', { href: '#/models' }, 'Models')),
    userSlot,
  ),
  main,
);

function renderUser(): void {
  const user = currentUser();
  if (!user) {
    userSlot.replaceChildren();
    return;
  }
  const logout = h('button', { type: 'button', class: 'btn btn-small' }, 'Log out');
  logout.addEventListener('click', async () => {
    try {
      await api.logout();
    } finally {
      setCurrentUser(null);
      renderUser();
      navigate('/login');
    }
  });
  userSlot.replaceChildren(
    h('span', { id: 'current-user' }, user.username),
    user.role ? h('span', { class: 'role' }, user.role) : '',
    user.lab ? h('span', { class: 'muted' }, user.lab) : '',
    logout,
  );
}
document.addEventListener('leukolab:user', renderUser);

/** Everything but the login page needs a session; ask the API once, then trust it until it says no. */
async function guard(path: string): Promise<string | null> {
  if (path === '/login') return null;
  if (currentUser()) return null;
  try {
    setCurrentUser(await api.me());
    renderUser();
    return null;
  } catch {
    const here = window.location.hash.replace(/^#/, '');
    return here && here !== '/' ? `/login?next=${encodeURIComponent(here)}` : '/login';
  }
}

function notFound(root: HTMLElement): void {
  root.append(h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: '#/patients' }, 'Go to patients')));
}

new Router(main, notFound, guard)
  .add('/', () => navigate('/patients'))
  .add('/login', loginPage)
  .add('/patients', patientsPage)
  .add('/patients/:id', patientPage)
  .add('/slides/:id', slidePage)
  .add('/slides/:id/report', reportPage)
  .add('/models', modelsPage)
  .start();
