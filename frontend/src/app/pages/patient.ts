import { api, type Job, type Patient, type Slide } from '../../api';
import { h } from '../dom';
import { showError } from '../errors';
import { ACCEPTED_IMAGE_TYPES, formatDateTime, isAcceptedImageName, isSlideInProgress } from '../format';
import { followJob } from '../jobs';
import { navigate, type RouteContext } from '../router';
import { canDeletePatient, canUpload, currentUser } from '../session';
import { pager, progressBar, statusBadge } from '../widgets';

export function patientPage(root: HTMLElement, ctx: RouteContext): void {
  const id = Number(ctx.params.id);
  const page = Math.max(1, Number(ctx.query.get('page')) || 1);
  const errorSlot = h('div');
  const head = h('div', { class: 'page-head' }, h('h1', {}, 'Patient'));
  const slidesSlot = h('div', {}, h('p', { class: 'muted' }, 'Loading slides…'));

  root.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/patients' }, '‹ Patients')),
    head,
    errorSlot,
    canUpload(currentUser()) ? uploadForm(id) : '',
    h('section', { class: 'card' }, h('h2', {}, 'Slides'), slidesSlot),
  );

  api
    .patient(id)
    .then((patient) => {
      if (ctx.signal.aborted) return;
      head.replaceChildren(...patientHead(patient));
      if (canDeletePatient(currentUser()) && patient.slide_count === 0) head.append(deleteButton(patient, errorSlot));
    })
    .catch((err) => showError(errorSlot, err));

  api
    .slides({ patient: id, page })
    .then((result) => {
      if (ctx.signal.aborted) return;
      slidesSlot.replaceChildren(
        result.results.length
          ? slideTable(result.results, ctx.signal)
          : h('p', { class: 'muted' }, 'No slides yet.'),
        pager(result, page, (p) => navigate(`/patients/${id}?page=${p}`)) ?? '',
      );
    })
    .catch((err) => {
      slidesSlot.replaceChildren();
      showError(errorSlot, err);
    });
}

function patientHead(patient: Patient): (Node | string)[] {
  return [
    h('h1', {}, `Patient ${patient.identifier}`),
    h(
      'p',
      { class: 'muted' },
      `Created ${formatDateTime(patient.created_at)} · ${patient.slide_count} slide${patient.slide_count === 1 ? '' : 's'}`,
    ),
    patient.notes ? h('p', { class: 'notes' }, patient.notes) : '',
  ];
}

/** Deletes a patient who has no slides (the API refuses one who has), then goes back to the list. */
function deleteButton(patient: Patient, errorSlot: HTMLElement): HTMLElement {
  const remove = h('button', { type: 'button', class: 'btn btn-danger', id: 'delete-patient' }, 'Delete patient');
  remove.addEventListener('click', async () => {
    if (!window.confirm(`Delete patient ${patient.identifier}? This cannot be undone.`)) return;
    remove.disabled = true;
    showError(errorSlot, null);
    try {
      await api.deletePatient(patient.id);
      navigate('/patients');
    } catch (err) {
      showError(errorSlot, err);
      remove.disabled = false;
    }
  });
  return remove;
}

function slideTable(slides: Slide[], signal: AbortSignal): HTMLElement {
  return h(
    'table',
    { class: 'table', id: 'slide-table' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', {}, 'Slide'),
        h('th', {}, 'Uploaded'),
        h('th', {}, 'Images'),
        h('th', {}, 'Status'),
        h('th', { class: 'num' }, 'Cells'),
        h('th', {}, 'Signed off'),
      ),
    ),
    h('tbody', {}, slides.map((s) => slideRow(s, signal))),
  );
}

