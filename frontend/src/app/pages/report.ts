// A slide's differential as a report to print or keep: who the patient is, what was counted, by which
// model, who reviewed and signed it off. Preliminary (and said so) until it is signed off.
import { api, type Cell, type Differential, type Slide } from '../../api';
import { h } from '../dom';
import { showError } from '../errors';
import { differentialLines, formatClass, formatDateTime } from '../format';
import type { RouteContext } from '../router';
import { meta } from '../widgets';

export function reportPage(root: HTMLElement, ctx: RouteContext): void {
  const id = Number(ctx.params.id);
  const errorSlot = h('div');
  const body = h('div', { class: 'report', id: 'report' }, h('p', { class: 'muted' }, 'Loading the report…'));
  const print = h('button', { type: 'button', class: 'btn btn-primary', id: 'print-report' }, 'Print');
  print.addEventListener('click', () => window.print());
  root.append(
    h('p', { class: 'crumbs no-print' }, h('a', { href: `#/slides/${id}` }, `‹ Slide #${id}`)),
    h('div', { class: 'page-head no-print' }, h('h1', {}, 'Report'), print),
    errorSlot,
    body,
  );

  async function load(): Promise<void> {
    try {
      const [slide, cells, diff] = await Promise.all([api.slide(id), api.cells(id), api.differential(id)]);
      if (ctx.signal.aborted) return;
      body.replaceChildren(...report(slide, cells, diff));
    } catch (err) {
      if (!ctx.signal.aborted) showError(errorSlot, err);
    }
  }
  void load();
}

function report(slide: Slide, cells: Cell[], diff: Differential): (Node | string)[] {
  const reviewed = cells.filter((c) => c.reviewed_class).length;
  const models = [...new Set(cells.map((c) => c.model_version).filter((v): v is string => Boolean(v)))].sort();
  const lines = differentialLines(diff);
  const other = diff.other ?? [];
  const signed = slide.signed_off_at
    ? h('p', { class: 'report-signed', id: 'report-status' }, `Signed off by ${slide.signed_off_by ?? '?'} on ${formatDateTime(slide.signed_off_at)}.`)
    : h('p', { class: 'report-preliminary', id: 'report-status' }, 'Preliminary: not signed off. The classes may still change.');
  return [
    h('h2', {}, `White-cell differential — slide #${slide.id}`),
    signed,
    h(
      'dl',
      { class: 'meta' },
      meta('Patient', slide.patient_identifier ?? String(slide.patient)),
      meta('Images', slide.images.map((img) => img.filename).join(', ')),
      meta('Stain', slide.stain || '–'),
      meta('Uploaded', `${formatDateTime(slide.uploaded_at)}${slide.uploaded_by ? ` by ${slide.uploaded_by}` : ''}`),
      meta('Analysed', slide.analyzed_at ? formatDateTime(slide.analyzed_at) : '–'),
      meta('Classifier', models.length ? models.join(', ') : '–'),
      meta('Reviewed by a person', `${reviewed} of ${cells.length} cells`),
    ),
    lines.length
      ? h(
          'table',
          { class: 'table report-table', id: 'report-differential' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Class'), h('th', { class: 'num' }, 'Count'), h('th', { class: 'num' }, '%'))),
          h('tbody', {}, lines.map((line) => h('tr', {}, h('td', {}, formatClass(line.class)), h('td', { class: 'num' }, line.count), h('td', { class: 'num' }, line.label)))),
          h('tfoot', {}, h('tr', {}, h('th', {}, 'White cells'), h('th', { class: 'num' }, diff.total), h('th', {}, ''))),
        )
      : h('p', {}, 'No white cell was counted.'),
    other.length
      ? h(
          'table',
          { class: 'table report-table', id: 'report-other' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Not white cells'), h('th', { class: 'num' }, 'Count'), h('th', { class: 'num' }, 'Per 100 white cells'))),
          h('tbody', {}, other.map((row) => h('tr', {}, h('td', {}, formatClass(row.class)), h('td', { class: 'num' }, row.count), h('td', { class: 'num' }, row.per_100_white ?? '–')))),
        )
      : '',
    h('p', { class: 'muted small' }, `Printed from Leukolab on ${formatDateTime(new Date().toISOString())}.`),
  ];
}
