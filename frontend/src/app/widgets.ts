// Small shared pieces of UI: status badges, progress bars, pagination, download links, term-value lines.
import type { Job, Page, SlideStatus } from '../api';
import { h } from './dom';
import { progressPercent } from './format';

export function statusBadge(status: SlideStatus | Job['status']): HTMLElement {
  return h('span', { class: `badge badge-${status}`, 'data-status': status }, status);
}

export interface ProgressBar {
  el: HTMLElement;
  update(job: Job | null, fallback?: string): void;
}

export function progressBar(): ProgressBar {
  const fill = h('div', { class: 'progress-fill' });
  const track = h(
    'div',
    { class: 'progress-track', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100 },
    fill,
  );
  const label = h('div', { class: 'progress-label' });
  const el = h('div', { class: 'progress' }, track, label);
  return {
    el,
    update(job, fallback = '') {
      const pct = progressPercent(job);
      fill.style.width = `${pct}%`;
      track.setAttribute('aria-valuenow', String(pct));
      el.classList.toggle('progress-indeterminate', !job || job.status === 'queued');
      const text =
        job?.message ||
        (job?.status === 'queued' ? 'Waiting for a worker…' : job?.status === 'running' ? 'Analyzing…' : fallback);
      label.textContent = job?.status === 'running' ? `${pct} % · ${text}` : text;
    },
  };
}

export function pager<T>(page: Page<T>, current: number, go: (page: number) => void): HTMLElement | null {
  if (!page.next && !page.previous) return null;
  return h(
    'nav',
    { class: 'pager' },
    h('button', { type: 'button', class: 'btn', disabled: !page.previous, onclick: () => go(current - 1) }, '‹ Previous'),
    h('span', {}, `Page ${current} · ${page.count} in all`),
    h('button', { type: 'button', class: 'btn', disabled: !page.next, onclick: () => go(current + 1) }, 'Next ›'),
  );
}

/** A button-styled link that downloads what it points at (the training-data zips). */
export function downloadLink(href: string, text: string): HTMLElement {
  return h('a', { class: 'btn btn-small', href, download: '' }, text);
}

/** One term and its value of a ``<dl class="meta">``. */
export function meta(term: string, value: string | number): HTMLElement[] {
  return [h('dt', {}, term), h('dd', {}, value)];
}
