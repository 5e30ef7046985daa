import { describe, expect, it } from 'vitest';
import { compile, parseHash } from '../../src/app/router';

describe('router', () => {
  it('matches paths with parameters', () => {
    const { pattern, keys } = compile('/slides/:id');
    expect(keys).toEqual(['id']);
    expect(pattern.exec('/slides/42')?.[1]).toBe('42');
    expect(pattern.test('/slides/42/')).toBe(true);
    expect(pattern.test('/slides')).toBe(false);
  });

  it('splits the hash into path and query', () => {
    const { path, query } = parseHash('#/patients?search=ab&page=2');
    expect(path).toBe('/patients');
    expect(query.get('search')).toBe('ab');
    expect(parseHash('').path).toBe('/');
  });
});
