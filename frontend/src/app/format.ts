// Pure display helpers: no DOM, no API calls (unit-tested in tests/app/format.test.ts).
import type { Cell, CellEvent, CellSnapshot, Differential, Job, ModelVersion, RetrainSchedule, Slide } from '../api';

/** A percentage for display: 33.333 -> "33.3 %"; keeps one decimal, drops it for whole numbers. */
export function formatPercent(percent: number): string {
  if (!Number.isFinite(percent)) return '–';
  const rounded = Math.round(percent * 10) / 10;
  return `${Number.isInteger(rounded) ? rounded.toFixed(0) : rounded.toFixed(1)} %`;
}

/** A model confidence (0..1) for display: 0.934 -> "93 %"; null -> "–". */
export function formatConfidence(confidence: number | null | undefined): string {
  if (confidence === null || confidence === undefined || !Number.isFinite(confidence)) return '–';
  return `${Math.round(confidence * 100)} %`;
}

export interface DifferentialLine {
  class: string;
  count: number;
  /** 0..100 */
  percent: number;
  label: string;
}

/**
 * Rows of a differential count ready to show, most frequent first.
 * The API's percent is 0..100; if a backend ever sends fractions (all rows <= 1 and summing to 1)
 * they are scaled, and a missing percent is derived from count / total.
 */
export function differentialLines(diff: Differential): DifferentialLine[] {
  const rows = diff.rows ?? [];
  const sum = rows.reduce((acc, r) => acc + (Number.isFinite(r.percent) ? r.percent : 0), 0);
  const looksFractional = rows.length > 0 && rows.every((r) => r.percent <= 1) && Math.abs(sum - 1) < 0.01;
  return rows
    .map((r) => {
      let percent = Number.isFinite(r.percent) ? r.percent : diff.total > 0 ? (100 * r.count) / diff.total : 0;
      if (looksFractional) percent *= 100;
      return { class: r.class, count: r.count, percent, label: formatPercent(percent) };
    })
    .sort((a, b) => b.count - a.count || a.class.localeCompare(b.class));
}

/** Box size as "w × h px". */
export function formatBox(box: [number, number, number, number]): string {
  const [x0, y0, x1, y1] = box;
  return `${Math.round(x1 - x0)} × ${Math.round(y1 - y0)} px at (${Math.round(x0)}, ${Math.round(y0)})`;
}

/** Job progress (0..1) clamped to 0..100 for a progress bar. */
export function progressPercent(job: Pick<Job, 'progress'> | null | undefined): number {
  if (!job || !Number.isFinite(job.progress)) return 0;
  return Math.max(0, Math.min(100, Math.round(job.progress * 100)));
}

/** True while the slide's analysis is still queued or running. */
export function isSlideInProgress(slide: Pick<Slide, 'status' | 'job'>): boolean {
  if (slide.status === 'queued' || slide.status === 'analyzing') return true;
  return slide.job !== null && (slide.job.status === 'queued' || slide.job.status === 'running');
}

export function isJobFinished(job: Pick<Job, 'status'>): boolean {
  return job.status === 'succeeded' || job.status === 'failed';
}

/** A timestamp in the user's locale, or "–". */
export function formatDateTime(value: string | null | undefined): string {
  if (!value) return '–';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? value : date.toLocaleString();
}

/** Human label for a class name: "band_neutrophil" -> "band neutrophil"; null -> "unclassified". */
export function formatClass(name: string | null | undefined): string {
  if (!name) return 'unclassified';
  return name.replace(/[_-]+/g, ' ');
}

export const ACCEPTED_IMAGE_TYPES = ['.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff'];

/** Whether a file name has an accepted smear-image extension. */
export function isAcceptedImageName(name: string): boolean {
  const lower = name.toLowerCase();
  return ACCEPTED_IMAGE_TYPES.some((ext) => lower.endsWith(ext));
}

/** The n most probable classes, most probable first. */
export function topProbabilities(probabilities: Record<string, number> | null | undefined, n: number): [string, number][] {
  return Object.entries(probabilities ?? {})
    .filter(([, p]) => Number.isFinite(p))
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .slice(0, n);
}

/** The order in which a differential lists white cells (then the rest of a model's classes, by name). */
const CLASS_ORDER = ['neutrophil', 'lymphocyte', 'monocyte', 'eosinophil', 'basophil', 'ig', 'erythroblast', 'platelet'];

/** The classes a person may give a cell: the model's classes (those its probabilities name, or those of
 * the slide's other cells where it has none yet, e.g. a box just drawn), always in the same order (a
 * differential's, then by name) so that a button's place and key stay one class from cell to cell. */
