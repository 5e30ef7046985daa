// The typed API client: the only module that calls fetch.
// Every payload the frontend reads or sends has a type here.

export type Role = 'hematologist' | 'annotator' | 'admin';

export interface User {
  id: number;
  username: string;
  /** null for a user without a role group (e.g. a bare superuser). */
  role: Role | null;
  lab: string | null;
  /** Django permission names, e.g. "slides.add_slide". */
  permissions: string[];
}

export interface Page<T> {
  count: number;
  next: string | null;
  previous: string | null;
  results: T[];
}

export interface Patient {
  id: number;
  identifier: string;
  notes: string;
  created_at: string;
  slide_count: number;
}

export type SlideStatus = 'queued' | 'analyzing' | 'analyzed' | 'failed';
export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed';

export interface Job {
  id: number;
  kind: string;
  status: JobStatus;
  progress: number;
  message: string;
  error: string;
  attempts?: number;
  params?: Record<string, unknown>;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

/** JPEG tiles of a large scan: level k is the image at 1/2^k, tile (col, row) its pixels from (col*size, row*size). */
export interface ImageTiles {
  size: number;
  levels: number;
  /** With {level}, {col} and {row} to fill in. */
  url: string;
}

export interface SlideImage {
  id: number;
  filename: string;
  width: number;
  height: number;
  url: string;
  tiles?: ImageTiles | null;
}

export interface Slide {
  id: number;
  patient: number;
  patient_identifier?: string;
  status: SlideStatus;
  error: string;
  stain: string;
  microns_per_pixel: number | null;
  uploaded_by: string | null;
  uploaded_at: string;
  analyzed_at?: string | null;
  signed_off_by: string | null;
  signed_off_at: string | null;
  images: SlideImage[];
  cell_count: number;
  job: Job | null;
}

/** [x0, y0, x1, y1] in pixels of the cell's image. */
export type Box = [number, number, number, number];

export interface Cell {
  id: number;
  image: number;
  box: Box;
  source: 'model' | 'person';
  predicted_class: string | null;
  probabilities: Record<string, number>;
  confidence: number | null;
  /** The model's class is too unsure to show: class is 'unidentified' until a person gives one. */
  unidentified: boolean;
  model_version: string | null;
  reviewed_class: string | null;
  /** Marked by an annotator as hard to make out (Pascal VOC's <difficult>): localization scores leave it out. */
  difficult: boolean;
  reviewed_by: string | null;
  reviewed_at: string | null;
  class: string | null;
  heatmap_url: string | null;
  /** The cell cut from the full-resolution image, kept where the page shows a reduced preview (a scan). */
  crop_url: string | null;
  /** The model's answer and heatmap for the box as it is now (drawn or moved by a person) are being computed. */
  model_pending: boolean;
}

export interface BoxImport {
  added: number;
  /** Boxes not added, by reason: another object's label (RBC, Platelets) or "already there". */
  skipped: Record<string, number>;
}

/** Where a slide's training data is downloaded from (zip files). */
export const exportUrls = {
  boxes: (slideId: number | null, format: 'voc' | 'coco' | 'yolo', signedOffOnly = false) =>
    `/api/exports/boxes/?format=${format}${slideId === null ? '' : `&slide=${slideId}`}${signedOffOnly ? '&signed_off=1' : ''}`,
  cells: (slideId: number | null, which: 'confirmed' | 'all') =>
    `/api/exports/cells/?which=${which}${slideId === null ? '' : `&slide=${slideId}`}`,
};

export interface DifferentialRow {
  class: string;
  count: number;
  percent: number;
}

/** A class that is no white cell (nucleated red cells, platelets): counted beside the differential. */
export interface DifferentialOther {
  class: string;
  count: number;
  /** Per 100 white cells; null where the slide has none. */
  per_100_white: number | null;
}

/** A cell as a change left it (``before`` and ``after`` of a ``CellEvent``). */
export interface CellSnapshot {
  box?: Box;
  predicted_class?: string | null;
  reviewed_class?: string | null;
  source?: 'model' | 'person';
  difficult?: boolean;
}

/** One change to a cell: who made it (null: the model, or a user no longer there), when, before and after. */
export interface CellEvent {
  cell: number;
  action: 'create' | 'move' | 'reclassify' | 'delete' | 'answer' | 'mark' | 'restore';
  actor: string | null;
  before: CellSnapshot | null;
  after: CellSnapshot | null;
  at: string;
}

/** The white-cell differential: ``rows`` add up to ``total`` white cells. */
export interface Differential {
  total: number;
  rows: DifferentialRow[];
  other?: DifferentialOther[];
}

export interface ModelVersion {
  id: number;
  kind: 'localizer' | 'classifier';
  architecture: string;
  version: string;
  status: 'candidate' | 'active' | 'retired';
  parameters?: Record<string, unknown>;
  metrics: Record<string, unknown>;
  created_at: string;
  activated_at?: string | null;
  /** plots made when the version was trained (PNG addresses) */
  figures?: { name: string; title: string; url: string }[];
}

/** When the classifier retrains on its own (a periodic task beat runs); ``runs``: whether a scheduler runs here. */
export interface RetrainSchedule {
  every: 'never' | 'day' | 'week' | 'custom';
  time: string | null;
  /** 0 Sunday to 6 Saturday */
  day_of_week: number | null;
  timezone: string | null;
  last_run_at: string | null;
  runs: boolean;
  /** a schedule changed on the admin site, as it is */
  description?: string;
}

export interface SlideUpload {
  patient: number;
  images: File[];
  stain?: string;
  micronsPerPixel?: number | null;
}

/** An error answered by the API (`{"message", "extra"}`) or by the network. */
export class ApiError extends Error {
  readonly status: number;
  readonly extra: Record<string, unknown>;

