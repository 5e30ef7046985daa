// A small hash router: "#/patients/12" -> the matching page with { id: "12" }.

export interface RouteContext {
  params: Record<string, string>;
  query: URLSearchParams;
  /** Aborted when the user navigates away: pages stop polling and free the viewer. */
  signal: AbortSignal;
}

/** Renders into `root`; may return a cleanup function. */
export type Page = (root: HTMLElement, ctx: RouteContext) => void | (() => void) | Promise<void | (() => void)>;

interface Route {
  pattern: RegExp;
  keys: string[];
  page: Page;
}

export function compile(path: string): { pattern: RegExp; keys: string[] } {
  const keys: string[] = [];
  const source = path
    .split('/')
    .map((part) => {
      if (part.startsWith(':')) {
        keys.push(part.slice(1));
        return '([^/]+)';
      }
      return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  return { pattern: new RegExp(`^${source}/?$`), keys };
}

/** Split "#/slides/3?x=1" into path and query. */
export function parseHash(hash: string): { path: string; query: URLSearchParams } {
  const raw = hash.replace(/^#/, '') || '/';
  const [path, search = ''] = raw.split('?');
  return { path: path || '/', query: new URLSearchParams(search) };
}

export function navigate(path: string): void {
  const target = `#${path}`;
  if (window.location.hash === target) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else window.location.hash = target;
}

export class Router {
  private routes: Route[] = [];
  private cleanup: (() => void) | null = null;
  private controller: AbortController | null = null;

  constructor(
    private readonly root: HTMLElement,
    private readonly notFound: Page,
    private readonly guard: (path: string) => Promise<string | null> = async () => null,
  ) {}

  add(path: string, page: Page): this {
    this.routes.push({ ...compile(path), page });
    return this;
  }

  start(): void {
    window.addEventListener('hashchange', () => void this.resolve());
    void this.resolve();
  }

  private async resolve(): Promise<void> {
    this.cleanup?.();
    this.cleanup = null;
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;

    const { path, query } = parseHash(window.location.hash);
    const redirect = await this.guard(path);
    if (controller.signal.aborted) return;
    if (redirect && redirect !== path) {
      navigate(redirect);
      return;
    }

    let page = this.notFound;
    let params: Record<string, string> = {};
    for (const route of this.routes) {
      const match = route.pattern.exec(path);
      if (match) {
        page = route.page;
        params = Object.fromEntries(route.keys.map((k, i) => [k, decodeURIComponent(match[i + 1])]));
        break;
      }
    }
    this.root.replaceChildren();
    window.scrollTo(0, 0);
    const result = await page(this.root, { params, query, signal: controller.signal });
    if (typeof result === 'function') {
      if (controller.signal.aborted) result();
      else this.cleanup = result;
    }
  }
}