export function classChoices(cells: Pick<Cell, 'probabilities'>[], cell: Pick<Cell, 'probabilities'>): string[] {
  const own = Object.keys(cell.probabilities ?? {});
  const known = own.length ? own : [...new Set(cells.flatMap((c) => Object.keys(c.probabilities ?? {})))];
  const rank = (name: string): number => {
    const k = CLASS_ORDER.indexOf(name.toLowerCase());
    return k < 0 ? CLASS_ORDER.length : k;
  };
  return known.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

export interface GalleryGroup<C> {
  /** The class the cells count as (null: none yet). */
  class: string | null;
  cells: C[];
}

type GalleryCell = Pick<Cell, 'id' | 'class' | 'confidence' | 'reviewed_class'>;

/** A slide's cells grouped by the class they count as, the largest group first; within a group the cells
 * a person has not reviewed come first, the model's least sure of them first (those to look at). */
export function galleryGroups<C extends GalleryCell>(cells: C[]): GalleryGroup<C>[] {
  const groups = new Map<string | null, C[]>();
  for (const cell of cells) {
    const key = cell.class ?? null;
    groups.set(key, [...(groups.get(key) ?? []), cell]);
  }
  const doubt = (c: GalleryCell): number => (c.reviewed_class ? 2 : 0) + (c.confidence ?? -1);
  return [...groups.entries()]
    .map(([cls, members]) => ({ class: cls, cells: members.sort((a, b) => doubt(a) - doubt(b) || a.id - b.id) }))
    .sort((a, b) => b.cells.length - a.cells.length || formatClass(a.class).localeCompare(formatClass(b.class)));
}

/** The cell to review after ``currentId``: the next one nobody has reviewed in the gallery's order
 * (``galleryGroups``), from the start again past the end; null when every cell is reviewed. */
export function nextToReview<C extends GalleryCell>(cells: C[], currentId: number | null): C | null {
  const order = galleryGroups([...cells]).flatMap((g) => g.cells);
  const at = order.findIndex((c) => c.id === currentId);
  for (let k = 1; k <= order.length; k++) {
    const cell = order[(at + k + order.length) % order.length];
    if (!cell.reviewed_class && cell.id !== currentId) return cell;
  }
  return null;
}

/** One line of the model comparison: a label and each version's value, formatted ('–' where it has none). */
export interface ModelRow {
  label: string;
  values: string[];
}

function pick(metrics: Record<string, unknown>, path: string): unknown {
  let value: unknown = metrics;
  for (const key of path.split('.')) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

/** A figure's format: a finite number shown by ``show``, anything else a dash. */
const figure = (show: (v: number) => string) => (v: unknown): string =>
  typeof v === 'number' && Number.isFinite(v) ? show(v) : '–';
const fraction = figure((v) => v.toFixed(3));
const whole = figure((v) => String(Math.round(v)));
const seconds = figure((v) => `${Math.round(v)} s`);
const milliseconds = figure((v) => `${Math.round(v)} ms`);
const text = (v: unknown): string => (typeof v === 'string' && v ? v : '–');

/** A figure read from a version's metrics, or a set of them: for each key of the object at ``path``
 * (each class), a row labelled ``label`` and the key, read by ``read``. */
type FigureSpec = [label: string, path: string, format: (v: unknown) => string] | { each: string; path: string; read: (v: unknown) => string };

/** A figure of the robustness table ({clean, corruption: [accuracy at each severity]}), from every corrupted accuracy. */
const corrupted = (read: (values: number[]) => number) => (table: unknown): string => {
  const rows = table && typeof table === 'object' ? Object.values(table as Record<string, unknown>).filter(Array.isArray) : [];
  const values = rows.flat().filter((x): x is number => typeof x === 'number');
  return fraction(values.length ? read(values) : undefined);
};

/** The figures a version's metrics hold, by kind. */
const MODEL_FIGURES: Record<ModelVersion['kind'], FigureSpec[]> = {
  classifier: [
    ['Held-out test accuracy', 'test.accuracy', fraction],
    ['Held-out test macro-F1', 'test.macro_f1', fraction],
    ['Held-out test ECE (calibration)', 'test.ece', fraction],
    ['Held-out test images', 'test.n', whole],
    { each: 'Held-out F1', path: 'test.f1', read: fraction },
    ['Another lab, as analyses answer: accuracy', 'tecom_analyze.accuracy', fraction],
    ['Another lab, as analyses answer: macro-F1', 'tecom_analyze.macro_f1', fraction],
    { each: 'Another lab, as analyses answer, F1', path: 'tecom_analyze.f1', read: fraction },
    ['Another lab, expert boxes: accuracy', 'tecom.accuracy', fraction],
    ['Another lab, expert boxes: macro-F1', 'tecom.macro_f1', fraction],
    { each: 'Another lab, expert boxes, F1', path: 'tecom.f1', read: fraction },
    ['Held-out accuracy, no corruption', 'robustness.clean', fraction],
    ['Held-out accuracy under corruptions: mean', 'robustness', corrupted((v) => v.reduce((a, b) => a + b, 0) / v.length)],
    ['Held-out accuracy under corruptions: lowest', 'robustness', corrupted((v) => Math.min(...v))],
    ['Validation accuracy', 'val_accuracy', fraction],
    ['Validation macro-F1', 'val_macro_f1', fraction],
    ['Epochs', 'epochs_run', whole],
    ['Training time', 'train_time_s', seconds],
    ['Training images', 'n_train', whole],
    ['Cells people classed, trained on', 'parameters.reviewed_cells', whole],
  ],
  localizer: [
    ['Scored on', 'split', text],
    ['Mean IoU', 'mean_iou', fraction],
    ['Recall at IoU 0.5', 'recall50', fraction],
    ['Precision at IoU 0.5', 'precision50', fraction],
    ['AP at IoU 0.5', 'ap50', fraction],
    ['AP at IoU 0.5 to 0.95', 'ap50_95', fraction],
    ['Time per field', 'ms_per_image', milliseconds],
    ['Training time', 'train_seconds', seconds],
    ['Fields of slides people looked at, trained on', 'parameters.annotated_fields', whole],
  ],
};

/** The versions of one kind side by side: the figures any of them holds, each version's in its column. */
export function modelRows(kind: ModelVersion['kind'], versions: Pick<ModelVersion, 'metrics' | 'parameters'>[]): ModelRow[] {
  // a figure's path reads the metrics, or the version's parameters under "parameters."
  const sources = versions.map((v) => ({ ...(v.metrics ?? {}), parameters: v.parameters ?? {} }));
  const rows = MODEL_FIGURES[kind].flatMap((spec): ModelRow[] => {
    if (Array.isArray(spec)) {
      const [label, path, format] = spec;
      return [{ label, values: sources.map((s) => format(pick(s, path))) }];
    }
    // one row per key any version holds, in the order the versions name them
    const objects = sources.map((s) => pick(s, spec.path)).map((o) => (o && typeof o === 'object' && !Array.isArray(o) ? (o as Record<string, unknown>) : {}));
    const keys = [...new Set(objects.flatMap((o) => Object.keys(o)))];
    return keys.map((key) => ({ label: `${spec.each}: ${key}`, values: objects.map((o) => spec.read(o[key])) }));
  });
  return rows.filter((row) => row.values.some((v) => v !== '–'));
}

/** One kind of plot of the versions side by side: its title and each version's image address (null where it has none). */
export interface FigureRow {
  name: string;
  title: string;
  urls: (string | null)[];
}

/** The plots any of the versions holds, in the order their versions list them, each version's in its column. */
export function figureRows(versions: Pick<ModelVersion, 'figures'>[]): FigureRow[] {
  const titles = new Map<string, string>();
  for (const v of versions) for (const f of v.figures ?? []) if (!titles.has(f.name)) titles.set(f.name, f.title);
  return [...titles].map(([name, title]) => ({
    name,
    title,
    urls: versions.map((v) => (v.figures ?? []).find((f) => f.name === name)?.url ?? null),
  }));
}

/** A change to a cell in words: who made it, and what it did. */
export function describeEvent(event: Pick<CellEvent, 'action' | 'actor' | 'before' | 'after'>): string {
  const after = event.after ?? {};
  const before = event.before ?? {};
  const byModel = event.actor === null && (event.action === 'answer' || (event.action === 'create' && after.source === 'model'));
  const who = event.actor ?? (byModel ? 'the model' : 'a user no longer here');
  const shown = (s: CellSnapshot) => s.reviewed_class || s.predicted_class;
  switch (event.action) {
    case 'create':
      if (byModel) return `the model found the cell${shown(after) ? `: ${formatClass(shown(after))}` : ''}`;
      return `${who} drew the box${after.reviewed_class ? ` as ${formatClass(after.reviewed_class)}` : ''}`;
    case 'move':
      return `${who} moved the box`;
    case 'reclassify':
      return `${who} classed it ${formatClass(after.reviewed_class)}${shown(before) ? ` (was ${formatClass(shown(before))})` : ''}`;
    case 'answer':
      return `the model answered ${formatClass(after.predicted_class)} for the box as it was`;
    case 'mark':
      return after.difficult ? `${who} marked it hard to make out` : `${who} took off the hard-to-make-out mark`;
    case 'delete':
      return `${who} deleted the box`;
    case 'restore':
      return `${who} brought the deleted box back`;
    default:
      return `${who}: ${String(event.action)}`;
  }
}

export const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

/** A retraining schedule in words: "Every Sunday at 02:30 (Europe/Vienna)". */
export function describeSchedule(schedule: Pick<RetrainSchedule, 'every' | 'time' | 'day_of_week' | 'timezone' | 'description'>): string {
  const zone = schedule.timezone ? ` (${schedule.timezone})` : '';
  switch (schedule.every) {
    case 'day':
      return `Every day at ${schedule.time}${zone}`;
    case 'week':
      return `Every ${WEEKDAYS[schedule.day_of_week ?? 0]} at ${schedule.time}${zone}`;
    case 'custom':
      return `As set on the admin site: ${schedule.description ?? 'a periodic task'}`;
    default:
      return 'Not retrained on a schedule';
  }
}

