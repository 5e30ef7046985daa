import { api, exportUrls, type Cell, type Differential, type Job, type Slide, type SlideImage } from '../../api';
import { createSlideViewer, type SlideViewer, type ViewerBox } from '../../viewer/slideViewer';
import { classColor } from '../../viewer/colors';
import { h } from '../dom';
import { errorBox, showError } from '../errors';
import {
  classChoices,
  describeEvent,
  differentialLines,
  formatBox,
  formatClass,
  formatConfidence,
  formatDateTime,
  galleryGroups,
  isSlideInProgress,
  nextToReview,
  topProbabilities,
} from '../format';
import { followJob } from '../jobs';
import { navigate, type RouteContext } from '../router';
import {
  canAddCells,
  canAnalyze,
  canDeleteCells,
  canDeleteSlide,
  canMoveCells,
  canReclassify,
  canSignOff,
  currentUser,
} from '../session';
import { downloadLink, meta, progressBar, statusBadge } from '../widgets';

export function slidePage(root: HTMLElement, ctx: RouteContext): () => void {
  const id = Number(ctx.params.id);
  const crumbs = h('p', { class: 'crumbs' }, h('a', { href: '#/patients' }, '‹ Patients'));
  const head = h('div', { class: 'page-head' }, h('h1', {}, `Slide #${id}`));
  const errorSlot = h('div');
  const statusSlot = h('section', { class: 'card status-card' }, h('p', { class: 'muted' }, 'Loading slide…'));
  const resultsSlot = h('div', { class: 'results' });
  root.append(crumbs, head, errorSlot, statusSlot, resultsSlot);

  let viewer: SlideViewer | null = null;
  let importNotice = ''; // what the last box import did, shown again after the page reloads its cells
  let followingJob: number | null = null;
  const cleanup = (): void => {
    viewer?.destroy();
    viewer = null;
  };

  async function load(): Promise<void> {
    try {
      const slide = await api.slide(id);
      if (ctx.signal.aborted) return;
      renderHead(slide);
      renderStatus(slide);
      if (slide.status === 'analyzed') await renderResults(slide);
      else {
        cleanup();
        resultsSlot.replaceChildren(
          slide.images.length ? h('section', { class: 'card' }, h('h2', {}, 'Images'), imageList(slide.images)) : '',
        );
      }
      if (isSlideInProgress(slide) && slide.job) follow(slide.job);
    } catch (err) {
      if (!ctx.signal.aborted) {
        statusSlot.replaceChildren();
        showError(errorSlot, err);
      }
    }
  }

  function follow(job: Job): void {
    if (followingJob === job.id) return;
    followingJob = job.id;
    followJob(job.id, { signal: ctx.signal, onUpdate: (j) => updateProgress(j) })
      .then((done) => {
        followingJob = null;
        if (done && !ctx.signal.aborted) void load();
      })
      .catch((err) => {
        followingJob = null;
        showError(errorSlot, err);
      });
  }

  function renderHead(slide: Slide): void {
    crumbs.replaceChildren(h('a', { href: `#/patients/${slide.patient}` }, '‹ Patient'));
    head.replaceChildren(
      h('h1', {}, `Slide #${slide.id}`),
      h(
        'dl',
        { class: 'meta' },
        meta('Stain', slide.stain || '–'),
        meta('µm per pixel', slide.microns_per_pixel ?? '–'),
        meta('Uploaded', `${formatDateTime(slide.uploaded_at)}${slide.uploaded_by ? ` by ${slide.uploaded_by}` : ''}`),
        meta('Signed off', slide.signed_off_by ? `${slide.signed_off_by}, ${formatDateTime(slide.signed_off_at)}` : 'not yet'),
      ),
    );
    if (slide.patient_identifier) {
      crumbs.replaceChildren(h('a', { href: `#/patients/${slide.patient}` }, `‹ Patient ${slide.patient_identifier}`));
    }
  }

  let bar = progressBar();
  function updateProgress(job: Job): void {
    bar.update(job);
    const badge = statusSlot.querySelector('.badge');
    // The slide's own status follows the job: queued until a worker picks it up, then analyzing.
    if (badge && job.status === 'running' && badge.getAttribute('data-status') === 'queued') {
      badge.replaceWith(statusBadge('analyzing'));
    }
  }

  function renderStatus(slide: Slide): void {
    bar = progressBar();
    const inProgress = isSlideInProgress(slide);
    const actions = h('div', { class: 'actions' });
    if (canAnalyze(currentUser()) && !inProgress && !slide.signed_off_at) {
      const rerun = h('button', { type: 'button', class: 'btn' }, slide.status === 'failed' ? 'Retry analysis' : 'Re-run analysis');
      rerun.addEventListener('click', async () => {
        rerun.disabled = true;
        showError(errorSlot, null);
        try {
          await api.analyzeSlide(slide.id);
          await load();
        } catch (err) {
          showError(errorSlot, err);
          rerun.disabled = false;
        }
      });
      actions.append(rerun);
    }
    if (canSignOff(currentUser()) && slide.status === 'analyzed' && !slide.signed_off_at) {
      const signOff = h('button', { type: 'button', class: 'btn btn-primary', id: 'sign-off' }, 'Sign off');
      signOff.addEventListener('click', async () => {
        if (!window.confirm('Sign off this slide? The differential count will be recorded as reviewed by you.')) return;
        signOff.disabled = true;
        showError(errorSlot, null);
        try {
          await api.signOffSlide(slide.id);
          await load();
        } catch (err) {
          showError(errorSlot, err);
          signOff.disabled = false;
        }
      });
      actions.append(signOff);
    }
    if (slide.status === 'analyzed') {
      actions.append(h('a', { class: 'btn', href: `#/slides/${slide.id}/report`, id: 'report-link' }, slide.signed_off_at ? 'Report' : 'Report (preliminary)'));
    }
    if (canDeleteSlide(currentUser()) && !inProgress && !slide.signed_off_at) {
      const remove = h('button', { type: 'button', class: 'btn btn-danger', id: 'delete-slide' }, 'Delete slide');
      remove.addEventListener('click', async () => {
        const images = slide.images.length === 1 ? 'its image' : `its ${slide.images.length} images`;
        if (!window.confirm(`Delete slide #${slide.id} with ${images}, its cells and their history? This cannot be undone.`)) return;
        remove.disabled = true;
        showError(errorSlot, null);
        try {
          await api.deleteSlide(slide.id);
          navigate(`/patients/${slide.patient}`);
        } catch (err) {
          showError(errorSlot, err);
          remove.disabled = false;
        }
      });
      actions.append(remove);
    }
    statusSlot.replaceChildren(
      h('div', { class: 'status-line' }, h('span', {}, 'Status '), statusBadge(slide.status), actions),
      inProgress ? bar.el : '',
      slide.status === 'failed'
        ? errorBox(new Error(slide.error || slide.job?.error || 'The analysis failed.'))
        : '',
      slide.status === 'analyzed'
        ? h(
            'p',
            { class: 'muted' },
            `${slide.cell_count} white blood cell${slide.cell_count === 1 ? '' : 's'} found`,
            slide.analyzed_at ? ` · analyzed ${formatDateTime(slide.analyzed_at)}` : '',
            slide.signed_off_by ? ` · signed off by ${slide.signed_off_by}` : '',
            '.',
          )
        : '',
    );
    if (inProgress) bar.update(slide.job, 'Waiting for a worker…');
  }

  async function renderResults(slide: Slide): Promise<void> {
    const [cells, diff] = await Promise.all([api.cells(slide.id), api.differential(slide.id)]);
    if (ctx.signal.aborted) return;
    cleanup();
    resultsSlot.replaceChildren();

    const images = new Map(slide.images.map((img) => [img.id, img]));
    // what this user may do to the cells (the server decides again); nothing once the slide is signed off
    const open = !slide.signed_off_at;
    const mayReclassify = open && canReclassify(currentUser());
    const mayDraw = open && canAddCells(currentUser());
    const mayMove = open && canMoveCells(currentUser());
    const mayDelete = open && canDeleteCells(currentUser());
    let currentImage = slide.images[0];
    let selectedId: number | null = null;
    const viewerBox = h('div', { class: 'viewer', id: 'slide-viewer' });
    const tabs = h('div', { class: 'tabs', role: 'tablist' });
    let cellTableEl = cellTable(cells, images, (cell) => selectCell(cell, false));

    const showImage = (img: SlideImage): void => {
      currentImage = img;
      cleanup();
      viewerBox.replaceChildren();
      viewer = createSlideViewer(viewerBox, {
        imageUrl: img.url,
        width: img.width,
        height: img.height,
        tiles: img.tiles ?? null,
        boxes: cells.filter((c) => c.image === img.id).map(toViewerBox),
        editable: mayMove,
        onChange: (cellId, box) => void change(async () => void (await api.moveCell(cellId, box))),
        onDraw: mayDraw ? (box) => void change(async () => (await api.createCell(slide.id, img.id, box)).id) : undefined,
        onSelect: (cellId) => {
          selectedId = cellId;
          const cell = cells.find((c) => c.id === cellId);
          highlightRow(cellTableEl, cellId);
          highlightThumb(galleryEl, cellId);
          showDetail(cell ?? null);
          const row = cell ? cellTableEl.querySelector<HTMLElement>(`tr[data-cell-id="${cell.id}"]`) : null;
          if (row) scrollWithin(cellTableEl, row);
        },
      });
      viewer.setDrawing(drawing);
      for (const tab of tabs.children) tab.classList.toggle('active', tab.getAttribute('data-image-id') === String(img.id));
    };

    const selectCell = (cell: Cell, fromViewer: boolean): void => {
      if (cell.image !== currentImage?.id) {
        const img = images.get(cell.image);
        if (img) showImage(img);
      }
      selectedId = cell.id;
      viewer?.select(cell.id);
      if (!fromViewer) viewer?.show(cell.id); // a scan's cell is a speck until zoomed in on
      highlightRow(cellTableEl, cell.id);
      highlightThumb(galleryEl, cell.id);
      showDetail(cell);
      if (!fromViewer) viewerBox.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
    };

    if (slide.images.length > 1) {
      for (const img of slide.images) {
        const count = cells.filter((c) => c.image === img.id).length;
        const tab = h('button', { type: 'button', class: 'tab', role: 'tab', 'data-image-id': img.id }, `${img.filename} (${count})`);
        tab.addEventListener('click', () => showImage(img));
        tabs.append(tab);
      }
    }

    const detail = h('section', { class: 'card', id: 'cell-detail' }, ...cellDetail(null, undefined, null));
    let historyOpen = false; // a history opened stays open, read again, for the next cell and after a change
    const showDetail = (cell: Cell | null): void => {
      const actions: CellActions | null = cell
        ? {
            choices: mayReclassify ? classChoices(cells, cell) : [],
            choose: (label) => void change(async () => void (await api.reclassifyCell(cell.id, label))),
            remove: mayDelete ? () => removeCell(cell.id) : null,
            mark: mayMove ? (difficult) => void change(async () => void (await api.markCell(cell.id, difficult))) : null,
          }
        : null;
      shownActions = actions;
      detail.replaceChildren(
        ...cellDetail(cell, cell ? images.get(cell.image) : undefined, actions),
        cell ? cellHistory(slide.id, cell.id, ctx.signal, historyOpen, (open) => (historyOpen = open)) : '',
      );
    };
    let shownActions: CellActions | null = null; // the selected cell's, for the keyboard
    let saving = false;
    /** A change to the slide's cells on the server, then the page as the server has it now. ``action``
     * answers the cell to select after it (null: none; undefined: the one selected). */
    const change = async (action: () => Promise<number | null | undefined>): Promise<void> => {
      if (saving) return;
      saving = true;
      detail.classList.add('saving');
      viewerBox.classList.add('saving');
      showError(errorSlot, null);
      try {
        const pick = await action();
        const [fresh, freshDiff] = await Promise.all([api.cells(slide.id), api.differential(slide.id)]);
        if (ctx.signal.aborted) return;
        if (pick !== undefined) selectedId = pick;
        applyFresh(fresh, freshDiff, true);
        void awaitAnswers();
      } catch (err) {
        showError(errorSlot, err);
        // a refused change leaves the box where it was dropped, the box ticked: draw them as they were
        viewer?.setBoxes(cells.filter((c) => c.image === currentImage?.id).map(toViewerBox));
        viewer?.select(selectedId);
        showDetail(cells.find((c) => c.id === selectedId) ?? null);
      } finally {
        saving = false;
        detail.classList.remove('saving');
        viewerBox.classList.remove('saving');
      }
    };

    // boxes deleted on this page, the last last: Undo (Ctrl+Z) brings them back, as they were, one by one
    const deleted: number[] = [];
    const undoButton = h('button', { type: 'button', class: 'btn btn-small', id: 'undo-delete', title: 'Ctrl+Z' }, 'Undo delete');
    const showUndo = (): void => {
      undoButton.hidden = deleted.length === 0;
      undoButton.textContent = deleted.length > 1 ? `Undo delete (${deleted.length})` : 'Undo delete';
    };
    showUndo();
    const removeCell = (cellId: number): void =>
      void change(async () => {
        await api.deleteCell(cellId);
        deleted.push(cellId);
        showUndo();
        return null;
      });
    const undoDelete = async (): Promise<void> => {
      let back: number | null = null;
      const restore = async (): Promise<number | undefined> => {
        const cellId = deleted.pop();
        showUndo();
        if (cellId === undefined) return undefined;
        back = (await api.restoreCell(slide.id, cellId)).id;
        return back;
      };
      await change(restore);
      const shown = cells.find((c) => c.id === back);
      if (shown) selectCell(shown, false); // on its image, in view
    };
    undoButton.addEventListener('click', () => void undoDelete());

    let drawing = false;
    const drawButton = h('button', { type: 'button', class: 'btn btn-small', id: 'draw-box', 'aria-pressed': 'false' }, 'Draw boxes');
    const setDrawing = (on: boolean): void => {
      drawing = on;
      viewer?.setDrawing(on);
      drawButton.setAttribute('aria-pressed', String(on));
      drawButton.classList.toggle('btn-primary', on);
      drawButton.textContent = on ? 'Drawing (Esc to stop)' : 'Draw boxes';
    };
    drawButton.addEventListener('click', () => setDrawing(!drawing));
    const reviewNext = (): void => {
      const next = nextToReview(cells, selectedId);
      if (next) selectCell(next, false);
    };
    const nextButton = h('button', { type: 'button', class: 'btn btn-small', id: 'next-to-review', title: 'key N' }, 'Next to review');
    nextButton.addEventListener('click', reviewNext);
    // keys: Esc stops drawing, 1-9 give the selected cell the class of that button, N picks the next cell to review,
    // Delete deletes the selected box, Ctrl+Z brings the last deleted back
    document.addEventListener(
      'keydown',
      (evt) => {
        if (!drawButton.isConnected && !nextButton.isConnected && !undoButton.isConnected) return; // a page drawn since
        const target = evt.target as HTMLElement | null;
        if (target?.closest('input, textarea, select')) return;
        if ((evt.ctrlKey || evt.metaKey) && !evt.altKey && !evt.shiftKey && evt.key.toLowerCase() === 'z' && deleted.length) {
          evt.preventDefault();
          void undoDelete();
          return;
        }
        if (evt.ctrlKey || evt.metaKey || evt.altKey) return;
        if (evt.key === 'Escape' && drawing) setDrawing(false);
        else if ((evt.key === 'Delete' || evt.key === 'Backspace') && shownActions?.remove && selectedId !== null) shownActions.remove();
        else if (/^[1-9]$/.test(evt.key) && shownActions && selectedId !== null) {
          const label = shownActions.choices[Number(evt.key) - 1];
          if (label && cells.find((c) => c.id === selectedId)?.reviewed_class !== label) shownActions.choose(label);
        } else if ((evt.key === 'n' || evt.key === 'N') && nextButton.isConnected) reviewNext();
        else return;
        evt.preventDefault();
      },
      { signal: ctx.signal },
    );

    const fitButton = h('button', { type: 'button', class: 'btn btn-small' }, 'Fit');
    const editHint = [
      mayMove ? 'Drag the selected box to move it, its handles to resize it.' : '',
      mayDelete ? 'Delete removes it, Ctrl+Z brings it back.' : '',
    ].filter(Boolean).join(' ');
    fitButton.addEventListener('click', () => viewer?.fit());

    let legendEl = legend(cells);
    let differentialEl = differentialTable(diff);
    const cellsCard = h('section', { class: 'card' });
    const fillCellsCard = (): void => {
      cellsCard.replaceChildren(
        h('h2', {}, `Cells (${cells.length})`),
        cells.length
          ? cellTableEl
          : h('p', { class: 'muted' }, deleted.length ? 'No white blood cells: their boxes were deleted.' : 'No white blood cells were found.'),
      );
    };
    fillCellsCard();
    let galleryEl = gallery(cells, images, (cell) => selectCell(cell, false));

    /** Boxes drawn or moved by a person get the model's answer in a job: show it when it comes. */
    let awaiting = false;
    const awaitAnswers = async (): Promise<void> => {
      if (awaiting) return;
      awaiting = true;
      try {
        await answersLoop();
      } finally {
        awaiting = false;
      }
    };
    const answersLoop = async (): Promise<void> => {
      while (!ctx.signal.aborted && cells.some((c) => c.model_pending)) {
        await new Promise((resolve) => window.setTimeout(resolve, 1500));
        if (ctx.signal.aborted) return;
        let fresh: Cell[];
        let freshDiff: Differential;
        try {
          [fresh, freshDiff] = await Promise.all([api.cells(slide.id), api.differential(slide.id)]);
        } catch {
          continue; // the next round asks again
        }
        if (ctx.signal.aborted) return;
        const answered = fresh.filter((c) => !c.model_pending && cells.find((old) => old.id === c.id)?.model_pending);
        if (!answered.length) continue;
        applyFresh(fresh, freshDiff, answered.some((c) => c.id === selectedId));
      }
    };

    /** The slide's cells and differential as the server has them now; the selected cell stays selected
     * (its detail drawn again where ``redrawDetail``). */
    const applyFresh = (fresh: Cell[], freshDiff: Differential, redrawDetail: boolean): void => {
      cells.splice(0, cells.length, ...fresh);
      if (!cells.some((c) => c.id === selectedId)) selectedId = null;
      viewer?.setBoxes(cells.filter((c) => c.image === currentImage?.id).map(toViewerBox));
      if (selectedId !== null) viewer?.select(selectedId);
      const scrolled = cellTableEl.scrollTop;
      cellTableEl = cellTable(cells, images, (cell) => selectCell(cell, false));
      fillCellsCard();
      cellTableEl.scrollTop = scrolled;
      if (selectedId !== null) highlightRow(cellTableEl, selectedId);
      const nextGallery = gallery(cells, images, (cell) => selectCell(cell, false));
      nextGallery.scrollTop = galleryEl.scrollTop;
      galleryEl.replaceWith(nextGallery);
      galleryEl = nextGallery;
      highlightThumb(galleryEl, selectedId);
      const nextLegend = legend(cells);
      legendEl.replaceWith(nextLegend);
      legendEl = nextLegend;
      const nextDiff = differentialTable(freshDiff);
      differentialEl.replaceWith(nextDiff);
      differentialEl = nextDiff;
      const selected = cells.find((c) => c.id === selectedId);
      if (redrawDetail) showDetail(selected ?? null);
    };

    resultsSlot.append(
      h(
        'div',
        { class: 'result-grid' },
        h(
          'section',
          { class: 'card viewer-card' },
          h(
            'div',
            { class: 'viewer-head' },
            h('h2', {}, 'Image'),
            tabs,
            h('span', { class: 'muted small' }, `Scroll to zoom, drag to pan, double-click to fit. ${editHint}`),
            mayDraw ? drawButton : '',
            mayDelete ? undoButton : '',
            fitButton,
          ),
          viewerBox,
          legendEl,
        ),
        h(
          'div',
          { class: 'side' },
          h('section', { class: 'card', id: 'differential' }, h('h2', {}, 'Differential count'), differentialEl),
          detail,
        ),
      ),
      cells.length
        ? h(
            'section',
            { class: 'card' },
            h('div', { class: 'card-head' }, h('h2', {}, 'Gallery by class'), mayReclassify ? nextButton : ''),
            galleryEl,
          )
        : '',
      cellsCard,
      trainingCard(slide, cells, errorSlot, importNotice, (notice) => {
        importNotice = notice;
        void load();
      }),
    );
    if (currentImage) showImage(currentImage);
    void awaitAnswers();
  }

  void load();
  return cleanup;
}

