import { describe, expect, it } from 'vitest';
import { classColor, UNCLASSIFIED_COLOR } from '../../src/viewer/colors';

// The classes of the packaged classifier (PBC's eight) and of tecom's five: a reviewer tells them
// apart by colour on the slide and in the differential, so no two may share one.
function distance(a: string, b: string): number {
  const rgb = (h: string) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
  const [x, y] = [rgb(a), rgb(b)];
  return Math.hypot(x[0] - y[0], x[1] - y[1], x[2] - y[2]);
}

const SERVED = ['basophil', 'eosinophil', 'erythroblast', 'ig', 'lymphocyte', 'monocyte', 'neutrophil', 'platelet'];

describe('classColor', () => {
  it('gives each class of the served classifier a colour of its own', () => {
    const colours = SERVED.map((c) => classColor(c));
    expect(colours).not.toContain(UNCLASSIFIED_COLOR);
    // far apart, not merely different strings: two reds 10 levels apart read as one class
    for (let i = 0; i < SERVED.length; i++) {
      for (let j = i + 1; j < SERVED.length; j++) {
        expect(distance(colours[i], colours[j]), `${SERVED[i]} ~ ${SERVED[j]}`).toBeGreaterThan(60);
      }
    }
  });

  it('sets cells the model is unsure of apart from every class', () => {
    for (const c of SERVED) expect(distance(classColor('unidentified'), classColor(c)), c).toBeGreaterThan(60);
    expect(classColor('unidentified')).not.toBe(UNCLASSIFIED_COLOR);
  });

  it('reads names the way people write them', () => {
    expect(classColor('Band neutrophil')).toBe(classColor('band_neutrophil'));
    expect(classColor('IG')).toBe(classColor('immature_granulocyte'));
  });

  it('gives an unknown class a stable colour and no class the unclassified one', () => {
    expect(classColor('reactive lymphocyte')).toBe(classColor('reactive lymphocyte'));
    expect(classColor(null)).toBe(UNCLASSIFIED_COLOR);
  });
});
