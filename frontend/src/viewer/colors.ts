// Stable colours per cell class, shared by the viewer and the tables.

const KNOWN: Record<string, string> = {
  neutrophil: '#1f77b4',
  segmented_neutrophil: '#1f77b4',
  band_neutrophil: '#6baed6',
  lymphocyte: '#2ca02c',
  monocyte: '#9467bd',
  eosinophil: '#d62728',
  basophil: '#8c564b',
  blast: '#e377c2',
  immature_granulocyte: '#bcbd22',
  ig: '#bcbd22',
  metamyelocyte: '#bcbd22',
  myelocyte: '#bcbd22',
  promyelocyte: '#bcbd22',
  erythroblast: '#ff7f0e',
  platelet: '#17becf',
  smudge: '#7f7f7f',
  artifact: '#7f7f7f',
  unclassified: '#f0ad00',
  unidentified: '#5a6270', // the model is unsure: a person decides
};

const FALLBACK = ['#e6550d', '#31a354', '#756bb1', '#636363', '#3182bd', '#de2d26', '#a55194', '#8c6d31'];

export const UNCLASSIFIED_COLOR = '#f0ad00';

export function classColor(name: string | null | undefined): string {
  if (!name) return UNCLASSIFIED_COLOR;
  const key = name.toLowerCase().replace(/[\s-]+/g, '_');
  if (KNOWN[key]) return KNOWN[key];
  let hash = 0;
  for (const ch of key) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return FALLBACK[hash % FALLBACK.length];
}
