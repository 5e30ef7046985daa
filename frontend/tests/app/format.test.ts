import { describe, expect, it } from 'vitest';
import { classChoices, describeEvent, describeSchedule, figureRows, galleryGroups, modelRows, nextToReview, topProbabilities, differentialLines, formatConfidence, formatPercent, isAcceptedImageName, isSlideInProgress, progressPercent } from '../../src/app/format';

describe('formatPercent', () => {
  it('keeps one decimal and drops it for whole numbers', () => {
    expect(formatPercent(33.3333)).toBe('33.3 %');
    expect(formatPercent(50)).toBe('50 %');
    expect(formatPercent(0)).toBe('0 %');
    expect(formatPercent(99.96)).toBe('100 %');
  });
});

describe('formatConfidence', () => {
  it('shows a probability as a whole percent, and a dash when unknown', () => {
    expect(formatConfidence(0.934)).toBe('93 %');
    expect(formatConfidence(null)).toBe('–');
  });
});

describe('differentialLines', () => {
  it('sorts by count and formats the percent', () => {
    const lines = differentialLines({
      total: 6,
      rows: [
        { class: 'lymphocyte', count: 2, percent: 33.333 },
        { class: 'neutrophil', count: 3, percent: 50 },
        { class: 'monocyte', count: 1, percent: 16.667 },
      ],
    });
    expect(lines.map((l) => [l.class, l.count, l.label])).toEqual([
      ['neutrophil', 3, '50 %'],
      ['lymphocyte', 2, '33.3 %'],
      ['monocyte', 1, '16.7 %'],
    ]);
  });

  it('scales fractions to percent', () => {
    const lines = differentialLines({ total: 4, rows: [{ class: 'a', count: 3, percent: 0.75 }, { class: 'b', count: 1, percent: 0.25 }] });
    expect(lines.map((l) => l.label)).toEqual(['75 %', '25 %']);
  });

  it('is empty when no cell was found', () => {
    expect(differentialLines({ total: 0, rows: [] })).toEqual([]);
  });
});

describe('job progress', () => {
  it('clamps progress to 0..100', () => {
    expect(progressPercent({ progress: 0.456 })).toBe(46);
    expect(progressPercent({ progress: 1.2 })).toBe(100);
    expect(progressPercent(null)).toBe(0);
  });

  it('treats queued and analyzing slides as in progress', () => {
    expect(isSlideInProgress({ status: 'queued', job: null })).toBe(true);
    expect(isSlideInProgress({ status: 'analyzed', job: null })).toBe(false);
  });
});

describe('isAcceptedImageName', () => {
  it('accepts the smear image formats, case-insensitively', () => {
    for (const name of ['a.jpg', 'b.JPEG', 'c.png', 'd.bmp', 'e.tif', 'f.TIFF']) expect(isAcceptedImageName(name)).toBe(true);
    expect(isAcceptedImageName('notes.txt')).toBe(false);
  });
});

describe('topProbabilities', () => {
  it('keeps the n most probable classes, most probable first', () => {
    expect(topProbabilities({ monocyte: 0.1, neutrophil: 0.7, lymphocyte: 0.2 }, 2)).toEqual([
      ['neutrophil', 0.7],
      ['lymphocyte', 0.2],
    ]);
    expect(topProbabilities({}, 3)).toEqual([]);
  });
});

describe('classChoices', () => {
  it("offers the model's classes in a differential's order whatever the cell's probabilities, others by name", () => {
    const cell = { probabilities: { lymphocyte: 0.2, neutrophil: 0.1, basophil: 0.6, blast: 0.05, atypical: 0.05 } };
    expect(classChoices([cell], cell)).toEqual(['neutrophil', 'lymphocyte', 'basophil', 'atypical', 'blast']);
  });
  it("offers the slide's classes for a cell the model has not answered for yet", () => {
    const drawn: { probabilities: Record<string, number> } = { probabilities: {} };
    const others: { probabilities: Record<string, number> }[] = [{ probabilities: { monocyte: 0.9, eosinophil: 0.1 } }, { probabilities: { eosinophil: 1 } }, drawn];
    expect(classChoices(others, drawn)).toEqual(['monocyte', 'eosinophil']);
    expect(classChoices([drawn], drawn)).toEqual([]);
  });
});