/** One slide row; follows its job while the analysis runs, then refreshes itself. */
function slideRow(initial: Slide, signal: AbortSignal): HTMLElement {
  const row = h('tr', { 'data-slide-id': initial.id });
  const render = (slide: Slide): void => {
    const statusCell = h('td', { class: 'status-cell' }, statusBadge(slide.status));
    row.replaceChildren(
      h('td', {}, h('a', { href: `#/slides/${slide.id}` }, `Slide #${slide.id}`)),
      h('td', {}, formatDateTime(slide.uploaded_at), h('div', { class: 'muted small' }, slide.uploaded_by ?? '')),
      h('td', { class: 'filenames' }, slide.images.map((i) => i.filename).join(', ')),
      statusCell,
      h('td', { class: 'num' }, slide.status === 'analyzed' ? slide.cell_count : '–'),
      h('td', {}, slide.signed_off_by ? `${slide.signed_off_by}, ${formatDateTime(slide.signed_off_at)}` : '–'),
    );
    if (slide.status === 'failed' && slide.error) statusCell.append(h('div', { class: 'error-text small' }, slide.error));
    if (isSlideInProgress(slide) && slide.job) {
      const bar = progressBar();
      bar.update(slide.job);
      statusCell.append(bar.el);
      const onUpdate = (job: Job): void => {
        bar.update(job);
        const badge = statusCell.querySelector('.badge');
        if (badge && job.status === 'running' && badge.getAttribute('data-status') === 'queued') {
          badge.replaceWith(statusBadge('analyzing'));
        }
      };
      followJob(slide.job.id, { signal, onUpdate })
        .then(async (job) => {
          if (job && !signal.aborted) render(await api.slide(slide.id));
        })
        .catch((err) => statusCell.append(h('div', { class: 'error-text small' }, String(err.message ?? err))));
    }
  };
  render(initial);
  return row;
}

function uploadForm(patientId: number): HTMLElement {
  const errorSlot = h('div', { class: 'span' });
  const files = h('input', {
    type: 'file',
    id: 'slide-images',
    name: 'images',
    multiple: true,
    required: true,
    accept: [...ACCEPTED_IMAGE_TYPES, 'image/jpeg', 'image/png', 'image/bmp', 'image/tiff'].join(','),
  });
  const fileList = h('ul', { class: 'file-list' });
  const stain = h('input', { id: 'slide-stain', name: 'stain', placeholder: 'e.g. May-Grünwald-Giemsa' });
  const mpp = h('input', {
    id: 'slide-mpp',
    name: 'microns_per_pixel',
    type: 'number',
    step: 'any',
    min: '0',
    placeholder: 'optional',
  });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Upload and analyze');

  files.addEventListener('change', () => {
    const chosen = Array.from(files.files ?? []);
    fileList.replaceChildren(
      ...chosen.map((f) =>
        h(
          'li',
          { class: isAcceptedImageName(f.name) ? '' : 'error-text' },
          `${f.name} (${(f.size / 1024 / 1024).toFixed(1)} MB)`,
          isAcceptedImageName(f.name) ? '' : ' — not a JPEG, PNG, BMP or TIFF file',
        ),
      ),
    );
  });

  const form = h(
    'form',
    { class: 'card form-grid', id: 'upload-form' },
    h('h2', {}, 'Upload a slide'),
    h('p', { class: 'muted small span' }, 'One or several smear images (JPEG, PNG, BMP, TIFF) make one slide.'),
    errorSlot,
    h('label', { for: 'slide-images' }, 'Images'),
    h('div', {}, files, fileList),
    h('label', { for: 'slide-stain' }, 'Stain'),
    stain,
    h('label', { for: 'slide-mpp' }, 'µm per pixel'),
    mpp,
    h('div', {}, submit),
  );
  form.addEventListener('submit', async (evt) => {
    evt.preventDefault();
    const chosen = Array.from(files.files ?? []);
    showError(errorSlot, null);
    if (!chosen.length) {
      showError(errorSlot, new Error('Choose at least one image.'));
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Uploading…';
    try {
      const slide = await api.uploadSlide(
        {
          patient: patientId,
          images: chosen,
          stain: stain.value.trim() || undefined,
          micronsPerPixel: mpp.value ? Number(mpp.value) : null,
        },
        (fraction) => {
          submit.textContent = fraction < 1 ? `Uploading… ${Math.round(fraction * 100)} %` : 'Checking the images…';
        },
      );
      navigate(`/slides/${slide.id}`);
    } catch (err) {
      showError(errorSlot, err);
    } finally {
      submit.disabled = false;
      submit.textContent = 'Upload and analyze';
    }
  });
  return form;
}