/** The slide as training data: its boxes and classified cells to download, box files to add. */
function trainingCard(
  slide: Slide,
  cells: Cell[],
  errorSlot: HTMLElement,
  notice: string,
  reload: (notice: string) => void,
): HTMLElement {
  const confirmed = slide.signed_off_at !== null || cells.some((c) => c.reviewed_class);
  const card = h(
    'section',
    { class: 'card', id: 'training-data' },
    h('h2', {}, 'Training data'),
    h(
      'p',
      {},
      'Boxes ',
      downloadLink(exportUrls.boxes(slide.id, 'voc'), 'Pascal VOC'),
      ' ',
      downloadLink(exportUrls.boxes(slide.id, 'coco'), 'COCO'),
      ' ',
      downloadLink(exportUrls.boxes(slide.id, 'yolo'), 'YOLO'),
      ' · Cells by class ',
      confirmed
        ? downloadLink(exportUrls.cells(slide.id, 'confirmed'), 'as reviewed')
        : downloadLink(exportUrls.cells(slide.id, 'all'), "the model's classes"),
    ),
    h('p', { class: 'muted small' }, 'Zip files that python -m ml.localization and python -m ml.classification train on as they are.'),
  );
  if (canAddCells(currentUser()) && !slide.signed_off_at) {
    const files = h('input', { type: 'file', id: 'box-files', multiple: true, accept: '.xml,.json,.txt' }) as HTMLInputElement;
    const labels = h('input', { type: 'text', id: 'box-labels', placeholder: 'YOLO class names, e.g. WBC,RBC,Platelets', style: 'width:22em;display:inline-block' }) as HTMLInputElement;
    const add = h('button', { type: 'button', class: 'btn btn-small', id: 'add-boxes' }, 'Add boxes');
    const result = h('span', { class: 'muted small', id: 'box-import-result' }, notice);
    add.addEventListener('click', async () => {
      const chosen = Array.from(files.files ?? []);
      if (!chosen.length) return;
      add.setAttribute('disabled', '');
      showError(errorSlot, null);
      try {
        const done = await api.importBoxes(slide.id, chosen, labels.value);
        const skipped = Object.entries(done.skipped).map(([why, n]) => `${n} ${why}`).join(', ');
        result.textContent = `${done.added} box${done.added === 1 ? '' : 'es'} added${skipped ? `; skipped: ${skipped}` : ''}.`;
        if (done.added) reload(result.textContent);
      } catch (err) {
        showError(errorSlot, err);
      } finally {
        add.removeAttribute('disabled');
      }
    });
    card.append(
      h('p', {}, 'Add boxes from files (Pascal VOC .xml, COCO .json, YOLO .txt): ', files, ' ', labels, ' ', add, ' ', result),
    );
  }
  return card;
}

