import { api, ApiError, exportUrls, type Patient } from '../../api';
import { h } from '../dom';
import { showError } from '../errors';
import { formatDateTime } from '../format';
import { navigate, type RouteContext } from '../router';
import { canCreatePatient, currentUser } from '../session';
import { downloadLink, pager } from '../widgets';

export function patientsPage(root: HTMLElement, ctx: RouteContext): void {
  const search = ctx.query.get('search') ?? '';
  const page = Math.max(1, Number(ctx.query.get('page')) || 1);

  const listSlot = h('div', { class: 'list-slot' }, h('p', { class: 'muted' }, 'Loading patients…'));
  const listError = h('div');

  const searchInput = h('input', {
    type: 'search',
    placeholder: 'Search by identifier…',
    value: search,
    'aria-label': 'Search patients',
  });
  let debounce = 0;
  searchInput.addEventListener('input', () => {
    window.clearTimeout(debounce);
    debounce = window.setTimeout(() => go(1, searchInput.value.trim()), 300);
  });
  ctx.signal.addEventListener('abort', () => window.clearTimeout(debounce));

  function go(p: number, s = search): void {
    const q = new URLSearchParams();
    if (s) q.set('search', s);
    if (p > 1) q.set('page', String(p));
    const qs = q.toString();
    navigate(`/patients${qs ? '?' + qs : ''}`);
  }

  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Patients')),
    canCreatePatient(currentUser()) ? newPatientForm() : '',
    h('section', { class: 'card' }, h('div', { class: 'toolbar' }, searchInput), listError, listSlot),
    labTrainingData(),
  );
  if (search) {
    searchInput.focus();
    searchInput.setSelectionRange(search.length, search.length);
  }

  api
    .patients({ search, page })
    .then((result) => {
      if (ctx.signal.aborted) return;
      listSlot.replaceChildren(
        result.results.length ? patientTable(result.results) : h('p', { class: 'muted' }, search ? 'No patient matches.' : 'No patients yet.'),
        pager(result, page, (p) => go(p)) ?? '',
      );
    })
    .catch((err) => {
      listSlot.replaceChildren();
      showError(listError, err);
    });
}

function patientTable(patients: Patient[]): HTMLElement {
  return h(
    'table',
    { class: 'table', id: 'patient-table' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Identifier'), h('th', { class: 'num' }, 'Slides'), h('th', {}, 'Created'), h('th', {}, 'Notes'))),
    h(
      'tbody',
      {},
      patients.map((p) =>
        h(
          'tr',
          {},
          h('td', {}, h('a', { href: `#/patients/${p.id}` }, p.identifier)),
          h('td', { class: 'num' }, p.slide_count),
          h('td', {}, formatDateTime(p.created_at)),
          h('td', { class: 'notes' }, p.notes),
        ),
      ),
    ),
  );
}

function newPatientForm(): HTMLElement {
  const errorSlot = h('div', { class: 'span' });
  const identifier = h('input', { id: 'patient-identifier', name: 'identifier', required: true, placeholder: 'e.g. P-2026-0042' });
  const notes = h('textarea', { id: 'patient-notes', name: 'notes', rows: 2, placeholder: 'Optional' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create patient');
  const form = h(
    'form',
    { class: 'card form-grid', id: 'new-patient-form' },
    h('h2', {}, 'New patient'),
    errorSlot,
    h('label', { for: 'patient-identifier' }, 'Identifier'),
    identifier,
    h('label', { for: 'patient-notes' }, 'Notes'),
    notes,
    h('div', {}, submit),
  );
  form.addEventListener('submit', async (evt) => {
    evt.preventDefault();
    submit.disabled = true;
    showError(errorSlot, null);
    try {
      const patient = await api.createPatient({ identifier: identifier.value.trim(), notes: notes.value.trim() });
      navigate(`/patients/${patient.id}`);
    } catch (err) {
      showError(errorSlot, err);
      const existing = err instanceof ApiError ? err.extra.patient : undefined;
      if (typeof existing === 'number') {  // the identifier is taken, maybe in another case: offer that patient
        errorSlot.append(h('p', {}, h('a', { href: `#/patients/${existing}`, id: 'existing-patient' }, 'Open that patient')));
      }
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** Every slide of the lab as training data (zip files; at most 500 slides). */
function labTrainingData(): HTMLElement {
  return h(
    'section',
    { class: 'card', id: 'lab-training-data' },
    h('h2', {}, 'Training data of all slides'),
    h(
      'p',
      {},
      'Boxes of the signed-off slides ',
      downloadLink(exportUrls.boxes(null, 'voc', true), 'Pascal VOC'),
      ' ',
      downloadLink(exportUrls.boxes(null, 'coco', true), 'COCO'),
      ' ',
      downloadLink(exportUrls.boxes(null, 'yolo', true), 'YOLO'),
      ' · Cells whose class a person gave or confirmed ',
      downloadLink(exportUrls.cells(null, 'confirmed'), 'class folders'),
    ),
  );
}