describe('galleryGroups', () => {
  it('groups cells by class, the largest group first, the cells in most doubt first', () => {
    const cell = (id: number, cls: string | null, confidence: number | null, reviewed: string | null = null) => ({
      id, class: cls, confidence, reviewed_class: reviewed,
    });
    const groups = galleryGroups([
      cell(1, 'neutrophil', 0.99), cell(2, 'lymphocyte', 0.9), cell(3, 'neutrophil', 0.51),
      cell(4, 'neutrophil', 0.3, 'neutrophil'), cell(5, 'neutrophil', null), cell(6, null, null),
    ]);
    expect(groups.map((g) => [g.class, g.cells.map((c) => c.id)])).toEqual([
      ['neutrophil', [5, 3, 1, 4]],
      ['lymphocyte', [2]],
      [null, [6]],
    ]);
  });
});

describe('nextToReview', () => {
  const cell = (id: number, cls: string, confidence: number, reviewed: string | null = null) => ({
    id, class: cls, confidence, reviewed_class: reviewed,
  });
  const cells = [cell(1, 'neutrophil', 0.9), cell(2, 'neutrophil', 0.6), cell(3, 'lymphocyte', 0.8, 'lymphocyte'),
    cell(4, 'lymphocyte', 0.7), cell(5, 'neutrophil', 0.95)];
  it("goes through the unreviewed cells in the gallery's order and round again", () => {
    // gallery order: neutrophil 2, 1, 5; lymphocyte 4, 3 (reviewed)
    expect(nextToReview(cells, null)?.id).toBe(2);
    expect(nextToReview(cells, 2)?.id).toBe(1);
    expect(nextToReview(cells, 1)?.id).toBe(5);
    expect(nextToReview(cells, 5)?.id).toBe(4);
    expect(nextToReview(cells, 4)?.id).toBe(2);
    expect(nextToReview(cells, 3)?.id).toBe(2);
  });
  it('answers null when nothing is left to review', () => {
    expect(nextToReview([cell(1, 'neutrophil', 0.9, 'neutrophil')], 1)).toBeNull();
    expect(nextToReview([cell(1, 'neutrophil', 0.9)], 1)).toBeNull();
  });
});

describe('modelRows', () => {
  it('puts the versions side by side, a dash where one has no figure, no row that none has', () => {
    const rows = modelRows('classifier', [
      { metrics: { test: { accuracy: 0.94375, macro_f1: 0.9434, n: 960 }, epochs_run: 61, train_time_s: 428.7 } },
      { metrics: { test: { accuracy: 0.982 }, tecom_analyze: { accuracy: 0.8167 } }, parameters: { reviewed_cells: 42 } },
      { metrics: {} },
    ]);
    expect(rows).toEqual([
      { label: 'Held-out test accuracy', values: ['0.944', '0.982', '–'] },
      { label: 'Held-out test macro-F1', values: ['0.943', '–', '–'] },
      { label: 'Held-out test images', values: ['960', '–', '–'] },
      { label: 'Another lab, as analyses answer: accuracy', values: ['–', '0.817', '–'] },
      { label: 'Epochs', values: ['61', '–', '–'] },
      { label: 'Training time', values: ['429 s', '–', '–'] },
      { label: 'Cells people classed, trained on', values: ['–', '42', '–'] },
    ]);
    expect(modelRows('localizer', [{ metrics: {} }])).toEqual([]);
    expect(modelRows('localizer', [{ metrics: { split: 'BCCD test (60 fields)', mean_iou: 0.836, ms_per_image: 16.5 } }, { metrics: { split: 'validation', train_seconds: 301.2 } }])).toEqual([
      { label: 'Scored on', values: ['BCCD test (60 fields)', 'validation'] },
      { label: 'Mean IoU', values: ['0.836', '–'] },
      { label: 'Time per field', values: ['17 ms', '–'] },
      { label: 'Training time', values: ['–', '301 s'] },
    ]);
  });
});
describe('modelRows, per class and under corruptions', () => {
  it('gives one row per class any version scored, and the mean and lowest corrupted accuracy', () => {
    const rows = modelRows('classifier', [
      { metrics: { test: { f1: { basophil: 0.9, neutrophil: 0.95 } }, robustness: { clean: 0.9, blur: [0.8, 0.6, 0.4], jpeg: [0.9, 0.9, 0.9] } } },
      { metrics: { test: { f1: { neutrophil: 0.5, platelet: 1 } }, tecom: { f1: { basophil: 0 } }, tecom_analyze: { f1: { monocyte: 0.61 } } } },
    ]);
    expect(rows).toEqual([
      { label: 'Held-out F1: basophil', values: ['0.900', '–'] },
      { label: 'Held-out F1: neutrophil', values: ['0.950', '0.500'] },
      { label: 'Held-out F1: platelet', values: ['–', '1.000'] },
      { label: 'Another lab, as analyses answer, F1: monocyte', values: ['–', '0.610'] },
      { label: 'Another lab, expert boxes, F1: basophil', values: ['–', '0.000'] },
      { label: 'Held-out accuracy, no corruption', values: ['0.900', '–'] },
      { label: 'Held-out accuracy under corruptions: mean', values: ['0.750', '–'] },
      { label: 'Held-out accuracy under corruptions: lowest', values: ['0.400', '–'] },
    ]);
  });
});

