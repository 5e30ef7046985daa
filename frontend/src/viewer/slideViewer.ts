// Draws one smear image with cell boxes on a Konva stage. No app state: data in, callbacks out.
// Wheel zooms around the pointer, dragging pans, double-click fits the image again. Where editable, the
// selected box is moved by dragging it and resized by its handles, and in draw mode a drag draws a box.
import Konva from 'konva';
import type { Box, ImageTiles } from '../api';

export interface ViewerBox {
  id: number;
  box: Box;
  label: string;
  color: string;
}

export interface SlideViewerOptions {
  imageUrl: string;
  /** Natural size of the image in pixels (the boxes' coordinate system). */
  width: number;
  height: number;
  boxes: ViewerBox[];
  /** Most of the viewport height the stage may take. */
  maxHeightFraction?: number;
  /** A large scan's tiles: drawn over the (reduced) image where it is zoomed in past the image's detail. */
  tiles?: ImageTiles | null;
  onSelect?: (id: number | null) => void;
  /** The selected box may be moved and resized (``onChange`` gets its new box). */
  editable?: boolean;
  onChange?: (id: number, box: Box) => void;
  /** A box drawn in draw mode (``setDrawing``), in image pixels. */
  onDraw?: (box: Box) => void;
}

export interface SlideViewer {
  setBoxes(boxes: ViewerBox[]): void;
  select(id: number | null): void;
  /** Bring a box into view: centred, and zoomed in where it is too small on screen to be seen. */
  show(id: number): void;
  fit(): void;
  /** Draw mode: a drag draws a box (``onDraw``) instead of panning. */
  setDrawing(on: boolean): void;
  destroy(): void;
}

const MIN_SCALE = 0.02;
const MAX_SCALE = 20;
/** A box shown smaller than this (screen pixels) is zoomed in on by ``show``... */
const MIN_SHOWN_PX = 40;
/** ...until it takes this share of the stage's shorter side. */
const SHOWN_SHARE = 0.3;
/** Tiles kept beyond those in view (each one decoded in the browser's memory, 1 MB at 512 px). */
const MAX_TILES = 64;
/** The smallest box drawn or resized, image pixels a side. */
const MIN_BOX = 4;