  constructor(status: number, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.extra = extra;
  }

  /** The session is missing or expired. */
  get isUnauthenticated(): boolean {
    return this.status === 401 || (this.status === 403 && /credentials|authenticat|log ?in/i.test(this.message));
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Turn an error response body into an ApiError; tolerates non-JSON bodies and DRF's `{"detail"}`. */
export function parseApiError(status: number, statusText: string, body: string): ApiError {
  let data: unknown = undefined;
  try {
    data = body ? JSON.parse(body) : undefined;
  } catch {
    data = undefined;
  }
  if (isRecord(data)) {
    const extra = isRecord(data.extra) ? data.extra : {};
    if (typeof data.message === 'string' && data.message) return new ApiError(status, data.message, extra);
    if (typeof data.detail === 'string' && data.detail) return new ApiError(status, data.detail, extra);
  }
  const fallback = statusText ? `${status} ${statusText}` : `Request failed (${status})`;
  return new ApiError(status, fallback);
}

/** Human-readable lines for an error's `extra`, e.g. field errors: "identifier: This field is required." */
export function describeExtra(extra: Record<string, unknown>): string[] {
  const lines: string[] = [];
  const walk = (prefix: string, value: unknown): void => {
    if (value === null || value === undefined || value === '') return;
    if (Array.isArray(value)) {
      if (value.every((v) => typeof v !== 'object' || v === null)) {
        const text = value.filter((v) => v !== null && v !== '').join(' ');
        if (text) lines.push(prefix ? `${prefix}: ${text}` : text);
      } else {
        value.forEach((v, i) => walk(prefix ? `${prefix}[${i}]` : `[${i}]`, v));
      }
    } else if (isRecord(value)) {
      for (const [key, v] of Object.entries(value)) {
        // "fields" and "non_field_errors" wrap the real messages; don't repeat them as a prefix.
        const wrapper = key === 'fields' || key === 'non_field_errors' || key === 'detail';
        walk(wrapper ? prefix : prefix ? `${prefix}.${key}` : key, v);
      }
    } else {
      lines.push(prefix ? `${prefix}: ${String(value)}` : String(value));
    }
  };
  walk('', extra);
  return lines;
}

function readCookie(name: string): string | null {
  for (const part of document.cookie.split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return decodeURIComponent(rest.join('='));
  }
  return null;
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

async function ensureCsrfToken(): Promise<string> {
  let token = readCookie('csrftoken');
  if (!token) {
    await send('GET', '/api/auth/csrf/');
    token = readCookie('csrftoken');
  }
  return token ?? '';
}

async function send(method: Method, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  let payload: BodyInit | undefined;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  if (method !== 'GET') headers['X-CSRFToken'] = await ensureCsrfToken();

  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
  } catch (err) {
    throw new ApiError(0, `Cannot reach the server (${err instanceof Error ? err.message : String(err)}).`);
  }
  if (!response.ok) {
    throw parseApiError(response.status, response.statusText, await response.text());
  }
  return response;
}

async function request<T>(method: Method, path: string, body?: unknown): Promise<T> {
  const response = await send(method, path, body);
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

function query(params: Record<string, string | number | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export const api = {
  csrf: () => request<void>('GET', '/api/auth/csrf/'),
  login: async (username: string, password: string) => {
    await ensureCsrfToken();
    return request<User>('POST', '/api/auth/login/', { username, password });
  },
  logout: () => request<void>('POST', '/api/auth/logout/'),
  me: () => request<User>('GET', '/api/auth/me/'),

  patients: (opts: { search?: string; page?: number } = {}) =>
    request<Page<Patient>>('GET', `/api/patients/${query({ search: opts.search, page: opts.page })}`),
  patient: (id: number) => request<Patient>('GET', `/api/patients/${id}/`),
  createPatient: (data: { identifier: string; notes?: string }) =>
    request<Patient>('POST', '/api/patients/', data),
  deletePatient: (id: number) => request<void>('DELETE', `/api/patients/${id}/`),

  slides: (opts: { patient?: number; page?: number } = {}) =>
    request<Page<Slide>>('GET', `/api/slides/${query({ patient: opts.patient, page: opts.page })}`),
  slide: (id: number) => request<Slide>('GET', `/api/slides/${id}/`),
  /** Multipart upload; `onProgress` gets the fraction of bytes sent (fetch can't report that, so XHR). */
  uploadSlide: async (upload: SlideUpload, onProgress?: (fraction: number) => void): Promise<Slide> => {
    const form = new FormData();
    form.append('patient', String(upload.patient));
    for (const file of upload.images) form.append('images', file, file.name);
    if (upload.stain) form.append('stain', upload.stain);
    if (upload.micronsPerPixel !== undefined && upload.micronsPerPixel !== null) {
      form.append('microns_per_pixel', String(upload.micronsPerPixel));
    }
    if (!onProgress) return request<Slide>('POST', '/api/slides/', form);
    const token = await ensureCsrfToken();
    return new Promise<Slide>((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', '/api/slides/');
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.setRequestHeader('X-CSRFToken', token);
      xhr.upload.onprogress = (evt) => {
        if (evt.lengthComputable && evt.total > 0) onProgress(evt.loaded / evt.total);
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          try {
            resolve(JSON.parse(xhr.responseText) as Slide);
          } catch {
            reject(new ApiError(xhr.status, 'The server answered with something that is not JSON.'));
          }
        } else {
          reject(parseApiError(xhr.status, xhr.statusText, xhr.responseText));
        }
      };
      xhr.onerror = () => reject(new ApiError(0, 'Cannot reach the server (the upload was interrupted).'));
      xhr.send(form);
    });
  },
  analyzeSlide: (id: number) => request<Job>('POST', `/api/slides/${id}/analyze/`),
  signOffSlide: (id: number) => request<Slide>('POST', `/api/slides/${id}/sign-off/`),
  deleteSlide: (id: number) => request<void>('DELETE', `/api/slides/${id}/`),
  cells: (slideId: number) => request<Cell[]>('GET', `/api/slides/${slideId}/cells/`),
  /** Draw a cell's box on one of the slide's images; the model's answer for it follows in a job. */
  createCell: (slideId: number, imageId: number, box: Box) =>
    request<Cell>('POST', `/api/slides/${slideId}/cells/`, { image: imageId, box }),
  /** Move or resize a cell's box; the model answers again for where it is now. */
  moveCell: (cellId: number, box: Box) => request<Cell>('PATCH', `/api/cells/${cellId}/`, { box }),
  /** Mark a cell hard to make out (localization scores leave it out), or take the mark off. */
  markCell: (cellId: number, difficult: boolean) => request<Cell>('PATCH', `/api/cells/${cellId}/`, { difficult }),
  /** Delete a cell (its history is kept). */
  deleteCell: (cellId: number) => request<void>('DELETE', `/api/cells/${cellId}/`),
  /** A deleted box back as it was (undo), under its old id. */
  restoreCell: (slideId: number, cellId: number) =>
    request<Cell>('POST', `/api/slides/${slideId}/cells/restore/`, { cell: cellId }),
  /** Give a cell the class a person reviewed it as (the model's answer is kept beside it). */
  reclassifyCell: (cellId: number, reviewedClass: string) =>
    request<Cell>('PATCH', `/api/cells/${cellId}/`, { reviewed_class: reviewedClass }),
  differential: (slideId: number) => request<Differential>('GET', `/api/slides/${slideId}/differential/`),
  /** The changes to one cell of a slide, oldest first (who, when, before and after). */
  cellHistory: (slideId: number, cellId: number) =>
    request<Page<CellEvent>>('GET', `/api/slides/${slideId}/history/${query({ cell: cellId })}`),
  /** Add the white cells of box files (VOC .xml, COCO .json, YOLO .txt with its class names) to a slide. */
  importBoxes: (slideId: number, files: File[], yoloLabels = '') => {
    const form = new FormData();
    for (const file of files) form.append('files', file);
    if (yoloLabels.trim()) form.append('labels', yoloLabels.trim());
    return request<BoxImport>('POST', `/api/slides/${slideId}/boxes/`, form);
  },

  job: (id: number) => request<Job>('GET', `/api/jobs/${id}/`),
  jobs: (opts: { status?: JobStatus; page?: number } = {}) =>
    request<Page<Job>>('GET', `/api/jobs/${query({ status: opts.status, page: opts.page })}`),

  modelVersions: (opts: { kind?: ModelVersion['kind']; page?: number } = {}) =>
    request<Page<ModelVersion>>('GET', `/api/model-versions/${query({ kind: opts.kind, page: opts.page })}`),
  /** Train the classifier again on the training data and every cell a person classed: a job, whose result
   * is registered as a candidate version. */
  retrainClassifier: () => request<Job>('POST', '/api/model-versions/retrain/'),
  /** Train the deep detector on the annotated fields; a job, its version a candidate localizer. */
  trainDetector: () => request<Job>('POST', '/api/model-versions/detector/train/'),
  retrainSchedule: () => request<RetrainSchedule>('GET', '/api/model-versions/retrain/schedule/'),
  setRetrainSchedule: (schedule: { every: 'never' | 'day' | 'week'; time?: string; day_of_week?: number; timezone?: string }) =>
    request<RetrainSchedule>('PUT', '/api/model-versions/retrain/schedule/', schedule),
  /** Make a version the active one of its kind (a rollback where it was active before). */
  promoteModelVersion: (id: number) => request<ModelVersion>('POST', `/api/model-versions/${id}/promote/`),
};

export type Api = typeof api;