describe('figureRows', () => {
  it('lines up each plot of the versions, null where a version has none', () => {
    const confusion = (id: number) => ({ name: 'confusion', title: 'Confusion matrix', url: `/api/model-versions/${id}/figures/confusion/` });
    const rows = figureRows([
      { figures: [confusion(1)] },
      { figures: [{ name: 'curves', title: 'Training curves', url: '/api/model-versions/2/figures/curves/' }, confusion(2)] },
      {},
    ]);
    expect(rows).toEqual([
      { name: 'confusion', title: 'Confusion matrix', urls: ['/api/model-versions/1/figures/confusion/', '/api/model-versions/2/figures/confusion/', null] },
      { name: 'curves', title: 'Training curves', urls: [null, '/api/model-versions/2/figures/curves/', null] },
    ]);
    expect(figureRows([{ figures: [] }])).toEqual([]);
  });
});


describe('describeEvent', () => {
  it('says who changed a cell and how', () => {
    const model = { source: 'model' as const, predicted_class: 'neutrophil', reviewed_class: null };
    expect(describeEvent({ action: 'create', actor: null, before: null, after: model })).toBe('the model found the cell: neutrophil');
    expect(describeEvent({ action: 'create', actor: 'ann', before: null, after: { source: 'person', reviewed_class: 'band_cell' } })).toBe(
      'ann drew the box as band cell',
    );
    expect(describeEvent({ action: 'reclassify', actor: 'hem', before: model, after: { ...model, reviewed_class: 'monocyte' } })).toBe(
      'hem classed it monocyte (was neutrophil)',
    );
    expect(describeEvent({ action: 'answer', actor: null, before: null, after: { predicted_class: 'eosinophil' } })).toBe(
      'the model answered eosinophil for the box as it was',
    );
    expect(describeEvent({ action: 'mark', actor: 'ann', before: null, after: { difficult: true } })).toBe('ann marked it hard to make out');
    expect(describeEvent({ action: 'mark', actor: 'ann', before: null, after: { difficult: false } })).toBe('ann took off the hard-to-make-out mark');
    expect(describeEvent({ action: 'move', actor: null, before: model, after: model })).toBe('a user no longer here moved the box');
    expect(describeEvent({ action: 'delete', actor: 'ann', before: model, after: null })).toBe('ann deleted the box');
    expect(describeEvent({ action: 'restore', actor: 'ann', before: null, after: model })).toBe('ann brought the deleted box back');
  });
});

describe('describeSchedule', () => {
  it('says when the classifier retrains on its own', () => {
    const none = { time: null, day_of_week: null, timezone: null };
    expect(describeSchedule({ every: 'never', ...none })).toBe('Not retrained on a schedule');
    expect(describeSchedule({ every: 'day', time: '23:05', day_of_week: null, timezone: 'UTC' })).toBe('Every day at 23:05 (UTC)');
    expect(describeSchedule({ every: 'week', time: '02:30', day_of_week: 0, timezone: 'Europe/Vienna' })).toBe('Every Sunday at 02:30 (Europe/Vienna)');
    expect(describeSchedule({ every: 'custom', ...none, description: '0 */6 * * * (m/h/dM/MY/d) UTC' })).toBe(
      'As set on the admin site: 0 */6 * * * (m/h/dM/MY/d) UTC',
    );
  });
});