function cellLabel(cell: Cell): string {
  const name = formatClass(cell.class);
  if (cell.reviewed_class) return `${name} ✓`;
  return cell.confidence === null ? name : `${name} ${formatConfidence(cell.confidence)}`;
}

function toViewerBox(cell: Cell): ViewerBox {
  return { id: cell.id, box: cell.box, label: cellLabel(cell), color: classColor(cell.class) };
}

function imageList(images: SlideImage[]): HTMLElement {
  return h('ul', { class: 'file-list' }, images.map((img) => h('li', {}, `${img.filename} — ${img.width} × ${img.height} px`)));
}

function legend(cells: Cell[]): HTMLElement {
  const classes = [...new Set(cells.map((c) => c.class))].sort((a, b) => formatClass(a).localeCompare(formatClass(b)));
  return h(
    'div',
    { class: 'legend' },
    classes.map((c) => h('span', { class: 'legend-item' }, h('span', { class: 'swatch', style: `background:${classColor(c)}` }), formatClass(c))),
  );
}

function differentialTable(diff: Differential): HTMLElement {
  const lines = differentialLines(diff);
  const other = diff.other ?? [];
  if (!lines.length && !other.length) return h('p', { class: 'muted' }, 'No classified cells.');
  const otherRows = other.map((row) =>
    h(
      'tr',
      { class: 'not-white' },
      h('td', {}, h('span', { class: 'swatch', style: `background:${classColor(row.class)}` }), formatClass(row.class)),
      h('td', { class: 'num' }, row.count),
      h('td', { class: 'num', colspan: 2 }, row.per_100_white === null ? '–' : `${row.per_100_white} / 100 white cells`),
    ),
  );
  return h(
    'table',
    { class: 'table differential', id: 'differential-table' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Class'), h('th', { class: 'num' }, 'Count'), h('th', { class: 'num' }, '%'), h('th', {}, ''))),
    h(
      'tbody',
      {},
      lines.map((line) =>
        h(
          'tr',
          {},
          h('td', {}, h('span', { class: 'swatch', style: `background:${classColor(line.class)}` }), formatClass(line.class)),
          h('td', { class: 'num' }, line.count),
          h('td', { class: 'num' }, line.label),
          h('td', { class: 'bar-cell' }, h('div', { class: 'bar', style: `width:${Math.min(100, line.percent)}%;background:${classColor(line.class)}` })),
        ),
      ),
    ),
    h('tfoot', {}, h('tr', {}, h('th', {}, 'White cells'), h('th', { class: 'num' }, diff.total), h('th', {}, ''), h('th', {}, ''))),
    otherRows.length
      ? h('tbody', { class: 'not-white' }, h('tr', {}, h('th', { colspan: 4, class: 'small' }, 'Not white cells (not in the %)')), otherRows)
      : '',
  );
}

/** A small crop of the cell, cut from the slide image with CSS (no extra request). */
function cropThumb(cell: Cell, img: SlideImage | undefined, size = 48): HTMLElement {
  const el = h('div', { class: 'thumb' });
  el.style.width = el.style.height = `${size}px`;
  if (!img) return el;
  const [x0, y0, x1, y1] = cell.box;
  const scale = size / Math.max(1, x1 - x0, y1 - y0);
  const cx = ((x0 + x1) / 2) * scale;
  const cy = ((y0 + y1) / 2) * scale;
  el.style.backgroundImage = `url("${img.url}")`;
  el.style.backgroundSize = `${img.width * scale}px ${img.height * scale}px`;
  el.style.backgroundPosition = `${size / 2 - cx}px ${size / 2 - cy}px`;
  return el;
}

/** What a person may do to the selected cell: the classes to give it ([]: none), its deletion and its mark
 * (null: not theirs to do). */
interface CellActions {
  choices: string[];
  choose: (label: string) => void;
  remove: (() => void) | null;
  /** Mark the cell hard to make out, or take the mark off. */
  mark: ((difficult: boolean) => void) | null;
}

/** Buttons that give the cell a reviewed class; the one it has is marked. */
function reviewButtons(cell: Cell, review: CellActions): HTMLElement {
  const buttons = review.choices.map((label, i) => {
    const current = cell.reviewed_class === label;
    const button = h(
      'button',
      {
        type: 'button',
        class: `btn btn-small class-choice${current ? ' btn-primary' : ''}`,
        'data-class': label,
        'aria-pressed': current ? 'true' : 'false',
        title: i < 9 ? `key ${i + 1}` : '',
      },
      i < 9 ? h('kbd', {}, String(i + 1)) : '',
      h('span', { class: 'swatch', style: `background:${classColor(label)}` }),
      formatClass(label),
    ) as HTMLButtonElement;
    button.addEventListener('click', () => {
      if (!current) review.choose(label);
    });
    return button;
  });
  return h(
    'div',
    { class: 'review', id: 'reclassify' },
    h('h3', {}, cell.reviewed_class ? 'Reviewed as' : 'Review: the class is'),
    h('div', { class: 'class-choices' }, buttons),
  );
}

/** An annotator's actions on the selected box: delete it, mark it hard to make out. */
function boxActions(cell: Cell, actions: CellActions): HTMLElement {
  const parts: (Node | string)[] = [];
  if (actions.mark) {
    const mark = actions.mark;
    const box = h('input', { type: 'checkbox', id: 'mark-difficult' }) as HTMLInputElement;
    box.checked = cell.difficult;
    box.addEventListener('change', () => mark(box.checked));
    parts.push(h('label', { class: 'small', title: 'left out of localization scores' }, box, 'hard to make out'));
  }
  if (actions.remove) {
    const button = h('button', { type: 'button', class: 'btn btn-small btn-danger', id: 'delete-cell', title: 'not a white cell, or a box twice (key Delete); Undo or Ctrl+Z brings it back' }, 'Delete this box');
    button.addEventListener('click', actions.remove);
    parts.push(button);
  }
  return h('div', { class: 'cell-actions' }, parts);
}

/** The selected cell up close: its crop, heatmap, the classifier's top probabilities and, for a person
 * who may review it, the classes to give it. */
function cellDetail(cell: Cell | null, img: SlideImage | undefined, actions: CellActions | null): (Node | string)[] {
  if (!cell) return [h('h2', {}, 'Cell'), h('p', { class: 'muted' }, 'Click a box or a row to look at a cell.')];
  const probabilities = topProbabilities(cell.probabilities, 5);
  return [
    h('h2', {}, 'Cell'),
    h(
      'div',
      { class: 'cell-detail-images' },
      h(
        'figure',
        {},
        // a scan's page shows a reduced preview: its cells were kept at full resolution
        cell.crop_url ? h('img', { class: 'cell-crop', src: cell.crop_url, alt: 'cell', width: 128, height: 128 }) : cropThumb(cell, img, 128),
        h('figcaption', {}, 'cell'),
      ),
      cell.heatmap_url
        ? h('figure', {}, h('img', { class: 'heatmap-large', src: cell.heatmap_url, alt: 'attention heatmap' }), h('figcaption', {}, 'heatmap'))
        : null,
    ),
    h(
      'dl',
      { class: 'meta' },
      meta('Class', formatClass(cell.class)),
      cell.unidentified && cell.predicted_class
        ? meta("Model's guess", `${formatClass(cell.predicted_class)} ${formatConfidence(cell.confidence)}, too unsure to count`)
        : [],
      meta('Confidence', formatConfidence(cell.confidence)),
      meta('Model', cell.model_pending ? 'answering for the box as it is now…' : cell.model_version ?? '–'),
      meta('Source', cell.source === 'person' ? 'drawn by a person' : 'model'),
      cell.difficult ? meta('Marked', 'difficult: hard to make out (left out of localization scores)') : [],
      cell.reviewed_class ? meta('Reviewed', `${formatClass(cell.reviewed_class)} by ${cell.reviewed_by ?? '?'}`) : [],
      cell.reviewed_class && cell.predicted_class ? meta('Predicted', formatClass(cell.predicted_class)) : [],
    ),
    probabilities.length
      ? h(
          'table',
          { class: 'table probabilities' },
          h(
            'tbody',
            {},
            probabilities.map(([cls, p]) =>
              h(
                'tr',
                {},
                h('td', {}, formatClass(cls)),
                h('td', { class: 'num' }, formatConfidence(p)),
                h('td', { class: 'bar-cell' }, h('div', { class: 'bar', style: `width:${Math.round(p * 100)}%;background:${classColor(cls)}` })),
              ),
            ),
          ),
        )
      : '',
    actions && actions.choices.length ? reviewButtons(cell, actions) : '',
    actions && (actions.remove || actions.mark) ? boxActions(cell, actions) : '',
  ];
}

/** The cell's changes, who made them and when, read from the server when opened (each time: a change
 * made meanwhile, here or by someone else, is in it); ``open``: opened at once; ``onToggle`` hears it
 * opened or closed. */
function cellHistory(slideId: number, cellId: number, signal: AbortSignal, open: boolean, onToggle: (open: boolean) => void): HTMLElement {
  const list = h('div', { class: 'small' });
  const panel = h('details', { class: 'cell-history', id: 'cell-history' }, h('summary', {}, 'History'), list);
  panel.addEventListener('toggle', async () => {
    onToggle(panel.open);
    if (!panel.open) return;
    list.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try {
      const page = await api.cellHistory(slideId, cellId);
      if (signal.aborted) return;
      list.replaceChildren(
        h(
          'ol',
          { class: 'history' },
          page.results.map((event) => h('li', {}, h('time', { datetime: event.at }, formatDateTime(event.at)), ' ', describeEvent(event))),
        ),
        page.count > page.results.length ? h('p', { class: 'muted' }, `The first ${page.results.length} of ${page.count} changes.`) : '',
      );
    } catch (err) {
      if (!signal.aborted) list.replaceChildren(errorBox(err));
    }
  });
  panel.open = open;
  return panel;
}

function cellTable(cells: Cell[], images: Map<number, SlideImage>, onPick: (cell: Cell) => void): HTMLElement {
  const multi = images.size > 1;
  return h(
    'div',
    { class: 'table-scroll' },
    h(
      'table',
      { class: 'table cells', id: 'cell-table' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', {}, 'Cell'),
          h('th', {}, '#'),
          multi ? h('th', {}, 'Image') : null,
          h('th', {}, 'Box'),
          h('th', {}, 'Class'),
          h('th', { class: 'num' }, 'Confidence'),
          h('th', {}, 'Model'),
          h('th', {}, 'Heatmap'),
        ),
      ),
      h(
        'tbody',
        {},
        cells.map((cell, i) => {
          const row = h(
            'tr',
            { 'data-cell-id': cell.id, tabindex: 0 },
            h('td', {}, cropThumb(cell, images.get(cell.image))),
            h('td', {}, i + 1),
            multi ? h('td', {}, images.get(cell.image)?.filename ?? cell.image) : null,
            h('td', { class: 'small' }, formatBox(cell.box)),
            h(
              'td',
              {},
              h('span', { class: 'swatch', style: `background:${classColor(cell.class)}` }),
              formatClass(cell.class),
              cell.reviewed_class ? h('div', { class: 'muted small' }, `reviewed by ${cell.reviewed_by ?? '?'}`) : null,
              cell.unidentified && cell.predicted_class
                ? h('div', { class: 'muted small' }, `model's guess: ${formatClass(cell.predicted_class)}`)
                : null,
              cell.source === 'person' ? h('div', { class: 'muted small' }, 'added by a person') : null,
            ),
            h('td', { class: 'num' }, formatConfidence(cell.confidence)),
            h('td', { class: 'small' }, cell.model_pending ? 'answering…' : cell.model_version ?? '–'),
            h(
              'td',
              {},
              cell.heatmap_url
                ? h('a', { href: cell.heatmap_url, target: '_blank', rel: 'noopener' }, h('img', { class: 'heatmap', src: cell.heatmap_url, alt: 'heatmap', loading: 'lazy' }))
                : h('span', { class: 'muted' }, '–'),
            ),
          );
          row.addEventListener('click', (evt) => {
            if ((evt.target as HTMLElement).closest('a')) return;
            onPick(cell);
          });
          row.addEventListener('keydown', (evt) => {
            if (evt.key === 'Enter') onPick(cell);
          });
          return row;
        }),
      ),
    ),
  );
}

