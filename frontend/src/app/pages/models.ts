// The model versions of each kind side by side: their figures, which one is active, and for an admin
// the button that makes another one active (a rollback where it was active before).
import { api, type Job, type ModelVersion, type RetrainSchedule } from '../../api';
import { h } from '../dom';
import { errorBox, showError } from '../errors';
import { describeSchedule, figureRows, formatDateTime, isJobFinished, modelRows, WEEKDAYS } from '../format';
import { followJob } from '../jobs';
import type { RouteContext } from '../router';
import { canPromoteModel, canRetrain, currentUser } from '../session';
import { progressBar } from '../widgets';

/** A model an admin trains from the page: its job's kind, its card, and how to start it. */
interface Training {
  kind: string;
  slot: HTMLElement;
  title: string;
  description: string;
  button: string;
  buttonId: string;
  start: () => Promise<Job>;
}

const KINDS: [ModelVersion['kind'], string][] = [
  ['classifier', 'Classifiers'],
  ['localizer', 'Localizers'],
];
/** Versions shown side by side: the active one and the newest others. */
const MAX_COLUMNS = 6;

export function modelsPage(root: HTMLElement, ctx: RouteContext): void {
  const errorSlot = h('div');
  const content = h('div', {}, h('p', { class: 'muted' }, 'Loading model versions…'));
  const retrainSlot = h('section', { class: 'card', id: 'retraining' });
  const scheduleSlot = h('section', { class: 'card', id: 'retrain-schedule' });
  const detectorSlot = h('section', { class: 'card', id: 'detector-training' });
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Models')),
    h('p', { class: 'muted' }, 'Each version as it was measured when it was trained: held-out images of its own data, and cells of another lab it never trained on.'),
    errorSlot,
    canRetrain(currentUser()) ? retrainSlot : '',
    canRetrain(currentUser()) ? scheduleSlot : '',
    canRetrain(currentUser()) ? detectorSlot : '',
    content,
  );

  /** The schedule card: when the classifier retrains on its own, and the form that changes it. */
  function showSchedule(schedule: RetrainSchedule): void {
    const every = h(
      'select',
      { id: 'schedule-every' },
      h('option', { value: 'never' }, 'Never'),
      h('option', { value: 'day' }, 'Every day'),
      h('option', { value: 'week' }, 'Every week on'),
    );
    const day = h('select', { id: 'schedule-day', 'aria-label': 'day of the week' }, WEEKDAYS.map((name, i) => h('option', { value: i }, name)));
    const time = h('input', { type: 'time', id: 'schedule-time', 'aria-label': 'time of day', required: true });
    const atLabel = h('span', { class: 'muted' }, 'at');
    every.value = schedule.every === 'custom' ? 'never' : schedule.every;
    day.value = String(schedule.day_of_week ?? 0);
    time.value = schedule.time ?? '02:00';
    const shown = (): void => {
      day.hidden = every.value !== 'week';
      time.hidden = atLabel.hidden = every.value === 'never';
    };
    every.addEventListener('change', shown);
    shown();
    const save = h('button', { type: 'submit', class: 'btn', id: 'schedule-save' }, 'Save schedule');
    const form = h('form', { class: 'schedule-form' }, every, day, atLabel, time, save);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      save.disabled = true;
      showError(errorSlot, null);
      try {
        const chosen = every.value as 'never' | 'day' | 'week';
        showSchedule(
          await api.setRetrainSchedule({
            every: chosen,
            ...(chosen === 'never' ? {} : { time: time.value, timezone: Intl.DateTimeFormat().resolvedOptions().timeZone }),
            ...(chosen === 'week' ? { day_of_week: Number(day.value) } : {}),
          }),
        );
      } catch (err) {
        showError(errorSlot, err);
        save.disabled = false;
      }
    });
    scheduleSlot.replaceChildren(
      h('h2', {}, 'Retraining schedule'),
      h('p', { id: 'schedule-now' }, describeSchedule(schedule), schedule.last_run_at ? h('span', { class: 'muted small' }, ` · last started ${formatDateTime(schedule.last_run_at)}`) : ''),
      schedule.runs || schedule.every === 'never'
        ? ''
        : h('p', { class: 'alert alert-warning small', id: 'schedule-idle' }, 'No scheduler runs beside this server (it runs jobs itself, without REDIS_URL): the schedule takes effect where Leukolab runs with a Celery worker and beat.'),
      form,
    );
  }

  async function loadSchedule(): Promise<void> {
    if (!canRetrain(currentUser())) return;
    try {
      const schedule = await api.retrainSchedule();
      if (!ctx.signal.aborted) showSchedule(schedule);
    } catch (err) {
      if (!ctx.signal.aborted) showError(errorSlot, err);
    }
  }

  /** A training card: its button, or the training under way with its progress, and how the last one ended. */
  function showTraining(t: Training, job: Job | null): void {
    if (job && !isJobFinished(job)) {
      const bar = progressBar();
      bar.update(job, 'Waiting for a worker…');
      t.slot.replaceChildren(h('h2', {}, t.title), bar.el);
      void followJob(job.id, { signal: ctx.signal, onUpdate: (j) => bar.update(j) }).then((done) => {
        if (!done || ctx.signal.aborted) return;
        showTraining(t, done);
        if (done.status === 'succeeded') void load();
      }, (err) => showError(errorSlot, err));
      return;
    }
    const button = h('button', { type: 'button', class: 'btn btn-primary', id: t.buttonId }, t.button);
    button.addEventListener('click', async () => {
      button.disabled = true;
      showError(errorSlot, null);
      try {
        showTraining(t, await t.start());
      } catch (err) {
        showError(errorSlot, err);
        button.disabled = false;
      }
    });
    t.slot.replaceChildren(
      h('h2', {}, t.title),
      h('p', { class: 'muted small' }, t.description),
      job?.status === 'succeeded'
        ? h('p', { class: 'small', id: `${t.buttonId}-result` }, `The last one is ${job.message || 'done'}: its version is the newest candidate below.`)
        : '',
      job?.status === 'failed' ? errorBox(new Error(job.error || 'The training failed.')) : '',
      button,
    );
  }

  const trainings: Training[] = [
    {
      kind: 'classifier_retrain',
      slot: retrainSlot,
      title: 'Retraining the classifier',
      description: 'The classifier trained again on the training data and every cell a person classed, within the training budget; the result joins the classifiers below as a candidate, to compare and make active, or not.',
      button: 'Retrain on reviewed cells',
      buttonId: 'retrain',
      start: () => api.retrainClassifier(),
    },
    {
      kind: 'detector_train',
      slot: detectorSlot,
      title: 'Training the deep detector',
      description: 'The deep detector trained on the annotated fields and every field of the slides whose boxes people looked at (signed off, or a box drawn, moved or deleted), within its budget (20 minutes by default), and scored on the annotated test fields; it joins the localizers below as a candidate.',
      button: 'Train the detector on annotated fields',
      buttonId: 'train-detector',
      start: () => api.trainDetector(),
    },
  ];

  async function findTrainings(): Promise<void> {
    if (!canRetrain(currentUser())) return;
    try {
      const open = await Promise.all([api.jobs({ status: 'running' }), api.jobs({ status: 'queued' })]);
      if (ctx.signal.aborted) return;
      const jobs = open.flatMap((page) => page.results);
      for (const t of trainings) showTraining(t, jobs.find((job) => job.kind === t.kind) ?? null);
    } catch (err) {
      showError(errorSlot, err);
    }
  }

  async function load(): Promise<void> {
    try {
      const pages = await Promise.all(KINDS.map(([kind]) => api.modelVersions({ kind })));
      if (ctx.signal.aborted) return;
      content.replaceChildren(...KINDS.map(([kind, title], i) => kindCard(kind, title, pages[i].results, pages[i].count)));
    } catch (err) {
      if (!ctx.signal.aborted) showError(errorSlot, err);
    }
  }

  async function promote(version: ModelVersion): Promise<void> {
    const wasActive = Boolean(version.activated_at);
    const what = wasActive ? 'Roll back to' : 'Make active';
    if (!window.confirm(`${what} ${version.version}? Analyses from now on use it.`)) return;
    showError(errorSlot, null);
    try {
      await api.promoteModelVersion(version.id);
      await load();
    } catch (err) {
      showError(errorSlot, err);
    }
  }

  function kindCard(kind: ModelVersion['kind'], title: string, versions: ModelVersion[], total: number): HTMLElement {
    if (!versions.length) return h('section', { class: 'card' }, h('h2', {}, title), h('p', { class: 'muted' }, 'No version yet.'));
    const newest = [...versions].sort((a, b) => b.created_at.localeCompare(a.created_at));
    const active = newest.filter((v) => v.status === 'active');
    const shown = [...active, ...newest.filter((v) => v.status !== 'active')].slice(0, MAX_COLUMNS);
    const mayPromote = canPromoteModel(currentUser());
    const rows = modelRows(kind, shown);
    return h(
      'section',
      { class: 'card', id: `models-${kind}` },
      h('h2', {}, title),
      h(
        'div',
        { class: 'table-scroll-x' },
        h(
          'table',
          { class: 'table models' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              h('th', {}, ''),
              shown.map((v) =>
                h(
                  'th',
                  { 'data-version-id': v.id },
                  h('div', { class: 'model-name' }, v.version),
                  h('div', { class: 'muted small' }, v.architecture),
                  h('span', { class: `badge badge-model-${v.status}` }, v.status),
                ),
              ),
            ),
          ),
          h(
            'tbody',
            {},
            h('tr', {}, h('td', {}, 'Registered'), shown.map((v) => h('td', { class: 'small' }, formatDateTime(v.created_at)))),
            h(
              'tr',
              {},
              h('td', {}, 'Last made active'),
              shown.map((v) => h('td', { class: 'small' }, v.activated_at ? formatDateTime(v.activated_at) : '–')),
            ),
            rows.map((row) => h('tr', {}, h('td', {}, row.label), row.values.map((value) => h('td', { class: 'num' }, value)))),
            figureRows(shown).map((row) =>
              h(
                'tr',
                { class: 'model-figures', 'data-figure': row.name },
                h('td', {}, row.title),
                row.urls.map((url) =>
                  h(
                    'td',
                    {},
                    url
                      ? h('a', { href: url, target: '_blank', rel: 'noopener', title: 'Open full size' },
                          h('img', { src: url, alt: row.title, loading: 'lazy', class: 'model-figure' }))
                      : h('span', { class: 'muted small' }, '–'),
                  ),
                ),
              ),
            ),
            mayPromote
              ? h(
                  'tr',
                  {},
                  h('td', {}, ''),
                  shown.map((v) => {
                    if (v.status === 'active') return h('td', { class: 'muted small' }, 'in use');
                    const button = h(
                      'button',
                      { type: 'button', class: 'btn btn-small', 'data-promote': v.id },
                      v.activated_at ? 'Roll back to this' : 'Make active',
                    );
                    button.addEventListener('click', () => void promote(v));
                    return h('td', {}, button);
                  }),
                )
              : '',
          ),
        ),
      ),
      total > shown.length ? h('p', { class: 'muted small' }, `${shown.length} of ${total} versions: the active one and the newest.`) : '',
    );
  }

  void findTrainings();
  void loadSchedule();
  void load();
}