export function createSlideViewer(container: HTMLDivElement, opts: SlideViewerOptions): SlideViewer {
  const imgW = Math.max(1, opts.width);
  const imgH = Math.max(1, opts.height);
  const maxFraction = opts.maxHeightFraction ?? 0.7;

  container.classList.add('slide-viewer');
  container.dataset.imageState = 'loading';

  const stageSize = (): { width: number; height: number } => {
    const width = Math.max(200, container.clientWidth);
    const maxHeight = Math.max(240, Math.round(window.innerHeight * maxFraction));
    const height = Math.min(maxHeight, Math.round((width * imgH) / imgW));
    return { width, height };
  };

  const stage = new Konva.Stage({ container, ...stageSize(), draggable: true });
  const imageLayer = new Konva.Layer({ listening: false });
  const tileLayer = new Konva.Layer({ listening: false });
  const boxLayer = new Konva.Layer();
  stage.add(imageLayer, tileLayer, boxLayer);

  // Placeholder until the image arrives (or if the browser cannot decode it, e.g. TIFF).
  const placeholder = new Konva.Rect({ x: 0, y: 0, width: imgW, height: imgH, fill: '#e9ecef' });
  const placeholderText = new Konva.Text({
    x: 0,
    y: imgH / 2 - 12,
    width: imgW,
    align: 'center',
    text: 'Loading image…',
    fontSize: 24,
    fill: '#555',
  });
  imageLayer.add(placeholder, placeholderText);

  const image = new window.Image();
  image.onload = () => {
    imageLayer.destroyChildren();
    imageLayer.add(new Konva.Image({ image, x: 0, y: 0, width: imgW, height: imgH }));
    imageLayer.batchDraw();
    container.dataset.imageState = 'loaded';
  };
  image.onerror = () => {
    placeholderText.text('This image cannot be shown in the browser; the boxes are still drawn.');
    imageLayer.batchDraw();
    container.dataset.imageState = 'error';
  };
  image.src = opts.imageUrl;

  let boxes: ViewerBox[] = [];
  let selected: number | null = null;
  let drawing = false;
  const groups = new Map<number, { rect: Konva.Rect; label: Konva.Label; color: string }>();
  let transformer: Konva.Transformer | null = null;

  /** A point in image pixels, kept inside the image. */
  const clampPoint = (p: { x: number; y: number }): { x: number; y: number } => ({
    x: Math.min(imgW, Math.max(0, p.x)),
    y: Math.min(imgH, Math.max(0, p.y)),
  });

  /** The box a rectangle on the stage stands for, in whole image pixels inside the image. */
  const boxOf = (rect: Konva.Rect): Box => {
    const a = clampPoint({ x: rect.x(), y: rect.y() });
    const b = clampPoint({ x: rect.x() + rect.width() * rect.scaleX(), y: rect.y() + rect.height() * rect.scaleY() });
    return [Math.round(Math.min(a.x, b.x)), Math.round(Math.min(a.y, b.y)), Math.round(Math.max(a.x, b.x)), Math.round(Math.max(a.y, b.y))];
  };

  const labelScale = (): number => 1 / stage.scaleX();

  /** Labels sit above their box, or just inside it where the box touches the image's top edge. */
  const placeLabels = (): void => {
    const scale = stage.scaleX();
    for (const g of groups.values()) {
      g.label.scale({ x: 1 / scale, y: 1 / scale });
      g.label.offsetY(g.rect.y() * scale >= g.label.height() ? g.label.height() : 0);
    }
  };

  const restyle = (): void => {
    for (const [id, g] of groups) {
      const isSelected = id === selected;
      g.rect.draggable(Boolean(opts.editable) && isSelected && !drawing);
      g.rect.strokeWidth(isSelected ? 4 : 2);
      g.rect.stroke(isSelected ? '#ffffff' : g.color);
      g.rect.shadowEnabled(isSelected);
      g.label.visible(isSelected || boxes.length <= 300);
      if (isSelected) g.label.moveToTop();
    }
    const chosen = selected !== null ? groups.get(selected) : undefined;
    transformer?.nodes(opts.editable && chosen && !drawing ? [chosen.rect] : []);
    transformer?.moveToTop();
    boxLayer.batchDraw();
  };

  const setBoxes = (next: ViewerBox[]): void => {
    boxes = next;
    boxLayer.destroyChildren();
    groups.clear();
    const s = labelScale();
    const area = (b: ViewerBox): number => (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]);
    // Big boxes first, so a small box inside a big one stays on top and clickable.
    for (const b of [...boxes].sort((a, c) => area(c) - area(a))) {
      const [x0, y0, x1, y1] = b.box;
      const rect = new Konva.Rect({
        x: x0,
        y: y0,
        width: Math.max(1, x1 - x0),
        height: Math.max(1, y1 - y0),
        stroke: b.color,
        strokeWidth: 2,
        strokeScaleEnabled: false,
        shadowColor: '#000',
        shadowBlur: 6,
        shadowEnabled: false,
        hitStrokeWidth: 8,
        fillEnabled: true,
        fill: 'rgba(0,0,0,0)',
        name: 'cell-box',
      });
      const label = new Konva.Label({ x: x0, y: y0, scaleX: s, scaleY: s, listening: false });
      label.add(new Konva.Tag({ fill: b.color, opacity: 0.85, pointerDirection: 'none' }));
      label.add(new Konva.Text({ text: b.label, fontSize: 12, padding: 3, fill: '#fff' }));
      rect.on('click tap', (evt) => {
        evt.cancelBubble = true;
        select(b.id);
        opts.onSelect?.(b.id);
      });
      rect.on('mouseenter', () => {
        if (!drawing) container.style.cursor = rect.draggable() ? 'move' : 'pointer';
      });
      rect.on('mouseleave', () => {
        if (!drawing) container.style.cursor = '';
      });
      if (opts.editable) {
        const follow = (): void => {
          label.position({ x: rect.x(), y: rect.y() });
          placeLabels();
        };
        rect.on('dragmove transform', follow);
        rect.on('dragend transformend', () => {
          const box = boxOf(rect);
          rect.scale({ x: 1, y: 1 });
          rect.position({ x: box[0], y: box[1] });
          rect.size({ width: Math.max(1, box[2] - box[0]), height: Math.max(1, box[3] - box[1]) });
          follow();
          if (box.some((v, i) => v !== Math.round(b.box[i]))) opts.onChange?.(b.id, box);
        });
      }
      boxLayer.add(rect, label);
      groups.set(b.id, { rect, label, color: b.color });
    }
    if (opts.editable) {
      transformer = new Konva.Transformer({
        rotateEnabled: false,
        flipEnabled: false,
        keepRatio: false,
        ignoreStroke: true,
        anchorSize: 9,
        anchorStroke: '#ffffff',
        anchorFill: '#7a1f3d',
        borderStroke: '#ffffff',
        // no smaller than MIN_BOX image pixels a side (the transformer measures in screen pixels)
        boundBoxFunc: (old, next) =>
          next.width < MIN_BOX * stage.scaleX() || next.height < MIN_BOX * stage.scaleX() ? old : next,
      });
      boxLayer.add(transformer);
    }
    container.dataset.boxCount = String(boxes.length);
    placeLabels();
    restyle();
  };

  const select = (id: number | null): void => {
    selected = id;
    restyle();
  };

  // Tiles of the level whose pixels are at least as fine as the screen's, those in view; the image
  // below shows through until they arrive, and wherever no level is fine enough to need them.
  const tiles = opts.tiles && opts.tiles.levels > 0 ? opts.tiles : null;
  const shownTiles = new Map<string, Konva.Image>();
  let tileLevel = -1;
  let tilesLoaded = 0;
  const updateTiles = (): void => {
    if (!tiles) return;
    const scale = stage.scaleX();
    const level = Math.max(0, Math.floor(Math.log2(1 / scale)));
    if (level !== tileLevel) {
      tileLayer.destroyChildren();
      shownTiles.clear();
      tileLevel = level;
    }
    if (level >= tiles.levels) {
      tileLayer.batchDraw();
      return; // zoomed out: the image itself is as sharp as the screen
    }
    const span = tiles.size * 2 ** level; // image pixels a tile covers
    const x0 = -stage.x() / scale;
    const y0 = -stage.y() / scale;
    const x1 = x0 + stage.width() / scale;
    const y1 = y0 + stage.height() / scale;
    const cols = [Math.max(0, Math.floor(x0 / span)), Math.min(Math.ceil(imgW / span) - 1, Math.floor(x1 / span))];
    const rows = [Math.max(0, Math.floor(y0 / span)), Math.min(Math.ceil(imgH / span) - 1, Math.floor(y1 / span))];
    const wanted: [string, number, number][] = [];
    for (let row = rows[0]; row <= rows[1]; row++) {
      for (let col = cols[0]; col <= cols[1]; col++) wanted.push([`${level}/${col}/${row}`, col, row]);
    }
    const inView = new Set(wanted.map(([key]) => key));
    if (shownTiles.size > MAX_TILES) {
      // panning far over a scan: let go of the tiles out of view (a browser holds each one decoded)
      for (const [key, node] of shownTiles) {
        if (!inView.has(key)) {
          node.destroy();
          shownTiles.delete(key);
        }
      }
    }
    for (const [key, col, row] of wanted) {
      if (shownTiles.has(key)) continue;
      const node = new Konva.Image({ image: undefined, x: col * span, y: row * span, width: 0, height: 0 });
      shownTiles.set(key, node);
      const img = new window.Image();
      img.onload = () => {
        if (shownTiles.get(key) !== node) return; // the level changed meanwhile
        node.image(img);
        node.size({ width: img.width * 2 ** level, height: img.height * 2 ** level });
        tileLayer.add(node);
        tileLayer.batchDraw();
        container.dataset.tilesLoaded = String(++tilesLoaded);
      };
      img.src = tiles.url.replace('{level}', String(level)).replace('{col}', String(col)).replace('{row}', String(row));
    }
  };

  /** After a zoom or a pan: the tiles now in view, and the part of the image in view recorded in
   * image pixels (data-view: x0,y0,x1,y1; for tests and tools). */
  const moved = (): void => {
    updateTiles();
    const scale = stage.scaleX();
    const view = [-stage.x() / scale, -stage.y() / scale, (stage.width() - stage.x()) / scale, (stage.height() - stage.y()) / scale];
    container.dataset.view = view.map((v) => v.toFixed(1)).join(',');
  };
  stage.on('dragmove dragend', moved);

  const applyScale = (scale: number, position: { x: number; y: number }): void => {
    stage.scale({ x: scale, y: scale });
    stage.position(position);
    placeLabels();
    moved();
    stage.batchDraw();
  };

  const show = (id: number): void => {
    const b = boxes.find((x) => x.id === id);
    if (!b) return;
    const [x0, y0, x1, y1] = b.box;
    const side = Math.max(1, x1 - x0, y1 - y0);
    const current = stage.scaleX();
    const scale =
      side * current < MIN_SHOWN_PX
        ? Math.min(MAX_SCALE, (SHOWN_SHARE * Math.min(stage.width(), stage.height())) / side)
        : current;
    const inView =
      x0 * current + stage.x() >= 0 &&
      y0 * current + stage.y() >= 0 &&
      x1 * current + stage.x() <= stage.width() &&
      y1 * current + stage.y() <= stage.height();
    if (scale === current && inView) return; // already there: the view stays as the user left it
    const cx = (x0 + x1) / 2;
    const cy = (y0 + y1) / 2;
    applyScale(scale, { x: stage.width() / 2 - cx * scale, y: stage.height() / 2 - cy * scale });
  };

  const fit = (): void => {
    const { width, height } = stageSize();
    stage.size({ width, height });
    const scale = Math.min(width / imgW, height / imgH);
    applyScale(scale, { x: (width - imgW * scale) / 2, y: (height - imgH * scale) / 2 });
  };

  stage.on('wheel', (evt) => {
    evt.evt.preventDefault();
    const pointer = stage.getPointerPosition();
    if (!pointer) return;
    const old = stage.scaleX();
    const factor = evt.evt.deltaY > 0 ? 1 / 1.15 : 1.15;
    const scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, old * factor));
    const anchor = { x: (pointer.x - stage.x()) / old, y: (pointer.y - stage.y()) / old };
    applyScale(scale, { x: pointer.x - anchor.x * scale, y: pointer.y - anchor.y * scale });
  });
  let draft: Konva.Rect | null = null;
  let draftStart = { x: 0, y: 0 };
  const pointerInImage = (): { x: number; y: number } | null => {
    const p = stage.getRelativePointerPosition();
    return p ? clampPoint(p) : null;
  };
  stage.on('mousedown touchstart', () => {
    if (!drawing) return;
    const p = pointerInImage();
    if (!p) return;
    draftStart = p;
    draft = new Konva.Rect({
      x: p.x, y: p.y, width: 0, height: 0, stroke: '#ffffff', strokeWidth: 2, dash: [6, 4], strokeScaleEnabled: false, listening: false,
    });
    boxLayer.add(draft);
  });
  stage.on('mousemove touchmove', () => {
    const p = draft ? pointerInImage() : null;
    if (!draft || !p) return;
    draft.position({ x: Math.min(p.x, draftStart.x), y: Math.min(p.y, draftStart.y) });
    draft.size({ width: Math.abs(p.x - draftStart.x), height: Math.abs(p.y - draftStart.y) });
    boxLayer.batchDraw();
  });
  const endDraft = (): void => {
    if (!draft) return;
    const box = boxOf(draft);
    draft.destroy();
    draft = null;
    boxLayer.batchDraw();
    if (box[2] - box[0] >= MIN_BOX && box[3] - box[1] >= MIN_BOX) opts.onDraw?.(box);
  };
  stage.on('mouseup touchend', endDraft);
  stage.on('mouseleave', endDraft);

  const setDrawing = (on: boolean): void => {
    drawing = on && Boolean(opts.editable || opts.onDraw);
    stage.draggable(!drawing);
    container.style.cursor = drawing ? 'crosshair' : '';
    container.dataset.mode = drawing ? 'draw' : 'view';
    restyle();
  };

  stage.on('dblclick dbltap', () => {
    if (!drawing) fit();
  });
  stage.on('click tap', (evt) => {
    if (drawing) return;
    if (evt.target === stage || evt.target.getLayer() === imageLayer) {
      select(null);
      opts.onSelect?.(null);
    }
  });

  const observer = new ResizeObserver(() => fit());
  observer.observe(container);

  setBoxes(opts.boxes);
  fit();
  container.dataset.mode = 'view';

  return {
    setBoxes,
    select,
    show,
    fit,
    setDrawing,
    destroy: () => {
      observer.disconnect();
      image.onload = null;
      image.onerror = null;
      stage.destroy();
    },
  };
}