/** Bring a row into view inside its scrolling table only; the page itself stays where the user is. */
function scrollWithin(scroller: HTMLElement, row: HTMLElement): void {
  const top = row.offsetTop - (scroller.querySelector('thead')?.offsetHeight ?? 0);
  if (top < scroller.scrollTop || row.offsetTop + row.offsetHeight > scroller.scrollTop + scroller.clientHeight) {
    scroller.scrollTop = Math.max(0, top);
  }
}

/** The cells as thumbnails in groups by class (``galleryGroups``): a group to look over at a glance, a
 * thumbnail to pick a cell by (its detail then offers the classes to give it). */
function gallery(cells: Cell[], images: Map<number, SlideImage>, onPick: (cell: Cell) => void): HTMLElement {
  return h(
    'div',
    { class: 'gallery', id: 'gallery' },
    galleryGroups(cells).map((group) =>
      h(
        'div',
        { class: 'gallery-group', 'data-class': group.class ?? '' },
        h(
          'h3',
          {},
          h('span', { class: 'swatch', style: `background:${classColor(group.class)}` }),
          `${formatClass(group.class)} (${group.cells.length})`,
        ),
        h(
          'div',
          { class: 'gallery-cells' },
          group.cells.map((cell) => {
            const thumb = h(
              'button',
              {
                type: 'button',
                class: `gallery-cell${cell.reviewed_class ? ' reviewed' : ''}`,
                'data-cell-id': cell.id,
                title: `${formatClass(cell.class)} ${formatConfidence(cell.confidence)}${cell.reviewed_class ? `, reviewed by ${cell.reviewed_by ?? '?'}` : ''}`,
              },
              cell.crop_url
                ? h('img', { src: cell.crop_url, alt: 'cell', width: 64, height: 64, loading: 'lazy' })
                : cropThumb(cell, images.get(cell.image), 64),
              h('span', { class: 'gallery-caption' }, cell.reviewed_class ? '✓' : formatConfidence(cell.confidence)),
            );
            thumb.addEventListener('click', () => onPick(cell));
            return thumb;
          }),
        ),
      ),
    ),
  );
}

function highlightThumb(galleryEl: HTMLElement, cellId: number | null): void {
  for (const el of galleryEl.querySelectorAll('.gallery-cell.selected')) el.classList.remove('selected');
  if (cellId !== null) galleryEl.querySelector(`.gallery-cell[data-cell-id="${cellId}"]`)?.classList.add('selected');
}

function highlightRow(table: HTMLElement, cellId: number | null): void {
  for (const row of table.querySelectorAll('tr.selected')) row.classList.remove('selected');
  if (cellId !== null) table.querySelector(`tr[data-cell-id="${cellId}"]`)?.classList.add('selected');
}
